"""RedisRecommender: vector KNN with structured pre-filters in one FT.SEARCH, per-user signals
(session vector, category affinities, dismissals, what was seen) updated atomically on every
click, a "for you" feed, "more like this", time-decayed popularity, and hot embedding refresh.

Everything Redis sees (key names, hash fields, the index schema, the query shape, the scripts)
is defined in this module and nowhere else. It follows the data model shared by the other ports
of Redis' recommendation-engine tutorial, so their data and ours are interchangeable, and it is
the only module that talks to Redis. The ranking math itself lives in ranking.py, without Redis.
"""

from __future__ import annotations

import base64
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import redis
import redis.cluster

from ranking import (
    POPULARITY_REBASE_HALF_LIVES,
    Candidate,
    DictResult,
    RankingConfig,
    Recommendation,
    UserFeatures,
    Vector,
    Why,
    blend_query,
    boost_category,
    check_unit_interval,
    decayed_popularity,
    faded_affinities,
    finite_number,
    maximal_marginal_relevance,
    negative_weight,
    rescore_by_affinity,
    score_order,
    session_fades_in_s,
    session_is_live,
    session_weight,
)
from ranking import rerank as rerank_by_affinity

__all__ = [
    "Candidate",
    "ClickResult",
    "DismissResult",
    "IndexInfo",
    "IndexMissingError",
    "ProductNotFoundError",
    "RankingConfig",
    "Recommendation",
    "RecommenderError",
    "RedisRecommender",
    "ReplicationTimeoutError",
    "SearchFilters",
    "UserFeatures",
    "UserState",
    "Why",
    "WriteRefusedError",
    "build_filter_clause",
]

log = logging.getLogger(__name__)

# --- the data model -------------------------------------------------------------------------

PRODUCT_TEXT_FIELDS = ("name", "description")
PRODUCT_NUMERIC_FIELDS = ("price", "rating")
PRODUCT_FIELDS = ("name", "description", "category", "brand", "price", "rating", "in_stock")
EMBEDDING_FIELD = "embedding"
SCORE_FIELD = "vector_score"

# user:<id>:features, as every port writes it...
SESSION_VEC_FIELD = "session_vec"
AFFINITY_PREFIX = "aff:"
CLICKS_FIELD = "clicks"
LAST_CLICKED_ID_FIELD = "last_clicked_id"
LAST_CLICKED_CATEGORY_FIELD = "last_clicked_category"
# ...and what only this port adds to it (other ports ignore fields they don't know).
NEGATIVE_VEC_FIELD = "negative_vec"
SESSION_AT_FIELD = "session_at"
NEGATIVE_AT_FIELD = "negative_at"
AFFINITY_AT_FIELD = "affinity_at"

RECENT_CLICKS_KEPT = 6
DEFAULT_SEEN_KEPT = 200
DEFAULT_USER_TTL_S = 30 * 86400
# The largest k (and over-fetch) one query may ask for: RediSearch's own MAXSEARCHRESULTS
# default is 10,000 rows.
MAX_K = 10_000
HYBRID_POLICIES = (None, "BATCHES", "ADHOC_BF")
# Redis' own EF_RUNTIME (10) gives recall@10 0.65 at 100k items; 100 gives 0.99 for +0.14 ms
# p50 (bench/retrieval.py, 2 cores). Small catalogs are exact either way.
DEFAULT_EF_RUNTIME = 100
# all-MiniLM-L6-v2's dimension, under the reference's name for it.
VECTOR_DIM_DEFAULT = 384
TAG_SEPARATOR = ","


# --- errors: one hierarchy, classified in one place -------------------------------------------


class RecommenderError(Exception):
    """Base of the errors this library raises for conditions of Redis (not of the arguments:
    those are ValueError), and of the data (an unknown product: ProductNotFoundError)."""


class IndexMissingError(RecommenderError, redis.ResponseError):
    """The search index does not exist (never created, or dropped). A ResponseError too, so code
    written against plain redis-py keeps catching it."""


class WriteRefusedError(RecommenderError, redis.ResponseError):
    """Redis refused a write: its disk is full or unwritable (MISCONF), it reached maxmemory
    (OOM), or this is a read-only replica (READONLY). `reason` says which, in words."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"Redis refused the write: {reason} ({detail})")
        self.reason = reason


class ProductNotFoundError(RecommenderError, KeyError):
    """No product with that id. A KeyError too, as the reference raises, so `except KeyError`
    keeps working; `product_id` names it."""

    def __init__(self, product_id: str) -> None:
        super().__init__(product_id)
        self.product_id = product_id


class ReplicationTimeoutError(RecommenderError):
    """The write was applied on the primary but fewer replicas than required acknowledged it in
    time (WAIT), so a failover could still lose it."""

    def __init__(self, acked: int, required: int, timeout_ms: int) -> None:
        super().__init__(f"only {acked} of {required} replica(s) acknowledged the write within {timeout_ms} ms")
        self.acked = acked
        self.required = required


def classify_response_error(exc: redis.ResponseError) -> Exception:
    """The library's error for a Redis error reply, or the reply itself when it is none of ours.
    The only place that reads Redis' error texts. redis-py already turns OOM and READONLY into
    classes of their own (and strips the code from the text); MISCONF it leaves as text, which
    in a pipeline is prefixed with the failing command."""
    message = str(exc)
    lowered = message.lower()
    if "no such index" in lowered or "unknown index name" in lowered:
        return IndexMissingError(message)
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or message.startswith("OOM "):
        return WriteRefusedError("memory is full", message)
    if isinstance(exc, redis.exceptions.ReadOnlyError) or message.startswith("READONLY "):
        return WriteRefusedError("this is a read-only replica", message)
    if "MISCONF" in message:
        return WriteRefusedError("the disk is full or not writable", message)
    if "NOREPLICAS" in message:  # the primary's min-replicas-to-write, also prefixed in pipelines
        return WriteRefusedError("too few replicas are in sync with the primary", message)
    return exc


@contextmanager
def _classified_errors() -> Iterator[None]:
    try:
        yield
    except RecommenderError:
        raise
    except redis.ResponseError as exc:
        raise classify_response_error(exc) from exc


# --- validation helpers -----------------------------------------------------------------------


def _check_literal(name: str, value: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError(f"{name} contains control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: Redis only takes valid UTF-8
        raise ValueError(f"{name} is not valid Unicode text (it contains a lone surrogate)") from None
    return value


def check_k(k: Any, name: str = "k") -> int:
    """k is a whole number from 1 to MAX_K: 0 or a negative k is a caller's mistake, not an
    empty answer."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise ValueError(f"{name} must be an integer between 1 and {MAX_K}, got {k!r}")
    return int(k)


def check_user_id(user_id: Any) -> str:
    """User ids become key names: no spaces, control characters or braces (a brace would change
    the Redis Cluster hash slot of the user's keys and split them across nodes)."""
    if not isinstance(user_id, str) or not user_id:
        raise ValueError(f"user_id must be a non-empty string, got {user_id!r}")
    if any(ch.isspace() or ord(ch) < 32 or ch in "{}" for ch in user_id):
        raise ValueError(f"user_id must not contain spaces, control characters or braces, got {user_id!r}")
    _check_literal("user_id", user_id)
    return user_id


def field_problem(name: str, value: str) -> str | None:
    """What would make a product field misbehave in the index, for every writer to check:
    RediSearch splits TAG values on commas (one category "a,b" would become two tags), and
    a key-unsafe id could not be addressed by the API."""
    if name in ("category", "brand") and TAG_SEPARATOR in value:
        return f"{name} must not contain {TAG_SEPARATOR!r} (the tag separator), got {value!r}"
    if name == "id" and any(ch.isspace() or ord(ch) < 32 for ch in value):
        return f"id must not contain spaces or control characters, got {value!r}"
    return None


def check_product_id(product_id: Any) -> str:
    if not isinstance(product_id, str) or not product_id:
        raise ValueError(f"product_id must be a non-empty string, got {product_id!r}")
    problem = field_problem("id", product_id)
    if problem:
        raise ValueError(f"product_{problem}")
    return _check_literal("product_id", product_id)


# --- filters: one typed request, one clause ---------------------------------------------------


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


def _range(field_name: str, low: float | None, high: float | None) -> str:
    low_text = "-inf" if low is None else repr(low)
    high_text = "+inf" if high is None else repr(high)
    return f"@{field_name}:[{low_text} {high_text}]"


