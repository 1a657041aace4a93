"""The data layout in Redis: key names, hash fields, the index schema, and how a product and a
vector are written. It follows the data model shared by the other ports of Redis'
recommendation-engine tutorial, so their data and ours are interchangeable; change it here only
together with them.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from ranking import Vector, finite_number
from recengine.catalog_schema import (
    OPTIONAL_DEFAULTS,
    TEXT_DIGEST_FIELD,
    ExtraField,
    category_levels_value,
    product_text,
    text_digest,
)
from recengine.validation import TAG_SEPARATOR, check_user_id, field_problem

# --- product hashes, `product:<id>` -------------------------------------------------------------

PRODUCT_TEXT_FIELDS = ("name", "description")
PRODUCT_NUMERIC_FIELDS = ("price", "rating")
PRODUCT_FIELDS = ("name", "description", "category", "brand", "price", "rating", "in_stock")
# What update_product may change: every field but the embedded text (which needs a new vector).
UPDATABLE_FIELDS = ("category", "brand", "price", "rating", "in_stock")
MAX_RATING = 5.0
EMBEDDING_FIELD = "embedding"
# Not stored: the distance FT.SEARCH returns with each KNN row.
SCORE_FIELD = "vector_score"

# --- user hashes, `user:<id>:features`, as every port writes them... ---------------------------

SESSION_VEC_FIELD = "session_vec"
AFFINITY_PREFIX = "aff:"
CLICKS_FIELD = "clicks"
LAST_CLICKED_ID_FIELD = "last_clicked_id"
LAST_CLICKED_CATEGORY_FIELD = "last_clicked_category"
# ...and what only this port adds to them (other ports ignore fields they don't know).
NEGATIVE_VEC_FIELD = "negative_vec"
SESSION_AT_FIELD = "session_at"
NEGATIVE_AT_FIELD = "negative_at"
AFFINITY_AT_FIELD = "affinity_at"
# Lists of product ids (or event ids), one per line, newest first: the whole of a user's state is
# this one hash, so that a memory cap evicts a user whole or not at all (README, "Memory").
RECENT_FIELD = "recent"
SEEN_FIELD = "seen"
DISMISSED_FIELD = "dismissed"
EVENT_IDS_FIELD = "event_ids"
# The user's recent events for co-occurrence (co_occurrence_rules.WindowEntry, encoded), newest
# first: what their next event is counted together with, and the feed's recent products.
WINDOW_FIELD = "window"
LIST_SEPARATOR = b"\n"

RECENT_CLICKS_KEPT = 6
DEFAULT_SEEN_KEPT = 200
# The idempotency window: an event id is remembered for the user's next this-many events.
EVENT_IDS_KEPT = 32
DEFAULT_USER_TTL_S = 30 * 86400
# all-MiniLM-L6-v2's dimension, under the reference's name for it.
VECTOR_DIM_DEFAULT = 384
# The element type of the indexed product vectors. FLOAT32 is what every port writes; FLOAT16
# halves the vectors' memory (in the hash and in the index) for a small loss of recall
# (bench/million.py). User vectors (session, negative) are never indexed and stay FLOAT32.
VectorType = Literal["FLOAT32", "FLOAT16"]
VECTOR_TYPES: tuple[VectorType, ...] = ("FLOAT32", "FLOAT16")
DEFAULT_VECTOR_TYPE: VectorType = "FLOAT32"
_DTYPES: dict[VectorType, str] = {"FLOAT32": "<f4", "FLOAT16": "<f2"}


# --- keys: the only place that names them ---------------------------------------------------------


class UserKeys(NamedTuple):
    """A user's key, `features` (the whole state), and the three keys the layout before one key
    per user kept beside it, hash-tagged to it (one Redis Cluster slot): the user's script folds
    them into the hash on the user's next event and deletes them."""

    features: str
    older_recent: str
    older_seen: str
    older_dismissed: str


