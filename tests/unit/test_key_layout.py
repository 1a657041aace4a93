"""The data layout: key names, Redis Cluster slots, the index schema, and a product hash as
written. The layout is shared with the other ports of the tutorial, so these are exact."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.cluster import key_slot

from recengine.layout import (
    KeyLayout,
    bytes_to_vector,
    index_schema,
    product_embedding_bytes,
    product_to_hash,
    vector_to_bytes,
)
from recengine.validation import check_k, check_product_id, check_user_id, field_problem

KEYS = KeyLayout("recommend:idx", "product:", "user:")
DIM = 4
PRODUCT = {
    "id": "p1", "name": "Parka", "description": "Warm", "category": "outerwear", "brand": "North",
    "price": 199, "rating": "4.5", "in_stock": "True", "embedding": [1.0, 0.0, 0.0, 0.0],
}  # fmt: skip
user_ids = st.text(min_size=1).filter(lambda u: not any(ch.isspace() or ord(ch) < 32 or ch in "{}" for ch in u))


def test_the_shared_key_names() -> None:
    assert KEYS.product("p1") == "product:p1"
    assert KEYS.product_id("product:p1") == "p1" and KEYS.product_id("other:p1") == "other:p1"
    assert KEYS.features("u1") == "user:u1:features"
    assert KEYS.user("u1") == (
        "user:u1:features",
        "{user:u1:features}:recent",
        "{user:u1:features}:seen",
        "{user:u1:features}:dismissed",
    )
    assert KEYS.legacy_recent("u1") == "user:u1:recent_clicks"
    assert KEYS.popularity() == ("{recommend:idx:popularity}", "{recommend:idx:popularity}:epoch")
    assert KEYS.popularity_counted("u1") == "{recommend:idx:popularity}:counted:user:u1"


@given(user_ids)
def test_a_users_keys_share_one_cluster_slot(user_id: str) -> None:
    try:
        keys = KEYS.user(user_id)
    except ValueError:  # a lone surrogate: not UTF-8, refused
        return
    assert len({key_slot(key.encode()) for key in keys}) == 1


def test_popularitys_keys_share_one_cluster_slot() -> None:
    keys = [*KEYS.popularity(), KEYS.popularity_counted("u1"), KEYS.popularity_counted("u-other")]
    assert len({key_slot(key.encode()) for key in keys}) == 1


@pytest.mark.parametrize("user_id", ["", "a b", "a{b}", "a\nb", 7, None])
def test_user_ids_that_cannot_be_keys_are_value_errors(user_id: object) -> None:
    with pytest.raises(ValueError, match="user_id"):
        KEYS.user(user_id)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        check_user_id(user_id)


@pytest.mark.parametrize("product_id", ["", "a b", "a\tb", 3])
def test_product_ids_that_cannot_be_keys_are_value_errors(product_id: object) -> None:
    with pytest.raises(ValueError, match="product_id"):
        check_product_id(product_id)


@pytest.mark.parametrize("k", [0, -1, 10_001, 2.0, True, "5"])
def test_k_is_a_whole_number_from_1_to_10000(k: object) -> None:
    with pytest.raises(ValueError, match="k must be an integer between 1 and 10000"):
        check_k(k)


def test_tag_values_may_not_hold_the_separator() -> None:
    assert field_problem("category", "a,b") is not None
    assert field_problem("name", "a,b") is None
    assert field_problem("id", "a b") is not None


# --- the index ------------------------------------------------------------------------------------


def test_the_shared_schema_keeps_redis_hnsw_defaults() -> None:
    assert index_schema(384, None, None) == [
        "name", "TEXT", "description", "TEXT", "category", "TAG", "brand", "TAG", "in_stock", "TAG",
        "price", "NUMERIC", "SORTABLE", "rating", "NUMERIC", "SORTABLE",
        "embedding", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32", "DIM", "384", "DISTANCE_METRIC", "COSINE",
    ]  # fmt: skip


def test_hnsw_shape_is_added_only_when_given() -> None:
    schema = index_schema(8, 32, 400)
    assert schema[schema.index("VECTOR") + 1 :] == [
        "HNSW", "10", "TYPE", "FLOAT32", "DIM", "8", "DISTANCE_METRIC", "COSINE", "M", "32", "EF_CONSTRUCTION", "400",
    ]  # fmt: skip


# --- vectors and product hashes -------------------------------------------------------------------


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=DIM, max_size=DIM))
def test_vectors_round_trip_as_little_endian_float32(values: list[float]) -> None:
    blob = vector_to_bytes(values, DIM)
    assert blob == np.asarray(values, dtype="<f4").tobytes()
    restored = bytes_to_vector(blob, DIM)
    assert restored is not None and restored.tolist() == values


def test_bad_vectors_are_value_errors_and_bad_blobs_absent() -> None:
    with pytest.raises(ValueError, match="shape"):
        vector_to_bytes([1.0, 2.0], DIM)
    with pytest.raises(ValueError, match="NaN"):
        vector_to_bytes([1.0, np.nan, 0.0, 0.0], DIM)
    assert bytes_to_vector(b"\x00" * 3, DIM) is None and bytes_to_vector(None, DIM) is None


def test_a_product_hash_is_the_shared_layout() -> None:
    assert product_to_hash(PRODUCT, DIM) == {
        "name": "Parka", "description": "Warm", "category": "outerwear", "brand": "North", "price": "199.0",
        "rating": "4.5", "in_stock": "true", "embedding": np.asarray([1, 0, 0, 0], dtype="<f4").tobytes(),
    }  # fmt: skip


def test_embedding_b64_is_the_same_vector() -> None:
    blob = np.asarray([0.5, 0.5, 0.5, 0.5], dtype="<f4").tobytes()
    assert product_embedding_bytes({"embedding_b64": base64.b64encode(blob).decode()}, DIM) == blob
    with pytest.raises(ValueError, match="holds 8 bytes, expected 16"):
        product_embedding_bytes({"id": "x", "embedding_b64": base64.b64encode(blob[:8]).decode()}, DIM)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"price": None}, "lacks price"),
        ({"in_stock": "yes"}, "in_stock must be a boolean"),
        ({"in_stock": 1}, "in_stock must be a boolean"),
        ({"rating": "high"}, "rating must be a number"),
        ({"brand": "a,b"}, "tag separator"),
        ({"embedding": None}, "neither 'embedding' nor 'embedding_b64'"),
    ],
)
def test_a_bad_product_is_refused_before_anything_is_written(change: dict, message: str) -> None:
    product = {**PRODUCT, **change}
    if change.get("embedding", 0) is None:
        del product["embedding"]
    with pytest.raises(ValueError, match=message):
        product_to_hash(product, DIM)