@dataclass(frozen=True)
class SearchFilters:
    """What a result must be: the structured pre-filter of the hybrid query.

    Travels unchanged from the HTTP parser (or a script) to FT.SEARCH, and checks its own rules
    once, here: values are literals (TAG values are escaped character by character and the TEXT
    match is one quoted phrase, so `x} | @brand:{y` can neither widen the query nor break it),
    prices and ratings are finite numbers, and min_price ≤ max_price. None or an empty string
    means "any" (the reference treats `category=""` so, and so does a form's "Any" option).
    """

    category: str | None = None
    brand: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    in_stock_only: bool = False
    min_rating: float | None = None
    text_match: str | None = None
    text_field: str = "description"

    def __post_init__(self) -> None:
        for name in ("category", "brand", "text_match"):
            value = getattr(self, name)
            if value is not None:
                _check_literal(name, value)
                object.__setattr__(self, name, value.strip() or None)
        for name in ("min_price", "max_price", "min_rating"):
            object.__setattr__(self, name, finite_number(name, getattr(self, name)))
        if not isinstance(self.in_stock_only, (bool, np.bool_)):
            raise ValueError(f"in_stock_only must be a boolean, got {self.in_stock_only!r}")
        object.__setattr__(self, "in_stock_only", bool(self.in_stock_only))
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError(f"min_price ({self.min_price:g}) is greater than max_price ({self.max_price:g})")
        if self.text_field not in PRODUCT_TEXT_FIELDS:
            raise ValueError(f"text_field must be one of {PRODUCT_TEXT_FIELDS}, got {self.text_field!r}")

    def clause(self) -> str:
        """The pre-filter half of the hybrid query; `*` when nothing filters."""
        parts = [f"@{name}:{{{escape_tag_value(value)}}}" for name, value in self._tags() if value is not None]
        if self.in_stock_only:
            parts.append("@in_stock:{true}")
        if self.min_price is not None or self.max_price is not None:
            parts.append(_range("price", self.min_price, self.max_price))
        if self.min_rating is not None:
            parts.append(_range("rating", self.min_rating, None))
        if self.text_match is not None:
            parts.append(f"@{self.text_field}:{escape_text_phrase(self.text_match)}")
        return " ".join(parts) if parts else "*"

    def _tags(self) -> tuple[tuple[str, str | None], ...]:
        return (("category", self.category), ("brand", self.brand))


NO_FILTERS = SearchFilters()


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
    """The FT.SEARCH pre-filter for these filters (`SearchFilters(...).clause()`); raises
    ValueError for a value that could not be a literal or a range that cannot match."""
    return SearchFilters(
        category=category,
        brand=brand,
        min_price=min_price,
        max_price=max_price,
        in_stock_only=in_stock_only,
        min_rating=min_rating,
        text_match=text_match,
        text_field=text_field,
    ).clause()


def knn_query(
    filter_clause: str, k: int, ef_runtime: int | None, hybrid_policy: str | None
) -> tuple[str, dict[str, str | bytes]]:
    """The hybrid query string and its parameters (the vector is added by the caller).

    RediSearch accepts HYBRID_POLICY only when there is a filter, and EF_RUNTIME only when
    the HNSW graph is walked (not with ADHOC_BF, which scores the filtered set directly).
    """
    attributes: list[str] = []
    params: dict[str, str | bytes] = {}
    filtered = filter_clause != "*"
    if hybrid_policy and filtered:
        attributes.append(f"HYBRID_POLICY {hybrid_policy}")
    if ef_runtime is not None and not (filtered and hybrid_policy == "ADHOC_BF"):
        attributes.append("EF_RUNTIME $ef")
        params["ef"] = str(ef_runtime)
    knn = " ".join([f"KNN {k} @{EMBEDDING_FIELD} $vec", *attributes, f"AS {SCORE_FIELD}"])
    return f"({filter_clause})=>[{knn}]", params


# --- settings and typed results ---------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class ClickResult(DictResult):
    """What one click did: the item's category, that category's affinity after the click, the
    user's click count, the item clicked, and whether the session vector moved (False when the
    item has no valid vector: the click still counts)."""

    category: str
    affinity: float
    clicks: int
    last_clicked_id: str
    session_updated: bool


@dataclass(frozen=True, eq=False, repr=False)
class DismissResult(DictResult):
    """What one dismissal did: the item's category and its affinity after the step down, the
    item, and whether the negative vector moved (False when the item has no valid vector)."""

    category: str
    affinity: float
    product_id: str
    negative_updated: bool


@dataclass(frozen=True, eq=False, repr=False)
class IndexInfo(DictResult):
    """The index's size and health from FT.INFO: documents indexed, hashes the index refused,
    the vector index's memory in MB, and the share of existing keys scanned (1.0 once a new
    index has caught up)."""

    num_docs: int
    indexing_failures: int
    vector_index_size_mb: float
    percent_indexed: float


@dataclass(frozen=True)
class UserState:
    """What a user's panel shows, read together: the stored features (unfaded), the recent clicks
    (newest first), the dismissed products (sorted), and the names of those products (ids of
    products that no longer exist, or have no name, are not in product_names)."""

    features: UserFeatures
    recent_clicks: list[str]
    dismissed: list[str]
    product_names: dict[str, str]


@dataclass(frozen=True)
class _UserContext:
    """What one request needs of a user, read in one round trip."""

    features: UserFeatures
    excluded: frozenset[str]


# --- vectors and product hashes ---------------------------------------------------------------


