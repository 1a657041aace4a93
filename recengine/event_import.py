"""Importing past events in bulk, as if each had been recorded when it happened: their
co-occurrence (the same pairing rules as record_event, co_occurrence_rules.py), their popularity,
and each user's window, recent products and seen products (what the feed blends and leaves
out; fields of the user's one hash, as the user's script keeps them). What fades within hours or days, the session vector and the category affinities, is not
replayed: an imported purchase of last month would weigh nothing in them.

Events go in batches, and Redis applies one batch while the next is worked out here (a thread
sends them, one at a time, in order). Each batch's pairs are summed per product at one reference time
(faded_sum) and written with one faded-counts script per product; the users' windows are worked
out here from what Redis holds, with the same rules record_event follows. On a single
Redis a batch is one MULTI/EXEC transaction that also records how many events of the import are
applied, under the import's id (a file's SHA-256): a batch is applied whole or not at all, an
interrupted import resumes after its last batch, and an import that finished is not applied
again, so counts never double. (A cluster has no transaction across slots: there a batch is
applied in order but not atomically, and an interruption may re-apply part of one batch.)
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ranking import RankingConfig
from recengine.co_occurrence import CoOccurrence
from recengine.co_occurrence_rules import WindowEntry, check_session_id, pair_increments, window_after
from recengine.errors import ProductNotFoundError
from recengine.event_types import EVENT_TYPES, EventType, EventWeights, check_event_time, check_event_type
from recengine.layout import LIST_SEPARATOR, RECENT_CLICKS_KEPT, RECENT_FIELD, SEEN_FIELD, WINDOW_FIELD, KeyLayout
from recengine.replies import text
from recengine.scripts import FadedCounts, ScriptCall, Scripts
from recengine.store import Store
from recengine.validation import check_product_id, check_user_id

# Events per transaction: a transaction holds Redis for as long as it runs, so a batch is kept to
# tens of milliseconds on a quiet machine (an import may run beside a live shop).
DEFAULT_BATCH = 500


@dataclass(frozen=True)
class PastEvent:
    """One event to import, already checked (import_events.py checks every field of a file)."""

    user_id: str
    product_id: str
    event: EventType
    at: float
    session_id: str = ""

    def checked(self, now: float, known: set[str]) -> PastEvent:
        """The event, or ValueError for a field record_event would refuse. Ids and sessions in
        `known` passed before (an import meets the same ones again and again); the ones this
        event adds are remembered there."""
        check_event_type(self.event)
        check_event_time(self.at, now)
        for kind, value, check in (
            ("u", self.user_id, check_user_id),
            ("p", self.product_id, check_product_id),
            ("s", self.session_id, check_session_id),
        ):
            if (value or kind != "s") and kind + value not in known:
                check(value)
                known.add(kind + value)
        return self


@dataclass(frozen=True)
class ImportReport:
    """What an import did: events applied now, events it found applied by an earlier run of the
    same import (skipped), and whether the import had finished before (then nothing is done)."""

    applied: int
    skipped: int
    already_done: bool


@dataclass(eq=False)
class EventImporter:
    """Bulk events into one recommender's data."""

    store: Store
    keys: KeyLayout
    scripts: Scripts
    co_occurrence: CoOccurrence
    config: RankingConfig
    weights: EventWeights
    seen_kept: int
    user_ttl_s: int
    clock: Callable[[], float]

    def progress(self, import_id: str) -> tuple[int, bool]:
        """(events applied, finished) of an import, (0, False) for one never started."""
        raw = self.store.command("HGET", self.keys.imports(), import_id)
        if raw is None:
            return 0, False
        try:
            record = json.loads(text(raw))
            return int(record["applied"]), bool(record["done"])
        except (ValueError, KeyError, TypeError):
            return 0, False

    def run(
        self,
        events: Iterable[PastEvent],
        import_id: str,
        *,
        batch_size: int = DEFAULT_BATCH,
        on_batch: Callable[[int], None] | None = None,
    ) -> ImportReport:
        """Apply the events in order, batch by batch, after the ones an earlier run of this
        import applied; nothing when it finished before. on_batch(events) after each batch.
        ValueError for an event record_event would refuse, ProductNotFoundError for a product
        that does not exist: both before the event's batch is written."""
        now = float(self.clock())
        applied_before, done = self.progress(import_id)
        if done:
            return ImportReport(0, applied_before, already_done=True)
        users: dict[str, _UserLists] = {}
        known: set[str] = set()
        batch: list[PastEvent] = []
        position = applied = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="import") as sender:
            in_flight: Future[Any] | None = None
            try:
                for event in events:
                    position += 1
                    if position <= applied_before:
                        continue
                    batch.append(event.checked(now, known))
                    if len(batch) >= batch_size:
                        pipe = self._batch(batch, users, import_id, applied_before + applied + len(batch), False)
                        in_flight = self._send(sender, in_flight, pipe)
                        applied += len(batch)
                        if on_batch:
                            on_batch(len(batch))
                        batch = []
                pipe = self._batch(batch, users, import_id, applied_before + applied + len(batch), True)
                in_flight = self._send(sender, in_flight, pipe)
                applied += len(batch)
                if on_batch and batch:
                    on_batch(len(batch))
            finally:
                if in_flight is not None:  # whatever stopped the import, what was sent is applied whole
                    in_flight.result()
        return ImportReport(applied, min(applied_before, position), already_done=False)

    def _send(self, sender: ThreadPoolExecutor, in_flight: Future[Any] | None, pipe: Any) -> Future[Any]:
        """Hand a batch's transaction to the sending thread once the one before it is applied
        (its error, if any, is raised here): Redis applies one batch while the next is worked
        out, one transaction at a time, in order."""
        if in_flight is not None:
            in_flight.result()
        return sender.submit(self.store.execute, pipe)

    def _batch(
        self, batch: Sequence[PastEvent], users: dict[str, _UserLists], import_id: str, total: int, last: bool
    ) -> Any:
        """One batch's writes, whole (a transaction on a single Redis), with the import's
        progress, as a pipeline ready to execute. The users' lists move on as the batch's events
        do; the products are checked first (ProductNotFoundError)."""
        self._check_products({e.product_id for e in batch})
        self._load_users({e.user_id for e in batch} - users.keys(), users)
        reference = max((e.at for e in batch), default=0.0)
        pairs: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        popularity: dict[str, float] = defaultdict(float)
        counted: set[tuple[str, str, int]] = set()
        touched: set[str] = set()
        config, half_life = self.co_occurrence.config, self.co_occurrence.config.half_life_s
        weights = {kind: self.weights.of(kind) for kind in EVENT_TYPES}
        for event in batch:
            lists = users[event.user_id]
            entry = WindowEntry(event.product_id, weights[event.event], event.at, event.session_id)
            fade = 2.0 ** ((event.at - reference) / half_life)
            for partner, added in pair_increments(lists.window, entry, config, self.weights):
                pairs[event.product_id][partner] += added * fade
                pairs[partner][event.product_id] += added * fade
            lists.window = window_after(lists.window, entry, config)
            lists.recent = [event.product_id, *lists.recent][:RECENT_CLICKS_KEPT]
            lists.seen = [event.product_id, *(p for p in lists.seen if p != event.product_id)][: self.seen_kept]
            # popularity counts a user's events on a product once per window, as record_event does
            key = (event.user_id, event.product_id, int(event.at // self.config.popularity_window_s))
            if key not in counted:
                counted.add(key)
                popularity[event.product_id] += 2.0 ** ((event.at - reference) / self.config.popularity_half_life_s)
            touched.add(event.user_id)
        calls = self.co_occurrence.batch_calls(reference, pairs)
        if popularity:
            counts = FadedCounts(reference, self.config.popularity_half_life_s, [sorted(popularity.items())])
            calls.append(ScriptCall(self.scripts.faded_counts, list(self.keys.popularity()), counts.argv()))
        pipe = self.store.primary.pipeline(transaction=not self.store.is_cluster)
        pipe.script_load(self.scripts.faded_counts.script)
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        for user_id in sorted(touched):
            self._queue_user(pipe, user_id, users[user_id])
        pipe.hset(self.keys.imports(), import_id, json.dumps({"applied": total, "done": last}))
        return pipe

    def _queue_user(self, pipe: Any, user_id: str, lists: _UserLists) -> None:
        """A user's window as the rules leave it, and their recent and seen products: fields of
        the user's one hash, as the user's script keeps them."""
        key = self.keys.user(user_id).features
        pipe.hset(key, mapping=lists.fields())
        if self.user_ttl_s:
            pipe.expire(key, self.user_ttl_s)

    def _check_products(self, product_ids: set[str]) -> None:
        ordered = sorted(product_ids)
        pipe = self.store.pipeline()
        for product_id in ordered:
            pipe.exists(self.keys.product(product_id))
        for product_id, exists in zip(ordered, self.store.execute(pipe), strict=True):
            if not exists:
                raise ProductNotFoundError(product_id)

    def _load_users(self, user_ids: set[str], users: dict[str, _UserLists]) -> None:
        """The lists of users this import meets for the first time, as Redis holds them."""
        ordered = sorted(user_ids)
        pipe = self.store.pipeline()
        for user_id in ordered:
            pipe.hmget(self.keys.user(user_id).features, [WINDOW_FIELD, RECENT_FIELD, SEEN_FIELD])
        for user_id, (window, recent, seen) in zip(ordered, self.store.execute(pipe), strict=True):
            users[user_id] = _UserLists(self.co_occurrence.window_from(window), _ids(recent), _ids(seen))


def _ids(raw: bytes | None) -> list[str]:
    """A stored list of ids, one per line, newest first."""
    return [text(line) for line in (raw or b"").split(LIST_SEPARATOR) if line]


@dataclass
class _UserLists:
    """What an import keeps of a user while it runs: the co-occurrence window, recent and seen."""

    window: list[WindowEntry]
    recent: list[str]
    seen: list[str]

    def fields(self) -> dict[str, str]:
        return {
            WINDOW_FIELD: "\n".join(entry.encode() for entry in self.window),
            RECENT_FIELD: "\n".join(self.recent),
            SEEN_FIELD: "\n".join(self.seen),
        }
