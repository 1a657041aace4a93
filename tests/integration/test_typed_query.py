"""A typed query over HTTP and the real module: understanding, BM25 fused with the KNN, bounded
personalisation, and bad input that is understood as far as it can be."""

from __future__ import annotations

import collections
import socket
from typing import Any

import pytest
import redis
from conftest import make_products
from test_http import call, post

from recommender import RedisRecommender


def search(demo_url: str, user_id: str, query: str, **fields: Any) -> dict[str, Any]:
    return post(demo_url, "/search", {"query": query, "user_id": user_id, **fields})


def test_a_brand_name_alone_brings_that_brand(demo_url: str, user_id: str, catalog: dict) -> None:
    brands = collections.Counter(p["brand"] for p in catalog["products"])
    for brand, count in brands.items():
        for typed in (brand, brand.lower().replace(" ", "-")):
            result = search(demo_url, user_id, typed)
            assert result["understood"]["brand"] == brand
            shown = [c["brand"] for c in result["candidates"]]
            assert shown.count(brand) >= min(8, count), (typed, shown)


def test_explicit_filters_win_and_understanding_can_be_turned_off(demo_url: str, user_id: str) -> None:
    result = search(demo_url, user_id, "northpeak jacket", brand="Tidewater")
    assert "brand" not in {k for k in result["understood"] if k != "phrases"} - {"terms", "ignored"}
    assert {c["brand"] for c in result["candidates"]} == {"Tidewater"}
    assert any("wins" in i["reason"] for i in result["understood"]["ignored"])
    off = search(demo_url, user_id, "northpeak", understand=False)
    assert "brand" not in off["understood"] and off["filter_clause"] == "*"


def test_a_word_in_a_product_name_raises_it(demo_url: str, user_id: str, catalog: dict) -> None:
    product = next(p for p in catalog["products"] if "tent" in p["name"].lower())
    result = search(demo_url, user_id, "tent", understand=False)
    top = result["candidates"][0]
    assert top["id"] == product["id"] and top["why"]["text_bonus"] > 0
    scores = [c["score"] for c in result["candidates"]]
    assert scores == sorted(scores)


def test_dismissals_mark_a_category_down_without_hiding_it_from_a_query_that_names_it(
    demo_url: str, user_id: str, catalog: dict
) -> None:
    before = [c["category"] for c in search(demo_url, user_id, "comfortable shoes")["candidates"]]
    shoes = [p for p in catalog["products"] if p["category"] == "footwear"][:3]
    for product in shoes:
        post(demo_url, "/dismiss", {"user_id": user_id, "product_id": product["id"]})
    result = search(demo_url, user_id, "comfortable shoes", use_session=True, rerank=True)
    after = [c["category"] for c in result["candidates"]]
    assert after[:3].count("footwear") >= before[:3].count("footwear") - 1
    penalised = [c for c in result["candidates"] if c["category"] == "footwear"]
    assert penalised and all(c["why"].get("affinity_penalty", 0) > 0 for c in penalised)


def test_a_dismissed_product_comes_back_marked_down_in_a_search_that_asks_for_it(demo_url: str, user_id: str) -> None:
    """Dismissed while looking for something else, a product is still found by a search for it:
    within its relevance tier (3), marked down and saying why. The feed and "more like this"
    leave it out as before."""
    first = search(demo_url, user_id, "rain jacket")["candidates"]
    dismissed = first[0]["id"]
    post(demo_url, "/dismiss", {"user_id": user_id, "product_id": dismissed})
    again = search(demo_url, user_id, "rain jacket", use_session=True, rerank=True)
    shown = [c["id"] for c in again["candidates"]]
    assert dismissed in shown[:3], shown
    card = again["candidates"][shown.index(dismissed)]
    assert card["why"]["dismissed_penalty"] > 0 and card["why"]["relevance_rank"] == 0
    assert card["score"] > card["why"]["vector_distance"]
    assert again["excluded_count"] == 0
    feed = post(demo_url, "/recommend", {"user_id": user_id, "k": 50})
    assert dismissed not in [c["id"] for c in feed["candidates"]]
    alike = post(demo_url, "/similar", {"user_id": user_id, "product_id": first[1]["id"], "k": 50})
    assert dismissed not in [c["id"] for c in alike["candidates"]]


