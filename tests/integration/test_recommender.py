"""RedisRecommender against the real Redis with Search, on RESP2 and RESP3 clients."""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import redis
from conftest import DIM, FIXED_NOW, distances_of, make_products, raw, unit_vectors

from ranking import rerank
from recommender import (
    Candidate,
    RankingConfig,
    RedisRecommender,
    SearchFilters,
    build_filter_clause,
    escape_tag_value,
    search_rows,
)

HOSTILE_VALUES = [
    "x} | @brand:{y",
    "-foo",
    'a"b\\',
    "*",
    "a,b",
    '{}|@-*":;/?',
    "é ü",
    "$vec",
    "(x)=>[KNN 1 @embedding $vec]",
]


# --- index lifecycle ------------------------------------------------------------------------


def test_create_index_is_idempotent(recommender: RedisRecommender) -> None:
    assert recommender.create_index() is False
    assert recommender.index_exists()


def test_drop_index_when_absent_is_not_an_error(redis_client: redis.Redis) -> None:
    rec = RedisRecommender(redis_client, index_name="never:created")
    assert rec.drop_index() is False
    assert rec.drop_index(delete_documents=True) is False


def test_drop_index_keeps_or_deletes_documents(recommender: RedisRecommender) -> None:
    recommender.index_products(make_products(5))
    recommender.drop_index()
    assert recommender.redis.exists(recommender.product_key("t0000"))
    recommender.create_index()
    recommender.wait_until_indexed()
    assert recommender.count_indexed() == 5
    recommender.drop_index(delete_documents=True)
    assert not recommender.redis.exists(recommender.product_key("t0000"))


def test_index_products_writes_the_shared_hash_layout(recommender: RedisRecommender) -> None:
    products = make_products(3)
    products[1]["embedding"] = products[1]["embedding"].tolist()
    products[2]["embedding_b64"] = base64.b64encode(products[2].pop("embedding").astype("<f4").tobytes()).decode()
    assert recommender.index_products(products) == 3
    assert recommender.count_indexed() == 3
    stored = recommender.redis.hgetall(recommender.product_key("t0000"))
    assert set(stored) == {
        b"name",
        b"description",
        b"category",
        b"brand",
        b"price",
        b"rating",
        b"in_stock",
        b"embedding",
        b"text_sha256",  # the digest of the embedded text: a later write re-embeds only when it changes
    }
    assert stored[b"in_stock"] == b"false"  # t0000 is out of stock in make_products
    assert float(stored[b"price"]) == products[0]["price"]
    assert np.array_equal(np.frombuffer(raw(stored[b"embedding"]), dtype="<f4"), products[0]["embedding"])
    for i in (1, 2):
        blob = raw(recommender.redis.hget(recommender.product_key(f"t000{i}"), "embedding"))
        assert len(blob) == DIM * 4


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"embedding": np.ones(10)}, "shape"),
        ({"embedding": np.full(DIM, np.nan)}, "NaN"),
        ({"embedding_b64": base64.b64encode(b"\0" * 12).decode()}, "bytes"),
        ({"id": ""}, "without an id"),
        ({"in_stock": "yes"}, "in_stock must be a boolean"),
        ({"price": None}, "lacks price"),
        ({"rating": "high"}, "rating must be a number"),
        ({"category": "tops,bags"}, "tag separator"),
        ({"id": "has\ttab"}, "id must not contain control characters"),
        ({"id": "x" * 257}, "over the limit of 256"),
    ],
)
def test_index_products_rejects_bad_products_before_writing(
    recommender: RedisRecommender, bad: dict, message: str
) -> None:
    product = make_products(1)[0]
    if "embedding_b64" in bad:
        del product["embedding"]
    product.update(bad)
    with pytest.raises(ValueError, match=message):
        recommender.index_products([*make_products(2, seed=5), product])
    assert recommender.count_indexed() == 0


