"""RedisRecommender: vector KNN with structured pre-filters in one FT.SEARCH, a per-user session
vector updated atomically on every click, category-affinity re-ranking and hot embedding refresh.

Everything Redis sees (key names, hash fields, the index schema, the query shape) is defined in
this module and nowhere else, and it follows the data model shared by the other ports of this
demo, so their data and ours are interchangeable.
"""

from __future__ import annotations

import base64
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import redis

from embeddings import normalize_rows

log = logging.getLogger(__name__)

# --- the data model -------------------------------------------------------------------------

PRODUCT_TEXT_FIELDS = ("name", "description")
PRODUCT_TAG_FIELDS = ("category", "brand", "in_stock")
PRODUCT_NUMERIC_FIELDS = ("price", "rating")
PRODUCT_FIELDS = ("name", "description", "category", "brand", "price", "rating", "in_stock")
EMBEDDING_FIELD = "embedding"
SCORE_FIELD = "vector_score"

SESSION_VEC_FIELD = "session_vec"
AFFINITY_PREFIX = "aff:"
CLICKS_FIELD = "clicks"
LAST_CLICKED_ID_FIELD = "last_clicked_id"
LAST_CLICKED_CATEGORY_FIELD = "last_clicked_category"
RECENT_CLICKS_KEPT = 6

DEFAULT_RERANK_OVERFETCH = 3
MAX_K = 10_000
HYBRID_POLICIES = (None, "BATCHES", "ADHOC_BF")
# Redis' own EF_RUNTIME (10) gives recall@10 0.65 at 100k items; 100 gives 0.99 for +0.14 ms
# p50 (bench/retrieval.py, 2 cores). Small catalogs are exact either way.
DEFAULT_EF_RUNTIME = 100
TAG_SEPARATOR = ","

# One click, done entirely inside Redis so that concurrent clicks for one user serialise:
# read the item, fold it into the session vector (EWMA, renormalised), bump the category
# affinity and the click count, remember the last click. A client-side read-modify-write
# would let two clicks read the same session vector and one of them be lost.
#
# Everything is read and computed before the first write: Redis does not roll a script back,
# so a failure half-way would leave a half-applied click. Counters that hold junk restart at
# 0 (reported back as `repaired`) instead of failing after the session vector was written.
#
# KEYS: product hash, user features hash, user recent-clicks list
# ARGV: alpha, affinity step, dim, product id, recent clicks kept, field names...
RECORD_CLICK_LUA = """
local product, features, recent = KEYS[1], KEYS[2], KEYS[3]
local alpha, step, dim = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local product_id, keep = ARGV[4], tonumber(ARGV[5])
local emb_field, session_field, aff_prefix = ARGV[6], ARGV[7], ARGV[8]
local clicks_field, last_id_field, last_cat_field = ARGV[9], ARGV[10], ARGV[11]

if redis.call('EXISTS', product) == 0 then
  return redis.error_reply('NOPRODUCT no such product')
end
local item = redis.call('HMGET', product, emb_field, 'category')
local blob, category = item[1], item[2]
if not category or category == '' then category = 'unknown' end
local aff_field = aff_prefix .. category

local function finite(raw)
  local n = tonumber(raw)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then return nil end
  return n
end
local current = redis.call('HMGET', features, session_field, clicks_field, aff_field)
local repaired = 0
local clicks = finite(current[2])
if current[2] and not clicks then repaired = 1 end
clicks = math.floor(clicks or 0) + 1
local affinity = finite(current[3])
if current[3] and not affinity then repaired = 1 end
affinity = string.format('%.17g', (affinity or 0) + step)

local session = nil
if blob and #blob == dim * 4 then
  local fmt = '<' .. string.rep('f', dim)
  local v = {struct.unpack(fmt, blob)}
  local previous = current[1]
  if previous and #previous == dim * 4 then
    local p = {struct.unpack(fmt, previous)}
    for i = 1, dim do v[i] = alpha * v[i] + (1 - alpha) * p[i] end
  end
  local norm = 0
  for i = 1, dim do norm = norm + v[i] * v[i] end
  norm = math.sqrt(norm)
  if norm > 0 and norm == norm and norm ~= math.huge then
    for i = 1, dim do v[i] = v[i] / norm end
    session = struct.pack(fmt, unpack(v, 1, dim))
  end
end

if session then redis.call('HSET', features, session_field, session) end
redis.call('HSET', features, aff_field, affinity, clicks_field, clicks,
           last_id_field, product_id, last_cat_field, category)
redis.call('LPUSH', recent, product_id)
redis.call('LTRIM', recent, 0, keep - 1)
return {category, affinity, clicks, session and 1 or 0, repaired}
"""