class ServingGeneration(threading.local):
    """Which generation of the catalogue the index name serves, as this thread last saw it.

    Generation 0 is the layout every port shares: products under `key_prefix`, in the real index
    `index_name`. A reload (recengine/reload.py) builds generation n beside it, under
    `<key_prefix without its ':'>@<n>:`, and makes `index_name` an alias of `<index_name>@<n>`.
    Searches always answer from the serving generation (they go through the name); what this
    object caches is the key prefix for reading and writing one product directly, which follows
    a switch on the first search row or missing product that shows it (see KeyLayout).

    Each thread keeps its own view (threading.local; __init__ runs again in every thread):
    whether a read must be redone is judged by whether *its* view moved. With one view shared by
    the server's threads, a thread whose read missed a product under the old prefix found the
    view already moved by another thread, took "not moved" for "no such product" and answered
    404 during a reload. The cost: after a reload, a thread's first direct read of a product
    may take one more round trip."""

    def __init__(self, key_prefix: str) -> None:
        self.generation = 0
        self.prefix = key_prefix

    def move_to(self, generation: int, prefix: str) -> bool:
        """Follow a newer generation; True when this moved."""
        if generation <= self.generation and prefix == self.prefix:
            return False
        self.generation, self.prefix = generation, prefix
        return True


@dataclass(frozen=True)
class KeyLayout:
    """Every key name, from the index name and the two prefixes (and the generation serving)."""

    index_name: str
    key_prefix: str
    user_key_prefix: str
    serving: ServingGeneration = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "serving", ServingGeneration(self.key_prefix))

    def product(self, product_id: str) -> str:
        """`product:<id>` (key_prefix + id), the product hash every port writes; after a reload,
        the serving generation's `product@<n>:<id>`."""
        return f"{self.serving.prefix}{product_id}"

    def product_id(self, key: str) -> str:
        """The id in a product key of any generation (a key without the prefix is taken as an
        id). A key of a newer generation than the one cached moves the cache to it: a search
        row is the first to show a switch."""
        generation, product_id = self.parse_product_key(key)
        if generation > self.serving.generation:
            self.serving.move_to(generation, self.generation_prefix(generation))
        return product_id

    def parse_product_key(self, key: str) -> tuple[int, str]:
        """(generation, id) of a product key; generation 0 for a key without a known prefix."""
        base = self.key_prefix.removesuffix(":")
        if self.key_prefix.endswith(":") and key.startswith(base + "@"):
            number, separator, product_id = key[len(base) + 1 :].partition(":")
            if separator and number.isdigit():
                return int(number), product_id
        return 0, key[len(self.key_prefix) :] if key.startswith(self.key_prefix) else key

    # generations (recengine/reload.py)

    def generation_prefix(self, generation: int) -> str:
        """`product:` for generation 0, `product@n:` after: no generation's prefix starts with
        another's (for a key_prefix that ends with ':'), so no index sees another's keys."""
        return self.key_prefix if generation == 0 else f"{self.key_prefix.removesuffix(':')}@{generation}:"

    def generation_index(self, generation: int) -> str:
        """The index a reload builds for generation n, which `index_name` then names as an alias.
        (The real index `index_name` that create_index makes serves generation 0's keys too.)"""
        return f"{self.index_name}@{generation}"

    def catalog_meta(self) -> str:
        """The hash that says which generation serves (written with the switch)."""
        return f"{self.index_name}:catalog"

    def reload_lock(self) -> str:
        return f"{self.index_name}:reload-lock"

    def features(self, user_id: str) -> str:
        """`user:<id>:features`, exactly as every port writes it."""
        return f"{self.user_key_prefix}{user_id}:features"

    def user(self, user_id: str) -> UserKeys:
        """The user's key and the older layout's, in one slot; ValueError for a malformed user id."""
        features = self.features(check_user_id(user_id))
        tag = "{" + features + "}"
        return UserKeys(features, f"{tag}:recent", f"{tag}:seen", f"{tag}:dismissed")

    def legacy_recent(self, user_id: str) -> str:
        """Where versions before the cluster-safe keys kept recent clicks; reset_user removes it."""
        return f"{self.user_key_prefix}{user_id}:recent_clicks"

    def popularity(self) -> tuple[str, str]:
        """The popularity zset and its epoch, in one slot."""
        tag = self._popularity_tag()
        return tag, f"{tag}:epoch"

    def popularity_counted(self, user_id: str) -> str:
        """The products a user's clicks counted for popularity in the current window, in
        popularity's slot (the popularity script reads it with the zset)."""
        return f"{self._popularity_tag()}:counted:{self.user_key_prefix}{check_user_id(user_id)}"

    def _popularity_tag(self) -> str:
        return "{" + f"{self.index_name}:popularity" + "}"

    def co_occurrence(self, product_id: str) -> tuple[str, str]:
        """One product's co-occurrence counts (a zset of neighbours) and their epoch, under a hash
        tag of the product's own: every product's counts may live on another node, and a count
        script touches one product's only. Never fields of the product hash: RediSearch would
        re-index the product, vector and all, on every count."""
        tag = "{" + f"{self.index_name}:co:{product_id}" + "}"
        return tag, f"{tag}:epoch"

    def imports(self) -> str:
        """The imports done into this index: file digest → progress (import_events.py)."""
        return "{" + f"{self.index_name}:imports" + "}"


