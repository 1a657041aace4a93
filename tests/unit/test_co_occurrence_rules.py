"""The pairing rules of live co-occurrence, on hand-made windows (no Redis)."""

from __future__ import annotations

import pytest

from recengine.co_occurrence_rules import (
    CoOccurrenceConfig,
    WindowEntry,
    check_session_id,
    faded_sum,
    pair_increments,
    window_after,
)
from recengine.event_types import EventWeights

WEIGHTS = EventWeights(view=0.5, click=1.0, cart=2.0, purchase=4.0)
CONFIG = CoOccurrenceConfig(window_s=1800.0, partners_per_event=3, window_kept=8)


def entry(product: str, weight: float = 4.0, at: float = 1000.0, session: str = "") -> WindowEntry:
    return WindowEntry(product, weight, at, session)


def test_an_entry_survives_its_stored_form_and_the_product_may_hold_the_separator() -> None:
    original = entry("a|b", 0.5, 1234.5, "s1")
    assert WindowEntry.decode(original.encode()) == original
    assert WindowEntry.decode(original.encode().encode()) == original


@pytest.mark.parametrize("raw", ["", "x", "1|2|s", "nan|1|s|p", "1|0|s|p", "1|-2|s|p", "1|2|s|"])
def test_a_garbled_entry_is_skipped(raw: str) -> None:
    assert WindowEntry.decode(raw) is None


def test_a_session_pairs_with_its_own_products_only() -> None:
    previous = [entry("b", session="s1"), entry("c", session="s2"), entry("d")]
    assert pair_increments(previous, entry("a", session="s1"), CONFIG, WEIGHTS) == [("b", 1.0)]


def test_without_a_session_the_time_window_decides() -> None:
    previous = [entry("b", at=1000.0 - 1800.0), entry("c", at=1000.0 - 1801.0), entry("d", session="s1")]
    assert pair_increments(previous, entry("a"), CONFIG, WEIGHTS) == [("b", 1.0)]


def test_partners_are_capped_most_recent_first() -> None:
    previous = [entry(p) for p in "bcdef"]
    assert [p for p, _ in pair_increments(previous, entry("a"), CONFIG, WEIGHTS)] == ["b", "c", "d"]


def test_a_pair_counts_once_per_session_at_its_strongest() -> None:
    config = CoOccurrenceConfig(partners_per_event=10, window_kept=10)
    window: list[WindowEntry] = []
    total: dict[str, float] = {}
    # a viewed, b bought, a viewed again, a carted, a bought: the pair ends at min(4, 4)/4 = 1
    for product, weight in [("a", 0.5), ("b", 4.0), ("a", 0.5), ("a", 2.0), ("a", 4.0)]:
        event = entry(product, weight)
        for partner, added in pair_increments(window, event, config, WEIGHTS):
            key = "".join(sorted(product + partner))
            total[key] = total.get(key, 0.0) + added
        window = window_after(window, event, config)
    assert total == {"ab": pytest.approx(1.0)}


def test_the_window_keeps_the_newest() -> None:
    window = [entry(str(i)) for i in range(8)]
    after = window_after(window, entry("new"), CONFIG)
    assert [e.product_id for e in after] == ["new", *[str(i) for i in range(7)]]


def test_events_summed_at_one_reference_time_fade_by_age() -> None:
    assert faded_sum([(1.0, 100.0), (2.0, 90.0)], 100.0, 10.0) == pytest.approx(1.0 + 2.0 * 0.5)


@pytest.mark.parametrize("bad", ["", "a b", "a|b", "x" * 201, 5, None, "\x00"])
def test_bad_session_ids_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="session_id"):
        check_session_id(bad)


@pytest.mark.parametrize(
    "settings", [{"half_life_s": 0}, {"neighbours_kept": 0}, {"partners_per_event": 1.5}, {"evidence_prior": -1}]
)
def test_settings_out_of_range_are_refused(settings: dict) -> None:
    with pytest.raises(ValueError):
        CoOccurrenceConfig(**settings)