def vector_to_bytes(vector: npt.ArrayLike, dim: int) -> bytes:
    """Validate and pack one vector as little-endian float32 bytes."""
    array = np.asarray(vector, dtype="<f4")
    if array.shape != (dim,):
        raise ValueError(f"expected a vector of shape ({dim},), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("vector contains NaN or infinity")
    return array.tobytes()


def bytes_to_vector(blob: bytes | None, dim: int) -> Vector | None:
    """Unpack float32 bytes; anything of the wrong length is treated as absent."""
    if blob is None or len(blob) != dim * 4:
        return None
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


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
        name: finite_number(f"product {product.get('id')!r}: {name}", product[name]) for name in PRODUCT_NUMERIC_FIELDS
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


# --- reading Redis' replies -------------------------------------------------------------------


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


def _raw_rows(response: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, {field: raw value}) from FT.SEARCH, whichever protocol the client speaks.

    RESP2: [total, key, [field, value, ...], key, [...], ...]
    RESP3: {total_results, results: [{id, extra_attributes: {field: value}}]}, keys as bytes
    or str depending on decode_responses. This is the one place that knows both shapes.
    A RESP3 search that hits Search's query timeout (policy "return", as on a busy replica)
    may carry a result without an id: it is no product and is skipped.
    """
    if isinstance(response, dict):
        results = response.get(b"results", response.get("results")) or []
        for result in results:
            key = result.get(b"id", result.get("id"))
            if key is None:
                continue
            attributes = result.get(b"extra_attributes", result.get("extra_attributes")) or {}
            yield _text(key), dict(zip(_field_names(tuple(attributes)), attributes.values(), strict=True))
        return
    for i in range(1, len(response) - 1, 2):
        flat = response[i + 1] or []
        yield _text(response[i]), dict(zip(_field_names(tuple(flat[0:-1:2])), flat[1::2], strict=True))


# A row's field names as replies spell them (bytes, or str from a decoding client), decoded once
# per combination: every row of every search repeats the same one or two. Bounded, in case
# replies name fields without end.
_FIELD_NAMES: dict[tuple[Any, ...], tuple[str, ...]] = {}
_FIELD_NAMES_KEPT = 256


def _field_names(raw: tuple[Any, ...]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(raw)
    if names is None:
        names = tuple(_text(name) for name in raw)
        if len(_FIELD_NAMES) < _FIELD_NAMES_KEPT:
            _FIELD_NAMES[raw] = names
    return names


def search_rows(response: Any) -> list[tuple[str, dict[str, str]]]:
    """(key, {field: text}) rows from an FT.SEARCH reply of either protocol."""
    return [(key, {name: _text(value) for name, value in raw.items()}) for key, raw in _raw_rows(response)]


def aggregate_rows(response: Any) -> list[dict[str, str]]:
    """Field maps from FT.AGGREGATE: RESP2 [total, [field, value, ...], ...]; RESP3
    {results: [{extra_attributes: {...}}]}. Like search_rows, the one place for both shapes."""
    if isinstance(response, dict):
        results = response.get(b"results", response.get("results")) or []
        return [
            {_text(k): _text(v) for k, v in (r.get(b"extra_attributes", r.get("extra_attributes")) or {}).items()}
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


def product_summary(product_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """A product as lists show it: the display fields without the long description."""
    shown = product_display_fields(product_id, fields)
    del shown["description"]
    return {"id": product_id, **shown}


def candidate_from_row(product_id: str, raw: Mapping[str, Any]) -> Candidate:
    """One FT.SEARCH row as a Candidate. Healthy rows take the short path (one conversion per
    field, no checks to log, the Candidate built directly); any other row (a field missing or
    garbled, values already decoded to str) goes through product_display_fields, which names a
    problem once."""
    score = raw.get(SCORE_FIELD)
    try:
        distance = 2.0 if score is None else float(score)  # float() takes the reply's bytes as they are
    except (TypeError, ValueError):
        distance = 2.0
    if not math.isfinite(distance):
        distance = 2.0
    # Rows of popular() and its rating fallback have no distance: their why says so by omission.
    why = Why(vector_distance=None if score is None else distance)
    try:
        price, rating, in_stock = float(raw["price"]), float(raw["rating"]), _STOCK_WORDS[raw["in_stock"]]
        if math.isfinite(price) and math.isfinite(rating):
            return Candidate(
                product_id,
                raw["name"].decode("utf-8", "replace"),
                raw["description"].decode("utf-8", "replace"),
                raw["category"].decode("utf-8", "replace"),
                raw["brand"].decode("utf-8", "replace"),
                price,
                rating,
                in_stock,
                distance,
                distance,
                why,
            )
    except (KeyError, ValueError, TypeError, AttributeError):  # a field missing or garbled, or str values
        pass
    shown = product_display_fields(product_id, {n: _text(v) for n, v in raw.items() if n != EMBEDDING_FIELD})
    return Candidate(id=product_id, **shown, vector_distance=distance, score=distance, why=why)


_STOCK_WORDS = {b"true": True, b"false": False}


# --- scripts ----------------------------------------------------------------------------------

# One click or dismissal, done entirely inside Redis so that concurrent events of one user
# serialise: fold the item's vector into the session (click) or negative (dismiss) vector as an
# EWMA against the *faded* previous one, fade every category affinity to now and step the item's
# category up or down, remember what was seen, and refresh the expiry of every key of the user.
# A client-side read-modify-write would let two clicks read the same session and lose one.
#
# It touches only the user's own keys, which share one Redis Cluster slot: the product's vector
# and category are read before, by the caller, and passed in, and popularity (another slot) is
# counted by its own script. The same code then runs on one Redis, a cluster or a sharding proxy.
#
# Everything is read and computed before the first write: Redis does not roll a script back,
# so a failure half-way would leave a half-applied event. Counters that hold junk restart at
# 0 (reported back as `repaired`) instead of failing after the vector was written.
#
# KEYS: features hash, recent clicks list, seen zset, dismissed set
# ARGV: see RedisRecommender._user_event_args
USER_EVENT_LUA = """
local features, recent, seen, dismissed = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local mode, product_id, category, blob = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local alpha, step, dim, now = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local vector_half_life, affinity_half_life = tonumber(ARGV[9]), tonumber(ARGV[10])
local seen_kept, recent_kept, ttl = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local vec_field, vec_at_field, aff_at_field = ARGV[14], ARGV[15], ARGV[16]
local aff_prefix, clicks_field, last_id_field, last_cat_field = ARGV[17], ARGV[18], ARGV[19], ARGV[20]

local function finite(raw)
  local n = tonumber(raw)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then return nil end
  return n
end
local function faded(since, half_life)
  local t = finite(since)
  if t == nil or now <= t then return 1 end
  return 0.5 ^ ((now - t) / half_life)
end
local function num(n) return string.format('%.17g', n) end

local stored = {}
local flat = redis.call('HGETALL', features)
for i = 1, #flat, 2 do stored[flat[i]] = flat[i + 1] end

local repaired = 0
local writes = {}
local aff_fade = faded(stored[aff_at_field], affinity_half_life)
local aff_field = aff_prefix .. category
local affinity = 0
for name, raw in pairs(stored) do
  if string.sub(name, 1, #aff_prefix) == aff_prefix then
    local value = finite(raw)
    if value == nil then repaired = 1; value = 0 end
    value = value * aff_fade
    if name == aff_field then affinity = value else
      table.insert(writes, name); table.insert(writes, num(value))
    end
  end
end
affinity = affinity + step
table.insert(writes, aff_field); table.insert(writes, num(affinity))
table.insert(writes, aff_at_field); table.insert(writes, num(now))

local clicks = finite(stored[clicks_field])
if stored[clicks_field] and not clicks then repaired = 1 end
clicks = math.floor(clicks or 0)
if mode == 'click' then
  clicks = clicks + 1
  table.insert(writes, clicks_field); table.insert(writes, clicks)
  table.insert(writes, last_id_field); table.insert(writes, product_id)
  table.insert(writes, last_cat_field); table.insert(writes, category)
end

local updated = 0
if #blob == dim * 4 then
  local fmt = '<' .. string.rep('f', dim)
  local v = {struct.unpack(fmt, blob)}
  local previous = stored[vec_field]
  if previous and #previous == dim * 4 then
    local p = {struct.unpack(fmt, previous)}
    local keep = (1 - alpha) * faded(stored[vec_at_field], vector_half_life)
    for i = 1, dim do v[i] = alpha * v[i] + keep * p[i] end
  end
  local norm = 0
  for i = 1, dim do norm = norm + v[i] * v[i] end
  norm = math.sqrt(norm)
  if norm > 0 and norm == norm and norm ~= math.huge then
    for i = 1, dim do v[i] = v[i] / norm end
    table.insert(writes, vec_field); table.insert(writes, struct.pack(fmt, unpack(v, 1, dim)))
    table.insert(writes, vec_at_field); table.insert(writes, num(now))
    updated = 1
  end
end

redis.call('HSET', features, unpack(writes))
if mode == 'click' then
  redis.call('LPUSH', recent, product_id)
  redis.call('LTRIM', recent, 0, recent_kept - 1)
else
  redis.call('SADD', dismissed, product_id)
end
redis.call('ZADD', seen, now, product_id)
redis.call('ZREMRANGEBYRANK', seen, 0, -(seen_kept + 1))
if ttl > 0 then
  for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, ttl) end
end
return {num(affinity), clicks, updated, repaired}
"""

# One click's share of popularity (see ranking.py for the arithmetic): add 2^((now − epoch)/h)
# to the product's sum; when that exponent passes the limit, scale every sum down and move the
# epoch to now, so the numbers stay far from overflow whatever the half-life.
# KEYS: popularity zset, epoch key (one slot). ARGV: product id, now, half-life, limit.
POPULARITY_LUA = """
local now, half_life, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local epoch = tonumber(redis.call('GET', KEYS[2]))
if epoch == nil then
  epoch = now
  redis.call('SET', KEYS[2], string.format('%.17g', now))
end
local exponent = (now - epoch) / half_life
if exponent > limit then
  local scale = 0.5 ^ exponent
  local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #members, 2 do
    redis.call('ZADD', KEYS[1], string.format('%.17g', tonumber(members[i + 1]) * scale), members[i])
  end
  redis.call('SET', KEYS[2], string.format('%.17g', now))
  exponent = 0
end
return redis.call('ZINCRBY', KEYS[1], string.format('%.17g', 2 ^ exponent), ARGV[1])
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


# --- the Redis-facing class -----------------------------------------------------------------


class RedisRecommender:
    """Owns the product index, the per-user signals, popularity and the queries over them.

    The client must return bytes (decode_responses=False): vectors are binary. RESP2 and RESP3
    clients both work, and so does a `redis.cluster.RedisCluster` (every script touches the keys
    of one slot; FT.* needs a Redis whose Search spans shards).
    """

    def __init__(
        self,
        redis_client: redis.Redis | redis.cluster.RedisCluster | None = None,
        index_name: str = "recommend:idx",
        key_prefix: str = "product:",
        user_key_prefix: str = "user:",
        vector_dim: int = VECTOR_DIM_DEFAULT,
        *,
        config: RankingConfig | None = None,
        hnsw_m: int | None = None,
        hnsw_ef_construction: int | None = None,
        ef_runtime: int | None = DEFAULT_EF_RUNTIME,
        hybrid_policy: str | None = None,
        user_ttl_s: int = DEFAULT_USER_TTL_S,
        seen_kept: int = DEFAULT_SEEN_KEPT,
        read_clients: Sequence[redis.Redis] = (),
        min_replicas_ack: int = 0,
        replica_ack_timeout_ms: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Arguments after vector_dim:

        config: the RankingConfig (weights, half-lives, over-fetch).
        hnsw_m, hnsw_ef_construction: the graph's shape, used by create_index (None keeps
        RediSearch's defaults, M 16 and EF_CONSTRUCTION 200, and the exact shared schema).
        ef_runtime: search breadth per query, more recall for more time (None: Redis' 10).
        hybrid_policy: force BATCHES or ADHOC_BF for filtered queries (None: Redis chooses).
        user_ttl_s: every key of a user expires this long after their last click or dismissal
        (0: never), so abandoned users do not fill Redis.
        seen_kept: how many recent clicks and dismissals are remembered for exclude_clicked.
        read_clients: replicas for FT.SEARCH / FT.AGGREGATE, used in turn; writes and the user's
        own state always go to `redis_client`, so a click shows in the very next search.
        min_replicas_ack: after each write, WAIT for this many replicas (up to
        replica_ack_timeout_ms) and raise ReplicationTimeoutError when fewer acknowledge.
        clock: seconds since the epoch; inject one to test fading without sleeping.

        Raises ValueError for a setting out of range, or a client that decodes responses.
        """
        for name, value in (
            ("hnsw_m", hnsw_m),
            ("hnsw_ef_construction", hnsw_ef_construction),
            ("ef_runtime", ef_runtime),
        ):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if hybrid_policy not in HYBRID_POLICIES:
            raise ValueError(f"hybrid_policy must be one of {HYBRID_POLICIES}, got {hybrid_policy!r}")
        for name, count in (("user_ttl_s", user_ttl_s), ("min_replicas_ack", min_replicas_ack)):
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError(f"{name} must be a whole number of at least 0, got {count!r}")
        check_k(seen_kept, "seen_kept")
        self.redis = redis_client if redis_client is not None else redis.Redis()
        self.is_cluster = isinstance(self.redis, redis.cluster.RedisCluster)
        if min_replicas_ack and self.is_cluster:
            raise ValueError("min_replicas_ack is not supported on a Redis Cluster client")
        for client in (self.redis, *read_clients):
            if client.get_connection_kwargs().get("decode_responses"):
                raise ValueError("RedisRecommender needs clients with decode_responses=False: vectors are binary")
        self.index_name = index_name
        self.key_prefix = key_prefix
        self.user_key_prefix = user_key_prefix
        self.vector_dim = vector_dim
        self.config = config if config is not None else RankingConfig()
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self.ef_runtime = ef_runtime
        self.hybrid_policy = hybrid_policy
        self.user_ttl_s = user_ttl_s
        self.seen_kept = seen_kept
        self.read_clients = list(read_clients)
        self._next_reader = itertools.cycle(range(len(self.read_clients))) if self.read_clients else None
        self._reader_lock = threading.Lock()
        self.min_replicas_ack = min_replicas_ack
        self.replica_ack_timeout_ms = replica_ack_timeout_ms
        self.clock = clock
        self._user_event = self.redis.register_script(USER_EVENT_LUA)
        self._add_popularity = self.redis.register_script(POPULARITY_LUA)
        self._refresh_embedding = self.redis.register_script(REFRESH_EMBEDDING_LUA)

    # keys: the only place that names them

    def product_key(self, product_id: str) -> str:
        """`product:<id>` (key_prefix + id), the product hash every port writes."""
        return f"{self.key_prefix}{product_id}"

    def features_key(self, user_id: str) -> str:
        """`user:<id>:features`, exactly as every port writes it."""
        return f"{self.user_key_prefix}{user_id}:features"

    def user_key(self, user_id: str) -> str:
        """The reference's name for features_key."""
        return self.features_key(user_id)

    def _user_keys(self, user_id: str) -> tuple[str, str, str, str]:
        """features, recent clicks, seen, dismissed: the last three hash-tagged to the features
        key so that the four share one Redis Cluster slot and one script can touch them all."""
        features = self.features_key(check_user_id(user_id))
        tag = "{" + features + "}"
        return features, f"{tag}:recent", f"{tag}:seen", f"{tag}:dismissed"

    def _legacy_recent_key(self, user_id: str) -> str:
        """Where versions before the cluster-safe keys kept recent clicks; reset_user removes it."""
        return f"{self.user_key_prefix}{user_id}:recent_clicks"

    def _popularity_keys(self) -> tuple[str, str]:
        tag = "{" + f"{self.index_name}:popularity" + "}"
        return tag, f"{tag}:epoch"

    # index

    def index_schema(self) -> list[str]:
        """FT.CREATE's SCHEMA arguments: the fields every port indexes, and the HNSW cosine vector
        field (with M and EF_CONSTRUCTION only when hnsw_m / hnsw_ef_construction are set)."""
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
        """Whether the index exists; other Redis errors are raised, not taken for "no"."""
        try:
            self.index_info()
        except IndexMissingError:
            return False
        return True

    def create_index(self) -> bool:
        """Create the index if it is missing; True when this call created it."""
        if self.index_exists():
            return False
        try:
            self.redis.execute_command(
                "FT.CREATE", self.index_name, "ON", "HASH", "PREFIX", "1", self.key_prefix,
                # Index every word: with RediSearch's default stop-word list a TEXT filter that
                # holds one ("down for bitter", "and") matches nothing. It costs about a third
                # more inverted index (bench/stopwords.py); an index another port created keeps
                # its own list.
                "STOPWORDS", "0",
                "SCHEMA", *self.index_schema(),
            )  # fmt: skip
        except redis.ResponseError as exc:
            if "index already exists" in str(exc).lower():
                return False
            raise classify_response_error(exc) from exc
        return True

    def drop_index(self, delete_documents: bool = False) -> bool:
        """Drop the index (and with delete_documents its product hashes); False if it was absent."""
        args = ["FT.DROPINDEX", self.index_name] + (["DD"] if delete_documents else [])
        try:
            with _classified_errors():
                self.redis.execute_command(*args)
        except IndexMissingError:
            return False
        return True

    def index_products(self, products: Iterable[Mapping[str, Any]], batch_size: int = 500) -> int:
        """HSET every product in pipelined batches; returns how many were written.

        Each product needs an `id`, the PRODUCT_FIELDS and either `embedding` (array or list)
        or `embedding_b64`. All of a batch is validated (ValueError) before any of it is sent.
        """
        written = 0
        batch: list[tuple[str, dict[str, bytes | str]]] = []
        for product in products:
            if not str(product.get("id", "")).strip():
                raise ValueError(f"product without an id: {dict(product).get('name')!r}")
            batch.append((self.product_key(str(product["id"])), product_to_hash(product, self.vector_dim)))
            if len(batch) >= batch_size:
                written += self._write_batch(batch)
                batch = []
        return written + self._write_batch(batch)

    def _write_batch(self, batch: list[tuple[str, dict[str, bytes | str]]]) -> int:
        if not batch:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for key, mapping in batch:
            pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
        with _classified_errors():
            pipe.execute()
        return len(batch)

    def index_info(self) -> IndexInfo:
        """The index's size and health (FT.INFO). Raises IndexMissingError when it is absent."""
        with _classified_errors():
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
        return IndexInfo(
            num_docs=int(_float(info.get("num_docs"))),
            indexing_failures=failures,
            vector_index_size_mb=round(_float(info.get("vector_index_sz_mb")), 4),
            percent_indexed=_float(info.get("percent_indexed"), default=1.0),
        )

    def count_indexed(self) -> int:
        """How many products the index holds; 0 when there is no index, as in the reference
        (other errors of Redis are raised, not counted as 0)."""
        try:
            return self.index_info().num_docs
        except IndexMissingError:
            return 0

    def wait_until_indexed(self, timeout_s: float = 30.0) -> None:
        """HSETs into an existing index are indexed synchronously, but a new index over
        existing keys is built in the background; wait for that scan to finish."""
        deadline = time.monotonic() + timeout_s
        while self.index_info().percent_indexed < 1.0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"index {self.index_name} still scanning after {timeout_s}s")
            time.sleep(0.02)

    # searching

    def _reader(self) -> redis.Redis | redis.cluster.RedisCluster:
        if self._next_reader is None:
            return self.redis
        with self._reader_lock:
            return self.read_clients[next(self._next_reader)]

    def _search(self, *args: Any) -> Any:
        """FT.SEARCH/FT.AGGREGATE on a replica when there are any, else the primary. A replica
        that fails falls back to the primary for this call, with a log line."""
        reader = self._reader()
        with _classified_errors():
            if reader is self.redis:
                return self.redis.execute_command(*args)
            try:
                return reader.execute_command(*args)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("replica %s failed (%s); reading from the primary", _describe(reader), exc)
                return self.redis.execute_command(*args)

    def _knn_rows(
        self, vector: Vector, filter_clause: str, n: int, fields: Sequence[str]
    ) -> list[tuple[str, dict[str, Any]]]:
        """The n nearest products passing the filter, closest first, as raw rows of the given
        fields and the distance."""
        query, params = knn_query(filter_clause, n, self.ef_runtime, self.hybrid_policy)
        params["vec"] = vector_to_bytes(vector, self.vector_dim)
        returned = (*fields, SCORE_FIELD)
        response = self._search(
            "FT.SEARCH", self.index_name, query,
            "PARAMS", str(2 * len(params)), *[item for pair in params.items() for item in pair],
            "RETURN", str(len(returned)), *returned,
            "SORTBY", SCORE_FIELD,
            "LIMIT", "0", str(n),
            "DIALECT", "2",
        )  # fmt: skip
        return self._rows(response)

    def _rows(self, response: Any) -> list[tuple[str, dict[str, Any]]]:
        prefix = self.key_prefix
        return [(key[len(prefix) :] if key.startswith(prefix) else key, raw) for key, raw in _raw_rows(response)]

    def _knn_candidates(
        self, vector: Vector, filter_clause: str, want: int, excluded: frozenset[str], with_vectors: bool
    ) -> tuple[list[Candidate], dict[str, Vector | None], set[str], bool]:
        """At least `want` candidates that are not excluded, closest first, when that many pass
        the filter: (candidates, their vectors by id, the ids left out, exhausted).

        Without exclusions this is one FT.SEARCH. Exclusions cannot be expressed in FT.SEARCH
        (RediSearch has no "not these keys"), so they are dropped afterwards: the first search
        asks for `want` plus up to `want` more rows (what a user clicked tends to lie near what
        they are shown), with their fields, which is usually enough: one round trip, as without
        exclusions. Only when exclusions ate into that does a second ask for want + |excluded|
        ids and distances (always enough, since at most |excluded| rows can be excluded), and the
        fields of the kept ones the first did not bring come in one pipelined round trip: fetching
        every field of hundreds of rows only to drop them costs more (bench/feedback.py).
        """
        fields = (*PRODUCT_FIELDS, *_vector_field(with_vectors))
        n = min(want + min(len(excluded), want), MAX_K)
        rows = self._knn_rows(vector, filter_clause, n, fields)
        kept = [(pid, raw) for pid, raw in rows if pid not in excluded]
        exhausted = len(rows) < n
        enough = min(want + len(excluded), MAX_K)
        if len(kept) < want and not exhausted and n < enough:
            have = dict(kept)
            rows = self._knn_rows(vector, filter_clause, enough, ())
            exhausted = len(rows) < enough
            scores = [(pid, raw[SCORE_FIELD]) for pid, raw in rows if pid not in excluded][:want]
            stored = self._product_fields([pid for pid, _ in scores if pid not in have], fields)
            kept = [
                (pid, have[pid] if pid in have else {**stored[pid], SCORE_FIELD: score})
                for pid, score in scores
                if pid in have or pid in stored
            ]
        kept = kept[:want]
        candidates = [candidate_from_row(pid, raw) for pid, raw in kept]
        vectors = {pid: bytes_to_vector(raw.get(EMBEDDING_FIELD), self.vector_dim) for pid, raw in kept}
        left_out = {pid for pid, _ in rows if pid in excluded}
        return candidates, vectors, left_out, exhausted and len(kept) < want

    def _product_fields(self, product_ids: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Raw fields of the given products, in one pipelined round trip to the same kind of
        node FT.SEARCH uses (a replica when there are any); products that vanished meanwhile are
        left out."""
        reader = self._reader()

        def fetch(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for pid in product_ids:
                pipe.hmget(self.product_key(pid), list(names))
            return list(pipe.execute())

        with _classified_errors():
            try:
                replies = fetch(reader)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if reader is self.redis:
                    raise
                log.warning("replica %s failed (%s); reading from the primary", _describe(reader), exc)
                replies = fetch(self.redis)
        return {
            pid: {name: value for name, value in zip(names, values, strict=True) if value is not None}
            for pid, values in zip(product_ids, replies, strict=True)
            if any(value is not None for value in values)
        }

    def candidate_retrieve(
        self,
        query_vec: npt.ArrayLike,
        category: str | None = None,
        brand: str | None = None,
        min_price: float | None = None,
        max_price: float | None = None,
        in_stock_only: bool = False,
        min_rating: float | None = None,
        text_match: str | None = None,
        text_field: str = "description",
        k: int = 10,
        session_vec: npt.ArrayLike | None = None,
        session_weight: float = 0.3,
    ) -> list[Candidate]:
        """The k nearest products that pass every filter, closest first, in one FT.SEARCH.

        The reference's call, argument for argument: the filters may be given by position.
        With `session_vec`, the query is first blended with it (normalize((1 − w)·q + w·s)).
        Raises ValueError for a bad vector, filter or k, IndexMissingError without an index.
        """
        filters = SearchFilters(
            category, brand, min_price, max_price, in_stock_only, min_rating, text_match, text_field
        )
        k = check_k(k)
        query = self._vector(query_vec)
        session = self._vector(session_vec) if session_vec is not None else None
        vector = blend_query(query, session, None, check_unit_interval("session_weight", session_weight), 0.0)
        candidates, _, _, _ = self._knn_candidates(vector, filters.clause(), k, frozenset(), with_vectors=False)
        return candidates[:k]

    def _vector(self, vector: npt.ArrayLike) -> Vector:
        return np.frombuffer(vector_to_bytes(vector, self.vector_dim), dtype="<f4").astype(np.float32)

    # The filter builder on the class, callable without an instance, as the reference offers it.
    build_filter_clause = staticmethod(build_filter_clause)

    @classmethod
    def _build_filter_clause(cls, **filters: Any) -> str:
        """The reference's spelling (its own server calls it on the class), with the reference's
        shape: the clause in parentheses, "(*)" when nothing filters, so that it can stand in
        front of `=>[KNN ...]` as it is (a bare multi-term clause there is a syntax error).
        Keyword arguments as build_filter_clause; raises ValueError as it does."""
        return f"({build_filter_clause(**filters)})"

    def rerank(
        self,
        candidates: list[Candidate],
        user_features: Mapping[str, Any] | None,
        affinity_weight: float | None = None,
        k: int | None = None,
    ) -> list[Candidate]:
        """Re-score candidates by the user's category affinities and re-sort (the reference's
        call): score = vector_distance − log1p(affinity)·weight for liked categories, + for
        dismissed ones. `user_features` is anything with an "affinities" mapping (a UserFeatures,
        the reference's dict); affinity_weight defaults to config.affinity_weight.

        Returns a new list, sorted by score (ties by distance, then id), cut to `k` when given.
        With affinities the candidates in it are re-scored copies (the inputs are untouched);
        without any (or with a weight of 0) they are the inputs, scores kept as the caller set
        them."""
        affinities = (user_features or {}).get("affinities") or {}
        weight = self.config.affinity_weight if affinity_weight is None else affinity_weight
        if not affinities or weight <= 0:
            # Nothing to apply: as in the reference, scores a caller has set are kept and only
            # the order follows them.
            ranked = sorted(candidates, key=lambda c: (c.score, c.vector_distance, c.id))
        else:
            ranked, _ = rerank_by_affinity(candidates, affinities, weight)
        return ranked if k is None else ranked[:k]

    # users: reading

    def _user_context(self, user_id: str, exclude_clicked: bool) -> _UserContext:
        """The user's features and the products to leave out, in one round trip to the primary
        (never a replica: the user's last click must count in the very next answer)."""
        pipe = self.redis.pipeline(transaction=False)
        self._queue_user_context(pipe, user_id, exclude_clicked)
        with _classified_errors():
            replies = pipe.execute()
        return self._user_context_from(user_id, replies, exclude_clicked)

    def _queue_user_context(self, pipe: Any, user_id: str, exclude_clicked: bool) -> None:
        features_key, _, seen_key, dismissed_key = self._user_keys(user_id)
        pipe.hgetall(features_key)
        pipe.smembers(dismissed_key)
        if exclude_clicked:
            pipe.zrange(seen_key, 0, -1)

    def _user_context_from(self, user_id: str, replies: Sequence[Any], exclude_clicked: bool) -> _UserContext:
        excluded = {_text(pid) for pid in replies[1]}
        if exclude_clicked:
            excluded.update(_text(pid) for pid in replies[2])
        return _UserContext(self._features_from_hash(user_id, replies[0]), frozenset(excluded))

    def _features_from_hash(self, user_id: str, stored: Mapping[Any, Any]) -> UserFeatures:
        raw = {_text(k): v for k, v in stored.items()}
        vectors = {}
        for name in (SESSION_VEC_FIELD, NEGATIVE_VEC_FIELD):
            vectors[name] = bytes_to_vector(raw.get(name), self.vector_dim)
            if vectors[name] is None and raw.get(name) is not None:
                label = "session vector" if name == SESSION_VEC_FIELD else "negative vector"
                _report_once(
                    f"user {user_id}: stored {label} has {len(raw[name])} bytes, expected {self.vector_dim * 4}; ignoring it"
                )
        timestamps = {name: _float(raw[name], default=math.nan) if name in raw else math.nan
                      for name in (SESSION_AT_FIELD, NEGATIVE_AT_FIELD, AFFINITY_AT_FIELD)}  # fmt: skip
        last_id, last_category = raw.get(LAST_CLICKED_ID_FIELD), raw.get(LAST_CLICKED_CATEGORY_FIELD)
        return UserFeatures(
            session_vec=vectors[SESSION_VEC_FIELD],
            affinities={
                name[len(AFFINITY_PREFIX) :]: _float(value)
                for name, value in raw.items()
                if name.startswith(AFFINITY_PREFIX)
            },
            clicks=int(_float(raw.get(CLICKS_FIELD))),
            last_clicked_id=_text(last_id) if last_id is not None else None,
            last_clicked_category=_text(last_category) if last_category is not None else None,
            negative_vec=vectors[NEGATIVE_VEC_FIELD],
            **{name: None if math.isnan(value) else value for name, value in timestamps.items()},
        )

    def get_user_features(self, user_id: str) -> UserFeatures:
        """The user's signals as stored, unfaded (a dict too, like the reference's; see
        faded_affinities and session_weight_now for their weight now). An unknown user has
        empty features. ValueError for a malformed user id."""
        return self._user_context(user_id, exclude_clicked=False).features

    def faded_affinities(self, features: UserFeatures, now: float | None = None) -> dict[str, float]:
        """The affinities as rerank sees them now (or at `now`): faded by time since they were
        last updated."""
        return faded_affinities(features, self.config, self._now(now))

    def session_weight_now(self, features: UserFeatures, now: float | None = None) -> float:
        """The session's share of the query now: config.session_weight, halved per half-life
        since the session last moved; 0 without a session."""
        return session_weight(features, self.config, self._now(now))

    def session_fades_in_s(self, features: UserFeatures, now: float | None = None) -> float | None:
        """Seconds until the session stops steering the feed (its weight falls below 1/16 of a
        fresh one's) unless the user clicks again; None without a session, 0 when it already
        has."""
        return session_fades_in_s(features, self.config, self._now(now))

    def _now(self, now: float | None) -> float:
        return float(self.clock()) if now is None else now

    def recent_clicks(self, user_id: str) -> list[str]:
        """Product ids the user clicked, newest first (at most RECENT_CLICKS_KEPT)."""
        with _classified_errors():
            return [_text(pid) for pid in self.redis.lrange(self._user_keys(user_id)[1], 0, RECENT_CLICKS_KEPT - 1)]

    def seen(self, user_id: str) -> list[str]:
        """The user's last `seen_kept` clicked or dismissed product ids, newest first."""
        with _classified_errors():
            return [_text(pid) for pid in self.redis.zrevrange(self._user_keys(user_id)[2], 0, -1)]

    def dismissed(self, user_id: str) -> list[str]:
        """Every product the user dismissed ("not interested"), sorted."""
        with _classified_errors():
            return sorted(_text(pid) for pid in self.redis.smembers(self._user_keys(user_id)[3]))

    def user_state(self, user_id: str) -> UserState:
        """The user's features, recent clicks, dismissed products and those products' names: two
        round trips (the lists, then the names they need). ValueError for a malformed user id."""
        return self._user_state_from(user_id, self._read_state(user_id))

    def _queue_state_reads(self, pipe: Any, user_id: str) -> None:
        features_key, recent_key, _, dismissed_key = self._user_keys(user_id)
        pipe.hgetall(features_key)
        pipe.lrange(recent_key, 0, RECENT_CLICKS_KEPT - 1)
        pipe.smembers(dismissed_key)

    def _read_state(self, user_id: str) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        self._queue_state_reads(pipe, user_id)
        with _classified_errors():
            return list(pipe.execute())

    def _user_state_from(self, user_id: str, replies: Sequence[Any]) -> UserState:
        """A UserState from the replies of _queue_state_reads, with the names looked up."""
        stored, recent, dismissed = replies
        recent_ids = [_text(pid) for pid in recent]
        dismissed_ids = sorted(_text(pid) for pid in dismissed)
        return UserState(
            features=self._features_from_hash(user_id, stored),
            recent_clicks=recent_ids,
            dismissed=dismissed_ids,
            product_names=self.product_names([*recent_ids, *dismissed_ids]),
        )

    def reset_user(self, user_id: str) -> None:
        """Forget the user: every key this library or another port keeps for them is deleted
        (one slot, one DEL)."""
        with _classified_errors():
            self.redis.delete(*self._user_keys(user_id))
            self.redis.delete(self._legacy_recent_key(user_id))

    # users: writing

    def _product_for_event(self, product_id: str) -> tuple[bytes, str]:
        """The clicked product's vector and category, read before the user's script (which may
        only touch the user's slot). ProductNotFoundError when there is no such product."""
        key = self.product_key(check_product_id(product_id))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(key, [EMBEDDING_FIELD, "category"])
        pipe.exists(key)
        with _classified_errors():
            (blob, category), exists = pipe.execute()
        if not exists:
            raise ProductNotFoundError(product_id)
        return blob or b"", _text(category) or "unknown"

    def _user_event_args(
        self, mode: str, product_id: str, category: str, blob: bytes, alpha: float, step: float, now: float
    ) -> list[Any]:
        vec_field, vec_at_field = (
            (SESSION_VEC_FIELD, SESSION_AT_FIELD) if mode == "click" else (NEGATIVE_VEC_FIELD, NEGATIVE_AT_FIELD)
        )
        return [
            mode, product_id, category, blob, repr(float(alpha)), repr(float(step)), self.vector_dim, repr(now),
            repr(self.config.session_half_life_s), repr(self.config.affinity_half_life_s),
            self.seen_kept, RECENT_CLICKS_KEPT, self.user_ttl_s,
            vec_field, vec_at_field, AFFINITY_AT_FIELD,
            AFFINITY_PREFIX, CLICKS_FIELD, LAST_CLICKED_ID_FIELD, LAST_CLICKED_CATEGORY_FIELD,
        ]  # fmt: skip

    def _apply_event(
        self, user_id: str, mode: str, product_id: str, alpha: float, step: float, read_state: bool = False
    ) -> tuple[str, list[Any], list[Any]]:
        """Apply one click or dismissal (and, for a click, count its popularity), then WAIT for
        replicas when required; with read_state, read the user's stored state after it. Returns
        the product's category, the event script's reply, and the state replies for
        _user_state_from (empty without read_state). ProductNotFoundError for an unknown product.

        Two round trips: the product's vector and category (its own slot), then, pipelined on one
        connection, the user's script (the user's slot), popularity's script (its slot), WAIT and
        the state reads. No script spans two slots, so the same steps run on one Redis, behind a
        sharding proxy and on a cluster (where they go one after the other, to their nodes)."""
        keys = list(self._user_keys(user_id))
        blob, category = self._product_for_event(product_id)
        now = float(self.clock())
        args = self._user_event_args(mode, product_id, category, blob, alpha, step, now)
        popularity_keys = list(self._popularity_keys())
        popularity_args = [product_id, *self._popularity_args(now)]
        if self.is_cluster:
            with _classified_errors():
                reply = self._user_event(keys=keys, args=args)
                if mode == "click":
                    self._add_popularity(keys=popularity_keys, args=popularity_args)
            return category, reply, self._read_state(user_id) if read_state else []

        calls = [(self._user_event, keys, args)]
        if mode == "click":
            calls.append((self._add_popularity, popularity_keys, popularity_args))

        def then(pipe: Any) -> None:
            if self.min_replicas_ack:
                pipe.execute_command("WAIT", self.min_replicas_ack, self.replica_ack_timeout_ms)
            if read_state:
                self._queue_state_reads(pipe, user_id)

        with _classified_errors():
            replies = self._run_scripts_then(calls, then)
        after_scripts = len(calls)
        if self.min_replicas_ack:
            self._check_acks(int(replies[after_scripts]))
            after_scripts += 1
        return category, replies[0], replies[after_scripts:]

    def _popularity_args(self, now: float) -> list[str | float]:
        return [repr(now), repr(self.config.popularity_half_life_s), POPULARITY_REBASE_HALF_LIVES]

    def _run_scripts_then(
        self, calls: Sequence[tuple[Any, list[str], list[Any]]], then: Callable[[Any], None]
    ) -> list[Any]:
        """Scripts by EVALSHA, then what `then` queues, pipelined in one round trip. (A redis-py
        Script run in a pipeline first asks SCRIPT EXISTS, a round trip of its own, on every
        execute.) A Redis that lost its scripts (restarted, flushed, or a promoted replica)
        answers NOSCRIPT and runs nothing of that script: the scripts are loaded and only the
        ones that did not run are sent again, with what follows them, so none runs twice."""

        def send(selected: Sequence[tuple[Any, list[str], list[Any]]]) -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for script, keys, args in selected:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            then(pipe)
            return list(pipe.execute(raise_on_error=False))

        replies = send(calls)
        missing = [i for i in range(len(calls)) if isinstance(replies[i], redis.exceptions.NoScriptError)]
        if missing:
            for script, _, _ in calls:
                self.redis.script_load(script.script)
            again = send([calls[i] for i in missing])
            for i, reply in zip(missing, again, strict=False):
                replies[i] = reply
            replies[len(calls) :] = again[len(missing) :]
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _check_acks(self, acked: int) -> None:
        if acked < self.min_replicas_ack:
            raise ReplicationTimeoutError(acked, self.min_replicas_ack, self.replica_ack_timeout_ms)

    def record_click(
        self, user_id: str, product_id: str, ewma_alpha: float | None = None, affinity_step: float | None = None
    ) -> ClickResult:
        """Fold one click into the user's signals atomically (one script on the user's keys) and
        count it for popularity: the session vector moves towards the item (EWMA against the
        faded session), the category affinity rises, the item joins recent clicks and seen.

        ewma_alpha and affinity_step default to the RankingConfig's. Raises ProductNotFoundError (a KeyError) for an
        unknown product, ValueError for a bad id or alpha, WriteRefusedError when Redis refuses
        writes, ReplicationTimeoutError when min_replicas_ack replicas don't acknowledge.
        """
        return self._click(user_id, product_id, ewma_alpha, affinity_step, read_state=False)[0]

    def record_click_with_state(self, user_id: str, product_id: str) -> tuple[ClickResult, UserState]:
        """record_click with the config's alpha and step, and the user's state after the click
        (as user_state gives it), read in the same round trip on a single Redis: what an answer
        to a click shows. Raises as record_click."""
        result, replies = self._click(user_id, product_id, None, None, read_state=True)
        return result, self._user_state_from(user_id, replies)

    def _click(
        self,
        user_id: str,
        product_id: str,
        ewma_alpha: float | None,
        affinity_step: float | None,
        read_state: bool,
    ) -> tuple[ClickResult, list[Any]]:
        alpha = self.config.ewma_alpha if ewma_alpha is None else check_unit_interval("ewma_alpha", ewma_alpha)
        if alpha == 0:
            raise ValueError("ewma_alpha must be in (0, 1]")
        step = self.config.affinity_step if affinity_step is None else finite_number("affinity_step", affinity_step)
        category, (affinity, clicks, updated, repaired), state = self._apply_event(
            user_id, "click", product_id, alpha, float(step or 0.0), read_state
        )
        self._log_event_problems(user_id, product_id, bool(updated), bool(repaired))
        result = ClickResult(
            category=category,
            affinity=_float(affinity),
            clicks=int(clicks),
            last_clicked_id=product_id,
            session_updated=bool(updated),
        )
        return result, state

    def dismiss(self, user_id: str, product_id: str) -> DismissResult:
        """ "Not interested": the product never comes back for this user (until reset_user), its
        category affinity goes down by config.dismiss_step (below zero, rerank then pushes the
        category down), and the user's negative vector (EWMA of dismissed items) moves towards
        it, so retrieval moves away. Atomic per user, like a click. Raises as record_click."""
        return self._dismiss(user_id, product_id, read_state=False)[0]

    def dismiss_with_state(self, user_id: str, product_id: str) -> tuple[DismissResult, UserState]:
        """dismiss, and the user's state after it, read in the same round trip on a single Redis
        (as record_click_with_state). Raises as dismiss."""
        result, replies = self._dismiss(user_id, product_id, read_state=True)
        return result, self._user_state_from(user_id, replies)

    def _dismiss(self, user_id: str, product_id: str, read_state: bool) -> tuple[DismissResult, list[Any]]:
        category, (affinity, _, updated, repaired), state = self._apply_event(
            user_id, "dismiss", product_id, self.config.ewma_alpha, -self.config.dismiss_step, read_state
        )
        self._log_event_problems(user_id, product_id, bool(updated), bool(repaired))
        result = DismissResult(
            category=category, affinity=_float(affinity), product_id=product_id, negative_updated=bool(updated)
        )
        return result, state

    def _log_event_problems(self, user_id: str, product_id: str, vector_updated: bool, repaired: bool) -> None:
        if repaired:
            log.warning("user %s: clicks or an affinity held a non-number and was restarted from 0", user_id)
        if not vector_updated:
            log.warning(
                "product %s has no valid %d-d embedding: the event counts, but moves no vector",
                product_id,
                self.vector_dim,
            )

    # recommending

    def _finish(
        self,
        candidates: list[Candidate],
        vectors: Mapping[str, Vector | None],
        k: int,
        diversity: float,
        why: Why,
    ) -> list[Candidate]:
        """Stamp the request's part of `why` on every candidate, then diversify and cut to k. The
        candidates are this request's own (built from its replies), so they are stamped in place."""
        stamp = [(name, value) for name, value in vars(why).items() if value is not None]
        for candidate in candidates:
            for name, value in stamp:
                setattr(candidate.why, name, value)
        if diversity:
            return maximal_marginal_relevance(candidates, [vectors.get(c.id) for c in candidates], k, diversity)
        return candidates[:k]

    def _pool_size(self, k: int, use_rerank: bool, diversity: float) -> int:
        return min(k * self.config.overfetch, MAX_K) if use_rerank or diversity else k

    def recommend(
        self,
        query_vec: npt.ArrayLike,
        *,
        user_id: str | None = None,
        k: int = 10,
        filters: SearchFilters | None = None,
        use_session: bool = True,
        use_rerank: bool = True,
        exclude_clicked: bool = False,
        diversity: float = 0.0,
    ) -> Recommendation:
        """A typed query, personalised: the query vector blended with the user's (faded) session
        and pushed away from what they dismissed, KNN with the filters over `k × overfetch`
        candidates, dismissed (and with exclude_clicked, clicked) products left out with k kept
        full, rerank by (faded) category affinity, then MMR when diversity > 0.

        Raises ValueError for bad arguments, IndexMissingError without an index.
        """
        k = check_k(k)
        filters = filters or NO_FILTERS
        diversity = check_unit_interval("diversity", diversity)
        now = float(self.clock())
        query = self._vector(query_vec)
        context = self._user_context(user_id, exclude_clicked) if user_id is not None else None
        features = context.features if context else UserFeatures()
        session = session_weight(features, self.config, now) if use_session else 0.0
        negative = negative_weight(features, self.config, now) if use_session else 0.0
        vector = blend_query(query, features.session_vec, features.negative_vec, session, negative)
        return self._rank(
            vector, "query", filters, k, context, now, use_rerank, diversity,
            Why(session_weight=round(session, 6) if session else None,
                negative_weight=round(negative, 6) if negative else None),
        )  # fmt: skip

    def _rank(
        self,
        vector: Vector,
        source: str,
        filters: SearchFilters,
        k: int,
        context: _UserContext | None,
        now: float,
        use_rerank: bool,
        diversity: float,
        why: Why,
    ) -> Recommendation:
        filter_clause = filters.clause()
        excluded = context.excluded if context else frozenset()
        started = time.perf_counter()
        candidates, vectors, left_out, exhausted = self._knn_candidates(
            vector, filter_clause, self._pool_size(k, use_rerank, diversity), excluded, with_vectors=diversity > 0
        )
        excluded_count = len(left_out)
        searched = time.perf_counter()
        changed = False
        if use_rerank and context is not None:
            affinities = faded_affinities(context.features, self.config, now)
            # The candidates were built from this request's reply: re-scored in place, not copied.
            changed = rescore_by_affinity(candidates, affinities, self.config.affinity_weight)
            candidates.sort(key=score_order)
        why.excluded_count = excluded_count
        shown = self._finish(candidates, vectors, k, diversity, why)
        return Recommendation(
            candidates=shown,
            source=source,
            filter_clause=filter_clause,
            used_session=bool(why.session_weight),
            used_rerank=changed,
            session_weight=why.session_weight or 0.0,
            excluded_count=excluded_count,
            exhausted=exhausted and len(shown) < k,
            search_ms=(searched - started) * 1000,
            rerank_ms=(time.perf_counter() - searched) * 1000,
        )

    def for_you(
        self,
        user_id: str,
        *,
        k: int = 10,
        filters: SearchFilters | None = None,
        exclude_clicked: bool = True,
        diversity: float = 0.0,
    ) -> Recommendation:
        """The feed, with no query: a user with a live session gets the KNN of their session
        vector (pushed away from what they dismissed), reranked by their affinities, without
        what they dismissed and (by default) what they clicked; anyone else gets popular().
        A session that has faded below 1/16 of its weight no longer counts as live."""
        k = check_k(k)
        filters = filters or NO_FILTERS
        diversity = check_unit_interval("diversity", diversity)
        now = float(self.clock())
        context = self._user_context(user_id, exclude_clicked)
        features = context.features
        if not session_is_live(features, self.config, now):
            return self._popular(k, filters, context, now, diversity)
        negative = negative_weight(features, self.config, now)
        vector = blend_query(None, features.session_vec, features.negative_vec, 1.0, negative)
        return self._rank(
            vector, "session", filters, k, context, now, True, diversity,
            Why(session_weight=round(session_weight(features, self.config, now), 6),
                negative_weight=round(negative, 6) if negative else None),
        )  # fmt: skip

    def similar(
        self,
        product_id: str,
        *,
        k: int = 10,
        filters: SearchFilters | None = None,
        same_category_boost: float | None = None,
        user_id: str | None = None,
        exclude_clicked: bool = False,
        diversity: float = 0.0,
    ) -> Recommendation:
        """ "More like this": the neighbours of the product's own stored vector, never the
        product itself, with the filters, and a preference for its own category
        (`same_category_boost` subtracted from their distance; 0 gives the plain KNN; default
        from the RankingConfig). With a user, what they dismissed (and with exclude_clicked,
        clicked) is left out. ProductNotFoundError (a KeyError) for an unknown product."""
        k = check_k(k)
        filters = filters or NO_FILTERS
        diversity = check_unit_interval("diversity", diversity)
        boost = (
            self.config.same_category_boost
            if same_category_boost is None
            else finite_number("same_category_boost", same_category_boost)
        )
        if boost is None or boost < 0:
            raise ValueError(f"same_category_boost must be at least 0, got {same_category_boost!r}")
        key = self.product_key(check_product_id(product_id))
        # The product and the user's state are independent reads: one round trip for both.
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(key, [EMBEDDING_FIELD, "category"])
        if user_id is not None:
            self._queue_user_context(pipe, user_id, exclude_clicked)
        with _classified_errors():
            replies = pipe.execute()
        blob, category = replies[0]
        vector = bytes_to_vector(blob if isinstance(blob, bytes) else None, self.vector_dim)
        if vector is None:
            if not self.redis.exists(key):
                raise ProductNotFoundError(product_id)
            raise ValueError(f"product {product_id!r} has no valid {self.vector_dim}-d embedding to compare with")
        context = self._user_context_from(user_id, replies[1:], exclude_clicked) if user_id is not None else None
        excluded = (context.excluded if context else frozenset()) | {product_id}
        filter_clause = filters.clause()
        started = time.perf_counter()
        pool = self._pool_size(k, bool(boost), diversity)
        candidates, vectors, left_out, exhausted = self._knn_candidates(
            vector, filter_clause, pool, excluded, with_vectors=diversity > 0
        )
        searched = time.perf_counter()
        candidates = boost_category(candidates, _text(category), boost)
        excluded_count = len(left_out - {product_id})
        shown = self._finish(candidates, vectors, k, diversity, Why(excluded_count=excluded_count))
        return Recommendation(
            candidates=shown,
            source="similar",
            filter_clause=filter_clause,
            excluded_count=excluded_count,
            exhausted=exhausted and len(shown) < k,
            search_ms=(searched - started) * 1000,
            rerank_ms=(time.perf_counter() - searched) * 1000,
        )

    # popularity

    def popular(
        self, *, k: int = 10, filters: SearchFilters | None = None, user_id: str | None = None
    ) -> Recommendation:
        """Products by time-decayed click count (a click one popularity half-life ago counts
        half), with the filters; what a given user dismissed is left out. Before any product has
        been clicked (or when too few clicked ones pass the filters) the highest rated fill the
        list, and source says "rating" when they are all of it."""
        k = check_k(k)
        context = self._user_context(user_id, exclude_clicked=False) if user_id is not None else None
        return self._popular(k, filters or NO_FILTERS, context, float(self.clock()), 0.0)

    def _popularity_scores(self, count: int, now: float) -> tuple[list[tuple[str, float]], int]:
        """The `count` most popular (id, decayed count), and how many products have any."""
        zset, epoch_key = self._popularity_keys()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrevrange(zset, 0, count - 1, withscores=True)
        pipe.get(epoch_key)
        pipe.zcard(zset)
        with _classified_errors():
            top, epoch, total = pipe.execute()
        epoch_s = _float(epoch, default=now)
        half_life = self.config.popularity_half_life_s
        return [(_text(pid), decayed_popularity(score, now, epoch_s, half_life)) for pid, score in top], int(total)

    def popularity(self, limit: int = 5) -> list[tuple[str, float]]:
        """The `limit` most popular product ids with their decayed click counts, most first."""
        return self._popularity_scores(check_k(limit, "limit"), float(self.clock()))[0]

    def _popular(
        self, k: int, filters: SearchFilters, context: _UserContext | None, now: float, diversity: float
    ) -> Recommendation:
        filter_clause = filters.clause()
        excluded = context.excluded if context else frozenset()
        started = time.perf_counter()
        want = self._pool_size(k, False, diversity)
        chosen: list[Candidate] = []
        vectors: dict[str, Vector | None] = {}
        left_out: set[str] = set()
        count = min(max(want * 4, 64), MAX_K)
        while True:
            scores, total = self._popularity_scores(count, now)
            if not scores:
                break
            by_id = dict(scores)
            rows = self._rows(self._search(
                "FT.SEARCH", self.index_name, filter_clause,
                "INKEYS", str(len(scores)), *[self.product_key(pid) for pid, _ in scores],
                "RETURN", str(len(PRODUCT_FIELDS) + int(diversity > 0)),
                *PRODUCT_FIELDS, *_vector_field(diversity > 0),
                "LIMIT", "0", str(len(scores)),
                "DIALECT", "2",
            ))  # fmt: skip
            kept = [(pid, raw) for pid, raw in rows if pid not in excluded]
            left_out = {pid for pid, _ in rows if pid in excluded}
            if len(kept) >= want or count >= total or count >= MAX_K:
                kept.sort(key=lambda row: (-by_id.get(row[0], 0.0), row[0]))
                for pid, raw in kept[:want]:
                    candidate = candidate_from_row(pid, raw)
                    candidate.why.popularity = round(by_id.get(pid, 0.0), 6)
                    chosen.append(candidate)
                    vectors[pid] = bytes_to_vector(raw.get(EMBEDDING_FIELD), self.vector_dim)
                break
            count = min(count * 4, MAX_K)
        source = "popular" if chosen else "rating"
        exhausted = False
        if len(chosen) < want:
            fill, fill_vectors, fill_left_out, exhausted = self._top_rated(
                filter_clause, want - len(chosen), excluded, {c.id for c in chosen}, diversity > 0
            )
            chosen += fill
            vectors.update(fill_vectors)
            left_out |= fill_left_out
        excluded_count = len(left_out)
        shown = self._finish(chosen, vectors, k, diversity, Why(excluded_count=excluded_count))
        return Recommendation(
            candidates=shown,
            source=source,
            filter_clause=filter_clause,
            excluded_count=excluded_count,
            exhausted=exhausted and len(shown) < k,
            search_ms=(time.perf_counter() - started) * 1000,
        )

    def _top_rated(
        self, filter_clause: str, want: int, excluded: frozenset[str], chosen: set[str], with_vectors: bool
    ) -> tuple[list[Candidate], dict[str, Vector | None], set[str], bool]:
        """The highest rated products passing the filter, minus the user's excluded ones and the
        ones already chosen: (candidates, vectors, the excluded ids met, exhausted)."""
        n = min(want + len(excluded) + len(chosen), MAX_K)
        returned = (*PRODUCT_FIELDS, *_vector_field(with_vectors))
        rows = self._rows(self._search(
            "FT.SEARCH", self.index_name, filter_clause,
            "RETURN", str(len(returned)), *returned,
            "SORTBY", "rating", "DESC",
            "LIMIT", "0", str(n),
            "DIALECT", "2",
        ))  # fmt: skip
        # Redis returns rating ties in no fixed order: ties go by id, so a feed is the same twice.
        rows.sort(key=lambda row: (-_float(row[1].get("rating")), row[0]))
        kept = [(pid, raw) for pid, raw in rows if pid not in excluded and pid not in chosen][:want]
        candidates = [candidate_from_row(pid, raw) for pid, raw in kept]
        vectors = {pid: bytes_to_vector(raw.get(EMBEDDING_FIELD), self.vector_dim) for pid, raw in kept}
        return candidates, vectors, {pid for pid, _ in rows if pid in excluded}, len(rows) < n

    # products

    def refresh_embedding(self, product_id: str, new_vector: npt.ArrayLike) -> None:
        """Replace one item's vector in place; the index picks it up on write (no rebuild, no
        downtime). ValueError for a wrong shape, ProductNotFoundError (a KeyError) for an unknown id (never creates a
        key), ReplicationTimeoutError as record_click."""
        blob = vector_to_bytes(new_vector, self.vector_dim)
        try:
            with _classified_errors():
                if self.min_replicas_ack:
                    pipe = self.redis.pipeline(transaction=False)
                    self._refresh_embedding(
                        keys=[self.product_key(product_id)], args=[EMBEDDING_FIELD, blob], client=pipe
                    )
                    pipe.execute_command("WAIT", self.min_replicas_ack, self.replica_ack_timeout_ms)
                    _, acked = pipe.execute()
                    self._check_acks(int(acked))
                else:
                    self._refresh_embedding(keys=[self.product_key(product_id)], args=[EMBEDDING_FIELD, blob])
        except redis.ResponseError as exc:
            if "NOPRODUCT" in str(exc):
                raise ProductNotFoundError(product_id) from None
            raise

    def product_names(self, product_ids: Sequence[str]) -> dict[str, str]:
        """The names of the given products, in one pipelined round trip (none for no ids);
        unknown ids and products without a name are left out. Read as get_products reads them,
        so a garbled product the user clicked is logged even when the index refused it."""
        found = self.get_products(product_ids) if product_ids else {}
        return {pid: product["name"] for pid, product in found.items() if product["name"]}

    def get_products(self, product_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Display fields of the given products (no vectors); unknown ids are left out."""
        pipe = self.redis.pipeline(transaction=False)
        for pid in product_ids:
            pipe.hmget(self.product_key(pid), list(PRODUCT_FIELDS))
        with _classified_errors():
            replies = pipe.execute()
        found = {}
        for pid, values in zip(product_ids, replies, strict=True):
            if all(v is None for v in values):  # no such key; a hash that lacks a field still exists
                continue
            stored = {name: _text(v) for name, v in zip(PRODUCT_FIELDS, values, strict=True) if v is not None}
            found[pid] = product_summary(pid, stored)
        return found

    def list_products(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Up to `limit` indexed products (no vectors), sorted by price."""
        response = self._search(
            "FT.SEARCH", self.index_name, "*",
            "RETURN", str(len(PRODUCT_FIELDS)), *PRODUCT_FIELDS,
            "SORTBY", "price", "ASC",
            "LIMIT", "0", str(limit),
            "DIALECT", "2",
        )  # fmt: skip
        return [product_summary(pid, {n: _text(v) for n, v in raw.items()}) for pid, raw in self._rows(response)]

    def _distinct_values(self, field_name: str) -> list[str]:
        """Distinct values of a TAG field over the indexed documents, as written.

        FT.AGGREGATE GROUPBY rather than FT.TAGVALS: TAGVALS lower-cases ("urban loom") and
        keeps values of deleted documents until Redis garbage-collects them. No index has no
        values (an empty list, as in the reference).
        """
        try:
            response = self._search("FT.AGGREGATE", self.index_name, "*", "GROUPBY", "1", f"@{field_name}")
        except IndexMissingError:
            return []
        values = {fields.get(field_name, "") for fields in aggregate_rows(response)}
        return sorted(v for v in values if v)

    def list_categories(self) -> list[str]:
        """The distinct categories of the indexed products, as written, sorted."""
        return self._distinct_values("category")

    def list_brands(self) -> list[str]:
        """The distinct brands of the indexed products, as written, sorted."""
        return self._distinct_values("brand")


def _vector_field(wanted: bool) -> tuple[str, ...]:
    return (EMBEDDING_FIELD,) if wanted else ()


def _describe(client: Any) -> str:
    kwargs = client.get_connection_kwargs() if hasattr(client, "get_connection_kwargs") else {}
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
