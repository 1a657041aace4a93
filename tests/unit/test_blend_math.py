"""The blend of counts and look-alikes (recengine/blend.py), on hand-made lists."""

from __future__ import annotations

import math

import pytest

from recengine.blend import (
    agreement,
    blend,
    check_signal,
    content_weight,
    ranked_counts,
    reason,
    summed_counts,
)


def ids(items: list) -> list[str]:
    return [item.product_id for item in items]


def test_without_counts_the_content_list_comes_back_as_it_is() -> None:
    assert ids(blend({}, ["a", "b", "c"], 4.0)) == ["a", "b", "c"]


def test_strong_counts_lead_and_look_alikes_follow() -> None:
    counts = {"x": 50.0, "y": 20.0, "a": 1.0}
    result = blend(counts, ["a", "b", "c"], 4.0)
    assert ids(result)[:2] == ["x", "y"]
    assert set(ids(result)) == {"x", "y", "a", "b", "c"}


def test_few_counts_let_the_look_alikes_lead_when_they_agree() -> None:
    # the one counted product is also the top look-alike: content is trusted (agreement 1)
    result = blend({"a": 1.0}, ["a", "b", "c"], 4.0)
    assert ids(result) == ["a", "b", "c"]
    assert result[0].co_count == 1.0 and result[0].content_rank == 0


def test_where_counted_products_do_not_look_alike_content_only_breaks_ties() -> None:
    # complements: nothing counted is in the content list, so β = 0 and counts decide
    counts = {"sauce": 1.0, "cheese": 1.0}
    assert agreement(counts, ["penne", "fusilli"]) == 0.0
    assert content_weight(counts, ["penne", "fusilli"], 4.0) == 0.0
    assert ids(blend(counts, ["penne", "fusilli"], 4.0))[:2] == ["cheese", "sauce"]


def test_the_mix_follows_the_evidence_not_a_fixed_share() -> None:
    content = ["a", "b", "c"]
    weak = blend({"z": 1.0, "a": 1.0}, content, 4.0)
    strong = blend({"z": 30.0, "a": 30.0}, content, 4.0)
    assert ids(weak)[0] == "a" and ids(weak).index("b") < ids(weak).index("z")
    assert ids(strong)[:2] == ["a", "z"] and ids(strong).index("z") < ids(strong).index("b")


def test_counts_alone_rank_by_count_then_id() -> None:
    assert ids(ranked_counts({"b": 2.0, "a": 2.0, "c": 5.0})) == ["c", "a", "b"]


def test_the_feed_sums_the_neighbours_of_several_products_and_names_the_main_one() -> None:
    total, source = summed_counts([("p1", {"x": 2.0, "y": 1.0}), ("p2", {"x": 3.0})])
    assert total == {"x": 5.0, "y": 1.0}
    assert source == {"x": "p2", "y": "p1"}
    item = next(b for b in blend(total, [], 4.0, source) if b.product_id == "x")
    assert reason(item, None) == "bought together with p2 (5 times)"


def test_reasons_name_the_signal_that_put_each_item_there() -> None:
    both, alike, counted = blend({"a": 14.0, "x": 0.4}, ["a", "b"], 4.0)[:3]
    assert reason(both, "p012") == "bought together with p012 (14 times); looks like p012"
    assert reason(alike, "p012") == "looks like p012"
    assert reason(counted, "p012") == "bought together with p012 (less than once, faded)"


@pytest.mark.parametrize("bad", [0, -1, math.nan, "four"])
def test_a_prior_that_is_not_a_positive_number_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="evidence_prior"):
        content_weight({}, [], bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["both", "", None, "CONTENT"])
def test_an_unknown_signal_names_the_three(bad: object) -> None:
    with pytest.raises(ValueError, match="content, co_occurrence, blend"):
        check_signal(bad)