def test_index_info_and_listings(recommender: RedisRecommender) -> None:
    recommender.index_products(make_products(12))
    info = recommender.index_info()
    assert info["num_docs"] == 12 and info["indexing_failures"] == 0 and info["vector_index_size_mb"] > 0
    products = recommender.list_products(limit=5)
    assert len(products) == 5
    assert [p["price"] for p in products] == sorted(p["price"] for p in products)
    assert set(products[0]) == {"id", "name", "category", "brand", "price", "rating", "in_stock"}
    assert recommender.list_categories() == ["bags", "footwear", "outerwear", "tops"]
    assert recommender.list_brands() == ["Northpeak", "Tidewater", "Urban Loom"]
    recommender.redis.delete(*[recommender.product_key(f"t{i:04d}") for i in range(12) if i % 3 == 1])
    assert recommender.list_brands() == ["Northpeak", "Tidewater"], "values of deleted products are gone at once"


# --- retrieval ------------------------------------------------------------------------------


@pytest.fixture
def catalog(recommender: RedisRecommender) -> list[dict]:
    products = make_products(60)
    recommender.index_products(products)
    return products


def test_knn_without_filters_is_exact_and_sorted(recommender: RedisRecommender, catalog: list[dict]) -> None:
    vectors = np.stack([p["embedding"] for p in catalog])
    query = unit_vectors(1, seed=99)[0]
    results = recommender.candidate_retrieve(query, k=10)
    exact = np.argsort(1 - vectors @ query)[:10]
    assert [c.id for c in results] == [catalog[i]["id"] for i in exact]
    distances = distances_of(results)
    assert distances == sorted(distances)
    assert np.allclose(distances_of(results), (1 - vectors @ query)[exact], atol=1e-5)
    assert all(isinstance(c, Candidate) and c.score == c.vector_distance for c in results)


def test_identical_vector_has_distance_zero(recommender: RedisRecommender, catalog: list[dict]) -> None:
    top = recommender.candidate_retrieve(catalog[7]["embedding"], k=1)[0]
    assert top.id == catalog[7]["id"] and top.vector_distance is not None and abs(top.vector_distance) < 1e-5
    assert top.name == "Test item 7" and top.brand == "Urban Loom" and top.in_stock is True


@pytest.mark.parametrize(
    "filters, check",
    [
        ({"category": "footwear"}, lambda p: p["category"] == "footwear"),
        ({"brand": "Urban Loom"}, lambda p: p["brand"] == "Urban Loom"),
        ({"in_stock_only": True}, lambda p: p["in_stock"]),
        ({"min_price": 100, "max_price": 200}, lambda p: 100 <= p["price"] <= 200),
        ({"max_price": 50}, lambda p: p["price"] <= 50),
        ({"min_rating": 4.0}, lambda p: p["rating"] >= 4.0),
        ({"text_match": "waterproof"}, lambda p: "waterproof" in p["description"]),
        (
            {"category": "tops", "brand": "Northpeak", "in_stock_only": True, "min_rating": 2.5},
            lambda p: p["category"] == "tops" and p["brand"] == "Northpeak" and p["in_stock"] and p["rating"] >= 2.5,
        ),
    ],
)
def test_filters_return_exactly_the_matching_nearest(
    recommender: RedisRecommender, catalog: list[dict], filters, check
) -> None:
    query = unit_vectors(1, seed=3)[0]
    results = recommender.candidate_retrieve(query, k=8, **filters)
    matching = [p for p in catalog if check(p)]
    expected = sorted(matching, key=lambda p: 1 - float(p["embedding"] @ query))[:8]
    assert results, "the filter should match something in this catalog"
    assert [c.id for c in results] == [p["id"] for p in expected]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_hostile_tag_values_match_only_their_literal(
    recommender: RedisRecommender, catalog: list[dict], value: str
) -> None:
    """A product whose category *is* the hostile string is found; nothing else ever is."""
    hostile = make_products(1, seed=11)[0] | {"id": "hostile", "category": value, "brand": value}
    if "," in value:  # a comma would split the value into two tags: such products are refused
        with pytest.raises(ValueError, match="tag separator"):
            recommender.index_products([hostile])
    else:
        recommender.index_products([hostile])
    for field in ("category", "brand"):
        filters: dict[str, Any] = {field: value}
        results = recommender.candidate_retrieve(hostile["embedding"], k=20, **filters)
        assert [c.id for c in results] == ([] if "," in value else ["hostile"])


