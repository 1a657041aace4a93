"""Live co-occurrence in Redis: each product's neighbours are one sorted set under a hash tag of
its own, counted when the event happens (update on write; bench/cooccurrence_design.py measured
it against computing neighbours from stored sessions on read).

An event costs two steps: the user's window script (the user's slot) returns the window as it
was and remembers the event; then, for the pairs co_occurrence_rules.pair_increments finds in
it, one faded_counts script on the event's product (all its partners at once) and one on each
partner (the event's product), each on that product's own slot. So no script spans two slots,
and one event writes at most partners_per_event + 1 sets, each trimmed to neighbours_kept.

Reading a product's neighbours is one ZREVRANGE and one GET on its slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ranking import POPULARITY_REBASE_HALF_LIVES, decayed_popularity
from recengine.co_occurrence_rules import CoOccurrenceConfig, WindowEntry


def _lua(name: str) -> str:
    return (Path(__file__).parent / "lua" / f"{name}.lua").read_text(encoding="utf-8")


WINDOW_LUA = _lua("co_occurrence_window")
FADED_COUNTS_LUA = _lua("faded_counts")


class ScriptCall(NamedTuple):
    """One script to run, with its keys and its arguments."""

    script: Any
    keys: list[str]
    args: list[Any]


@dataclass(frozen=True)
class CoOccurrenceKeys:
    """Where co-occurrence lives: `{<index>:co:<product>}` (its counts) and `...:epoch` share the
    product's own hash tag; the window shares the user's (`{user:<id>:features}:window`)."""

    index_name: str
    user_key_prefix: str

    def counts(self, product_id: str) -> tuple[str, str]:
        tag = "{" + f"{self.index_name}:co:{product_id}" + "}"
        return tag, f"{tag}:epoch"

    def window(self, user_id: str) -> str:
        return "{" + f"{self.user_key_prefix}{user_id}:features" + "}:window"


@dataclass(frozen=True)
class FadedCounts:
    """ARGV of lua/faded_counts.lua: values (in purchases) given at `reference_s`, added to one
    set whose epoch the script keeps, which then keeps its `keep` best members."""

    reference_s: float
    half_life_s: float
    keep: int
    ttl_s: int
    values: Sequence[tuple[str, float]]
    rebase_half_lives: float = POPULARITY_REBASE_HALF_LIVES

    def argv(self) -> list[Any]:
        flat: list[Any] = []
        for member, value in self.values:
            flat += [member, repr(float(value))]
        return [repr(self.reference_s), repr(self.half_life_s), self.rebase_half_lives, self.keep, self.ttl_s, *flat]


@dataclass(frozen=True)
class Neighbour:
    """A product counted together with another, and how often, faded to now, in purchases."""

    product_id: str
    count: float


class CoOccurrence:
    """The co-occurrence of one recommender's products (keys under its index name)."""

    def __init__(self, client: Any, keys: CoOccurrenceKeys, config: CoOccurrenceConfig, *, user_ttl_s: int) -> None:
        self.keys = keys
        self.config = config
        self.user_ttl_s = user_ttl_s
        self.window_script = client.register_script(WINDOW_LUA)
        self.counts_script = client.register_script(FADED_COUNTS_LUA)

    # writing

    def window_call(self, user_id: str, entry: WindowEntry) -> ScriptCall:
        """Remember the event in the user's window; the reply is the window before it."""
        return ScriptCall(
            self.window_script,
            [self.keys.window(user_id)],
            [entry.encode(), self.config.window_kept, self.user_ttl_s],
        )

    @staticmethod
    def window_from(reply: Iterable[Any]) -> list[WindowEntry]:
        """The window script's reply (or an LRANGE of the window) as entries, newest first;
        garbled entries are skipped."""
        return [entry for raw in reply if (entry := WindowEntry.decode(raw)) is not None]

    def counts_call(self, product_id: str, reference_s: float, values: Sequence[tuple[str, float]]) -> ScriptCall:
        """Add `values` (partner, count in purchases at reference_s) to one product's counts."""
        args = FadedCounts(reference_s, self.config.half_life_s, self.config.neighbours_kept, self.config.ttl_s, values)
        return ScriptCall(self.counts_script, list(self.keys.counts(product_id)), args.argv())

    def pair_calls(self, product_id: str, at: float, increments: Sequence[tuple[str, float]]) -> list[ScriptCall]:
        """The writes of one event's pairs: all partners into the product's counts, and the
        product into each partner's (len(increments) + 1 calls, none for no pairs)."""
        if not increments:
            return []
        return [
            self.counts_call(product_id, at, increments),
            *(self.counts_call(partner, at, [(product_id, count)]) for partner, count in increments),
        ]

    def batch_calls(self, reference_s: float, counts: Mapping[str, Mapping[str, float]]) -> list[ScriptCall]:
        """One call per product for many events' pairs, summed at reference_s (faded_sum)."""
        return [
            self.counts_call(product_id, reference_s, list(values.items())) for product_id, values in counts.items()
        ]

    # reading

    def queue_neighbours(self, pipe: Any, product_id: str, n: int) -> None:
        """Queue the reads of a product's `n` best-counted neighbours (two replies)."""
        counts, epoch = self.keys.counts(product_id)
        pipe.zrevrange(counts, 0, n - 1, withscores=True)
        pipe.get(epoch)

    def neighbours_from(self, replies: Sequence[Any], now: float) -> list[Neighbour]:
        """The replies of queue_neighbours as neighbours, best first, counts faded to `now`."""
        top, epoch = replies
        if not top:
            return []
        epoch_s = float(epoch) if epoch is not None else now
        return [
            Neighbour(
                member.decode("utf-8", "replace") if isinstance(member, bytes) else str(member),
                decayed_popularity(float(score), now, epoch_s, self.config.half_life_s),
            )
            for member, score in top
        ]
