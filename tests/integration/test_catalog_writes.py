"""Per-product writes against a real Redis with Search: upsert (embedding only what changed),
update of filter fields (never re-embedding), delete, and a real catalogue's schema (optional
fields, category paths, ids of any printable text)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import redis
from conftest import DIM, make_products, raw, unit_vectors

from recommender import (
    ExtraField,
    ProductNotFoundError,
    ProductWrite,
    RedisRecommender,
    SearchFilters,
    info_dict,
)


class CountingEmbedder:
    """What the server's encoder does for upsert_products, with the texts it was asked for."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        return unit_vectors(len(texts), seed=len(self.texts))


def reindexed(rec: RedisRecommender) -> int:
    """Documents (re-)indexed so far: FT.INFO's max_doc_id grows by one per write to a hash."""
    return int(info_dict(rec.redis.execute_command("FT.INFO", rec.index_name))["max_doc_id"])


def without_vectors(products: list[dict]) -> list[dict]:
    return [{k: v for k, v in p.items() if k != "embedding"} for p in products]


def test_upsert_embeds_new_products_and_a_second_upsert_writes_nothing(recommender: RedisRecommender) -> None:
    products = without_vectors(make_products(6))
    embed = CountingEmbedder()
    first = recommender.upsert_products(products, embed=embed)
    assert [w.created and w.embedded for w in first] == [True] * 6
    assert len(embed.texts) == 6 and embed.texts[0] == "Test item 0. a waterproof shell"
    before = reindexed(recommender)
    again = recommender.upsert_products(products, embed=embed)
    assert [(w.created, w.embedded, w.fields) for w in again] == [(False, False, ())] * 6
    assert len(embed.texts) == 6 and reindexed(recommender) == before


def test_upsert_re_embeds_only_the_products_whose_text_changed(recommender: RedisRecommender) -> None:
    products = without_vectors(make_products(4))
    embed = CountingEmbedder()
    recommender.upsert_products(products, embed=embed)
    products[1] = {**products[1], "price": 999.0}
    products[2] = {**products[2], "description": "a brand new text"}
    writes = {w.product_id: w for w in recommender.upsert_products(products, embed=embed)}
    assert embed.texts[4:] == ["Test item 2. a brand new text"]
    assert writes["t0001"] == ProductWrite("t0001", created=False, embedded=False, fields=("price",))
    assert writes["t0002"].embedded and "description" in writes["t0002"].fields
    assert writes["t0000"].fields == () and writes["t0003"].fields == ()


def test_upsert_without_a_vector_or_an_embedder_writes_nothing(recommender: RedisRecommender) -> None:
    products = make_products(3)
    products[2] = {k: v for k, v in products[2].items() if k != "embedding"}
    with pytest.raises(ValueError, match="t0002"):
        recommender.upsert_products(products)
    assert recommender.count_indexed() == 0


def test_update_product_writes_filter_fields_without_re_embedding(recommender: RedisRecommender) -> None:
    recommender.index_products(make_products(4))
    vector_before = recommender.redis.hget(recommender.product_key("t0001"), "embedding")
    write = recommender.update_product("t0001", price=1.5, in_stock=False, rating=4.5)
    assert write == ProductWrite("t0001", created=False, embedded=False, fields=("price", "rating", "in_stock"))
    assert recommender.redis.hget(recommender.product_key("t0001"), "embedding") == vector_before
    query = unit_vectors(1, 9)[0]
    assert [c.id for c in recommender.candidate_retrieve(query, max_price=2.0, k=4)] == ["t0001"]
    assert recommender.candidate_retrieve(query, max_price=2.0, in_stock_only=True, k=4) == []