# --- the index --------------------------------------------------------------------------------


def index_schema(
    vector_dim: int,
    hnsw_m: int | None,
    hnsw_ef_construction: int | None,
    extra_fields: Sequence[ExtraField] = (),
    vector_type: VectorType = DEFAULT_VECTOR_TYPE,
) -> list[str]:
    """FT.CREATE's SCHEMA arguments: the fields every port indexes, the shop's extra TAG and
    NUMERIC fields, and the HNSW cosine vector field of vector_type (with M and EF_CONSTRUCTION
    only when given)."""
    hnsw = ["TYPE", check_vector_type(vector_type), "DIM", str(vector_dim), "DISTANCE_METRIC", "COSINE"]
    if hnsw_m is not None:
        hnsw += ["M", str(hnsw_m)]
    if hnsw_ef_construction is not None:
        hnsw += ["EF_CONSTRUCTION", str(hnsw_ef_construction)]
    return [
        "name", "TEXT",
        "description", "TEXT",
        "category", "TAG",
        "brand", "TAG",
        "in_stock", "TAG",
        "price", "NUMERIC", "SORTABLE",
        "rating", "NUMERIC", "SORTABLE",
        *(argument for extra in extra_fields for argument in extra.schema()),
        EMBEDDING_FIELD, "VECTOR", "HNSW", str(len(hnsw)), *hnsw,
    ]  # fmt: skip


# --- vectors and product hashes, as written ----------------------------------------------------


def check_vector_type(vector_type: str) -> VectorType:
    """vector_type itself, or ValueError naming the choices."""
    if vector_type not in VECTOR_TYPES:
        raise ValueError(f"vector_type must be one of {VECTOR_TYPES}, got {vector_type!r}")
    return vector_type