@pytest.mark.parametrize("value", ['a"b\\', "*", "x)=>[KNN 1 @embedding $vec]", '{}|@-*":;/?', "-", "the"])
def test_hostile_text_match_is_one_literal_phrase(
    recommender: RedisRecommender, catalog: list[dict], value: str
) -> None:
    results = recommender.candidate_retrieve(unit_vectors(1)[0], k=20, text_match=value)
    assert all(value.lower() in c.description.lower() for c in results)


@pytest.mark.parametrize("field", ["category", "brand"])
@pytest.mark.parametrize("value", ["a\x00b", "a\ud800b"])
def test_unusable_tag_values_are_refused_clearly(recommender: RedisRecommender, field: str, value: str) -> None:
    filters: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=field):
        recommender.candidate_retrieve(unit_vectors(1)[0], **filters)


@pytest.mark.parametrize("field", ["category", "brand"])
def test_empty_tag_values_mean_any_as_in_the_reference(
    recommender: RedisRecommender, catalog: list[dict], field: str
) -> None:
    empty: dict[str, Any] = {field: ""}
    blank: dict[str, Any] = {field: "  "}
    assert build_filter_clause(**empty) == build_filter_clause(**blank) == "*"
    assert len(recommender.candidate_retrieve(unit_vectors(1)[0], "", k=60)) == 60


def test_empty_text_match_filters_nothing(recommender: RedisRecommender, catalog: list[dict]) -> None:
    assert build_filter_clause(text_match="  ") == "*"
    assert len(recommender.candidate_retrieve(unit_vectors(1)[0], k=60, text_match="")) == 60


def test_filter_clause_shapes() -> None:
    assert build_filter_clause() == "*"
    clause = build_filter_clause(
        category="outer wear",
        brand="A-B",
        min_price=10,
        max_price=20.5,
        in_stock_only=True,
        min_rating=4,
        text_match='say "hi"',
    )
    assert clause == (
        '@category:{outer\\ wear} @brand:{A\\-B} @in_stock:{true} @price:[10.0 20.5] @rating:[4.0 +inf] @description:"say \\"hi\\""'
    )
    assert build_filter_clause(max_price=5) == "@price:[-inf 5.0]"
    assert build_filter_clause(text_match="zip", text_field="name") == '@name:"zip"'
    assert escape_tag_value("x} | @brand:{y") == "x\\}\\ \\|\\ \\@brand\\:\\{y"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_price": 20, "max_price": 10}, "greater than max_price"),
        ({"min_price": "cheap"}, "min_price must be a number"),
        ({"min_rating": float("nan")}, "finite"),
        ({"max_price": float("inf")}, "finite"),
        ({"text_match": "a", "text_field": "brand"}, "text_field"),
    ],
)
def test_filter_clause_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_filter_clause(**kwargs)


@pytest.mark.parametrize("k", [0, -1, 10_001, 2.5, True])
def test_k_is_validated(recommender: RedisRecommender, k) -> None:
    with pytest.raises(ValueError, match="k must be"):
        recommender.candidate_retrieve(unit_vectors(1)[0], k=k)


@pytest.mark.parametrize("vector", [np.ones(DIM - 1), np.ones((2, DIM)), [0.5] * (DIM + 1)])
def test_wrong_dimension_query_vectors_are_rejected(recommender: RedisRecommender, vector) -> None:
    with pytest.raises(ValueError, match="shape"):
        recommender.candidate_retrieve(vector)
    with pytest.raises(ValueError, match="shape"):
        recommender.candidate_retrieve(unit_vectors(1)[0], session_vec=vector)


