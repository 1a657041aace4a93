"""The seed walkthrough on the real catalog.json, the real model and the real Redis with
Search: the demo's queries find what a shopper expects, filters are never violated, a
refreshed embedding moves its product, and KNN over this catalog is exact."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from conftest import distances_of

from local_redis import LocalRedis
from recengine.catalog_file import catalog_vectors, read_catalog
from recommender import RedisRecommender

CATALOG_PATH = Path(__file__).resolve().parents[2] / "catalog.json"

DOWN_JACKET = "insulated down jacket for cold weather"
TRAIL_SHOES = "comfortable shoes for trail running"
PARKA = "arctic expedition parka"
PARKA_REFRESH_TEXT = "heavy duty arctic expedition parka with hood"
SEED_SCENARIOS = [
    pytest.param(DOWN_JACKET, {"category": "outerwear", "in_stock_only": True}, id="down-jacket"),
    pytest.param(TRAIL_SHOES, {"category": "footwear"}, id="trail-shoes"),
]
EXACT_QUERIES = [
    DOWN_JACKET,
    TRAIL_SHOES,
    PARKA,
    "waterproof bag for kayaking",
    "warm wool hat for winter",
    "lightweight tent for backpacking",
    "office shoes in leather",
    "gift for a coffee lover who camps",
    "quick-dry shorts for summer hikes",
    "rain gear for a cycling commute",
]

GRID_CATEGORIES = (None, "outerwear", "footwear", "bags")
GRID_BRANDS = (None, "Northpeak", "Tidewater")
GRID_PRICES = ((None, None), (None, 150.0), (100.0, None), (50.0, 200.0))
GRID_MIN_RATINGS = (None, 4.5)
GRID_IN_STOCK = (False, True)
GRID_TEXTS = (None, "waterproof")


@pytest.fixture(scope="module")
def catalog() -> dict[str, Any]:
    return read_catalog(CATALOG_PATH)


@pytest.fixture(scope="module")
def vectors(catalog: dict[str, Any]) -> np.ndarray:
    return catalog_vectors(catalog)


@pytest.fixture(scope="module")
def queries(embedder) -> dict[str, np.ndarray]:
    texts = [*EXACT_QUERIES, PARKA_REFRESH_TEXT]
    return dict(zip(texts, embedder.encode_many(texts), strict=True))


@pytest.fixture(scope="module", params=[2, 3], ids=["resp2", "resp3"])
def client(request: pytest.FixtureRequest, local_redis: LocalRedis) -> Iterator[redis.Redis]:
    """One client per protocol for the whole module. No flushall: the catalog lives under
    its own prefix, so it is loaded once per protocol and never wiped by another test."""
    connection = local_redis.client(protocol=request.param)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def served(client: redis.Redis, catalog: dict[str, Any]) -> Iterator[RedisRecommender]:
    """catalog.json as the demo serves it, shared by the read-only tests."""
    yield from indexed_catalog(client, catalog)


@pytest.fixture
def scratch(client: redis.Redis, catalog: dict[str, Any]) -> Iterator[RedisRecommender]:
    """A private copy of the catalog for a test that changes it."""
    yield from indexed_catalog(client, catalog)


def indexed_catalog(client: redis.Redis, catalog: dict[str, Any]) -> Iterator[RedisRecommender]:
    tag = uuid.uuid4().hex[:8]
    recommender = RedisRecommender(
        client, index_name=f"catalog-{tag}:idx", key_prefix=f"catalog-{tag}:", vector_dim=catalog["dim"]
    )
    recommender.create_index()
    assert recommender.index_products(catalog["products"]) == len(catalog["products"])
    yield recommender
    recommender.drop_index(delete_documents=True)


def passes(product: dict[str, Any], filters: dict[str, Any]) -> bool:
    """The filters' meaning, written out in Python, for checking what Redis returned."""
    text = filters.get("text_match")
    return (
        filters.get("category") in (None, product["category"])
        and filters.get("brand") in (None, product["brand"])
        and (filters.get("min_price") is None or product["price"] >= filters["min_price"])
        and (filters.get("max_price") is None or product["price"] <= filters["max_price"])
        and (filters.get("min_rating") is None or product["rating"] >= filters["min_rating"])
        and (not filters.get("in_stock_only") or product["in_stock"])
        and (text is None or text.lower() in product["description"].lower())
    )


