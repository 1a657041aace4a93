"""The four kinds of shopper event (view, click, cart, purchase) and what each one weighs.

One weight per type, in clicks: a click weighs 1, so `record_click` keeps exactly the effect it
always had, and every other type does what a click does, scaled by its weight (docs/API.md,
"Events", has the one table of what each type changes). Pure: no Redis, no clock.

Why these defaults. The order view < click < cart < purchase is the order of commitment: a
product page is reached by browsing or search, a click on a card is a choice among what we
showed, a cart and a purchase cost the shopper something. The sizes are conventional (each step
of the funnel counts about twice the one before; a purchase 4 clicks); Online Retail, the real
data this project measures on, has purchases only, so it cannot tell the types apart.
Co-occurrence counts are kept in purchases (a pair's weight divided by the purchase weight),
so on purchase-only data its numbers are plain co-purchase counts whatever the weights are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal, get_args

from ranking import finite_number

EventType = Literal["view", "click", "cart", "purchase"]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
# An event this far past the recommender's clock is a clock apart, not the future; further, it
# is refused (a time in milliseconds lands ~50,000 years ahead).
MAX_CLOCK_SKEW_S = 300.0


def check_event_type(event: object) -> EventType:
    """The event type, or ValueError naming the four there are."""
    if not isinstance(event, str) or event not in EVENT_TYPES:
        raise ValueError(f"event must be one of {', '.join(EVENT_TYPES)}, got {event!r}")
    return event


def check_event_time(at: object, now: float) -> float:
    """When an event happened, in seconds since 1970: a finite number, not before 1970 and not
    more than MAX_CLOCK_SKEW_S past `now`. ValueError says which."""
    if isinstance(at, bool) or not isinstance(at, (int, float)):
        raise ValueError(f"the event time must be a number of seconds since 1970, got {at!r}")
    seconds = float(at)
    if not math.isfinite(seconds):
        raise ValueError(f"{at!r} is not a finite time")
    if seconds < 0:
        raise ValueError(f"{at!r} is before 1970")
    if seconds > now + MAX_CLOCK_SKEW_S:
        hint = " (milliseconds? the time is in seconds)" if seconds > now * 100 else ""
        raise ValueError(f"{at!r} is in the future{hint}")
    return seconds


@dataclass(frozen=True)
class EventWeights:
    """What one event of each type weighs, in clicks (click = 1 keeps record_click as it was).

    A type of weight w moves the session vector as w clicks in a row would (its EWMA share is
    1 − (1 − α)^w), steps the category affinity by w × affinity_step, and counts
    min(w_a, w_b) / purchase for a pair of products a and b of one session (so co-occurrence is
    counted in purchases). Popularity counts every type as a click (once per user, product and
    window).
    """

    view: float = 0.5
    click: float = 1.0
    cart: float = 2.0
    purchase: float = 4.0

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = finite_number(f"the {spec.name} weight", getattr(self, spec.name))
            if value is None or value <= 0:
                raise ValueError(
                    f"the {spec.name} weight must be a positive number, got {getattr(self, spec.name)!r}"
                    " (an event that weighs nothing would be recorded and change nothing)"
                )
            object.__setattr__(self, spec.name, value)

    def of(self, event: EventType) -> float:
        """The weight of one event of this type, in clicks."""
        return float(getattr(self, check_event_type(event)))

    def session_alpha(self, event: EventType, click_alpha: float) -> float:
        """The event's share in the session (or negative) vector's EWMA: what `weight` clicks in
        a row would move it, 1 − (1 − α)^weight; exactly α for a click."""
        weight = self.of(event)
        if weight == 1.0:
            return click_alpha
        return float(1.0 - (1.0 - click_alpha) ** weight)

    def pair_weight(self, first: float, second: float) -> float:
        """What two events of one session count for the pair of their products, in purchases: the
        weaker of the two (a view next to a purchase says as much as two views)."""
        return min(first, second) / self.purchase