def test_an_update_to_the_same_values_does_not_touch_the_index(recommender: RedisRecommender) -> None:
    products = make_products(2)
    recommender.index_products(products)
    before = reindexed(recommender)
    assert recommender.update_product("t0000", price=products[0]["price"]).fields == ()
    assert reindexed(recommender) == before


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"colour": "red"}, "colour"),
        ({"name": "New"}, "upsert_products"),
        ({"price": math.nan}, "price"),
        ({"price": -1}, "price"),
        ({"rating": 6}, "rating"),
        ({"in_stock": "maybe"}, "in_stock"),
        ({"category": "a,b"}, "category"),
        ({}, "nothing to update"),
    ],
)
def test_update_product_refuses_bad_fields(recommender: RedisRecommender, fields: dict, message: str) -> None:
    recommender.index_products(make_products(1))
    with pytest.raises(ValueError, match=message):
        recommender.update_product("t0000", **fields)


def test_update_of_an_unknown_product_never_creates_it(recommender: RedisRecommender) -> None:
    with pytest.raises(ProductNotFoundError):
        recommender.update_product("nope", price=1.0)
    assert not recommender.redis.exists(recommender.product_key("nope"))


def test_delete_product_removes_it_everywhere_a_reader_looks(recommender: RedisRecommender) -> None:
    recommender.index_products(make_products(5))
    recommender.record_click("u1", "t0002")
    recommender.dismiss("u1", "t0003")
    assert recommender.delete_product("t0002") is True
    assert recommender.delete_product("t0002") is False
    assert "t0002" not in recommender.get_products(["t0002"])
    assert all(c.id != "t0002" for c in recommender.popular(k=5).candidates)
    assert "t0002" not in dict(recommender.popularity(limit=5))
    with pytest.raises(ProductNotFoundError):
        recommender.record_click("u1", "t0002")
    # The user's lists are cleaned lazily: the id stays, but nothing shows a product that is gone.
    assert "t0002" not in recommender.user_state("u1").product_names


HOSTILE_IDS = [
    "BANK CHARGES",
    'x"} | @brand:{y',
    "a/b?c=d&e",
    "{tag}",
    "*",
    "ünï cødé",
    "-1",
    "a\\b",
    "$vec",
    "@id:{1}",
]


def test_ids_with_query_syntax_are_stored_and_matched_literally(recommender: RedisRecommender) -> None:
    products = [{**p, "id": pid} for p, pid in zip(make_products(len(HOSTILE_IDS)), HOSTILE_IDS, strict=True)]
    recommender.upsert_products(products)
    assert set(recommender.get_products(HOSTILE_IDS)) == set(HOSTILE_IDS)
    for pid in HOSTILE_IDS:
        recommender.record_click("u-hostile", pid)
        assert pid not in [c.id for c in recommender.similar(pid, k=3).candidates]
    assert {c.id for c in recommender.popular(k=len(HOSTILE_IDS)).candidates} == set(HOSTILE_IDS)
    assert recommender.update_product(HOSTILE_IDS[1], price=1.0).fields == ("price",)
    assert recommender.delete_product(HOSTILE_IDS[1])


def test_tag_values_with_query_syntax_match_literally(recommender: RedisRecommender) -> None:
    products = make_products(3)
    products[0]["brand"] = "x} | @category:{y"
    products[1]["brand"] = "x"
    recommender.upsert_products(products)
    found = recommender.candidate_retrieve(unit_vectors(1)[0], brand="x} | @category:{y", k=3)
    assert [c.id for c in found] == ["t0000"]


def test_a_filter_on_a_category_finds_every_product_beneath_it(recommender: RedisRecommender) -> None:
    products = make_products(3)
    products[0]["category"] = "Home > Kitchen > Mugs"
    products[1]["category"] = "Home  >  Garden"
    products[2]["category"] = "Homeware"
    recommender.upsert_products(products)
    query = unit_vectors(1)[0]
    assert {c.id for c in recommender.candidate_retrieve(query, category="Home", k=3)} == {"t0000", "t0001"}
    assert [c.id for c in recommender.candidate_retrieve(query, category="Home > Kitchen", k=3)] == ["t0000"]
    shown = recommender.get_products(["t0000", "t0001"])
    assert shown["t0000"]["category"] == "Home > Kitchen > Mugs" and shown["t0001"]["category"] == "Home > Garden"
    assert "Home" in recommender.list_categories() and "Home > Kitchen" in recommender.list_categories()


