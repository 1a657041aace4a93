"""EventWeights: a click keeps today's effect, the other types scale it, bad weights are refused."""

from __future__ import annotations

import math

import pytest

from recengine.event_types import EVENT_TYPES, EventWeights, check_event_type


def test_the_four_types_in_order_of_commitment() -> None:
    weights = EventWeights()
    assert EVENT_TYPES == ("view", "click", "cart", "purchase")
    assert [weights.of(t) for t in EVENT_TYPES] == sorted(weights.of(t) for t in EVENT_TYPES)
    assert weights.of("click") == 1.0


@pytest.mark.parametrize("bad", ["buy", "", "Click", None, 3])
def test_an_unknown_type_names_the_four(bad: object) -> None:
    with pytest.raises(ValueError, match="view, click, cart, purchase"):
        check_event_type(bad)


def test_a_click_moves_the_session_exactly_as_before() -> None:
    assert EventWeights().session_alpha("click", 0.4) == 0.4


def test_a_weight_of_w_moves_the_session_as_w_clicks_in_a_row() -> None:
    weights = EventWeights(cart=2.0)
    # two clicks in a row leave (1 - α)² of the old session: a cart's share is what is left out
    assert weights.session_alpha("cart", 0.4) == pytest.approx(1 - 0.6**2)
    assert 0 < weights.session_alpha("view", 0.4) < 0.4


def test_a_pair_counts_its_weaker_event_in_purchases() -> None:
    weights = EventWeights(view=0.5, purchase=4.0)
    assert weights.pair_weight(4.0, 4.0) == 1.0
    assert weights.pair_weight(0.5, 4.0) == weights.pair_weight(4.0, 0.5) == 0.125


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, "a lot", True])
def test_weights_that_are_not_positive_numbers_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="purchase weight"):
        EventWeights(purchase=bad)  # type: ignore[arg-type]
