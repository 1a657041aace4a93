"""Recording what users do: a typed event (view, click, cart, purchase) or a dismissal, applied
atomically to the user's signals by the user's script, counted for popularity and, for typed
events, for co-occurrence with the other products of the user's session; acknowledged by
replicas when required, and optionally followed by a read of the user's state in the same round
trip. A click is the event "click"."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ranking import RankingConfig, check_unit_interval, finite_number
from recengine.co_occurrence import CoOccurrence
from recengine.co_occurrence_rules import WindowEntry, check_session_id, pair_increments
from recengine.errors import ProductNotFoundError, classified_errors
from recengine.event_types import EventType, EventWeights, check_event_time, check_event_type
from recengine.layout import EMBEDDING_FIELD, RECENT_CLICKS_KEPT, KeyLayout
from recengine.replies import text
from recengine.results import ClickResult, DismissResult, EventResult
from recengine.scripts import (
    EventMode,
    FadedCounts,
    ScriptCall,
    Scripts,
    UserEvent,
    UserEventReply,
    run_scripts_then,
)
from recengine.store import Store
from recengine.users import UserReads
from recengine.validation import check_product_id

log = logging.getLogger("recommender")


@dataclass(frozen=True)
class _Applied:
    """What applying one event gave: the product's category, the user script's reply, the
    state replies (empty unless asked for) and how many products it was paired with."""

    category: str
    reply: UserEventReply
    state: list[Any]
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
    vector_dim: int
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
    ) -> tuple[EventResult, list[Any]]:
        """One typed event with the config's alpha and step, scaled by its type's weight, and the
        state replies (empty without read_state)."""
        event = check_event_type(event)
        weight = self.weights.of(event)
        alpha = self.weights.session_alpha(event, self.config.ewma_alpha)
        applied = self._apply(
            user_id, product_id, "click", alpha, self.config.affinity_step * weight, read_state, event, at, session_id
        )
        result = EventResult(
            event=event,
            product_id=product_id,
            category=applied.category,
            affinity=applied.reply.affinity,
            clicks=applied.reply.clicks,
            session_updated=applied.reply.vector_updated,
            paired_with=applied.paired_with,
        )
        return result, applied.state

    def click(
        self, user_id: str, product_id: str, ewma_alpha: float | None, affinity_step: float | None, read_state: bool
    ) -> tuple[ClickResult, list[Any]]:
        """The event "click" (with its alpha and step as given, else the config's), and the
        state replies for UserReads.state_from (empty without read_state)."""
        alpha = self.config.ewma_alpha if ewma_alpha is None else check_unit_interval("ewma_alpha", ewma_alpha)
        if alpha == 0:
            raise ValueError("ewma_alpha must be in (0, 1]")
        step = self.config.affinity_step if affinity_step is None else finite_number("affinity_step", affinity_step)
        applied = self._apply(user_id, product_id, "click", alpha, float(step or 0.0), read_state, "click", None, None)
        result = ClickResult(
            category=applied.category,
            affinity=applied.reply.affinity,
            clicks=applied.reply.clicks,
            last_clicked_id=product_id,
            session_updated=applied.reply.vector_updated,
        )
        return result, applied.state

    def dismiss(self, user_id: str, product_id: str, read_state: bool) -> tuple[DismissResult, list[Any]]:
        """As click, for "not interested": no popularity, no co-occurrence."""
        applied = self._apply(
            user_id, product_id, "dismiss", self.config.ewma_alpha, -self.config.dismiss_step, read_state,
            None, None, None,
        )  # fmt: skip
        result = DismissResult(
            category=applied.category,
            affinity=applied.reply.affinity,
            product_id=product_id,
            negative_updated=applied.reply.vector_updated,
        )
        return result, applied.state

    def _product(self, product_id: str) -> tuple[bytes, str]:
        """The product's vector and category, read before the user's script (which may only
        touch the user's slot). ProductNotFoundError when there is no such product."""
        key = self.keys.product(check_product_id(product_id))
        pipe = self.store.pipeline()
        pipe.hmget(key, [EMBEDDING_FIELD, "category"])
        pipe.exists(key)
        (blob, category), exists = self.store.execute(pipe)
        if not exists:
            raise ProductNotFoundError(product_id)
        return blob or b"", text(category) or "unknown"

    def _apply(
        self,
        user_id: str,
        product_id: str,
        mode: EventMode,
        alpha: float,
        step: float,
        read_state: bool,
        event: EventType | None,
        at: float | None,
        session_id: str | None,
    ) -> _Applied:
        """Apply one event: the user's script, and for a typed event its popularity (its weight)
        and its place in the user's window; then the pairs the window gives, then WAIT for
        replicas when required; with read_state, read the user's stored state after it.

        Every argument is checked before anything is written. Round trips: the product's vector
        and category (its own slot); then, pipelined on one connection, the user's script and
        window script (the user's slot), popularity's (its slot), WAIT and the state reads; then,
        when the window held products of the same session, one count script per product paired
        (each on its product's slot). On a cluster the scripts go one after the other, to their
        nodes."""
        keys = list(self.keys.user(user_id))
        now = float(self.clock())
        at = now if at is None else check_event_time(at, now)
        session = check_session_id(session_id) if session_id is not None else ""
        blob, category = self._product(product_id)
        user_event = self._event(mode, product_id, category, blob, alpha, step, at)
        calls = [ScriptCall(self.scripts.user_event, keys, user_event.argv())]
        entry = None
        if event is not None:
            weight = self.weights.of(event)
            popularity = FadedCounts(at, self.config.popularity_half_life_s, [(product_id, weight)])
            calls.append(ScriptCall(self.scripts.faded_counts, list(self.keys.popularity()), popularity.argv()))
            entry = WindowEntry(product_id, weight, at, session)
            calls.append(self.co_occurrence.window_call(user_id, entry))
        replies, state = self._run(user_id, calls, read_state)
        paired_with = 0
        if entry is not None:
            previous = self.co_occurrence.window_from(replies[-1])
            increments = pair_increments(previous, entry, self.co_occurrence.config, self.weights)
            self._run(user_id, self.co_occurrence.pair_calls(product_id, at, increments), False)
            paired_with = len(increments)
        parsed = UserEventReply.parse(replies[0])
        self._log_problems(user_id, product_id, parsed)
        return _Applied(category, parsed, state, paired_with)

    def _run(self, user_id: str, calls: list[ScriptCall], read_state: bool) -> tuple[list[Any], list[Any]]:
        """The scripts, then WAIT and the state reads: the scripts' replies and the state
        replies. One round trip on a single Redis; on a cluster each script goes to its node."""
        if not calls and not read_state:
            return [], []
        if self.store.is_cluster:
            with classified_errors():
                replies = [call.script(keys=call.keys, args=call.args) for call in calls]
            return replies, self.users.state_replies(user_id) if read_state else []

        def then(pipe: Any) -> None:
            self.store.queue_wait(pipe)
            if read_state:
                self.users.queue_state(pipe, user_id)

        with classified_errors():
            replies = run_scripts_then(self.store.primary, calls, then)
        after_scripts = len(calls)
        if self.store.min_replicas_ack:
            self.store.check_acks(int(replies[after_scripts]))
            after_scripts += 1
        return replies[: len(calls)], replies[after_scripts:]

    def _event(
        self, mode: EventMode, product_id: str, category: str, blob: bytes, alpha: float, step: float, now: float
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
        )

    def _log_problems(self, user_id: str, product_id: str, reply: UserEventReply) -> None:
        if reply.repaired:
            log.warning("user %s: clicks or an affinity held a non-number and was restarted from 0", user_id)
        if not reply.vector_updated:
            log.warning(
                "product %s has no valid %d-d embedding: the event counts, but moves no vector",
                product_id,
                self.vector_dim,
            )
