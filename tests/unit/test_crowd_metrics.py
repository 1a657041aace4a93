"""bench/crowd.py's protocol without Redis or the model: the split, the draw of baskets and
customers, the counted peers and the metric wiring, against values worked out by hand; and the
Online Retail converter's rules. No benchmark figure is asserted here."""

from __future__ import annotations

import numpy as np
import pytest

from bench.crowd import (
    FeedCase,
    ItemQuery,
    MethodResult,
    Purchase,
    TrainMatrix,
    baskets_of,
    choose_feed_cases,
    choose_item_queries,
    co_occurrence_rankers,
    complement_baskets,
    is_guest,
    kmeans_labels,
    paired_difference,
    popularity_ranker,
    ranking_metrics,
    run_feed_task,
    run_item_task,
    split_by_time,
    top_ids,
)
from bench.online_retail import InvoiceLine, convert, is_product_code, keep_reason

SPLIT = 1000.0


def buy(user: str, product: str, at: float, session: str) -> Purchase:
    return Purchase(user, product, at, session)


def test_an_invoice_goes_whole_to_the_side_of_its_first_event() -> None:
    events = [buy("u", "a", 10, "s1"), buy("u", "b", 999, "s2"), buy("u", "c", 1001, "s2"), buy("v", "a", 1000, "s3")]
    train, test = split_by_time(events, SPLIT)
    assert [e.session_id for e in train] == ["s1", "s2", "s2"]
    assert [e.session_id for e in test] == ["s3"]


def test_baskets_keep_first_seen_order_without_repeats() -> None:
    events = [buy("u", p, 1, "s") for p in ("b", "a", "b", "c")] + [buy("v", "x", 2, "t")]
    assert baskets_of(events) == {"s": ["b", "a", "c"], "t": ["x"]}


def test_item_queries_ask_with_the_first_product_of_baskets_of_two_or_more() -> None:
    baskets = {"s1": ["a"], "s2": ["b", "c", "d"], "s3": ["e", "f"], "s4": ["g", "g"]}
    queries = choose_item_queries(baskets, 10, seed=1)
    assert queries == [ItemQuery("s2", "b", ("c", "d")), ItemQuery("s3", "e", ("f",))]


def test_item_queries_are_a_seeded_draw_independent_of_the_baskets_order() -> None:
    baskets = {f"s{i:03}": [f"p{i}", f"q{i}"] for i in range(200)}
    shuffled = dict(reversed(list(baskets.items())))
    first = choose_item_queries(baskets, 20, seed=3)
    assert first == choose_item_queries(shuffled, 20, seed=3)
    assert len(first) == 20 and first != choose_item_queries(baskets, 20, seed=4)


def test_feed_cases_are_returning_customers_and_what_is_new_to_them() -> None:
    train = [buy("c1", "a", 1, "s1"), buy("c1", "b", 2, "s1"), buy("c1", "a", 3, "s2"), buy("guest-s3", "a", 4, "s3")]
    test = [
        buy("c1", "a", 1001, "s4"), buy("c1", "z", 1001, "s4"),  # first test invoice: z is new
        buy("c1", "y", 1002, "s5"),  # a later invoice is not the target
        buy("c2", "z", 1001, "s6"),  # no history before the split
        buy("guest-s7", "z", 1001, "s7"),
    ]  # fmt: skip
    assert choose_feed_cases(train, test, 10, seed=1, is_guest=is_guest) == [FeedCase("c1", ("b", "a"), ("z",))]


def test_a_customer_whose_next_basket_is_all_repeats_is_not_a_case() -> None:
    train = [buy("c1", "a", 1, "s1")]
    test = [buy("c1", "a", 1001, "s2")]
    assert choose_feed_cases(train, test, 10, seed=1, is_guest=is_guest) == []


def test_top_ids_leave_out_zero_scores_and_the_excluded_and_break_ties_by_catalogue_order() -> None:
    scores = np.array([3.0, 0.0, 5.0, 3.0, 1.0])
    assert top_ids(scores, ["a", "b", "c", "d", "e"], 3, exclude=(2,)) == ["a", "d", "e"]
    assert top_ids(scores, ["a", "b", "c", "d", "e"], 10, exclude=()) == ["c", "a", "d", "e"]


def test_co_occurrence_counts_and_cosine_rank_as_worked_out_by_hand() -> None:
    # a is in 4 baskets: with b 3 times, with c once; c is only ever with a, b is everywhere.
    baskets = [["a", "b"], ["a", "b"], ["a", "b"], ["a", "c"], ["b", "d"], ["b", "d"], ["b", "e"]]
    matrix = TrainMatrix.build(["a", "b", "c", "d", "e"], baskets)
    rankers = co_occurrence_rankers(matrix)
    assert rankers["co-occurrence (counts)"]("a", 5) == ["b", "c"]
    # cosine: b 3/sqrt(4*6) = 0.61, c 1/sqrt(4*1) = 0.5 ; for d: b 2/sqrt(2*6) = 0.58 only
    assert rankers["co-occurrence (cosine)"]("a", 5) == ["b", "c"]
    assert rankers["co-occurrence (cosine)"]("c", 5) == ["a"]
    assert rankers["co-occurrence (counts)"]("d", 5) == ["b"]


def test_popularity_never_returns_the_query_and_keeps_k_full() -> None:
    matrix = TrainMatrix.build(["a", "b", "c"], [["a"], ["a", "b"], ["a", "b", "c"]])
    rank = popularity_ranker(matrix)
    assert rank("a", 2) == ["b", "c"]
    assert rank("c", 2) == ["a", "b"]


