"""What counts as "together", and how much: the rules of live co-occurrence, with no Redis in it.

A shopper's events are remembered in a short window (WindowEntry, newest first). An event pairs
its product with the other products of the same session (the same `session_id` when the events
carry one; otherwise events of the same user at most `window_s` apart), at most
`partners_per_event` of them, the most recent first: that caps the writes one event costs.

A pair counts the weaker of its two events, in purchases (EventWeights.pair_weight), and at most
once per session at its strongest: a product viewed, carted and bought next to another adds
min(purchase, other) in total, not three times. pair_increments returns only what an event
adds to what the window already counted.

Counts fade with `half_life_s` the way popularity does (ranking.py): each product's counts are
one sorted set whose scores are sums of weight × 2^((t − epoch)/h), with an epoch of its own that
the write script moves forward (rescaling the set) before the exponent gets large; read at `now`,
a score times 2^(−(now − epoch)/h) is the faded count. Each set keeps its `neighbours_kept` best
members and expires `ttl_half_lives` half-lives after its last write.

lua/user_event.lua (the window) and lua/faded_counts.lua hold the Redis half of these rules;
recengine/co_occurrence.py runs them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ranking import finite_number
from recengine.event_types import EventWeights

# A product's counts expire this many half-lives after the last pair written to them: by then
# they have faded below 1/1000 of what they were.
TTL_HALF_LIVES = 10
# Session ids are stored inside window entries, between separators.
ENTRY_SEPARATOR = "|"
MAX_SESSION_ID_CHARS = 200


@dataclass(frozen=True)
class CoOccurrenceConfig:
    """How live co-occurrence is counted, bounded and faded (the defaults are measured in
    bench/cooccurrence_design.py; README, "Learning from every shopper").

    half_life_s: a pair counted this long ago counts half.
    neighbours_kept: the best-counted neighbours kept per product (M); the rest are trimmed.
    partners_per_event: the most products one event is paired with (N): an event costs at most
    N + 1 writes of counts, each a script on its own slot, so N sets what a click costs (8: HR@10
    0.529 against 0.535 at 16 in bench/cooccurrence_design.py's sweep, recall@10 0.091 against
    0.090, for half the writes).
    window_s: without a session id, events of one user at most this far apart go together.
    window_kept: events remembered per user for pairing (and for the feed's "recent products").
    evidence_prior: how many co-purchases it takes before counts weigh as much as looking alike
    in the blend (see recengine/blend.py).
    """

    half_life_s: float = 90 * 86400.0
    neighbours_kept: int = 100
    partners_per_event: int = 8
    window_s: float = 1800.0
    window_kept: int = 32
    evidence_prior: float = 2.0

    def __post_init__(self) -> None:
        for name in ("half_life_s", "window_s", "evidence_prior"):
            value = finite_number(name, getattr(self, name))
            if value is None or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)!r}")
        for name in ("neighbours_kept", "partners_per_event", "window_kept"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10_000:
                raise ValueError(f"{name} must be a whole number from 1 to 10000, got {value!r}")

    @property
    def ttl_s(self) -> int:
        """Seconds a product's counts live after their last write."""
        return math.ceil(self.half_life_s * TTL_HALF_LIVES)


def check_session_id(session_id: object) -> str:
    """A session id as events carry it (ValueError otherwise): non-empty text of at most
    MAX_SESSION_ID_CHARS characters, without spaces, control characters or the entry separator."""
    if not isinstance(session_id, str) or not session_id:
        raise ValueError(f"session_id must be a non-empty string, got {session_id!r}")
    if len(session_id) > MAX_SESSION_ID_CHARS:
        raise ValueError(f"session_id is {len(session_id)} characters long, over the limit of {MAX_SESSION_ID_CHARS}")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 or ch == ENTRY_SEPARATOR for ch in session_id):
        raise ValueError(f"session_id must not contain spaces, control characters or {ENTRY_SEPARATOR!r}")
    try:
        session_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("session_id is not valid Unicode text (it contains a lone surrogate)") from None
    return session_id


class WindowEntry(NamedTuple):
    """One remembered event: its product, its type's weight (in clicks), when, and its session
    ("" when the event had none). A named tuple: every event decodes its user's whole window
    (32 entries), and a frozen dataclass cost three times as much to build."""

    product_id: str
    weight: float
    at: float
    session_id: str = ""

    def encode(self) -> str:
        """As stored in the user's window list: the product goes last, so it may hold anything."""
        return ENTRY_SEPARATOR.join((repr(self.at), repr(self.weight), self.session_id, self.product_id))

    @classmethod
    def decode(cls, raw: str | bytes) -> WindowEntry | None:
        """An entry from its stored text; None for anything garbled (it is skipped, not fatal)."""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        parts = text.split(ENTRY_SEPARATOR, 3)
        if len(parts) != 4 or not parts[3]:
            return None
        try:
            at, weight = float(parts[0]), float(parts[1])
        except ValueError:
            return None
        if not (math.isfinite(at) and math.isfinite(weight)) or weight <= 0:
            return None
        return cls(parts[3], weight, at, parts[2])


def goes_with(earlier: WindowEntry, event: WindowEntry, window_s: float) -> bool:
    """Whether a remembered event is of the same session as a new one."""
    if event.session_id:
        return earlier.session_id == event.session_id
    return not earlier.session_id and abs(event.at - earlier.at) <= window_s


def pair_increments(
    previous: Sequence[WindowEntry], event: WindowEntry, config: CoOccurrenceConfig, weights: EventWeights
) -> list[tuple[str, float]]:
    """(partner, count to add, in purchases) for each product the new event pairs with, most
    recent partner first; `previous` is the window before the event, newest first.

    A pair of one session counts min(weight of a, weight of b) at the strongest each product
    reached in the session: the event adds only what its own weight raises that by (nothing for
    a second view of the same product)."""
    together = [entry for entry in previous if goes_with(entry, event, config.window_s)]
    own_before = max((entry.weight for entry in together if entry.product_id == event.product_id), default=0.0)
    partners: dict[str, float] = {}
    for entry in together:
        if entry.product_id == event.product_id:
            continue
        if entry.product_id in partners:
            partners[entry.product_id] = max(partners[entry.product_id], entry.weight)
        elif len(partners) < config.partners_per_event:
            partners[entry.product_id] = entry.weight
    increments = []
    for partner, weight in partners.items():
        added = weights.pair_weight(event.weight, weight) - (
            weights.pair_weight(own_before, weight) if own_before else 0.0
        )
        if added > 0:
            increments.append((partner, added))
    return increments


def window_after(previous: Sequence[WindowEntry], event: WindowEntry, config: CoOccurrenceConfig) -> list[WindowEntry]:
    """The window once the event is remembered: it first, then the newest before it, `window_kept`
    in all (what the user's script leaves in the user's hash)."""
    return [event, *previous][: config.window_kept]


def faded_sum(weighted_times: Iterable[tuple[float, float]], reference_s: float, half_life_s: float) -> float:
    """Σ weight × 2^((t − reference)/h) over (weight, t): several events' counts as one value at
    `reference_s`, which the write script scales to its set's epoch (how an import adds a
    whole batch of one pair with one write)."""
    return float(sum(weight * 2.0 ** ((at - reference_s) / half_life_s) for weight, at in weighted_times))
