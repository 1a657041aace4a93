"""A typed query over HTTP and the real module: understanding, BM25 fused with the KNN, bounded
personalisation, and bad input that is understood as far as it can be."""

from __future__ import annotations

import collections
from typing import Any

import pytest
from test_http import call, post


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


@pytest.mark.parametrize(
    "query",
    [
        "the and of",
        "!!! ???",
        "under 200",
        "boots 300-100",
        "tent under 1e309",
        "Summit & Sage {x}|@brand:*",
        "7 stars",
    ],
)
def test_bad_queries_are_answered_with_what_was_understood_and_ignored(demo_url: str, user_id: str, query: str) -> None:
    reply = call(demo_url, "POST", "/search", {"query": query, "user_id": user_id})
    assert reply.status == 200, reply.body[:300]
    result = reply.json()
    assert result["candidates"], query
    understood = result["understood"]
    assert understood["ignored"] or understood.get("brand") or understood.get("max_price"), understood