@pytest.mark.parametrize(
    "query",
    [
        "the and of",
        "!!! ???",
        "...",
        "under 200",
        "in stock",
        "footwear",
        "4.5 stars and up",
        "northpeak under 50 in stock",
        "boots 300-100",
        "tent under 1e309",
        "Summit & Sage {x}|@brand:*",
        "@brand:{Northpeak} | -*",
        "7 stars",
    ],
)
def test_bad_queries_are_answered_with_what_was_understood_and_ignored(demo_url: str, user_id: str, query: str) -> None:
    reply = call(demo_url, "POST", "/search", {"query": query, "user_id": user_id})
    assert reply.status == 200, reply.body[:300]
    result = reply.json()
    assert result["candidates"], query
    understood = result["understood"]
    assert understood["ignored"] or set(understood) - {"terms", "ignored", "phrases", "specific"}, understood


def test_an_understood_price_that_contradicts_the_requests_is_ignored(demo_url: str, user_id: str) -> None:
    result = search(demo_url, user_id, "boots under 50", min_price=100)
    assert result["candidates"] and all(c["price"] >= 100 for c in result["candidates"])
    assert any("contradicts" in i["reason"] for i in result["understood"]["ignored"]), result["understood"]


def test_an_absurd_price_in_the_request_is_a_400(demo_url: str) -> None:
    reply = call(
        demo_url, "POST", "/search", body=b'{"query": "boots", "max_price": 1e309}', content_type="application/json"
    )
    assert "max_price" in reply.error(400)


# --- the library on the real module --------------------------------------------------------------


def test_a_brand_with_search_syntax_in_it_is_understood_and_found(recommender: RedisRecommender) -> None:
    products = make_products(30)
    for product in products[:10]:
        product["brand"] = "Peak {&} Co|@x*"
    recommender.index_products(products)
    recommender.wait_until_indexed()
    result = recommender.recommend(products[0]["embedding"], k=10, query_text="peak {&} co|@x*")
    assert result.understood is not None and result.understood["brand"] == "Peak {&} Co|@x*"
    assert [c.brand for c in result.candidates] == ["Peak {&} Co|@x*"] * 10


def test_the_bundled_server_has_no_ft_hybrid_so_a_typed_query_is_pipelined(
    recommender: RedisRecommender, redis_client: redis.Redis
) -> None:
    """Redis 8.2 answers COMMAND INFO FT.HYBRID with nil: the KNN and the BM25 search go in one
    pipeline, two FT.SEARCH and no FT.HYBRID."""
    assert recommender.text_fusion == "pipelined"
    products = make_products(30)
    recommender.index_products(products)
    recommender.wait_until_indexed()
    redis_client.config_resetstat()
    result = recommender.recommend(products[3]["embedding"], k=5, query_text="waterproof shell")
    assert result.candidates and any(c.why.text_bonus for c in result.candidates)
    stats = redis_client.info("commandstats")
    assert stats["cmdstat_FT.SEARCH"]["calls"] == 2 and "cmdstat_FT.HYBRID" not in stats


def test_a_server_that_cannot_be_asked_counts_as_without_ft_hybrid() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    assert RedisRecommender(client).text_fusion == "pipelined"


@pytest.mark.parametrize("diversity", [0.0, 0.5])
def test_a_typed_query_fetches_vectors_for_its_text_matches_and_for_mmr_only(
    recommender: RedisRecommender, redis_client: redis.Redis, diversity: float
) -> None:
    """A vector is a kilobyte or more a row: the KNN rows bring theirs only when MMR needs them
    (diversity), the BM25 rows always (their distance to the query is computed from it). The
    commands are read back from Redis' own slow log, which logs every command at threshold 0."""
    products = make_products(30)
    recommender.index_products(products)
    recommender.wait_until_indexed()
    recommender.record_click("someone", products[1]["id"])
    redis_client.config_set("slowlog-log-slower-than", 0)
    try:
        redis_client.slowlog_reset()
        result = recommender.recommend(
            products[3]["embedding"], user_id="someone", k=5, query_text="waterproof shell", diversity=diversity
        )
        searches = [
            e["command"].split() for e in redis_client.slowlog_get(100) if e["command"].startswith(b"FT.SEARCH")
        ]
    finally:
        redis_client.config_set("slowlog-log-slower-than", 10_000)
    assert len(result.candidates) == 5
    knn = [args for args in searches if any(b"KNN" in arg for arg in args)]
    bm25 = [args for args in searches if args not in knn]
    assert len(knn) == 2 and len(bm25) == 1  # the query's own KNN, the one blended with the session, BM25
    assert all((b"embedding" in args) == (diversity > 0) for args in knn)
    assert b"embedding" in bm25[0]
