"""Recording what users do: a typed event (view, click, cart, purchase; a click is the event
"click") or a dismissal, applied atomically by the user's script (at most once per event id),
counted for popularity (typed events; once per user, product and window) and, for typed events,
for co-occurrence with the other products of the user's session; confirmed by replicas or the
disk when required, and optionally followed by a read of the user's state in the same round trip.

What a failure says is what happened: nothing written (an error before the scripts were sent, or
every part refused), some parts written (PartlyAppliedError), or unknown (the scripts were sent
and no reply came: WriteOutcomeUnknownError, and a retry with the same event id is safe).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from ranking import RankingConfig, check_unit_interval, finite_number
from recengine.catalog_schema import stored_category
from recengine.co_occurrence import CoOccurrence
from recengine.co_occurrence_rules import WindowEntry, check_session_id, pair_increments
from recengine.errors import (
    NewUserRefusedError,
    PartlyAppliedError,
    ProductNotFoundError,
    WriteOutcomeUnknownError,
    classified_errors,
    classify_response_error,
)
from recengine.event_types import EventType, EventWeights, check_event_time, check_event_type
from recengine.layout import (
    EMBEDDING_FIELD,
    EVENT_IDS_KEPT,
    PRODUCT_FIELDS,
    RECENT_CLICKS_KEPT,
    WINDOW_FIELD,
    KeyLayout,
    VectorFormat,
)
from recengine.reload import follow_serving, queue_serving
from recengine.replies import product_summary, text
from recengine.results import ClickResult, DismissResult, EventResult
from recengine.scripts import (
    EventMode,
    PopularityClick,
    ScriptCall,
    Scripts,
    UserEvent,
    UserEventReply,
    run_scripts_then,
)
from recengine.store import Store
from recengine.users import StateReplies, UserReads
from recengine.validation import check_event_id, check_product_id

log = logging.getLogger("recommender")

# Asked before a write that would create a user (one with no state yet): False refuses it
# (NewUserRefusedError, nothing written). The server's per-client budget of new users.
MayCreateUser = Callable[[], bool]
# A lost connection or a timeout: a write sent and not answered may have been applied.
NO_REPLY = (redis.ConnectionError, redis.TimeoutError)


@dataclass(frozen=True)
class EventOptions:
    """What a caller may add to an event: its idempotency key, and the say on new users."""

    event_id: str | None = None
    may_create: MayCreateUser | None = None


@dataclass(frozen=True)
class _Typed:
    """A typed event's own part: its type, when it happened (None: now) and its session."""

    event: EventType
    at: float | None
    session_id: str | None


@dataclass(frozen=True)
class _Applied:
    """What applying one event gave: the product's category, the user script's reply, the
    state replies and how many products it was paired with."""

    category: str
    reply: UserEventReply
    state: StateReplies
    paired_with: int


