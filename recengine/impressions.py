"""Impressions and attribution: every list the server shows is logged with the id it answers as
`rec_id`; a click (or another event) that brings the rec_id back is joined to it, so clicks can
be counted per list source and experiment arm, and click-through and conversion measured.

Redis layout: two streams, both bounded with `XADD ... MAXLEN ~ cap` (trimmed by whole listpack
nodes, so the length stays within a node of the cap at no extra cost):
- `{recimp}:shown`: one entry per list shown. Its stream ID *is* the rec_id (milliseconds and a
  sequence: unique, ordered, and the time of the impression for free), with fields u (user),
  s (source), a (arm) and p (the product ids, space-separated: a product id has no spaces).
- `{recimp}:outcomes`: one entry per attributed click or event: r (rec_id), u, s, a, k (kind),
  p (product).
The hash tag puts both keys in one cluster slot; no script spans them: the join is an XRANGE of
the one rec_id (O(log n)), checked in Python, then an XADD. A report reads both over a window.

Retention: an impression trimmed away (older than the newest `cap`) can no longer be joined: a
click with its rec_id is refused like an unknown one.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import redis
import redis.cluster

ListSource = Literal["search", "feed", "similar", "trending"]
LIST_SOURCES: tuple[ListSource, ...] = ("search", "feed", "similar", "trending")
OutcomeKind = str
# Outcomes that count as a conversion (the events of POST /event that mean a sale).
CONVERSION_KINDS = frozenset({"purchase"})
SHOWN_KEY = "{recimp}:shown"
OUTCOMES_KEY = "{recimp}:outcomes"
DEFAULT_CAP = 200_000
REC_ID_PATTERN = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
READ_PAGE = 5000

RedisClient = redis.Redis | redis.cluster.RedisCluster


class ImpressionError(ValueError):
    """A rec_id a click cannot be joined to; `status` is the HTTP answer (400 or 404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Impression:
    rec_id: str
    user_id: str
    source: str
    arm: str
    product_ids: tuple[str, ...]

    @property
    def at_ms(self) -> int:
        return int(self.rec_id.split("-", 1)[0])


@dataclass(frozen=True)
class Outcome:
    rec_id: str
    user_id: str
    source: str
    arm: str
    kind: OutcomeKind
    product_id: str


def check_rec_id(value: Any) -> str:
    """A rec_id's form (a stream ID, `<ms>-<seq>`); ImpressionError 400 otherwise."""
    if not isinstance(value, str) or not REC_ID_PATTERN.fullmatch(value):
        raise ImpressionError(400, f"rec_id must be the rec_id of a list answer (digits-digits), got {value!r}")
    return value


class ImpressionLog:
    """The two streams of one Redis (or cluster); `cap` bounds each."""

    def __init__(self, client: RedisClient, cap: int = DEFAULT_CAP) -> None:
        if cap < 1:
            raise ValueError(f"the impression cap must be at least 1, got {cap}")
        self.client = client
        self.cap = cap

    def record(self, user_id: str, source: ListSource, arm: str, product_ids: Sequence[str]) -> str:
        """Log a list shown; its rec_id."""
        rec_id = self.client.xadd(
            SHOWN_KEY,
            {"u": user_id, "s": source, "a": arm, "p": " ".join(product_ids)},
            maxlen=self.cap,
            approximate=True,
        )
        return rec_id.decode() if isinstance(rec_id, bytes) else str(rec_id)

    def find(self, user_id: str, rec_id: str, product_id: str) -> Impression:
        """The impression `rec_id` of this user that showed `product_id`; ImpressionError
        otherwise (one answer for unknown, trimmed and another user's: which it is is not the
        asker's to learn). Read-only: the caller applies the click, then record_outcome."""
        check_rec_id(rec_id)
        entries: list[Any] = self.client.xrange(SHOWN_KEY, rec_id, rec_id, count=1) or []
        impression = parse_impression(*entries[0]) if entries else None
        if impression is None or impression.user_id != user_id:
            raise ImpressionError(
                404,
                f"rec_id {rec_id} is not a list shown to this user (unknown, expired from the log, or another user's)",
            )
        if product_id not in impression.product_ids:
            raise ImpressionError(400, f"product {product_id!r} was not in the list rec_id {rec_id}")
        return impression

    def record_outcome(self, impression: Impression, kind: OutcomeKind, product_id: str) -> None:
        fields = {"r": impression.rec_id, "u": impression.user_id, "s": impression.source, "a": impression.arm,
                  "k": kind, "p": product_id}  # fmt: skip
        self.client.xadd(OUTCOMES_KEY, fields, maxlen=self.cap, approximate=True)  # type: ignore[arg-type]

    def window(self, seconds: float, now_s: float | None = None) -> tuple[list[Impression], list[Outcome]]:
        """Impressions of the last `seconds` and the outcomes joined to them."""
        since_ms = int(((time.time() if now_s is None else now_s) - seconds) * 1000)
        impressions = [
            shown for entry in self._read(SHOWN_KEY, since_ms) if (shown := parse_impression(*entry)) is not None
        ]
        outcomes = [
            outcome for entry in self._read(OUTCOMES_KEY, since_ms) if (outcome := parse_outcome(entry[1])) is not None
        ]
        return impressions, [o for o in outcomes if int(o.rec_id.split("-", 1)[0]) >= since_ms]

    def _read(self, key: str, since_ms: int) -> Iterator[tuple[Any, Mapping[Any, Any]]]:
        start = f"{max(since_ms, 0)}-0"
        while True:
            page: list[Any] = self.client.xrange(key, start, "+", count=READ_PAGE) or []
            yield from page
            if len(page) < READ_PAGE:
                return
            last = page[-1][0]
            start = "(" + (last.decode() if isinstance(last, bytes) else str(last))

    def memory(self) -> dict[str, int]:
        """Entries and bytes (MEMORY USAGE ... SAMPLES 0: every node counted) of each stream."""
        usage = {}
        for name, key in (("shown", SHOWN_KEY), ("outcomes", OUTCOMES_KEY)):
            usage[f"{name}_entries"] = int(self.client.xlen(key))
            usage[f"{name}_bytes"] = int(self.client.memory_usage(key, samples=0) or 0)
        return usage


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def parse_impression(entry_id: Any, fields: Mapping[Any, Any]) -> Impression | None:
    """An entry of the shown stream; None for one not written by record."""
    decoded = {text(k): text(v) for k, v in fields.items()}
    if not {"u", "s", "a", "p"} <= decoded.keys():
        return None
    ids = tuple(decoded["p"].split()) if decoded["p"] else ()
    return Impression(text(entry_id), decoded["u"], decoded["s"], decoded["a"], ids)


def parse_outcome(fields: Mapping[Any, Any]) -> Outcome | None:
    decoded = {text(k): text(v) for k, v in fields.items()}
    if not {"r", "u", "s", "a", "k", "p"} <= decoded.keys() or not REC_ID_PATTERN.fullmatch(decoded["r"]):
        return None
    return Outcome(decoded["r"], decoded["u"], decoded["s"], decoded["a"], decoded["k"], decoded["p"])


@dataclass
class UserTally:
    """One user's impressions in a group, and how many got a click or a conversion."""

    impressions: int = 0
    clicked: int = 0
    converted: int = 0


@dataclass
class GroupTally:
    """Per user, for one (source, arm) or one arm."""

    users: dict[str, UserTally] = field(default_factory=lambda: defaultdict(UserTally))

    def clicks(self) -> list[tuple[int, int]]:
        return [(t.impressions, t.clicked) for t in self.users.values()]

    def conversions(self) -> list[tuple[int, int]]:
        return [(t.impressions, t.converted) for t in self.users.values()]


def tally(
    impressions: Sequence[Impression], outcomes: Sequence[Outcome]
) -> tuple[dict[tuple[str, str], GroupTally], dict[str, GroupTally]]:
    """Impressions per user, by (source, arm) and by arm, with whether each was clicked (an
    outcome of kind "click") and converted (a CONVERSION_KINDS outcome)."""
    clicked = {o.rec_id for o in outcomes if o.kind == "click"}
    converted = {o.rec_id for o in outcomes if o.kind in CONVERSION_KINDS}
    by_source: dict[tuple[str, str], GroupTally] = defaultdict(GroupTally)
    by_arm: dict[str, GroupTally] = defaultdict(GroupTally)
    for shown in impressions:
        for group in (by_source[(shown.source, shown.arm)], by_arm[shown.arm]):
            user = group.users[shown.user_id]
            user.impressions += 1
            user.clicked += shown.rec_id in clicked
            user.converted += shown.rec_id in converted
    return dict(by_source), dict(by_arm)