# Replace one item's vector only if the item still exists: HSET alone would resurrect a
# product deleted between our existence check and the write.
REFRESH_EMBEDDING_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('NOPRODUCT no such product')
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Candidate:
    id: str
    name: str
    description: str
    category: str
    brand: str
    price: float
    rating: float
    in_stock: bool
    vector_distance: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Recommendation:
    """What one recommend() call did, so a caller (the demo server) can show its work."""

    candidates: list[Candidate]
    filter_clause: str
    used_session: bool
    used_rerank: bool
    search_ms: float
    rerank_ms: float
    features: dict[str, Any] = field(repr=False, default_factory=dict)


# --- pure helpers: data in, data out --------------------------------------------------------


def vector_to_bytes(vector: Any, dim: int) -> bytes:
    """Validate and pack one vector as little-endian float32 bytes."""
    array = np.asarray(vector, dtype="<f4")
    if array.shape != (dim,):
        raise ValueError(f"expected a vector of shape ({dim},), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("vector contains NaN or infinity")
    return array.tobytes()


def bytes_to_vector(blob: bytes | None, dim: int) -> np.ndarray | None:
    """Unpack float32 bytes; anything of the wrong length is treated as absent."""
    if blob is None or len(blob) != dim * 4:
        return None
    return np.frombuffer(blob, dtype="<f4").copy()


def product_embedding_bytes(product: Mapping[str, Any], dim: int) -> bytes:
    """A product's vector as stored in Redis, from either `embedding` or `embedding_b64`."""
    if "embedding_b64" in product:
        blob = base64.b64decode(product["embedding_b64"])
        if len(blob) != dim * 4:
            raise ValueError(
                f"product {product.get('id')!r}: embedding_b64 holds {len(blob)} bytes, expected {dim * 4}"
            )
        return vector_to_bytes(np.frombuffer(blob, dtype="<f4"), dim)
    if "embedding" in product:
        return vector_to_bytes(product["embedding"], dim)
    raise ValueError(f"product {product.get('id')!r} has neither 'embedding' nor 'embedding_b64'")


def field_problem(name: str, value: str) -> str | None:
    """What would make a product field misbehave in the index, for every writer to check:
    RediSearch splits TAG values on commas (one category "a,b" would become two tags), and
    a key-unsafe id could not be addressed by the API."""
    if name in ("category", "brand") and TAG_SEPARATOR in value:
        return f"{name} must not contain {TAG_SEPARATOR!r} (the tag separator), got {value!r}"
    if name == "id" and any(ch.isspace() or ord(ch) < 32 for ch in value):
        return f"id must not contain spaces or control characters, got {value!r}"
    return None


def product_to_hash(product: Mapping[str, Any], dim: int) -> dict[str, bytes | str]:
    """The exact hash layout of `product:<id>`: floats as strings, in_stock as true/false.

    Strict on purpose: a missing price or an in_stock of "yes" silently stored as 0 or false
    would corrupt filters without anyone noticing.
    """
    missing = [name for name in PRODUCT_FIELDS if product.get(name) is None]
    if missing:
        raise ValueError(f"product {product.get('id')!r} lacks {', '.join(missing)}")
    for name in ("id", "category", "brand"):
        problem = field_problem(name, str(product.get(name, "")))
        if problem:
            raise ValueError(f"product {product.get('id')!r}: {problem}")
    in_stock = product["in_stock"]
    if isinstance(in_stock, str) and in_stock.strip().lower() in ("true", "false"):
        in_stock = in_stock.strip().lower() == "true"
    if not isinstance(in_stock, (bool, np.bool_)):
        raise ValueError(
            f"product {product.get('id')!r}: in_stock must be a boolean or 'true'/'false', got {in_stock!r}"
        )
    numbers = {
        name: _number(f"product {product.get('id')!r}: {name}", product[name]) for name in PRODUCT_NUMERIC_FIELDS
    }
    return {
        "name": str(product["name"]),
        "description": str(product["description"]),
        "category": str(product["category"]),
        "brand": str(product["brand"]),
        "price": repr(numbers["price"]),
        "rating": repr(numbers["rating"]),
        "in_stock": "true" if in_stock else "false",
        EMBEDDING_FIELD: product_embedding_bytes(product, dim),
    }


def blend_session(query_vec: np.ndarray, session_vec: np.ndarray, session_weight: float) -> np.ndarray:
    """normalize((1 - w) * query + w * session): the query keeps the lead, the session steers."""
    if not 0.0 <= session_weight <= 1.0:
        raise ValueError("session_weight must be between 0 and 1")
    return normalize_rows((1.0 - session_weight) * query_vec + session_weight * session_vec)


def escape_tag_value(value: str) -> str:
    """Escape a literal TAG value so that no character in it is query syntax.

    Every ASCII character other than letters, digits and `_` is backslash-escaped, and so is
    any whitespace. Other Unicode characters stay as they are: RediSearch matches them
    literally, and escaping them would stop them from matching.
    """
    return "".join(
        "\\" + ch if (ch.isascii() and not (ch.isalnum() or ch == "_")) or ch.isspace() else ch for ch in value
    )


def escape_text_phrase(value: str) -> str:
    """One quoted phrase: only `\\` and `"` are special inside the quotes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_literal(name: str, value: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError(f"{name} contains control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: Redis only takes valid UTF-8
        raise ValueError(f"{name} is not valid Unicode text (it contains a lone surrogate)") from None
    return value


def _number(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number")
    return number


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")


def _range(field_name: str, low: float | None, high: float | None) -> str:
    low_text = "-inf" if low is None else repr(low)
    high_text = "+inf" if high is None else repr(high)
    return f"@{field_name}:[{low_text} {high_text}]"


def build_filter_clause(
    *,
    category: str | None = None,
    brand: str | None = None,
    min_price: float | None = None,
    max_price: float | None = None,
    in_stock_only: bool = False,
    min_rating: float | None = None,
    text_match: str | None = None,
    text_field: str = "description",
) -> str:
    """The pre-filter half of the hybrid query, `*` when nothing filters.

    User values are always literals: TAG values are escaped character by character and the
    TEXT match is a single quoted phrase, so input like `x} | @brand:{y` can neither widen
    the query nor make it a syntax error. None means "no filter". An empty TAG value has no
    literal form in RediSearch (and no product has one), so it is refused with ValueError;
    an empty text match constrains nothing ("contains ''" holds for every text) and is
    dropped.
    """
    parts: list[str] = []
    for name, value in (("category", category), ("brand", brand)):
        if value is None:
            continue
        value = _check_literal(name, value)
        if not value.strip():
            raise ValueError(f"{name} must not be empty: pass None to match any {name}")
        parts.append(f"@{name}:{{{escape_tag_value(value)}}}")
    if in_stock_only:
        parts.append("@in_stock:{true}")
    low, high = _number("min_price", min_price), _number("max_price", max_price)
    if low is not None and high is not None and low > high:
        raise ValueError(f"min_price ({low}) is greater than max_price ({high})")
    if low is not None or high is not None:
        parts.append(_range("price", low, high))
    rating = _number("min_rating", min_rating)
    if rating is not None:
        parts.append(_range("rating", rating, None))
    if text_match is not None and _check_literal("text_match", text_match).strip():
        if text_field not in PRODUCT_TEXT_FIELDS:
            raise ValueError(f"text_field must be one of {PRODUCT_TEXT_FIELDS}, got {text_field!r}")
        parts.append(f"@{text_field}:{escape_text_phrase(text_match.strip())}")
    return " ".join(parts) if parts else "*"


def knn_query(
    filter_clause: str, k: int, ef_runtime: int | None, hybrid_policy: str | None
) -> tuple[str, dict[str, Any]]:
    """The hybrid query string and its parameters (the vector is added by the caller).

    RediSearch accepts HYBRID_POLICY only when there is a filter, and EF_RUNTIME only when
    the HNSW graph is walked (not with ADHOC_BF, which scores the filtered set directly).
    """
    attributes, params = [], {}
    filtered = filter_clause != "*"
    if hybrid_policy and filtered:
        attributes.append(f"HYBRID_POLICY {hybrid_policy}")
    if ef_runtime is not None and not (filtered and hybrid_policy == "ADHOC_BF"):
        attributes.append("EF_RUNTIME $ef")
        params["ef"] = str(ef_runtime)
    knn = " ".join([f"KNN {k} @{EMBEDDING_FIELD} $vec", *attributes, f"AS {SCORE_FIELD}"])
    return f"({filter_clause})=>[{knn}]", params


def rerank(
    candidates: list[Candidate],
    user_features: Mapping[str, Any] | None,
    affinity_weight: float = 0.15,
    k: int | None = None,
) -> list[Candidate]:
    """score = vector_distance - log1p(max(affinity, 0)) * affinity_weight, ascending.

    Pass more candidates than you will show and `k` to cut after re-sorting: an item just
    outside the first k by distance can then be pulled in by the user's affinity.
    """
    affinities = (user_features or {}).get("affinities", {}) or {}
    rescored = [
        replace(c, score=c.vector_distance - math.log1p(max(affinities.get(c.category, 0.0), 0.0)) * affinity_weight)
        for c in candidates
    ]
    rescored.sort(key=lambda c: (c.score, c.vector_distance, c.id))
    return rescored if k is None else rescored[:k]


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _float(value: Any, default: float = 0.0) -> float:
    try:
        number = float(_text(value))
    except ValueError:
        return default
    return number if math.isfinite(number) else default


def search_rows(response: Any) -> list[tuple[str, dict[str, str]]]:
    """(key, fields) rows from FT.SEARCH, whichever protocol the client speaks.

    RESP2: [total, key, [field, value, ...], key, [...], ...]
    RESP3: {total_results, results: [{id, extra_attributes: {field: value}}]}, keys as bytes
    or str depending on decode_responses. This is the one place that knows both shapes.
    """
    if isinstance(response, dict):
        response = {_text(k): v for k, v in response.items()}
        rows = []
        for result in response.get("results", []):
            result = {_text(k): v for k, v in result.items()}
            attributes = result.get("extra_attributes") or {}
            rows.append((_text(result.get("id")), {_text(k): _text(v) for k, v in attributes.items()}))
        return rows
    rows = []
    for i in range(1, len(response) - 1, 2):
        flat = response[i + 1] or []
        rows.append((_text(response[i]), {_text(flat[j]): _text(flat[j + 1]) for j in range(0, len(flat) - 1, 2)}))
    return rows


def aggregate_rows(response: Any) -> list[dict[str, str]]:
    """Field maps from FT.AGGREGATE: RESP2 [total, [field, value, ...], ...]; RESP3
    {results: [{extra_attributes: {...}}]}. Like search_rows, the one place for both shapes."""
    if isinstance(response, dict):
        results = {_text(k): v for k, v in response.items()}.get("results", [])
        return [
            {_text(k): _text(v) for k, v in ({_text(k): v for k, v in r.items()}.get("extra_attributes") or {}).items()}
            for r in results
        ]
    return [{_text(row[j]): _text(row[j + 1]) for j in range(0, len(row) - 1, 2)} for row in response[1:]]


def info_dict(response: Any) -> dict[str, Any]:
    """FT.INFO as a dict with str keys: RESP3 gives a map (bytes keys), RESP2 a flat list."""
    if isinstance(response, dict):
        return {_text(k): v for k, v in response.items()}
    return {_text(response[i]): response[i + 1] for i in range(0, len(response) - 1, 2)}


# Data problems already logged: the page asks /state after every click, so logging a broken
# product on every read would bury the log in repeats of one line.
_reported_problems: set[str] = set()


def _report_once(message: str) -> None:
    if message not in _reported_problems:
        _reported_problems.add(message)
        log.warning("%s", message)


def product_display_fields(product_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """The PRODUCT_FIELDS of one stored product as shown to users. A missing or garbled field
    (a price of "abc", an in_stock of "maybe") is shown as empty, 0 or false, so one bad hash
    cannot break a page of results, and is logged once, so the corrupt data gets noticed."""
    problems = [f"lacks {name}" for name in PRODUCT_FIELDS if name not in fields]
    numbers = {name: _float(fields.get(name), default=math.nan) for name in PRODUCT_NUMERIC_FIELDS}
    problems += [
        f"has {name} {fields[name]!r}, not a finite number"
        for name, number in numbers.items()
        if name in fields and math.isnan(number)
    ]
    in_stock = fields.get("in_stock", "").lower()
    if "in_stock" in fields and in_stock not in ("true", "false"):
        problems.append(f"has in_stock {fields['in_stock']!r}, neither true nor false")
    for problem in problems:
        _report_once(f"product {product_id!r} {problem}; shown as empty, 0 or false")
    return {
        "name": fields.get("name", ""),
        "description": fields.get("description", ""),
        "category": fields.get("category", ""),
        "brand": fields.get("brand", ""),
        **{name: 0.0 if math.isnan(number) else number for name, number in numbers.items()},
        "in_stock": in_stock == "true",
    }


def candidate_from_row(key: str, fields: Mapping[str, str], key_prefix: str) -> Candidate:
    distance = _float(fields.get(SCORE_FIELD), default=2.0)
    product_id = key[len(key_prefix) :] if key.startswith(key_prefix) else key
    return Candidate(
        id=product_id, **product_display_fields(product_id, fields), vector_distance=distance, score=distance
    )


# --- the Redis-facing class -----------------------------------------------------------------


class RedisRecommender:
    """Owns the product index, the per-user features and the queries over them.

    The client must return bytes (decode_responses=False): vectors are binary. Both RESP2 and
    RESP3 clients work.
    """

    def __init__(
        self,
        redis_client: redis.Redis | None = None,
        index_name: str = "recommend:idx",
        key_prefix: str = "product:",
        user_key_prefix: str = "user:",
        vector_dim: int = 384,
        *,
        hnsw_m: int | None = None,
        hnsw_ef_construction: int | None = None,
        ef_runtime: int | None = DEFAULT_EF_RUNTIME,
        hybrid_policy: str | None = None,
    ) -> None:
        """hnsw_m and hnsw_ef_construction shape the graph (used by create_index; None keeps
        RediSearch's defaults, M 16 and EF_CONSTRUCTION 200, and the exact shared schema).
        ef_runtime widens the search at query time: more recall, more time (None: Redis' 10).
        hybrid_policy forces BATCHES or ADHOC_BF for filtered queries (None: Redis chooses).
        The defaults come from bench/retrieval.py (bench/README.md has the numbers)."""
        for name, value in (
            ("hnsw_m", hnsw_m),
            ("hnsw_ef_construction", hnsw_ef_construction),
            ("ef_runtime", ef_runtime),
        ):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if hybrid_policy not in HYBRID_POLICIES:
            raise ValueError(f"hybrid_policy must be one of {HYBRID_POLICIES}, got {hybrid_policy!r}")
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self.ef_runtime = ef_runtime
        self.hybrid_policy = hybrid_policy
        self.redis = redis_client if redis_client is not None else redis.Redis()
        if self.redis.get_connection_kwargs().get("decode_responses"):
            raise ValueError("RedisRecommender needs a client with decode_responses=False: vectors are binary")
        self.index_name = index_name
        self.key_prefix = key_prefix
        self.user_key_prefix = user_key_prefix
        self.vector_dim = vector_dim
        self._record_click = self.redis.register_script(RECORD_CLICK_LUA)
        self._refresh_embedding = self.redis.register_script(REFRESH_EMBEDDING_LUA)

    # keys

    def product_key(self, product_id: str) -> str:
        return f"{self.key_prefix}{product_id}"

    def features_key(self, user_id: str) -> str:
        return f"{self.user_key_prefix}{user_id}:features"

    def recent_clicks_key(self, user_id: str) -> str:
        return f"{self.user_key_prefix}{user_id}:recent_clicks"

    # index

    def index_schema(self) -> list[str]:
        hnsw = ["TYPE", "FLOAT32", "DIM", str(self.vector_dim), "DISTANCE_METRIC", "COSINE"]
        if self.hnsw_m is not None:
            hnsw += ["M", str(self.hnsw_m)]
        if self.hnsw_ef_construction is not None:
            hnsw += ["EF_CONSTRUCTION", str(self.hnsw_ef_construction)]
        return [
            "name", "TEXT",
            "description", "TEXT",
            "category", "TAG",
            "brand", "TAG",
            "in_stock", "TAG",
            "price", "NUMERIC", "SORTABLE",
            "rating", "NUMERIC", "SORTABLE",
            EMBEDDING_FIELD, "VECTOR", "HNSW", str(len(hnsw)), *hnsw,
        ]  # fmt: skip

    def index_exists(self) -> bool:
        try:
            self.redis.execute_command("FT.INFO", self.index_name)
        except redis.ResponseError as exc:
            if "unknown index name" in str(exc).lower() or "no such index" in str(exc).lower():
                return False
            raise
        return True

    def create_index(self) -> bool:
        """Create the index if it is missing; True when this call created it."""
        if self.index_exists():
            return False
        try:
            self.redis.execute_command(
                "FT.CREATE",
                self.index_name,
                "ON",
                "HASH",
                "PREFIX",
                "1",
                self.key_prefix,
                "SCHEMA",
                *self.index_schema(),
            )
        except redis.ResponseError as exc:
            if "index already exists" in str(exc).lower():
                return False
            raise
        return True

    def drop_index(self, delete_documents: bool = False) -> bool:
        """Drop the index (and with delete_documents its product hashes); False if it was absent."""
        args = ["FT.DROPINDEX", self.index_name] + (["DD"] if delete_documents else [])
        try:
            self.redis.execute_command(*args)
        except redis.ResponseError as exc:
            if "unknown index name" in str(exc).lower() or "no such index" in str(exc).lower():
                return False
            raise
        return True

    def index_products(self, products: Iterable[Mapping[str, Any]], batch_size: int = 500) -> int:
        """HSET every product in pipelined batches; returns how many were written.

        Each product needs an `id` and either `embedding` (array or list) or `embedding_b64`.
        All of a batch is validated before any of it is sent.
        """
        written = 0
        batch: list[tuple[str, dict]] = []
        for product in products:
            if not str(product.get("id", "")).strip():
                raise ValueError(f"product without an id: {dict(product).get('name')!r}")
            batch.append((self.product_key(str(product["id"])), product_to_hash(product, self.vector_dim)))
            if len(batch) >= batch_size:
                written += self._write_batch(batch)
                batch = []
        return written + self._write_batch(batch)

    def _write_batch(self, batch: list[tuple[str, dict]]) -> int:
        if not batch:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for key, mapping in batch:
            pipe.hset(key, mapping=mapping)
        pipe.execute()
        return len(batch)

    def index_info(self) -> dict[str, Any]:
        info = info_dict(self.redis.execute_command("FT.INFO", self.index_name))
        failures = int(_float(info.get("hash_indexing_failures")))
        if failures:
            # A hash the index refuses (a price of "abc", a vector of the wrong size) silently
            # drops out of every search; FT.INFO keeps the last culprit, so name it.
            errors = info_dict(info.get("Index Errors") or [])
            _report_once(
                f"index {self.index_name}: {failures} product hash(es) could not be indexed and are left out of "
                f"searches; the last: {_text(errors.get('last indexing error key'))} "
                f"({_text(errors.get('last indexing error'))})"
            )
        return {
            "num_docs": int(_float(info.get("num_docs"))),
            "indexing_failures": failures,
            "vector_index_size_mb": round(_float(info.get("vector_index_sz_mb")), 4),
            "percent_indexed": _float(info.get("percent_indexed"), default=1.0),
        }

    def count_indexed(self) -> int:
        return self.index_info()["num_docs"]

    def wait_until_indexed(self, timeout_s: float = 30.0) -> None:
        """HSETs into an existing index are indexed synchronously, but a new index over
        existing keys is built in the background; wait for that scan to finish."""
        deadline = time.monotonic() + timeout_s
        while self.index_info()["percent_indexed"] < 1.0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"index {self.index_name} still scanning after {timeout_s}s")
            time.sleep(0.02)

    # retrieval

    def candidate_retrieve(
        self,
        query_vec: Any,
        *,
        category: str | None = None,
        brand: str | None = None,
        min_price: float | None = None,
        max_price: float | None = None,
        in_stock_only: bool = False,
        min_rating: float | None = None,
        text_match: str | None = None,
        text_field: str = "description",
        k: int = 10,
        session_vec: Any = None,
        session_weight: float = 0.3,
    ) -> list[Candidate]:
        """The k nearest products that pass every filter, closest first, in one FT.SEARCH."""
        _check_k(k)
        filter_clause = build_filter_clause(
            category=category,
            brand=brand,
            min_price=min_price,
            max_price=max_price,
            in_stock_only=in_stock_only,
            min_rating=min_rating,
            text_match=text_match,
            text_field=text_field,
        )
        return self._knn(filter_clause, query_vec, k, session_vec, session_weight)

    def _knn(
        self, filter_clause: str, query_vec: Any, k: int, session_vec: Any, session_weight: float
    ) -> list[Candidate]:
        vector = np.frombuffer(vector_to_bytes(query_vec, self.vector_dim), dtype="<f4")
        if session_vec is not None:
            session = np.frombuffer(vector_to_bytes(session_vec, self.vector_dim), dtype="<f4")
            vector = blend_session(vector, session, session_weight)
        query, params = knn_query(filter_clause, k, self.ef_runtime, self.hybrid_policy)
        params["vec"] = vector_to_bytes(vector, self.vector_dim)
        returned = (*PRODUCT_FIELDS, SCORE_FIELD)
        response = self.redis.execute_command(
            "FT.SEARCH", self.index_name, query,
            "PARAMS", str(2 * len(params)), *[item for pair in params.items() for item in pair],
            "RETURN", str(len(returned)), *returned,
            "SORTBY", SCORE_FIELD,
            "LIMIT", "0", str(k),
            "DIALECT", "2",
        )  # fmt: skip
        return [candidate_from_row(key, fields, self.key_prefix) for key, fields in search_rows(response)]

    def recommend(
        self,
        query_vec: Any,
        *,
        user_id: str | None = None,
        k: int = 10,
        use_session: bool = True,
        use_rerank: bool = True,
        overfetch: int = DEFAULT_RERANK_OVERFETCH,
        session_weight: float = 0.3,
        affinity_weight: float = 0.15,
        **filters: Any,
    ) -> Recommendation:
        """The whole demo flow: blend in the user's session vector, retrieve with filters,
        and rerank by category affinity over `k * overfetch` candidates before cutting to k."""
        _check_k(k)
        filter_clause = build_filter_clause(**filters)
        features = self.get_user_features(user_id) if user_id is not None else {}
        session_vec = features.get("session_vec") if use_session else None
        started = time.perf_counter()
        fetch_k = k * max(1, overfetch) if use_rerank else k
        candidates = self._knn(filter_clause, query_vec, fetch_k, session_vec, session_weight)
        searched = time.perf_counter()
        candidates = rerank(candidates, features, affinity_weight, k=k) if use_rerank else candidates[:k]
        reranked = time.perf_counter()
        return Recommendation(
            candidates=candidates,
            filter_clause=filter_clause,
            used_session=session_vec is not None,
            used_rerank=use_rerank,
            search_ms=(searched - started) * 1000,
            rerank_ms=(reranked - searched) * 1000,
            features=features,
        )

    # users

    def record_click(
        self, user_id: str, product_id: str, ewma_alpha: float = 0.4, affinity_step: float = 1.0
    ) -> dict[str, Any]:
        """Fold one click into the user's features atomically (one Lua call); KeyError if the
        product does not exist."""
        if not 0.0 < ewma_alpha <= 1.0:
            raise ValueError("ewma_alpha must be in (0, 1]")
        try:
            category, affinity, clicks, session_updated, repaired = self._record_click(
                keys=[self.product_key(product_id), self.features_key(user_id), self.recent_clicks_key(user_id)],
                args=[
                    repr(float(ewma_alpha)), repr(float(affinity_step)), self.vector_dim, product_id, RECENT_CLICKS_KEPT,
                    EMBEDDING_FIELD, SESSION_VEC_FIELD, AFFINITY_PREFIX,
                    CLICKS_FIELD, LAST_CLICKED_ID_FIELD, LAST_CLICKED_CATEGORY_FIELD,
                ],
            )  # fmt: skip
        except redis.ResponseError as exc:
            if "NOPRODUCT" in str(exc):
                raise KeyError(product_id) from None
            raise
        if repaired:
            log.warning("user %s: clicks or an affinity held a non-number and was restarted from 0", user_id)
        if not session_updated:
            log.warning(
                "product %s has no valid %d-d embedding: click counted, session vector unchanged",
                product_id,
                self.vector_dim,
            )
        return {
            "category": _text(category),
            "affinity": _float(affinity),
            "clicks": int(clicks),
            "last_clicked_id": product_id,
            "session_updated": bool(session_updated),
        }

    def get_user_features(self, user_id: str) -> dict[str, Any]:
        raw = {_text(k): v for k, v in self.redis.hgetall(self.features_key(user_id)).items()}
        session_vec = bytes_to_vector(raw.get(SESSION_VEC_FIELD), self.vector_dim)
        if session_vec is None and raw.get(SESSION_VEC_FIELD) is not None:
            log.warning(
                "user %s: stored session vector has %d bytes, expected %d; ignoring it",
                user_id, len(raw[SESSION_VEC_FIELD]), self.vector_dim * 4,
            )  # fmt: skip
        affinities = {
            name[len(AFFINITY_PREFIX) :]: _float(value)
            for name, value in raw.items()
            if name.startswith(AFFINITY_PREFIX)
        }
        last_id, last_category = raw.get(LAST_CLICKED_ID_FIELD), raw.get(LAST_CLICKED_CATEGORY_FIELD)
        return {
            "session_vec": session_vec,
            "affinities": affinities,
            "clicks": int(_float(raw.get(CLICKS_FIELD))),
            "last_clicked_id": _text(last_id) if last_id is not None else None,
            "last_clicked_category": _text(last_category) if last_category is not None else None,
        }

    def recent_clicks(self, user_id: str) -> list[str]:
        """Product ids the user clicked, newest first (at most RECENT_CLICKS_KEPT)."""
        return [_text(pid) for pid in self.redis.lrange(self.recent_clicks_key(user_id), 0, RECENT_CLICKS_KEPT - 1)]

    def reset_user(self, user_id: str) -> None:
        self.redis.delete(self.features_key(user_id), self.recent_clicks_key(user_id))

    # products

    def refresh_embedding(self, product_id: str, vector: Any) -> None:
        """Replace one item's vector in place; the index picks it up on write. ValueError for a
        wrong shape, KeyError for an unknown id (never creates a key)."""
        blob = vector_to_bytes(vector, self.vector_dim)
        try:
            self._refresh_embedding(keys=[self.product_key(product_id)], args=[EMBEDDING_FIELD, blob])
        except redis.ResponseError as exc:
            if "NOPRODUCT" in str(exc):
                raise KeyError(product_id) from None
            raise

    def get_products(self, product_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Display fields of the given products (no vectors); unknown ids are left out."""
        pipe = self.redis.pipeline(transaction=False)
        for pid in product_ids:
            pipe.hmget(self.product_key(pid), *PRODUCT_FIELDS)
        found = {}
        for pid, values in zip(product_ids, pipe.execute(), strict=True):
            if all(v is None for v in values):  # no such key; a hash that lacks a field still exists
                continue
            fields = {name: _text(v) for name, v in zip(PRODUCT_FIELDS, values, strict=True) if v is not None}
            found[pid] = product_summary(pid, fields)
        return found

    def list_products(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Up to `limit` indexed products (no vectors), sorted by price."""
        response = self.redis.execute_command(
            "FT.SEARCH", self.index_name, "*",
            "RETURN", str(len(PRODUCT_FIELDS)), *PRODUCT_FIELDS,
            "SORTBY", "price", "ASC",
            "LIMIT", "0", str(limit),
            "DIALECT", "2",
        )  # fmt: skip
        return [
            product_summary(key[len(self.key_prefix) :] if key.startswith(self.key_prefix) else key, fields)
            for key, fields in search_rows(response)
        ]

    def _distinct_values(self, field_name: str) -> list[str]:
        """Distinct values of a TAG field over the indexed documents, as written.

        FT.AGGREGATE GROUPBY rather than FT.TAGVALS: TAGVALS lower-cases ("urban loom") and
        keeps values of deleted documents until Redis garbage-collects them.
        """
        response = self.redis.execute_command("FT.AGGREGATE", self.index_name, "*", "GROUPBY", "1", f"@{field_name}")
        values = {fields.get(field_name, "") for fields in aggregate_rows(response)}
        return sorted(v for v in values if v)

    def list_categories(self) -> list[str]:
        return self._distinct_values("category")

    def list_brands(self) -> list[str]:
        return self._distinct_values("brand")


def product_summary(product_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """A product as lists show it: the display fields without the long description."""
    shown = product_display_fields(product_id, fields)
    del shown["description"]
    return {"id": product_id, **shown}
