"""Recording what users do: a click or a dismissal, applied atomically by the user's script,
counted for popularity (clicks), acknowledged by replicas when required, and optionally followed
by a read of the user's state in the same round trip."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ranking import RankingConfig, check_unit_interval, finite_number
from recengine.errors import ProductNotFoundError, classified_errors
from recengine.layout import EMBEDDING_FIELD, PRODUCT_FIELDS, RECENT_CLICKS_KEPT, KeyLayout
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
from recengine.validation import check_product_id

log = logging.getLogger("recommender")


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
        self, user_id: str, product_id: str, ewma_alpha: float | None, affinity_step: float | None, read_state: bool
    ) -> tuple[ClickResult, StateReplies]:
        """The click's result, and the state replies for UserReads.state_from (empty without
        read_state)."""
        alpha = self.config.ewma_alpha if ewma_alpha is None else check_unit_interval("ewma_alpha", ewma_alpha)
        if alpha == 0:
            raise ValueError("ewma_alpha must be in (0, 1]")
        step = self.config.affinity_step if affinity_step is None else finite_number("affinity_step", affinity_step)
        category, reply, state = self._apply(user_id, "click", product_id, alpha, float(step or 0.0), read_state)
        result = ClickResult(
            category=category,
            affinity=reply.affinity,
            clicks=reply.clicks,
            last_clicked_id=product_id,
            session_updated=reply.vector_updated,
        )
        return result, state

    def dismiss(self, user_id: str, product_id: str, read_state: bool) -> tuple[DismissResult, StateReplies]:
        """As click, for "not interested"."""
        category, reply, state = self._apply(
            user_id, "dismiss", product_id, self.config.ewma_alpha, -self.config.dismiss_step, read_state
        )
        result = DismissResult(
            category=category, affinity=reply.affinity, product_id=product_id, negative_updated=reply.vector_updated
        )
        return result, state

    def _product(self, product_id: str, user_id: str, read_state: bool) -> tuple[bytes, str, StateReplies]:
        """The product's vector, category and display fields, read before the user's script
        (which may only touch the user's slot), and with read_state the ids the user's panel
        shows now, whose names are then read with the new state (see _apply): the answer needs
        no round trip of its own for names. A garbled product is logged (product_summary).
        ProductNotFoundError when there is no such product."""
        key = self.keys.product(check_product_id(product_id))
        pipe = self.store.pipeline()
        pipe.hmget(key, [EMBEDDING_FIELD, *PRODUCT_FIELDS])
        pipe.exists(key)
        if read_state:
            self.users.queue_panel_ids(pipe, user_id)
        (blob, *values), exists, *panel = self.store.execute(pipe)
        if not exists:
            raise ProductNotFoundError(product_id)
        fields = {name: text(v) for name, v in zip(PRODUCT_FIELDS, values, strict=True) if v is not None}
        name = product_summary(product_id, fields)["name"]
        names = StateReplies([])
        if read_state:
            names = StateReplies([], tuple(self.users.panel_ids_from(panel)), ((product_id, name),) if name else ())
        return blob or b"", fields.get("category") or "unknown", names

    def _apply(
        self, user_id: str, mode: EventMode, product_id: str, alpha: float, step: float, read_state: bool
    ) -> tuple[str, UserEventReply, StateReplies]:
        """Apply one event (and, for a click, count its popularity), then WAIT for replicas when
        required; with read_state, read the user's stored state after it.

        Two round trips: the product's vector and category (its own slot), with read_state the
        ids the user's panel shows; then, pipelined on one connection, the user's script (the
        user's slot), popularity's script (its slot), WAIT, the state reads and the names of
        the product and of those ids (so the answer needs no third round trip for names). On a
        cluster the scripts go one after the other, to their nodes."""
        keys = list(self.keys.user(user_id))
        blob, category, names = self._product(product_id, user_id, read_state)
        now = float(self.clock())
        calls = [
            ScriptCall(
                self.scripts.user_event, keys, self._event(mode, product_id, category, blob, alpha, step, now).argv()
            )
        ]
        if mode == "click":
            popularity = PopularityClick(product_id, now, self.config.popularity_half_life_s)
            calls.append(ScriptCall(self.scripts.popularity, list(self.keys.popularity()), popularity.argv()))
        if self.store.is_cluster:
            with classified_errors():
                replies = [call.script(keys=call.keys, args=call.args) for call in calls]
            reply = replies[0]
            state = self.users.state_replies(user_id, names.named)._replace(known=names.known) if read_state else names
        else:
            reply, state = self._pipelined(user_id, calls, read_state, names)
        parsed = UserEventReply.parse(reply)
        self._log_problems(user_id, product_id, parsed)
        return category, parsed, state

    def _pipelined(
        self, user_id: str, calls: list[ScriptCall], read_state: bool, names: StateReplies
    ) -> tuple[Any, StateReplies]:
        """The scripts, WAIT and the state reads in one round trip: the user's script's reply
        and the state replies."""

        def then(pipe: Any) -> None:
            self.store.queue_wait(pipe)
            if read_state:
                self.users.queue_state(pipe, user_id, names.named)

        with classified_errors():
            replies = run_scripts_then(self.store.primary, calls, then)
        after_scripts = len(calls)
        if self.store.min_replicas_ack:
            self.store.check_acks(int(replies[after_scripts]))
            after_scripts += 1
        return replies[0], names._replace(replies=replies[after_scripts:])

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
