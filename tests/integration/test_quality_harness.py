"""The quality benchmark's own machinery: the metric wiring against values worked out by hand, the
generated catalogue's determinism and labelling rules, and the judged-query file's checks.
No quality number is asserted here: those are measurements (bench/quality.py), not behaviour."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import catalog_gen
from bench.quality import (
    EvalDataError,
    Intent,
    choose_click,
    choose_dismiss,
    evaluate_rankings,
    generated_intents,
    load_judged_queries,
    make_shoppers,
)

ROOT = Path(__file__).resolve().parents[2]


def test_metrics_match_values_worked_out_by_hand() -> None:
    qrels = {
        # Ranked c, a, b: a (grade 2) at rank 2, b (grade 1) at rank 3.
        "graded": {"a": 2, "b": 1},
        # One of two relevant items in the top 10, at rank 1; the other is never retrieved.
        "half": {"x": 1, "y": 1},
        # Nothing relevant retrieved.
        "miss": {"z": 2},
        # Not in the rankings at all: scores 0, and still counts in the means.
        "absent": {"w": 1},
    }
    rankings = {
        "graded": ["c", "a", "b"],
        "half": ["x", *[f"n{i}" for i in range(9)], "y"],  # y at rank 11, past the cut-off
        "miss": ["p", "q"],
    }
    means, per_query = evaluate_rankings(qrels, rankings)

    # NDCG gain is the grade, discount log2(rank + 1).
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert per_query["ndcg@10"]["graded"] == pytest.approx(dcg / ideal)  # 0.6697
    assert per_query["recall@10"]["graded"] == pytest.approx(1.0)
    assert per_query["mrr@10"]["graded"] == pytest.approx(1 / 2)

    ideal_half = 1 / math.log2(2) + 1 / math.log2(3)
    assert per_query["ndcg@10"]["half"] == pytest.approx(1 / ideal_half)  # 0.6131
    assert per_query["recall@10"]["half"] == pytest.approx(1 / 2)
    assert per_query["mrr@10"]["half"] == pytest.approx(1.0)

    for qid in ("miss", "absent"):
        assert all(per_query[metric][qid] == 0.0 for metric in ("ndcg@10", "recall@10", "mrr@10"))
    assert means["ndcg@10"] == pytest.approx((dcg / ideal + 1 / ideal_half) / 4)
    assert means["recall@10"] == pytest.approx((1.0 + 0.5) / 4)
    assert means["mrr@10"] == pytest.approx((0.5 + 1.0) / 4)


def test_the_generator_is_deterministic() -> None:
    first = catalog_gen.generate_catalog(400, seed=5)
    again = catalog_gen.generate_catalog(400, seed=5)
    other = catalog_gen.generate_catalog(400, seed=6)
    assert first == again
    assert catalog_gen.catalog_checksum(first) == catalog_gen.catalog_checksum(again)
    assert catalog_gen.catalog_checksum(first) != catalog_gen.catalog_checksum(other)
    assert catalog_gen.derive_queries(first, 27, seed=5) == catalog_gen.derive_queries(again, 27, seed=5)


def test_generated_products_say_what_their_attributes_are() -> None:
    products = catalog_gen.generate_catalog(300, seed=1)
    assert len({p["id"] for p in products}) == len(products)
    assert {p["attributes"]["subtype"] for p in products} == set(catalog_gen.SUBTYPES_BY_KEY)
    for product in products:
        attributes = product["attributes"]
        subtype = catalog_gen.SUBTYPES_BY_KEY[attributes["subtype"]]
        assert product["category"] == attributes["category"] == subtype.category
        assert attributes["price_band"] == catalog_gen.price_band(subtype, product["price"])
        assert ("waterproof" in product["description"].lower()) == attributes["waterproof"]


def test_derived_labels_follow_the_grading_rules() -> None:
    products = catalog_gen.generate_catalog(600, seed=2)
    by_id = {p["id"]: p for p in products}
    queries = catalog_gen.derive_queries(products, 45, seed=2)
    assert {q["kind"] for q in queries} == set(catalog_gen.QUERY_TEMPLATES)
    for query in queries:
        assert 2 in query["relevance"].values()
        for product_id, grade in query["relevance"].items():
            attributes, price = by_id[product_id]["attributes"], by_id[product_id]["price"]
            assert grade == catalog_gen.grade(attributes, price, query)
            if grade == 2:
                assert all(attributes[name] == value for name, value in query["attributes"].items())
            limits = query["filters"]
            assert price <= limits.get("max_price", math.inf) and price >= limits.get("min_price", 0)
            assert attributes["brand"] == limits.get("brand", attributes["brand"])


def test_grade_by_hand() -> None:
    attributes = {
        "category": "outerwear", "subtype": "parka", "family": "insulated jacket", "material": "down",
        "use": "travel", "season": "winter", "price_band": "mid", "brand": "Oxbow", "waterproof": False,
    }  # fmt: skip
    puffer_query = {"head": "subtype", "attributes": {"subtype": "puffer"}, "filters": {"category": "outerwear"}}
    parka_query = {"head": "subtype", "attributes": {"subtype": "parka", "material": "synthetic"}, "filters": {}}
    assert catalog_gen.grade(attributes, 250.0, puffer_query) == 1  # same family, nothing else asked
    assert catalog_gen.grade(attributes, 250.0, parka_query) == 1  # right type, one attribute missed
    assert catalog_gen.grade(attributes, 250.0, {**parka_query, "attributes": {"subtype": "parka"}}) == 2
    assert catalog_gen.grade(attributes, 250.0, {**parka_query, "filters": {"max_price": 200}}) == 0
    assert catalog_gen.grade(attributes, 250.0, {**parka_query, "filters": {"brand": "Pennant"}}) == 0


def test_the_shipped_judged_queries_are_well_formed() -> None:
    known = {json.loads(line)["id"] for line in (ROOT / "data" / "products.jsonl").read_text().splitlines()}
    queries = load_judged_queries(ROOT / "data" / "eval" / "queries.jsonl", known)
    assert len(queries) >= 60
    assert all(2 in q.relevance.values() for q in queries)


def test_a_bad_judgement_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    good = {"id": "q1", "query": "rain jacket", "relevance": {"p002": 2}}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "q2", "relevance": {"p002": 3}}) + "\n")
    with pytest.raises(EvalDataError, match=r"line 2: grade 3"):
        load_judged_queries(path, {"p002"})
    path.write_text(json.dumps({**good, "filters": {"colour": "red"}}) + "\n")
    with pytest.raises(EvalDataError, match=r"line 1: unknown filter"):
        load_judged_queries(path, {"p002"})


def test_the_simulated_shopper_clicks_the_first_new_fit_then_a_near_miss() -> None:
    intent = Intent("boots", frozenset({"b1", "b2"}), frozenset({"n1"}), frozenset({"x1", "x2"}), "")
    assert choose_click(["x1", "b2", "b1"], intent, clicked=set()) == "b2"
    assert choose_click(["x1", "b2", "b1"], intent, clicked={"b2"}) == "b1"
    assert choose_click(["x1", "n1", "b2"], intent, clicked={"b1", "b2"}) == "n1"
    assert choose_click(["x1", "x2"], intent, clicked=set()) is None
    assert choose_dismiss(["b1", "x2", "x1"], intent) == "x2"
    assert choose_dismiss(["b1", "n1"], intent) is None


def test_simulated_shoppers_are_seeded() -> None:
    products = catalog_gen.generate_catalog(300, seed=3)
    intents = generated_intents(products)
    first = make_shoppers(intents, 30, seed=9, returning=True)
    assert first == make_shoppers(intents, 30, seed=9, returning=True)
    assert first != make_shoppers(intents, 30, seed=10, returning=True)
    assert all(s.intent.fits and not (s.intent.fits & s.intent.unfit) for s in first)