def test_optional_fields_take_their_defaults_and_filters_cope(recommender: RedisRecommender) -> None:
    bare = [{"id": "bare", "name": "Plain mug", "price": 4.0, "embedding": unit_vectors(1)[0]}]
    recommender.upsert_products(bare)
    assert recommender.get_products(["bare"])["bare"] == {
        "id": "bare", "name": "Plain mug", "category": "", "brand": "", "price": 4.0, "rating": 0.0, "in_stock": True,
    }  # fmt: skip
    query = unit_vectors(1)[0]
    assert [c.id for c in recommender.candidate_retrieve(query, in_stock_only=True, k=1)] == ["bare"]
    assert recommender.candidate_retrieve(query, min_rating=1.0, k=1) == []
    assert recommender.candidate_retrieve(query, brand="Acme", k=1) == []
    assert recommender.recommend(query, filters=SearchFilters(category="x")).candidates == []


def test_a_redis_that_refuses_writes_leaves_the_product_as_it_was(
    recommender: RedisRecommender, redis_client: redis.Redis
) -> None:
    recommender.index_products(make_products(1))
    used = int(redis_client.info("memory")["used_memory"])
    redis_client.config_set("maxmemory", used)
    try:
        with pytest.raises(Exception, match="memory"):
            recommender.upsert_products([{**make_products(1)[0], "description": "x" * 100_000}])
    finally:
        redis_client.config_set("maxmemory", 0)
    assert recommender.get_products(["t0000"])["t0000"]["name"] == "Test item 0"


def test_vectors_given_with_the_products_are_used_when_the_text_is_new(recommender: RedisRecommender) -> None:
    products = make_products(2)
    writes = recommender.upsert_products(products)
    assert all(w.embedded for w in writes)
    stored = raw(recommender.redis.hget(recommender.product_key("t0000"), "embedding"))
    assert np.allclose(np.frombuffer(stored, dtype="<f4"), products[0]["embedding"])
    assert len(stored) == DIM * 4


def test_extra_tag_and_numeric_fields_are_indexed_and_filter(redis_client: redis.Redis) -> None:
    extras = (ExtraField("colour", "tag"), ExtraField("weight_kg", "numeric"))
    rec = RedisRecommender(redis_client, extra_fields=extras)
    rec.create_index()
    products = make_products(3)
    products[0] |= {"colour": "deep blue", "weight_kg": 0.4}
    products[1] |= {"colour": "x} | @brand:{y", "weight_kg": 2.5}
    rec.upsert_products(products)
    query = unit_vectors(1)[0]

    def found(**filters: object) -> list[str]:
        return [c.id for c in rec.recommend(query, k=3, filters=SearchFilters(**filters)).candidates]  # type: ignore[arg-type]

    assert found(tags=(("colour", "deep blue"),)) == ["t0000"]
    assert found(tags=(("colour", "x} | @brand:{y"),)) == ["t0001"]
    assert sorted(found(ranges=(("weight_kg", None, 3.0),))) == ["t0000", "t0001"]
    assert found(ranges=(("weight_kg", 1.0, None),)) == ["t0001"]
    assert rec.update_product("t0002", colour="red", weight_kg=9).fields == ("colour", "weight_kg")
    assert found(tags=(("colour", "red"),)) == ["t0002"]
    # A product upserted without an extra field loses it.
    assert rec.upsert_products([{k: v for k, v in products[0].items() if k != "colour"}])[0].fields == ("colour",)
    assert found(tags=(("colour", "deep blue"),)) == []
    with pytest.raises(ValueError, match="letters"):
        SearchFilters(tags=(("col our", "x"),))