def test_session_blending_uses_the_normalised_weighted_sum(recommender: RedisRecommender, catalog: list[dict]) -> None:
    query, session = unit_vectors(2, seed=42)
    blended = 0.7 * query + 0.3 * session
    blended /= np.linalg.norm(blended)
    served = recommender.candidate_retrieve(query, k=5, session_vec=session, session_weight=0.3)
    direct = recommender.candidate_retrieve(blended, k=5)
    assert [c.id for c in served] == [c.id for c in direct]
    assert np.allclose(distances_of(served), distances_of(direct), atol=1e-6)
    pulled = recommender.candidate_retrieve(query, k=1, session_vec=catalog[0]["embedding"], session_weight=1.0)
    assert pulled[0].id == catalog[0]["id"]


def test_search_rows_normalises_both_protocols() -> None:
    resp2 = [1, b"product:p1", [b"name", b"Parka", b"vector_score", b"0.25"]]
    resp3 = {
        b"total_results": 1,
        b"results": [
            {b"id": b"product:p1", b"extra_attributes": {b"name": b"Parka", b"vector_score": b"0.25"}, b"values": []}
        ],
    }
    resp3_decoded = {
        "total_results": 1,
        "results": [{"id": "product:p1", "extra_attributes": {"name": "Parka", "vector_score": "0.25"}}],
    }
    expected = [("product:p1", {"name": "Parka", "vector_score": "0.25"})]
    assert search_rows(resp2) == search_rows(resp3) == search_rows(resp3_decoded) == expected
    assert search_rows([0]) == search_rows({b"total_results": 0, b"results": []}) == []


def test_client_that_decodes_responses_is_refused(local_redis) -> None:
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisRecommender(local_redis.client(decode_responses=True))


# --- rerank ---------------------------------------------------------------------------------


def _candidate(pid: str, category: str, distance: float) -> Candidate:
    return Candidate(pid, pid, "", category, "b", 1.0, 4.0, True, distance, distance)


def test_rerank_applies_log_affinity_bonus() -> None:
    candidates = [_candidate("a", "tops", 0.30), _candidate("b", "bags", 0.35), _candidate("c", "hats", 0.40)]
    affinities = {"bags": 3.0, "hats": -2.0}
    ranked, changed = rerank(candidates, affinities, affinity_weight=0.15)
    assert [c.id for c in ranked] == ["b", "a", "c"] and changed
    assert ranked[0].score == pytest.approx(0.35 - np.log1p(3.0) * 0.15)
    assert ranked[0].why.affinity_bonus == pytest.approx(np.log1p(3.0) * 0.15)
    # A negative affinity (more dismissals than clicks) is a penalty of the same shape.
    assert ranked[2].score == pytest.approx(0.40 + np.log1p(2.0) * 0.15)
    assert ranked[2].why.affinity_penalty == pytest.approx(np.log1p(2.0) * 0.15)
    assert [c.id for c in candidates] == ["a", "b", "c"] and candidates[1].score == 0.35  # inputs untouched
    assert rerank(candidates, {}) == (candidates, False)
    assert [c.id for c in rerank(candidates, affinities, k=1)[0]] == ["b"]


def test_overfetch_lets_rerank_pull_in_an_item_beyond_k(recommender: RedisRecommender) -> None:
    """Three near items in 'tops', a slightly farther one in 'bags' the user loves: reranking
    only the top 3 can never show the bag; over-fetching can."""
    query = unit_vectors(1, seed=1)[0]
    noise = unit_vectors(4, seed=2)
    products = make_products(4)
    for i, (product, category) in enumerate(zip(products, ["tops", "tops", "tops", "bags"], strict=True)):
        vec = query + (0.3 + 0.05 * i) * noise[i]
        product.update(category=category, embedding=vec / np.linalg.norm(vec), in_stock=True)
    recommender.index_products(products)
    recommender.redis.hset(recommender.features_key("fan"), "aff:bags", 20)
    no_overfetch = RedisRecommender(recommender.redis, config=RankingConfig(overfetch=1))
    without = no_overfetch.recommend(query, user_id="fan", k=3, use_session=False)
    with_overfetch = recommender.recommend(query, user_id="fan", k=3, use_session=False)
    assert products[3]["id"] not in [c.id for c in without.candidates]
    assert with_overfetch.candidates[0].id == products[3]["id"]
    assert len(with_overfetch.candidates) == 3 and with_overfetch.used_rerank


