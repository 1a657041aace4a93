"""The data layout: key names, Redis Cluster slots, the index schema, and a product hash as
written. The layout is shared with the other ports of the tutorial, so these are exact."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.cluster import key_slot

from recengine.catalog_schema import text_digest
from recengine.layout import (
    KeyLayout,
    VectorFormat,
    bytes_to_vector,
    index_schema,
    product_embedding_bytes,
    product_to_hash,
    vector_to_bytes,
)
from recengine.replies import index_vector_type
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


@given(st.text(min_size=1))
def test_a_products_counts_share_one_slot_of_their_own(product_id: str) -> None:
    try:
        keys = KEYS.co_occurrence(product_id)
        encoded = [key.encode() for key in keys]
    except UnicodeEncodeError:
        return
    assert len({key_slot(key) for key in encoded}) == 1
    assert KEYS.co_occurrence("p1") == ("{recommend:idx:co:p1}", "{recommend:idx:co:p1}:epoch")


@pytest.mark.parametrize("user_id", ["", "a b", "a{b}", "a\nb", 7, None])
def test_user_ids_that_cannot_be_keys_are_value_errors(user_id: object) -> None:
    with pytest.raises(ValueError, match="user_id"):
        KEYS.user(user_id)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        check_user_id(user_id)


@pytest.mark.parametrize("product_id", ["", "a\tb", "a\x00b", "x" * 257, 3])
def test_product_ids_that_cannot_be_keys_are_value_errors(product_id: object) -> None:
    with pytest.raises(ValueError, match="product_id"):
        check_product_id(product_id)


@pytest.mark.parametrize("product_id", ["BANK CHARGES", 'x"} | @brand:{y', "a/b", "{slot}", "*", "ünï"])
def test_any_printable_product_id_is_a_key(product_id: str) -> None:
    assert check_product_id(product_id) == product_id
    assert KEYS.product_id(KEYS.product(product_id)) == product_id


@pytest.mark.parametrize("k", [0, -1, 10_001, 2.0, True, "5"])
def test_k_is_a_whole_number_from_1_to_10000(k: object) -> None:
    with pytest.raises(ValueError, match="k must be an integer between 1 and 10000"):
        check_k(k)


def test_tag_values_may_not_hold_the_separator() -> None:
    assert field_problem("category", "a,b") is not None
    assert field_problem("name", "a,b") is None
    assert field_problem("id", "a b") is None
    assert field_problem("id", "a\nb") is not None


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


def test_a_float16_index_gets_a_float16_field() -> None:
    schema = index_schema(8, None, None, vector_type="FLOAT16")
    assert schema[schema.index("TYPE") + 1] == "FLOAT16"
    with pytest.raises(ValueError, match="vector_type must be one of"):
        index_schema(8, None, None, vector_type="FLOAT64")  # type: ignore[arg-type]


@given(st.lists(st.floats(-2.0, 2.0, width=16), min_size=DIM, max_size=DIM))
def test_vectors_round_trip_as_little_endian_float16(values: list[float]) -> None:
    blob = vector_to_bytes(values, DIM, "FLOAT16")
    assert blob == np.asarray(values, dtype="<f2").tobytes() and len(blob) == 2 * DIM
    restored = bytes_to_vector(blob, DIM, "FLOAT16")
    assert restored is not None and restored.dtype == np.float32 and restored.tolist() == values


def test_float16_keeps_a_unit_vector_to_three_decimals_and_refuses_what_overflows() -> None:
    vector = np.random.default_rng(1).normal(size=384).astype(np.float32)
    vector /= np.linalg.norm(vector)
    restored = bytes_to_vector(vector_to_bytes(vector, 384, "FLOAT16"), 384, "FLOAT16")
    assert restored is not None and np.max(np.abs(restored - vector)) < 1e-3
    with pytest.raises(ValueError, match="too large for FLOAT16"):
        vector_to_bytes([1e6, 0.0, 0.0, 0.0], DIM, "FLOAT16")


def test_a_blob_of_the_other_type_is_absent_not_misread() -> None:
    as_float32 = vector_to_bytes([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 8)
    assert bytes_to_vector(as_float32, 8, "FLOAT16") is None  # 32 bytes: 16 FLOAT16s, not 8
    assert bytes_to_vector(vector_to_bytes([1.0, 0.0, 0.0, 0.0], DIM, "FLOAT16"), DIM) is None


def test_a_catalogue_embedding_b64_is_float32_whatever_the_index_holds() -> None:
    blob = np.asarray([0.5, 0.5, 0.5, 0.5], dtype="<f4").tobytes()
    product = {"embedding_b64": base64.b64encode(blob).decode()}
    assert product_embedding_bytes(product, DIM, "FLOAT16") == np.asarray([0.5] * 4, dtype="<f2").tobytes()
    assert product_to_hash(PRODUCT, DIM, (), "FLOAT16")["embedding"] == np.asarray([1, 0, 0, 0], "<f2").tobytes()


def test_the_vector_format_is_the_index_s_once_read_and_the_asked_for_one_without_an_index() -> None:
    reads: list[str | None] = [None, None, "FLOAT32"]
    fmt = VectorFormat(DIM, "FLOAT16", lambda: reads.pop(0))  # type: ignore[arg-type, return-value]
    assert fmt.vector_type == "FLOAT16" and fmt.vector_type == "FLOAT16"  # no index yet: read each time
    assert fmt.vector_type == "FLOAT32" and fmt.vector_type == "FLOAT32" and not reads  # read once, kept
    assert fmt.encode([1, 0, 0, 0]) == np.asarray([1, 0, 0, 0], "<f4").tobytes()
    fmt.learn("FLOAT16")
    assert fmt.decode(np.asarray([0.25] * 4, "<f2").tobytes()).tolist() == [0.25] * 4  # type: ignore[union-attr]
    assert fmt.as_float32(np.asarray([0.25] * 4, "<f2").tobytes()) == np.asarray([0.25] * 4, "<f4").tobytes()
    assert fmt.as_float32(b"\x00") == b""


@pytest.mark.parametrize("protocol", ["resp2", "resp3"])
def test_the_vector_type_is_read_from_ft_info(protocol: str) -> None:
    attribute = {
        b"identifier": b"embedding", b"attribute": b"embedding", b"type": b"VECTOR", b"algorithm": b"HNSW",
        b"data_type": b"FLOAT16", b"dim": 384, b"distance_metric": b"COSINE",
    }  # fmt: skip
    name = {b"identifier": b"name", b"attribute": b"name", b"type": b"TEXT"}
    if protocol == "resp3":
        reply: object = {b"index_name": b"i", b"attributes": [name, attribute]}
    else:
        flat = [[item for pair in a.items() for item in pair] for a in (name, attribute)]
        reply = [b"index_name", b"i", b"attributes", flat]
    assert index_vector_type(reply) == "FLOAT16"
    assert index_vector_type([b"index_name", b"i", b"attributes", []]) is None


def test_bad_vectors_are_value_errors_and_bad_blobs_absent() -> None:
    with pytest.raises(ValueError, match="shape"):
        vector_to_bytes([1.0, 2.0], DIM)
    with pytest.raises(ValueError, match="NaN"):
        vector_to_bytes([1.0, np.nan, 0.0, 0.0], DIM)
    assert bytes_to_vector(b"\x00" * 3, DIM) is None and bytes_to_vector(None, DIM) is None


def test_a_product_hash_is_the_shared_layout() -> None:
    assert product_to_hash(PRODUCT, DIM) == {
        "name": "Parka", "description": "Warm", "category": "outerwear", "brand": "North", "price": "199.0",
        "rating": "4.5", "in_stock": "true", "text_sha256": text_digest("Parka. Warm"),
        "embedding": np.asarray([1, 0, 0, 0], dtype="<f4").tobytes(),
    }  # fmt: skip


def test_optional_fields_take_their_defaults_and_a_path_is_stored_as_its_levels() -> None:
    bare = {"id": "b", "name": "Mug", "price": 2, "category": "Home > Kitchen", "embedding": [1, 0, 0, 0]}
    stored = product_to_hash(bare, DIM)
    assert (stored["description"], stored["brand"], stored["rating"], stored["in_stock"]) == ("", "", "0.0", "true")
    assert stored["category"] == "Home,Home > Kitchen"


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
