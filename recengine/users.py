"""Reading a user's state: the features hash, recent clicks, what they saw and dismissed.
Always from the primary, never a replica: a user's last click must count in the very next
answer. Reads are queued on a pipeline the caller may share, so a request that needs a user's
state and something else pays one round trip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from recengine.errors import classified_errors
from recengine.layout import RECENT_CLICKS_KEPT, KeyLayout
from recengine.replies import features_from_hash, text
from recengine.results import UserContext, UserState
from recengine.store import Store


class ProductNames(Protocol):
    """Product names by id (unknown ids left out), for a user's panel: recengine.catalog.Catalog."""

    def queue_names(self, pipe: Any, product_ids: Sequence[str]) -> None: ...

    def names_from(self, product_ids: Sequence[str], replies: Sequence[Any]) -> dict[str, str]: ...

    def product_names(self, product_ids: Sequence[str]) -> dict[str, str]: ...


class StateReplies(NamedTuple):
    """The replies of queue_state, the products whose names were read with them, and names
    the caller had read already ((id, name) pairs: a click reads its product's)."""

    replies: list[Any]
    named: tuple[str, ...] = ()
    known: tuple[tuple[str, str], ...] = ()


@dataclass(eq=False)
class UserReads:
    """What the engine reads of its users."""

    store: Store
    keys: KeyLayout
    vector_dim: int
    names: ProductNames

    # what a request needs: features and exclusions

    def queue_context(self, pipe: Any, user_id: str, exclude_clicked: bool) -> None:
        user = self.keys.user(user_id)
        pipe.hgetall(user.features)
        pipe.smembers(user.dismissed)
        if exclude_clicked:
            pipe.zrange(user.seen, 0, -1)

    def context_from(self, user_id: str, replies: Sequence[Any], exclude_clicked: bool) -> UserContext:
        """The UserContext from the replies of queue_context."""
        excluded = {text(pid) for pid in replies[1]}
        if exclude_clicked:
            excluded.update(text(pid) for pid in replies[2])
        return UserContext(features_from_hash(user_id, replies[0], self.vector_dim), frozenset(excluded))

    def context(self, user_id: str, exclude_clicked: bool) -> UserContext:
        """The user's features and the products to leave out, in one round trip."""
        pipe = self.store.pipeline()
        self.queue_context(pipe, user_id, exclude_clicked)
        return self.context_from(user_id, self.store.execute(pipe), exclude_clicked)

    # what a user's panel shows

    def queue_panel_ids(self, pipe: Any, user_id: str) -> None:
        """The products the user's panel shows now (recent clicks, dismissed): a caller about to
        change the user reads them first, so that their names can be read with the new state."""
        user = self.keys.user(user_id)
        pipe.lrange(user.recent, 0, RECENT_CLICKS_KEPT - 1)
        pipe.smembers(user.dismissed)

    def panel_ids_from(self, replies: Sequence[Any]) -> list[str]:
        """The ids from the replies of queue_panel_ids."""
        recent, dismissed = replies
        return [*(text(pid) for pid in recent), *(text(pid) for pid in dismissed)]

    def queue_state(self, pipe: Any, user_id: str, named: Sequence[str] = ()) -> None:
        """The state's reads, and the names of the `named` products (those the state is expected
        to show), so that a state changed by a click needs no second round trip for names."""
        user = self.keys.user(user_id)
        pipe.hgetall(user.features)
        pipe.lrange(user.recent, 0, RECENT_CLICKS_KEPT - 1)
        pipe.smembers(user.dismissed)
        self.names.queue_names(pipe, named)

    def state_replies(self, user_id: str, named: Sequence[str] = ()) -> StateReplies:
        pipe = self.store.pipeline()
        self.queue_state(pipe, user_id, named)
        return StateReplies(self.store.execute(pipe), tuple(named))

    def state_from(self, user_id: str, state: StateReplies) -> UserState:
        """A UserState from the replies of queue_state; the names of shown products that were
        not among the named ones are looked up (a second round trip, only then)."""
        stored, recent, dismissed = state.replies[:3]
        recent_ids = [text(pid) for pid in recent]
        dismissed_ids = sorted(text(pid) for pid in dismissed)
        names = {**dict(state.known), **self.names.names_from(state.named, state.replies[3:])}
        named = set(state.named) | {pid for pid, _ in state.known}
        unnamed = [pid for pid in dict.fromkeys([*recent_ids, *dismissed_ids]) if pid not in named]
        names.update(self.names.product_names(unnamed))
        shown = set(recent_ids) | set(dismissed_ids)
        return UserState(
            features=features_from_hash(user_id, stored, self.vector_dim),
            recent_clicks=recent_ids,
            dismissed=dismissed_ids,
            product_names={pid: name for pid, name in names.items() if pid in shown},
        )

    # one list each

    def recent_clicks(self, user_id: str) -> list[str]:
        recent = self.keys.user(user_id).recent
        with classified_errors():
            return [text(pid) for pid in self.store.primary.lrange(recent, 0, RECENT_CLICKS_KEPT - 1)]

    def seen(self, user_id: str) -> list[str]:
        seen = self.keys.user(user_id).seen
        with classified_errors():
            return [text(pid) for pid in self.store.primary.zrevrange(seen, 0, -1)]

    def dismissed(self, user_id: str) -> list[str]:
        dismissed = self.keys.user(user_id).dismissed
        with classified_errors():
            return sorted(text(pid) for pid in self.store.primary.smembers(dismissed))

    def reset(self, user_id: str) -> None:
        """Every key of the user (one slot, one DEL), and the key older versions kept."""
        keys = self.keys.user(user_id)
        with classified_errors():
            self.store.primary.delete(*keys)
            self.store.primary.delete(self.keys.legacy_recent(user_id))