def test_item_metrics_are_hit_rate_recall_and_mrr_at_10() -> None:
    queries = [ItemQuery("q1", "x", ("a", "b")), ItemQuery("q2", "y", ("c",)), ItemQuery("q3", "z", ("d", "e"))]
    answers = {"x": ["n1", "a", "n2"], "y": ["c"], "z": ["n3"]}
    results = run_item_task({"fixed": lambda product_id, k: answers[product_id][:k]}, queries)
    metrics = results["fixed"].metrics
    assert metrics["hit_rate@10"] == pytest.approx(2 / 3, abs=1e-4)
    assert metrics["recall@10"] == pytest.approx((0.5 + 1 + 0) / 3, abs=1e-4)
    assert metrics["mrr@10"] == pytest.approx((0.5 + 1 + 0) / 3, abs=1e-4)
    assert results["fixed"].full_lists == 0.0


def test_capped_recall_scores_a_perfect_top_k_as_1_whatever_the_basket_size() -> None:
    basket = {f"p{i}" for i in range(30)}
    metrics = ranking_metrics([f"p{i}" for i in range(10)], basket, 10)
    assert metrics["recall@10"] == pytest.approx(1 / 3)
    assert metrics["recall_capped@10"] == 1.0 and metrics["hit_rate@10"] == 1.0 and metrics["mrr@10"] == 1.0
    assert ranking_metrics(["x", "y", "p3"], {"p3", "p4"}, 2) == {
        "hit_rate@2": 0.0, "recall@2": 0.0, "recall_capped@2": 0.0, "mrr@2": 0.0,
    }  # fmt: skip


def test_a_ranking_that_returns_the_query_is_refused() -> None:
    with pytest.raises(AssertionError, match="query product itself"):
        run_item_task({"echo": lambda product_id, k: [product_id]}, [ItemQuery("q", "x", ("a",))])


def test_feed_metrics_count_what_the_customer_already_bought() -> None:
    cases = [FeedCase("c1", ("a",), ("z", "y")), FeedCase("c2", ("b",), ("w",))]
    feeds = {"c1": ["a", "z"], "c2": ["v", "u"]}
    metrics = run_feed_task({"fixed": lambda case, k: feeds[case.user_id]}, cases)["fixed"].metrics
    assert metrics["recall@20"] == pytest.approx(0.25, abs=1e-4)
    assert metrics["hit_rate@20"] == pytest.approx(0.5, abs=1e-4)
    assert metrics["already_bought_share"] == pytest.approx(0.25, abs=1e-4)


def test_paired_difference_is_the_mean_and_standard_error_over_the_same_queries() -> None:
    a = MethodResult({}, 0, 1, {"m": {"q1": 1.0, "q2": 1.0, "q3": 0.0}})
    b = MethodResult({}, 0, 1, {"m": {"q1": 0.0, "q2": 1.0, "q3": 0.0}})
    assert paired_difference(a, b, "m") == {
        "mean": pytest.approx(0.3333, abs=1e-4),
        "se": pytest.approx(0.3333, abs=1e-4),
    }


def test_complements_are_seeded_and_come_from_other_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    vectors = np.repeat(centres, 25, axis=0) + 0.05 * rng.normal(size=(100, 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"p{i}" for i in range(100)]
    first = complement_baskets(ids, vectors, train=200, test=50, seed=5, clusters=4)
    assert first == complement_baskets(ids, vectors, train=200, test=50, seed=5, clusters=4)
    labels = dict(zip(ids, kmeans_labels(vectors, 4, 5).tolist(), strict=True))
    for basket in first.train.values():
        anchor, partners = basket[0], basket[1:]
        assert 2 <= len(basket) <= 5
        # every partner but the occasional random extra is from another cluster
        assert sum(labels[p] != labels[anchor] for p in partners) >= len(partners) - 1


def line(
    invoice: str = "536365", code: str = "85123A", quantity: int = 6, price: float = 2.55, **fields: str
) -> InvoiceLine:
    from datetime import datetime

    return InvoiceLine(
        invoice, code, fields.get("description", "WHITE HANGING HEART T-LIGHT HOLDER"), quantity,
        datetime(2010, 12, 1, 8, 26), price, fields.get("customer", "17850"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("code", "goods"),
    [("85123A", True), ("85049a", True), ("DCGS0003", True), ("POST", False), ("BANK CHARGES", False),
     ("DCGSSBOY", False), ("C2", False), ("gift_0001_20", False), ("m", False)],
)  # fmt: skip
def test_product_codes(code: str, goods: bool) -> None:
    assert is_product_code(code) is goods


def test_the_first_rule_a_line_breaks_is_why_it_is_dropped() -> None:
    assert keep_reason(line()) == ""
    assert keep_reason(line(invoice="C536379", quantity=-1)) == "cancellation"
    assert keep_reason(line(code="POST")) == "not a product code"
    assert keep_reason(line(price=0.0)) == "unit price not above 0"
    assert keep_reason(line(description="")) == "empty description"


def test_conversion_merges_repeated_lines_and_names_guests_by_invoice() -> None:
    result = convert([
        line(), line(price=2.95), line(code="71053", description="WHITE METAL LANTERN", price=3.39),
        line(invoice="536366", customer="", price=3.05), line(invoice="C536367", quantity=-6),
    ])  # fmt: skip
    assert [p["id"] for p in result.products] == ["85123A", "71053"]
    assert result.products[0]["price"] == 2.95  # the median of 2.55, 2.95 and 3.05
    assert [(e["user_id"], e["product_id"], e["session_id"]) for e in result.events] == [
        ("17850", "85123A", "536365"), ("17850", "71053", "536365"), ("guest-536366", "85123A", "536366"),
    ]  # fmt: skip
    assert result.events[0]["timestamp"] == "2010-12-01T08:26:00Z"
    assert result.counts["repeated product in an invoice"] == 1 and result.counts["dropped: cancellation"] == 1
