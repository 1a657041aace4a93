"""FLOAT32 and FLOAT16 product vectors on the real Redis with Search: the library writes and
searches vectors in the index's own type, read from the index (FT.INFO), so a catalogue written
as FLOAT32 keeps serving whatever type a recommender is told to create."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import redis
from conftest import DIM, FIXED_NOW, distances_of, make_products, unit_vectors

from recommender import EMBEDDING_FIELD, SESSION_VEC_FIELD, RedisRecommender, VectorType

ITEM_BYTES = {"FLOAT32": 4, "FLOAT16": 2}


def stored_vector_bytes(rec: RedisRecommender, product_id: str) -> bytes:
    blob = rec.redis.hget(rec.product_key(product_id), EMBEDDING_FIELD)
    assert isinstance(blob, bytes)
    return blob


def index_data_type(client: redis.Redis, index_name: str = "recommend:idx") -> str:
    reply = client.execute_command("FT.INFO", index_name)
    info = reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))
    for attribute in info[b"attributes"]:
        fields = attribute if isinstance(attribute, dict) else dict(zip(attribute[::2], attribute[1::2], strict=True))
        if fields[b"attribute"] == EMBEDDING_FIELD.encode():
            return fields[b"data_type"].decode()
    raise AssertionError("no vector field")


@pytest.mark.parametrize("vector_type", ["FLOAT32", "FLOAT16"])
def test_every_path_writes_and_searches_in_the_index_type(redis_client: redis.Redis, vector_type: VectorType) -> None:
    rec = RedisRecommender(redis_client, vector_type=vector_type, clock=lambda: FIXED_NOW)
    assert rec.create_index() and index_data_type(redis_client) == vector_type
    products = make_products(40)
    # A catalogue file's vector: base64 of float32 bytes, whatever the index holds.
    products[1]["embedding_b64"] = base64.b64encode(products[1].pop("embedding").astype("<f4").tobytes()).decode()
    assert rec.index_products(products) == 40
    assert rec.count_indexed() == 40
    for product in products[:3]:
        assert len(stored_vector_bytes(rec, product["id"])) == DIM * ITEM_BYTES[vector_type]

    vectors = unit_vectors(40)
    for i in (0, 1, 7):
        found = rec.candidate_retrieve(vectors[i], k=3)
        assert found[0].id == products[i]["id"] and distances_of(found[:1])[0] < 1e-3

    similar = rec.similar("t0007", k=3)
    assert similar.candidates and "t0007" not in [c.id for c in similar.candidates]
    mmr = rec.recommend(vectors[3], k=5, diversity=0.5)  # MMR reads the candidates' stored vectors
    assert mmr.candidates[0].id == "t0003"

    rec.record_click("u1", "t0002")  # the session vector is folded from the product's, as FLOAT32
    session = redis_client.hget(rec.features_key("u1"), SESSION_VEC_FIELD)
    assert isinstance(session, bytes) and len(session) == DIM * 4
    assert np.allclose(np.frombuffer(session, "<f4"), vectors[2], atol=2e-3)

    rec.refresh_embedding("t0005", vectors[30])
    assert rec.candidate_retrieve(vectors[30], k=2)[0].id in {"t0005", "t0030"}
    assert len(stored_vector_bytes(rec, "t0005")) == DIM * ITEM_BYTES[vector_type]

    written = rec.upsert_products(
        [{"id": "new", "name": "A new thing", "price": 5}], embed=lambda texts: unit_vectors(len(texts), seed=9)
    )
    assert [w.product_id for w in written] == ["new"]
    assert len(stored_vector_bytes(rec, "new")) == DIM * ITEM_BYTES[vector_type]
    assert rec.candidate_retrieve(unit_vectors(1, seed=9)[0], k=1)[0].id == "new"


def test_a_float32_catalogue_keeps_serving_a_recommender_told_float16(redis_client: redis.Redis) -> None:
    old = RedisRecommender(redis_client)  # as the code before vector types made it
    old.create_index()
    old.index_products(make_products(20))
    rec = RedisRecommender(redis_client, vector_type="FLOAT16")
    assert rec.vector_type == "FLOAT32"
    assert rec.create_index() is False and index_data_type(redis_client) == "FLOAT32"
    rec.index_products(make_products(25)[20:])
    assert len(stored_vector_bytes(rec, "t0022")) == DIM * 4
    assert rec.count_indexed() == 25
    assert rec.candidate_retrieve(unit_vectors(25)[22], k=1)[0].id == "t0022"
    assert rec.candidate_retrieve(unit_vectors(25)[3], k=1)[0].id == "t0003"


def test_a_float16_index_made_elsewhere_is_read_by_a_default_recommender(redis_client: redis.Redis) -> None:
    default = RedisRecommender(redis_client)
    assert default.vector_type == "FLOAT32"  # no index yet: what it would create
    RedisRecommender(redis_client, vector_type="FLOAT16").create_index()  # another process
    assert default.vector_type == "FLOAT16"
    default.index_products(make_products(10))
    assert len(stored_vector_bytes(default, "t0004")) == DIM * 2
    assert default.candidate_retrieve(unit_vectors(10)[4], k=1)[0].id == "t0004"
    assert default.drop_index(delete_documents=True)
    default.create_index()  # dropped: it creates what it was asked for again
    assert index_data_type(redis_client) == "FLOAT32"


def test_a_reload_keeps_the_serving_type(redis_client: redis.Redis) -> None:
    rec = RedisRecommender(redis_client, vector_type="FLOAT16")
    rec.create_index()
    rec.index_products(make_products(5))
    rec.reload_catalog(make_products(8, seed=4), model="test")
    assert rec.vector_type == "FLOAT16" and rec.count_indexed() == 8
    assert len(stored_vector_bytes(rec, "t0006")) == DIM * 2
    assert rec.candidate_retrieve(unit_vectors(8, seed=4)[6], k=1)[0].id == "t0006"


def test_an_unknown_vector_type_is_a_value_error(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="vector_type must be one of"):
        RedisRecommender(redis_client, vector_type="FLOAT64")  # type: ignore[arg-type]
