"""Live co-occurrence in Redis: each product's neighbours are one sorted set of faded counts under
a hash tag of its own (layout.KeyLayout.co_occurrence), counted when the event happens. Update on
write, not compute on read: bench/cooccurrence_design.py measured both at Online Retail scale.

An event's window (a field of the user's one hash) is read with the product; for the pairs
co_occurrence_rules.pair_increments finds in it, the event's product gets all its partners and
each partner gets the event's product, in the pipeline that sends the user's script (which
stores the event in the window). The faded-counts script adds to every set whose keys may share
it: on one Redis one call does them all, on a cluster one call per slot, so no script spans two
slots. One event writes at most partners_per_event + 1 sets, each trimmed to neighbours_kept.

Reading a product's neighbours is one ZREVRANGE and one GET on its slot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ranking import decayed_popularity
from recengine.co_occurrence_rules import CoOccurrenceConfig, WindowEntry
from recengine.layout import LIST_SEPARATOR, KeyLayout
from recengine.replies import number, text
from recengine.scripts import FadedCounts, ScriptCall, Scripts

# The most count sets one script call adds to: a few hundred microseconds of Redis at most.
SETS_PER_CALL = 64


@dataclass(frozen=True)
class Neighbour:
    """A product counted together with another, and how often, faded to now, in purchases."""

    product_id: str
    count: float


@dataclass(eq=False)
class CoOccurrence:
    """The co-occurrence of one recommender's products."""

    keys: KeyLayout
    scripts: Scripts
    config: CoOccurrenceConfig
    shard_of: Callable[[str], int]

    # writing

    @staticmethod
    def window_from(raw: str | bytes | None) -> list[WindowEntry]:
        """A stored window (the user's script's reply, or the hash field) as entries, newest
        first; garbled entries are skipped."""
        lines = (raw.encode() if isinstance(raw, str) else raw or b"").split(LIST_SEPARATOR)
        return [entry for line in lines if line and (entry := WindowEntry.decode(line)) is not None]

    def counts_calls(
        self, reference_s: float, counts: Sequence[tuple[str, Sequence[tuple[str, float]]]]
    ) -> list[ScriptCall]:
        """The calls that add `counts` (a product, and the values to add to its counts: partner,
        count in purchases at reference_s). Products whose keys may share a script (Store's
        shard_of) go together, SETS_PER_CALL at most: on one Redis a click's pairs are one call
        rather than one per product (each call costs the client more than Redis takes to run
        it), and an import's batch still never holds Redis for long."""
        config = self.config
        groups: dict[int, list[tuple[list[str], Sequence[tuple[str, float]]]]] = {}
        for product_id, values in counts:
            keys = list(self.keys.co_occurrence(product_id))
            groups.setdefault(self.shard_of(keys[0]), []).append((keys, values))
        calls = []
        for group in groups.values():
            for start in range(0, len(group), SETS_PER_CALL):
                part = group[start : start + SETS_PER_CALL]
                sets = FadedCounts(
                    reference_s, config.half_life_s, [v for _, v in part], config.neighbours_kept, config.ttl_s
                )
                calls.append(
                    ScriptCall(self.scripts.faded_counts, [key for keys, _ in part for key in keys], sets.argv())
                )
        return calls

    def pair_calls(self, product_id: str, at: float, increments: Sequence[tuple[str, float]]) -> list[ScriptCall]:
        """The writes of one event's pairs: all partners into the product's counts, and the
        product into each partner's (len(increments) + 1 sets: one call on one Redis, one per
        slot on a cluster; none for no pairs)."""
        if not increments:
            return []
        return self.counts_calls(
            at, [(product_id, increments), *((partner, [(product_id, count)]) for partner, count in increments)]
        )

    def batch_calls(self, reference_s: float, counts: Mapping[str, Mapping[str, float]]) -> list[ScriptCall]:
        """Many events' pairs, summed per product at reference_s (faded_sum)."""
        return self.counts_calls(
            reference_s, [(product_id, list(values.items())) for product_id, values in counts.items()]
        )

    # reading

    def queue_neighbours(self, pipe: Any, product_id: str, n: int) -> None:
        """Queue the reads of a product's `n` best-counted neighbours (two replies)."""
        counts, epoch = self.keys.co_occurrence(product_id)
        pipe.zrevrange(counts, 0, n - 1, withscores=True)
        pipe.get(epoch)

    def neighbours_from(self, replies: Sequence[Any], now: float) -> list[Neighbour]:
        """The two replies of queue_neighbours as neighbours, best first, counts faded to `now`."""
        top, epoch = replies
        epoch_s = number(epoch, default=now)
        return [
            Neighbour(text(member), decayed_popularity(float(score), now, epoch_s, self.config.half_life_s))
            for member, score in top or []
        ]
