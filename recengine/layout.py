"""The data layout in Redis: key names, hash fields, the index schema, and how a product and a
vector are written. It follows the data model shared by the other ports of Redis'
recommendation-engine tutorial, so their data and ours are interchangeable; change it here only
together with them.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from ranking import Vector, finite_number
from recengine.validation import check_user_id, field_problem

# --- product hashes, `product:<id>` -------------------------------------------------------------

PRODUCT_TEXT_FIELDS = ("name", "description")
PRODUCT_NUMERIC_FIELDS = ("price", "rating")
PRODUCT_FIELDS = ("name", "description", "category", "brand", "price", "rating", "in_stock")
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
LIST_SEPARATOR = b"\n"

RECENT_CLICKS_KEPT = 6
DEFAULT_SEEN_KEPT = 200
# The idempotency window: an event id is remembered for the user's next this-many events.
EVENT_IDS_KEPT = 32
DEFAULT_USER_TTL_S = 30 * 86400
# all-MiniLM-L6-v2's dimension, under the reference's name for it.
VECTOR_DIM_DEFAULT = 384


# --- keys: the only place that names them ---------------------------------------------------------


class UserKeys(NamedTuple):
    """A user's key, `features` (the whole state), and the three keys the layout before one key
    per user kept beside it, hash-tagged to it (one Redis Cluster slot): the user's script folds
    them into the hash on the user's next event and deletes them."""

    features: str
    older_recent: str
    older_seen: str
    older_dismissed: str


@dataclass(frozen=True)
class KeyLayout:
    """Every key name, from the index name and the two prefixes."""

    index_name: str
    key_prefix: str
    user_key_prefix: str

    def product(self, product_id: str) -> str:
        """`product:<id>` (key_prefix + id), the product hash every port writes."""
        return f"{self.key_prefix}{product_id}"

    def product_id(self, key: str) -> str:
        """The id in a product key (a key without the prefix is taken as an id)."""
        return key[len(self.key_prefix) :] if key.startswith(self.key_prefix) else key

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


# --- the index --------------------------------------------------------------------------------


def index_schema(vector_dim: int, hnsw_m: int | None, hnsw_ef_construction: int | None) -> list[str]:
    """FT.CREATE's SCHEMA arguments: the fields every port indexes, and the HNSW cosine vector
    field (with M and EF_CONSTRUCTION only when given)."""
    hnsw = ["TYPE", "FLOAT32", "DIM", str(vector_dim), "DISTANCE_METRIC", "COSINE"]
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
        EMBEDDING_FIELD, "VECTOR", "HNSW", str(len(hnsw)), *hnsw,
    ]  # fmt: skip


# --- vectors and product hashes, as written ----------------------------------------------------


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


def checked_vector(vector: npt.ArrayLike, dim: int) -> Vector:
    """A caller's vector as the index would store it (float32), or ValueError."""
    return np.frombuffer(vector_to_bytes(vector, dim), dtype="<f4").astype(np.float32)


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