def test_recommend_reports_what_it_did(recommender: RedisRecommender, catalog: list[dict]) -> None:
    query = unit_vectors(1, seed=8)[0]
    first = recommender.recommend(query, user_id="new-user", k=5, filters=SearchFilters(category="tops"))
    assert first.used_session is False and first.filter_clause == "@category:{tops}"
    assert all(c.category == "tops" for c in first.candidates) and len(first.candidates) == 5
    recommender.record_click("new-user", catalog[0]["id"])
    second = recommender.recommend(query, user_id="new-user", k=5, use_rerank=False)
    assert second.used_session is True and second.used_rerank is False
    assert all(c.score == c.vector_distance for c in second.candidates)


# --- clicks and user features ---------------------------------------------------------------


def test_first_click_sets_session_to_item_then_ewma(recommender: RedisRecommender, catalog: list[dict]) -> None:
    a, b = catalog[1], catalog[2]
    result = recommender.record_click("u1", a["id"])
    assert result == {
        "category": a["category"],
        "affinity": 1.0,
        "clicks": 1,
        "last_clicked_id": a["id"],
        "session_updated": True,
        "already_applied": False,
    }
    features = recommender.get_user_features("u1")
    assert np.allclose(features["session_vec"], a["embedding"], atol=1e-6)
    recommender.record_click("u1", b["id"], ewma_alpha=0.4, affinity_step=2.5)
    expected = 0.4 * b["embedding"] + 0.6 * a["embedding"]
    expected /= np.linalg.norm(expected)
    features = recommender.get_user_features("u1")
    assert np.allclose(features["session_vec"], expected, atol=1e-6)
    assert features["affinities"] == {a["category"]: 1.0, b["category"]: 2.5}
    assert features["clicks"] == 2
    assert features["last_clicked_id"] == b["id"] and features["last_clicked_category"] == b["category"]
    assert recommender.recent_clicks("u1") == [b["id"], a["id"]]


def test_recent_clicks_keep_the_newest_six(recommender: RedisRecommender, catalog: list[dict]) -> None:
    for product in catalog[:9]:
        recommender.record_click("u1", product["id"])
    assert recommender.recent_clicks("u1") == [p["id"] for p in reversed(catalog[3:9])]


def test_click_on_unknown_product_raises_key_error_and_changes_nothing(recommender: RedisRecommender) -> None:
    with pytest.raises(KeyError):
        recommender.record_click("u1", "no-such-product")
    assert not recommender.redis.exists(recommender.features_key("u1"))


def test_click_on_product_without_vector_counts_but_keeps_session(
    recommender: RedisRecommender, catalog: list[dict], caplog
) -> None:
    recommender.record_click("u1", catalog[0]["id"])
    before = recommender.get_user_features("u1")["session_vec"]
    recommender.redis.hset(recommender.product_key(catalog[1]["id"]), "embedding", b"garbled")
    with caplog.at_level(logging.WARNING):
        result = recommender.record_click("u1", catalog[1]["id"])
    assert result["session_updated"] is False and result["clicks"] == 2
    assert np.array_equal(recommender.get_user_features("u1")["session_vec"], before)
    assert "no valid" in caplog.text


def test_unknown_user_has_empty_features(recommender: RedisRecommender) -> None:
    assert recommender.get_user_features("nobody") == {
        "session_vec": None,
        "affinities": {},
        "clicks": 0,
        "last_clicked_id": None,
        "last_clicked_category": None,
        # Ours only: the negative (dismissed) vector and when each signal last moved.
        "negative_vec": None,
        "session_at": None,
        "negative_at": None,
        "affinity_at": None,
    }


