"""Recording what users do: a click or a dismissal, applied atomically by the user's script (at
most once per event id), counted for popularity (clicks; once per user, product and window),
confirmed by replicas or the disk when required, and optionally followed by a read of the user's
state in the same round trip.

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
from recengine.errors import (
    NewUserRefusedError,
    PartlyAppliedError,
    ProductNotFoundError,
    WriteOutcomeUnknownError,
    classified_errors,
    classify_response_error,
)
from recengine.layout import EMBEDDING_FIELD, EVENT_IDS_KEPT, PRODUCT_FIELDS, RECENT_CLICKS_KEPT, KeyLayout
from recengine.reload import follow_serving, queue_serving
from recengine.replies import product_summary, text
from recengine.results import ClickResult, DismissResult
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


@dataclass(eq=False)
class UserEvents:
    """Clicks and dismissals of one recommender's users."""

    store: Store
    keys: KeyLayout
    scripts: Scripts
    users: UserReads
    config: RankingConfig
    clock: Callable[[], float]
    vector_dim: int
    seen_kept: int
    user_ttl_s: int

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
        category, reply, state = self._apply(
            user_id, "click", product_id, alpha, float(step or 0.0), read_state, options
        )
        result = ClickResult(
            category=category,
            affinity=reply.affinity,
            clicks=reply.clicks,
            last_clicked_id=product_id,
            session_updated=reply.vector_updated,
            already_applied=reply.already_applied,
        )
        return result, state

    def dismiss(
        self, user_id: str, product_id: str, read_state: bool, options: EventOptions = EventOptions()
    ) -> tuple[DismissResult, StateReplies]:
        """As click, for "not interested"."""
        category, reply, state = self._apply(
            user_id, "dismiss", product_id, self.config.ewma_alpha, -self.config.dismiss_step, read_state, options
        )
        result = DismissResult(
            category=category,
            affinity=reply.affinity,
            product_id=product_id,
            negative_updated=reply.vector_updated,
            already_applied=reply.already_applied,
        )
        return result, state

    def _product(
        self, product_id: str, user_id: str, user_key: str, read_state: bool
    ) -> tuple[bytes, str, bool, StateReplies]:
        """The product's vector, category and display fields, read before the user's script
        (which may only touch the user's slot), whether the user has any state yet, which
        generation of the catalogue serves (a reload may have moved it), and with read_state the
        ids the user's panel shows now, whose names are then read with the new state (see
        _apply): one round trip, and the answer needs none of its own for names. A garbled
        product is logged (product_summary). ProductNotFoundError when there is no such product."""
        check_product_id(product_id)
        while True:
            key = self.keys.product(product_id)
            pipe = self.store.pipeline()
            pipe.hmget(key, [EMBEDDING_FIELD, *PRODUCT_FIELDS])
            pipe.exists(key)
            pipe.exists(user_key)
            queue_serving(pipe, self.keys)
            if read_state:
                self.users.queue_panel_ids(pipe, user_id)
            (blob, *values), exists, user_exists, serving, *panel = self.store.execute(pipe)
            if not follow_serving(self.keys, serving):
                break
        if not exists:
            raise ProductNotFoundError(product_id)
        fields = {name: text(v) for name, v in zip(PRODUCT_FIELDS, values, strict=True) if v is not None}
        name = product_summary(product_id, fields)["name"]
        names = StateReplies([])
        if read_state:
            names = StateReplies([], tuple(self.users.panel_ids_from(panel[0])), ((product_id, name),) if name else ())
        return blob or b"", stored_category(fields.get("category", "")) or "unknown", bool(user_exists), names

    def _apply(
        self,
        user_id: str,
        mode: EventMode,
        product_id: str,
        alpha: float,
        step: float,
        read_state: bool,
        options: EventOptions,
    ) -> tuple[str, UserEventReply, StateReplies]:
        """Apply one event (and, for a click, count its popularity), then wait for what the
        store's writes wait for (replicas, the disk); with read_state, read the user's stored
        state after it.

        Two round trips: the product's vector and category (its own slot) with whether the user
        exists (and with read_state the ids the user's panel shows), then, pipelined on one
        connection, the user's script (the user's slot), popularity's script (its slot), the
        confirmation, the state reads and the names of the product and of those ids (so the
        answer needs no third round trip for names). On a cluster the scripts go one after the
        other, to their nodes."""
        event_id = check_event_id(options.event_id) if options.event_id is not None else ""
        keys = list(self.keys.user(user_id))
        blob, category, user_exists, names = self._product(product_id, user_id, keys[0], read_state)
        if not user_exists and options.may_create is not None and not options.may_create():
            raise NewUserRefusedError(user_id)
        now = float(self.clock())
        event = self._event(mode, product_id, category, blob, alpha, step, now, event_id)
        calls = [ScriptCall(self.scripts.user_event, keys, event.argv())]
        if mode == "click":
            popularity = PopularityClick(
                product_id, now, self.config.popularity_half_life_s, self.config.popularity_window_s
            )
            popularity_keys = [*self.keys.popularity(), self.keys.popularity_counted(user_id)]
            calls.append(ScriptCall(self.scripts.popularity, popularity_keys, popularity.argv()))
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
        parsed = UserEventReply.parse(self._applied(mode, outcomes))
        with classified_errors():
            if self.store.confirms_writes:
                if isinstance(confirmation, Exception):
                    raise confirmation
                self.store.check_confirmation(confirmation)
            for reply in state.replies:
                if isinstance(reply, Exception):
                    raise reply
        self._log_problems(user_id, product_id, parsed)
        return category, parsed, state

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
    def _applied(mode: EventMode, outcomes: list[Any]) -> Any:
        """The user script's reply, once every part applied. Nothing applied: the first refusal,
        classified. Some parts applied: PartlyAppliedError saying which."""
        parts = ["user", "popularity"][: len(outcomes)] if mode == "click" else ["user"]
        errors = [reply for reply in outcomes if isinstance(reply, Exception)]
        if not errors:
            return outcomes[0]
        cause = classify_response_error(errors[0]) if isinstance(errors[0], redis.ResponseError) else errors[0]
        if len(errors) == len(outcomes):
            raise cause from errors[0]
        applied = {part: not isinstance(reply, Exception) for part, reply in zip(parts, outcomes, strict=True)}
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
    ) -> UserEvent:
        return UserEvent(
            mode=mode,
            product_id=product_id,
            category=category,
            vector=blob,
            alpha=alpha,
            step=step,
            vector_dim=self.vector_dim,
            now=now,
            vector_half_life_s=self.config.session_half_life_s,
            affinity_half_life_s=self.config.affinity_half_life_s,
            seen_kept=self.seen_kept,
            recent_kept=RECENT_CLICKS_KEPT,
            ttl_s=self.user_ttl_s,
            event_id=event_id,
            event_ids_kept=EVENT_IDS_KEPT,
        )

    def _log_problems(self, user_id: str, product_id: str, reply: UserEventReply) -> None:
        if reply.repaired:
            log.warning("user %s: clicks or an affinity held a non-number and was restarted from 0", user_id)
        if not reply.vector_updated and not reply.already_applied:
            log.warning(
                "product %s has no valid %d-d embedding: the event counts, but moves no vector",
                product_id,
                self.vector_dim,
            )