def exact_top_k(
    query: np.ndarray, catalog: dict[str, Any], vectors: np.ndarray, k: int, filters: dict[str, Any]
) -> list[tuple[str, float]]:
    """(id, cosine distance) of the k nearest products passing the filters, by brute force."""
    eligible = [i for i, product in enumerate(catalog["products"]) if passes(product, filters)]
    distances = 1.0 - vectors[eligible] @ query
    order = np.argsort(distances, kind="stable")[:k]
    return [(catalog["products"][eligible[i]]["id"], float(distances[i])) for i in order]


def grid() -> Iterator[dict[str, Any]]:
    for category, brand, (low, high), rating, in_stock, text in itertools.product(
        GRID_CATEGORIES, GRID_BRANDS, GRID_PRICES, GRID_MIN_RATINGS, GRID_IN_STOCK, GRID_TEXTS
    ):
        yield {
            "category": category,
            "brand": brand,
            "min_price": low,
            "max_price": high,
            "min_rating": rating,
            "in_stock_only": in_stock,
            "text_match": text,
        }


def rank_and_distance(recommender: RedisRecommender, query: np.ndarray, product_id: str) -> tuple[int, float]:
    everything = recommender.candidate_retrieve(query, k=recommender.count_indexed())
    rank = next(i for i, candidate in enumerate(everything, start=1) if candidate.id == product_id)
    return rank, distances_of(everything[rank - 1 : rank])[0]


# --- the walkthrough ------------------------------------------------------------------------


def test_down_jacket_query_finds_a_down_jacket_or_parka(served: RedisRecommender, queries) -> None:
    top = served.candidate_retrieve(queries[DOWN_JACKET], category="outerwear", in_stock_only=True, k=3)
    assert [c.category for c in top] == ["outerwear"] * 3
    assert all(c.in_stock for c in top)
    assert any("down" in c.name.lower() or "parka" in c.name.lower() for c in top), [c.name for c in top]


def test_trail_running_query_finds_a_trail_running_shoe(served: RedisRecommender, queries) -> None:
    top = served.candidate_retrieve(queries[TRAIL_SHOES], category="footwear", k=3)
    assert [c.category for c in top] == ["footwear"] * 3
    trail_running = re.compile(r"trail[ -]run", re.IGNORECASE)
    assert any(trail_running.search(f"{c.name} {c.description}") for c in top), [c.name for c in top]


@pytest.mark.parametrize(("query", "filters"), SEED_SCENARIOS)
def test_text_match_keeps_only_waterproof_products(
    served: RedisRecommender, queries, query: str, filters: dict[str, Any]
) -> None:
    results = served.candidate_retrieve(queries[query], text_match="waterproof", k=10, **filters)
    assert results
    assert all("waterproof" in c.description.lower() for c in results), [c.name for c in results]
    assert all(c.category == filters["category"] for c in results)


def test_refreshed_embedding_moves_its_product_closer(scratch: RedisRecommender, queries) -> None:
    # Measured with all-MiniLM-L6-v2: p001 "Alpine down parka" is already the nearest product
    # to the query (distance 0.541) and the refresh brings it to 0.322, widening its lead.
    rank_before, distance_before = rank_and_distance(scratch, queries[PARKA], "p001")
    scratch.refresh_embedding("p001", queries[PARKA_REFRESH_TEXT])
    rank_after, distance_after = rank_and_distance(scratch, queries[PARKA], "p001")
    assert distance_after < distance_before - 0.1
    assert rank_after <= rank_before
    assert rank_after == 1


# --- properties over the whole catalog -------------------------------------------------------


def test_every_result_respects_every_filter(served: RedisRecommender, catalog, vectors, queries) -> None:
    """Not only inside the filters: exactly the k nearest of the products that pass them."""
    checked = 0
    for number, filters in enumerate(grid()):
        query = queries[EXACT_QUERIES[number % len(EXACT_QUERIES)]]
        results = served.candidate_retrieve(query, k=10, **filters)
        assert all(passes(c.to_dict(), filters) for c in results), (filters, [c.id for c in results])
        expected = exact_top_k(query, catalog, vectors, 10, filters)
        assert [c.id for c in results] == [pid for pid, _ in expected], filters
        np.testing.assert_allclose(distances_of(results), [d for _, d in expected], atol=1e-5)
        checked += bool(results)
    assert checked > len(list(grid())) // 2, "the grid should mostly select something"


@pytest.mark.parametrize("query", EXACT_QUERIES)
def test_unfiltered_top_10_is_exact(served: RedisRecommender, catalog, vectors, queries, query: str) -> None:
    results = served.candidate_retrieve(queries[query], k=10)
    expected = exact_top_k(queries[query], catalog, vectors, 10, {})
    assert [c.id for c in results] == [pid for pid, _ in expected]
    np.testing.assert_allclose(distances_of(results), [d for _, d in expected], atol=1e-5)