def test_wrong_length_session_vector_is_treated_as_absent(
    recommender: RedisRecommender, catalog: list[dict], caplog
) -> None:
    assert isinstance(recommender.redis, redis.Redis)
    user = f"u-{recommender.redis.connection_pool.connection_kwargs.get('protocol')}"  # logged once per user
    recommender.redis.hset(recommender.features_key(user), mapping={"session_vec": b"\x00" * 100, "clicks": 3})
    with caplog.at_level(logging.WARNING):
        features = recommender.get_user_features(user)
    assert features["session_vec"] is None and features["clicks"] == 3
    assert "100 bytes" in caplog.text
    assert recommender.recommend(unit_vectors(1)[0], user_id="u1", k=3).used_session is False
    recommender.record_click("u1", catalog[0]["id"])  # a click repairs it: the item becomes the session
    assert np.allclose(recommender.get_user_features("u1")["session_vec"], catalog[0]["embedding"], atol=1e-6)


def test_reset_user_forgets_everything(recommender: RedisRecommender, catalog: list[dict]) -> None:
    recommender.record_click("u1", catalog[0]["id"])
    recommender.record_click("u2", catalog[0]["id"])
    recommender.reset_user("u1")
    assert recommender.get_user_features("u1")["clicks"] == 0
    assert recommender.recent_clicks("u1") == []
    assert recommender.get_user_features("u2")["clicks"] == 1