@dataclass(eq=False)
class UserEvents:
    """Typed events and dismissals of one recommender's users."""

    store: Store
    keys: KeyLayout
    scripts: Scripts
    users: UserReads
    co_occurrence: CoOccurrence
    config: RankingConfig
    weights: EventWeights
    clock: Callable[[], float]
    vectors: VectorFormat
    seen_kept: int
    user_ttl_s: int

    def record(
        self,
        user_id: str,
        product_id: str,
        event: EventType,
        at: float | None,
        session_id: str | None,
        read_state: bool,
        options: EventOptions = EventOptions(),
    ) -> tuple[EventResult, StateReplies]:
        """One typed event with the config's alpha and step, scaled by its type's weight, and the
        state replies for UserReads.state_from."""
        event = check_event_type(event)
        weight = self.weights.of(event)
        alpha = self.weights.session_alpha(event, self.config.ewma_alpha)
        step = self.config.affinity_step * weight
        applied = self._apply(
            user_id, "click", product_id, alpha, step, read_state, options, _Typed(event, at, session_id)
        )
        result = EventResult(
            event=event,
            product_id=product_id,
            category=applied.category,
            affinity=applied.reply.affinity,
            clicks=applied.reply.clicks,
            session_updated=applied.reply.vector_updated,
            paired_with=applied.paired_with,
            already_applied=applied.reply.already_applied,
        )
        return result, applied.state

    def click(
        self,
        user_id: str,
        product_id: str,
        ewma_alpha: float | None,
        affinity_step: float | None,
        read_state: bool,
        options: EventOptions = EventOptions(),
    ) -> tuple[ClickResult, StateReplies]:
        """The click's result, and the state replies for UserReads.state_from (empty without
        read_state)."""
        alpha = self.config.ewma_alpha if ewma_alpha is None else check_unit_interval("ewma_alpha", ewma_alpha)
        if alpha == 0:
            raise ValueError("ewma_alpha must be in (0, 1]")
        step = self.config.affinity_step if affinity_step is None else finite_number("affinity_step", affinity_step)
        applied = self._apply(
            user_id, "click", product_id, alpha, float(step or 0.0), read_state, options, _Typed("click", None, None)
        )
        result = ClickResult(
            category=applied.category,
            affinity=applied.reply.affinity,
            clicks=applied.reply.clicks,
            last_clicked_id=product_id,
            session_updated=applied.reply.vector_updated,
            already_applied=applied.reply.already_applied,
        )
        return result, applied.state

    def dismiss(
        self, user_id: str, product_id: str, read_state: bool, options: EventOptions = EventOptions()
    ) -> tuple[DismissResult, StateReplies]:
        """As click, for "not interested": no popularity, no co-occurrence."""
        applied = self._apply(
            user_id, "dismiss", product_id, self.config.ewma_alpha, -self.config.dismiss_step, read_state, options,
            None,
        )  # fmt: skip
        result = DismissResult(
            category=applied.category,
            affinity=applied.reply.affinity,
            product_id=product_id,
            negative_updated=applied.reply.vector_updated,
            already_applied=applied.reply.already_applied,
        )
        return result, applied.state

    def _product(
        self, product_id: str, user_id: str, user_key: str, read_state: bool
    ) -> tuple[bytes, str, bool, StateReplies, Any]:
        """The product's vector, category and display fields, read before the user's script
        (which may only touch the user's slot), whether the user has any state yet and their
        co-occurrence window, which generation of the catalogue serves (a reload may have moved
        it), and with read_state the ids the user's panel shows now, whose names are then read
        with the new state (see _apply): one round trip, and the answer needs none of its own for
        names. A garbled product is logged (product_summary). ProductNotFoundError when there is
        no such product."""
        check_product_id(product_id)
        while True:
            key = self.keys.product(product_id)
            pipe = self.store.pipeline()
            pipe.hmget(key, [EMBEDDING_FIELD, *PRODUCT_FIELDS])
            pipe.exists(key)
            pipe.exists(user_key)
            pipe.hget(user_key, WINDOW_FIELD)
            queue_serving(pipe, self.keys)
            if read_state:
                self.users.queue_panel_ids(pipe, user_id)
            (blob, *values), exists, user_exists, window, serving, *panel = self.store.execute(pipe)
            if not follow_serving(self.keys, serving):
                break
        if not exists:
            raise ProductNotFoundError(product_id)
        fields = {name: text(v) for name, v in zip(PRODUCT_FIELDS, values, strict=True) if v is not None}
        name = product_summary(product_id, fields)["name"]
        names = StateReplies([])
        if read_state:
            names = StateReplies([], tuple(self.users.panel_ids_from(panel[0])), ((product_id, name),) if name else ())
        category = stored_category(fields.get("category", "")) or "unknown"
        return blob or b"", category, bool(user_exists), names, window

    def _apply(
        self,
        user_id: str,
        mode: EventMode,
        product_id: str,
        alpha: float,
        step: float,
        read_state: bool,
        options: EventOptions,
        typed: _Typed | None,
    ) -> _Applied:
        """Apply one event: the user's script (which, for a typed event, also remembers it in the
        user's co-occurrence window), and for a typed event its popularity and the pairs the
        window gives; then wait for what the store's writes wait for (replicas, the disk); with
        read_state, read the user's stored state after it.

        Every argument is checked before anything is written. Two round trips, as a click: the
        product's vector and category (its own slot) with whether the user exists and their
        window (and with read_state the ids the user's panel shows), then, pipelined on one
        connection, the user's script (the user's slot), popularity's script (its slot), the
        count script for the products paired (one call on one Redis; on a cluster one per slot,
        CoOccurrence.counts_calls), the confirmation, the state reads and the names of the
        product and of those ids. On a cluster the scripts go one after the other, to their
        nodes.

        The pairs come from the window as read, not as the user's script finds it: two events
        of one user sent at the same instant may miss pairing with each other (never count a
        pair twice: a pair counts once per session at its strongest, so an event retried with
        its event id, whose product is in the window already, adds nothing)."""
        event_id = check_event_id(options.event_id) if options.event_id is not None else ""
        keys = list(self.keys.user(user_id))
        now = float(self.clock())
        session = ""
        if typed is not None:
            now = now if typed.at is None else check_event_time(typed.at, now)
            session = check_session_id(typed.session_id) if typed.session_id is not None else ""
        blob, category, user_exists, names, window = self._product(product_id, user_id, keys[0], read_state)
        if not user_exists and options.may_create is not None and not options.may_create():
            raise NewUserRefusedError(user_id)
        entry = WindowEntry(product_id, self.weights.of(typed.event), now, session) if typed is not None else None
        event = self._event(mode, product_id, category, blob, alpha, step, now, event_id, entry)
        calls = [ScriptCall(self.scripts.user_event, keys, event.argv())]
        parts = ["user"]
        increments: list[tuple[str, float]] = []
        if entry is not None:
            popularity = PopularityClick(
                product_id, now, self.config.popularity_half_life_s, self.config.popularity_window_s
            )
            popularity_keys = [*self.keys.popularity(), self.keys.popularity_counted(user_id)]
            calls.append(ScriptCall(self.scripts.popularity, popularity_keys, popularity.argv()))
            increments = pair_increments(
                self.co_occurrence.window_from(window), entry, self.co_occurrence.config, self.weights
            )
            pairs = self.co_occurrence.pair_calls(product_id, now, increments)
            calls += pairs
            parts += ["popularity", *["co_occurrence"] * len(pairs)]
        confirmation: Any = None
        try:
            if self.store.is_cluster:
                outcomes = [self._one(call) for call in calls]
                state = (
                    self.users.state_replies(user_id, names.named)._replace(known=names.known) if read_state else names
                )
            else:
                outcomes, confirmation, state = self._pipelined(user_id, calls, read_state, names)
        except NO_REPLY as exc:
            raise WriteOutcomeUnknownError(exc) from exc
        parsed = UserEventReply.parse(self._applied(parts, outcomes))
        with classified_errors():
            if self.store.confirms_writes:
                if isinstance(confirmation, Exception):
                    raise confirmation
                self.store.check_confirmation(confirmation)
            for reply in state.replies:
                if isinstance(reply, Exception):
                    raise reply
        self._log_problems(user_id, product_id, parsed)
        return _Applied(category, parsed, state, 0 if parsed.already_applied else len(increments))

    @staticmethod
    def _one(call: ScriptCall) -> Any:
        """One script on its own (a cluster's node): its reply, or its error reply in its place."""
        try:
            return call.script(keys=call.keys, args=call.args)
        except redis.ResponseError as exc:
            return exc

    def _pipelined(
        self, user_id: str, calls: list[ScriptCall], read_state: bool, names: StateReplies
    ) -> tuple[list[Any], Any, StateReplies]:
        """The scripts, the confirmation and the state reads in one round trip: the scripts'
        outcomes (replies, or error replies in their place), the confirmation's reply (None when
        none is asked) and the state replies."""

        def then(pipe: Any) -> None:
            self.store.queue_confirmation(pipe)
            if read_state:
                self.users.queue_state(pipe, user_id, names.named)

        replies = run_scripts_then(self.store.primary, calls, then)
        outcomes, rest = replies[: len(calls)], replies[len(calls) :]
        if self.store.confirms_writes:
            return outcomes, rest[0], names._replace(replies=rest[1:])
        return outcomes, None, names._replace(replies=rest)

    @staticmethod
    def _applied(parts: list[str], outcomes: list[Any]) -> Any:
        """The user script's reply, once every part applied. Nothing applied: the first refusal,
        classified. Some parts applied: PartlyAppliedError saying which (a part of several
        scripts, co_occurrence, is applied when all of them are)."""
        errors = [reply for reply in outcomes if isinstance(reply, Exception)]
        if not errors:
            return outcomes[0]
        cause = classify_response_error(errors[0]) if isinstance(errors[0], redis.ResponseError) else errors[0]
        if len(errors) == len(outcomes):
            raise cause from errors[0]
        applied: dict[str, bool] = {}
        for part, reply in zip(parts, outcomes, strict=True):
            applied[part] = applied.get(part, True) and not isinstance(reply, Exception)
        raise PartlyAppliedError(applied, cause) from errors[0]

    def _event(
        self,
        mode: EventMode,
        product_id: str,
        category: str,
        blob: bytes,
        alpha: float,
        step: float,
        now: float,
        event_id: str,
        entry: WindowEntry | None,
    ) -> UserEvent:
        return UserEvent(
            mode=mode,
            product_id=product_id,
            category=category,
            vector=self.vectors.as_float32(blob),
            alpha=alpha,
            step=step,
            vector_dim=self.vectors.dim,
            now=now,
            vector_half_life_s=self.config.session_half_life_s,
            affinity_half_life_s=self.config.affinity_half_life_s,
            seen_kept=self.seen_kept,
            recent_kept=RECENT_CLICKS_KEPT,
            ttl_s=self.user_ttl_s,
            event_id=event_id,
            event_ids_kept=EVENT_IDS_KEPT,
            window_entry=entry.encode() if entry is not None else "",
            window_kept=self.co_occurrence.config.window_kept,
        )

    def _log_problems(self, user_id: str, product_id: str, reply: UserEventReply) -> None:
        if reply.repaired:
            log.warning("user %s: clicks or an affinity held a non-number and was restarted from 0", user_id)
        if not reply.vector_updated and not reply.already_applied:
            log.warning(
                "product %s has no valid %d-d embedding: the event counts, but moves no vector",
                product_id,
                self.vectors.dim,
            )