def vector_to_bytes(vector: npt.ArrayLike, dim: int, vector_type: VectorType = DEFAULT_VECTOR_TYPE) -> bytes:
    """Validate and pack one vector as little-endian floats of vector_type (float32 unless said)."""
    array = np.asarray(vector, dtype="<f4")
    if array.shape != (dim,):
        raise ValueError(f"expected a vector of shape ({dim},), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("vector contains NaN or infinity")
    if vector_type == "FLOAT32":
        return array.tobytes()
    dtype = np.dtype(_DTYPES[check_vector_type(vector_type)])
    if np.any(np.abs(array) > np.finfo(dtype).max):
        raise ValueError(f"vector holds a value too large for {vector_type}")
    return array.astype(dtype).tobytes()


def bytes_to_vector(blob: bytes | None, dim: int, vector_type: VectorType = DEFAULT_VECTOR_TYPE) -> Vector | None:
    """Unpack little-endian floats of vector_type into float32; anything of the wrong length is
    treated as absent."""
    dtype = np.dtype(_DTYPES[vector_type])
    if blob is None or len(blob) != dim * dtype.itemsize:
        return None
    return np.frombuffer(blob, dtype=dtype).astype(np.float32)


class VectorFormat:
    """How one recommender's product vectors are stored: `dim` little-endian floats of the
    index's own type, so that a catalogue written as FLOAT32 keeps being read and written as
    FLOAT32 whatever type was asked for. The type is read from the index (FT.INFO, through
    read_index_type) when first needed and kept; until an index exists, the asked-for type is
    used (and is what create_index makes). Shared by every part of one recommender."""

    def __init__(self, dim: int, requested: VectorType, read_index_type: Callable[[], VectorType | None]) -> None:
        self.dim = dim
        self.requested = check_vector_type(requested)
        self._read_index_type = read_index_type
        self._known: VectorType | None = None

    @property
    def vector_type(self) -> VectorType:
        if self._known is None:
            self._known = self._read_index_type()
        return self._known or self.requested

    def learn(self, vector_type: VectorType | None) -> None:
        """What the index holds now: its type after create_index, None after drop_index."""
        self._known = vector_type

    def encode(self, vector: npt.ArrayLike) -> bytes:
        """A vector as the index stores it; ValueError for a wrong shape or a non-finite value."""
        return vector_to_bytes(vector, self.dim, self.vector_type)

    def decode(self, blob: bytes | None) -> Vector | None:
        """A stored vector as float32; None when absent or of the wrong length."""
        return bytes_to_vector(blob, self.dim, self.vector_type)

    def as_float32(self, blob: bytes | None) -> bytes:
        """A stored vector as float32 bytes (what a user's session vector is folded from); b""
        when absent or of the wrong length."""
        vector = self.decode(blob)
        return b"" if vector is None else vector.astype("<f4").tobytes()

    def product_bytes(self, product: Mapping[str, Any]) -> bytes:
        """A product's vector (from `embedding` or `embedding_b64`) as the index stores it."""
        return product_embedding_bytes(product, self.dim, self.vector_type)


def checked_vector(vector: npt.ArrayLike, dim: int) -> Vector:
    """A caller's vector as the index would store it (float32), or ValueError."""
    return np.frombuffer(vector_to_bytes(vector, dim), dtype="<f4").astype(np.float32)


def product_embedding_bytes(
    product: Mapping[str, Any], dim: int, vector_type: VectorType = DEFAULT_VECTOR_TYPE
) -> bytes:
    """A product's vector as stored in Redis (floats of vector_type), from either `embedding` or
    `embedding_b64` (a catalogue's base64 of float32 bytes, whatever type the index holds)."""
    if "embedding_b64" in product:
        blob = base64.b64decode(product["embedding_b64"])
        if len(blob) != dim * 4:
            raise ValueError(
                f"product {product.get('id')!r}: embedding_b64 holds {len(blob)} bytes, expected {dim * 4}"
            )
        return vector_to_bytes(np.frombuffer(blob, dtype="<f4"), dim, vector_type)
    if "embedding" in product:
        return vector_to_bytes(product["embedding"], dim, vector_type)
    raise ValueError(f"product {product.get('id')!r} has neither 'embedding' nor 'embedding_b64'")


def product_to_hash(
    product: Mapping[str, Any],
    dim: int,
    extra_fields: Sequence[ExtraField] = (),
    vector_type: VectorType = DEFAULT_VECTOR_TYPE,
) -> dict[str, bytes | str]:
    """The exact hash layout of `product:<id>`: every field of product_fields, and the vector
    (from `embedding` or `embedding_b64`, as floats of vector_type). ValueError for a product
    that would misbehave."""
    return {
        **product_fields(product, extra_fields),
        EMBEDDING_FIELD: product_embedding_bytes(product, dim, vector_type),
    }


def product_fields(product: Mapping[str, Any], extra_fields: Sequence[ExtraField] = ()) -> dict[str, str]:
    """A product's hash without its vector: floats as strings, in_stock as true/false, a
    category path as its every level (catalog_schema), the shop's extra fields, and the digest
    of the embedded text (TEXT_DIGEST_FIELD: what tells a later write whether the vector is
    still current).

    id, name and price are required; the other fields take OPTIONAL_DEFAULTS when absent (None).
    Strict otherwise: a price of "abc" or an in_stock of "yes" silently stored as 0 or false
    would corrupt filters without anyone noticing."""
    label = f"product {product.get('id')!r}"
    problem = field_problem("id", str(product.get("id", "")))
    if problem or not str(product.get("id", "")):
        raise ValueError(f"{label}: {problem or 'id is missing'}")
    for name in ("name", "price"):
        if product.get(name) is None or product.get(name) == "":
            raise ValueError(f"{label} lacks {name}")
    values = {
        name: OPTIONAL_DEFAULTS[name] if product.get(name) is None else product[name] for name in OPTIONAL_DEFAULTS
    }
    name, description = str(product["name"]), str(values["description"])
    filters = {field_name: values.get(field_name, product.get(field_name)) for field_name in UPDATABLE_FIELDS}
    filters.update({extra.name: product[extra.name] for extra in extra_fields if product.get(extra.name) is not None})
    return {
        "name": name,
        "description": description,
        **encode_updates(filters, label, extra_fields),
        TEXT_DIGEST_FIELD: text_digest(product_text(name, description)),
    }


def encode_updates(
    updates: Mapping[str, Any], label: str = "update", extra_fields: Sequence[ExtraField] = ()
) -> dict[str, str]:
    """The stored form of filter fields (UPDATABLE_FIELDS and the extra ones), checked: a price
    is a finite number of at least 0, a rating one from 0 to 5, in_stock a boolean (or
    'true'/'false'), a category or brand text without the tag separator. ValueError names the
    field; the text fields are refused with the way to change them (they need a new vector)."""
    extras = {extra.name: extra for extra in extra_fields}
    encoded: dict[str, str] = {}
    for name, value in updates.items():
        if name in ("name", "description"):
            raise ValueError(f"{label}: {name} is embedded text: change it with upsert_products, which re-embeds")
        if name not in UPDATABLE_FIELDS and name not in extras:
            known = ", ".join([*UPDATABLE_FIELDS, *extras])
            raise ValueError(f"{label}: no field {name!r} can be updated (fields: {known})")
        encoded[name] = _encode(name, value, label, extras.get(name))
    return encoded


def _encode(name: str, value: Any, label: str, extra: ExtraField | None) -> str:
    if name == "in_stock":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            value = value.strip().lower() == "true"
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{label}: in_stock must be a boolean or 'true'/'false', got {value!r}")
        return "true" if value else "false"
    if name in ("price", "rating") or (extra is not None and extra.kind == "numeric"):
        number = finite_number(f"{label}: {name}", value)
        if number is None:
            raise ValueError(f"{label}: {name} must be a number, got None")
        if name == "price" and number < 0:
            raise ValueError(f"{label}: price must be at least 0, got {value!r}")
        if name == "rating" and not 0 <= number <= MAX_RATING:
            raise ValueError(f"{label}: rating must be from 0 to {MAX_RATING:g}, got {value!r}")
        return repr(number)
    if not isinstance(value, str):
        raise ValueError(f"{label}: {name} must be a string, got {value!r}")
    text = value.strip()
    problem = field_problem(name, text) or (
        f"{name} must not contain {TAG_SEPARATOR!r} (the tag separator), got {text!r}"
        if TAG_SEPARATOR in text
        else None
    )
    if problem:
        raise ValueError(f"{label}: {problem}")
    try:
        return category_levels_value(text) if name == "category" else text
    except ValueError as exc:  # a path with an empty level
        raise ValueError(f"{label}: {exc}") from None