def test_concurrent_clicks_lose_no_update(recommender: RedisRecommender) -> None:
    """8 threads x 50 clicks on distinct products for one user.

    Proof that no session update is lost: each click returns the click count it produced, a
    sequence number assigned inside the same atomic step. If the clicks were serialised, the
    stored session vector must equal the EWMA replayed in that order; a lost update (two
    clicks folding into the same previous vector) would make the replay diverge.
    """
    threads_n, per_thread, alpha = 8, 50, 0.4
    products = make_products(threads_n * per_thread, seed=7, categories=("a", "b", "c", "d", "e"))
    recommender.index_products(products)
    by_id = {p["id"]: p for p in products}
    order: dict[int, str] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(threads_n)

    def clicker(chunk: list[dict]) -> None:
        # A fixed clock, as the fixture's: affinities fade in real time, and 400 clicks (each
        # paired with the user's recent ones) take long enough for that to show.
        rec = RedisRecommender(recommender.redis, clock=lambda: FIXED_NOW)
        barrier.wait()
        for product in chunk:
            result = rec.record_click("hot-user", product["id"], ewma_alpha=alpha)
            with lock:
                order[result["clicks"]] = product["id"]

    workers = [
        threading.Thread(target=clicker, args=(products[i * per_thread : (i + 1) * per_thread],))
        for i in range(threads_n)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    total = threads_n * per_thread
    features = recommender.get_user_features("hot-user")
    assert features["clicks"] == total
    assert sorted(order) == list(range(1, total + 1)), "every click got its own sequence number"
    assert sum(features["affinities"].values()) == pytest.approx(total)
    session: np.ndarray | None = None
    for seq in range(1, total + 1):
        item = by_id[order[seq]]["embedding"].astype(np.float64)
        session = item if session is None else alpha * item + (1 - alpha) * session
        session = (session / np.linalg.norm(session)).astype(np.float32).astype(np.float64)
    assert session is not None and np.allclose(features["session_vec"], session, atol=1e-5)


# --- embedding refresh ----------------------------------------------------------------------


def test_refresh_embedding_moves_the_item(recommender: RedisRecommender, catalog: list[dict]) -> None:
    target = unit_vectors(1, seed=123)[0]
    assert recommender.candidate_retrieve(target, k=1)[0].id != catalog[5]["id"]
    recommender.refresh_embedding(catalog[5]["id"], target)
    top = recommender.candidate_retrieve(target, k=1)[0]
    assert top.id == catalog[5]["id"] and top.vector_distance is not None and abs(top.vector_distance) < 1e-5
    assert recommender.count_indexed() == len(catalog)


def test_refresh_embedding_rejects_bad_input(recommender: RedisRecommender, catalog: list[dict]) -> None:
    with pytest.raises(ValueError, match="shape"):
        recommender.refresh_embedding(catalog[0]["id"], np.ones(DIM + 1))
    with pytest.raises(KeyError):
        recommender.refresh_embedding("missing", unit_vectors(1)[0])
    assert not recommender.redis.exists(recommender.product_key("missing"))


def test_refresh_never_resurrects_a_concurrently_deleted_product(recommender: RedisRecommender) -> None:
    products = make_products(300, seed=9)
    recommender.index_products(products)
    vector = unit_vectors(1, seed=10)[0]

    def delete_all() -> None:
        for product in products:
            recommender.redis.delete(recommender.product_key(product["id"]))

    deleter = threading.Thread(target=delete_all)
    deleter.start()
    for product in products:
        with contextlib.suppress(KeyError):
            recommender.refresh_embedding(product["id"], vector)
    deleter.join()
    assert recommender.redis.keys(recommender.key_prefix + "*") == []


# --- HNSW and hybrid-query settings ---------------------------------------------------------


def test_default_schema_is_the_shared_one(recommender: RedisRecommender) -> None:
    assert recommender.index_schema()[-8:] == [
        "HNSW",
        "6",
        "TYPE",
        "FLOAT32",
        "DIM",
        "384",
        "DISTANCE_METRIC",
        "COSINE",
    ]


def test_hnsw_build_parameters_reach_the_index(redis_client: redis.Redis) -> None:
    rec = RedisRecommender(redis_client, index_name="tuned:idx", key_prefix="tuned:", hnsw_m=8, hnsw_ef_construction=64)
    rec.create_index()
    info = redis_client.execute_command("FT.INFO", "tuned:idx")
    text = repr(info)
    assert "'M': 8" in text or "b'M', 8" in text
    assert "ef_construction': 64" in text or "b'ef_construction', 64" in text


@pytest.mark.parametrize("policy", [None, "BATCHES", "ADHOC_BF"])
@pytest.mark.parametrize("ef_runtime", [None, 50])
def test_query_settings_keep_results_exact_on_a_small_index(redis_client: redis.Redis, policy, ef_runtime) -> None:
    rec = RedisRecommender(redis_client, ef_runtime=ef_runtime, hybrid_policy=policy)
    rec.create_index()
    products = make_products(80)
    rec.index_products(products)
    query = unit_vectors(1, seed=77)[0]
    cases: list[tuple[dict[str, Any], Callable[[dict], bool]]] = [
        ({}, lambda p: True),
        ({"category": "bags"}, lambda p: p["category"] == "bags"),
    ]
    for filters, check in cases:
        expected = sorted((p for p in products if check(p)), key=lambda p: 1 - float(p["embedding"] @ query))[:5]
        assert [c.id for c in rec.candidate_retrieve(query, k=5, **filters)] == [p["id"] for p in expected]


@pytest.mark.parametrize(
    "kwargs", [{"ef_runtime": 0}, {"hnsw_m": -1}, {"hnsw_ef_construction": 2.5}, {"hybrid_policy": "FAST"}]
)
def test_bad_index_settings_are_refused(redis_client: redis.Redis, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RedisRecommender(redis_client, **kwargs)


def test_click_over_junk_counters_repairs_them_instead_of_half_applying(
    recommender: RedisRecommender, catalog: list[dict], caplog
) -> None:
    """Redis never rolls a script back: a failure after the session write would leave a click
    half-applied. Junk counters restart from zero, and the whole click lands."""
    product = catalog[0]
    key = recommender.features_key("u1")
    recommender.redis.hset(key, mapping={"clicks": "lots", f"aff:{product['category']}": "nan", "aff:other": "2"})
    with caplog.at_level(logging.WARNING):
        result = recommender.record_click("u1", product["id"])
    assert result["clicks"] == 1 and result["affinity"] == 1.0 and result["session_updated"]
    features = recommender.get_user_features("u1")
    assert features["clicks"] == 1 and features["affinities"] == {product["category"]: 1.0, "other": 2.0}
    assert np.allclose(features["session_vec"], product["embedding"], atol=1e-6)
    assert "non-number" in caplog.text
    assert recommender.record_click("u1", product["id"], affinity_step=0.5)["affinity"] == 1.5
