"""Reading a user's state: the one hash that holds a user's features, recent clicks, what they
saw and dismissed. Always from the primary, never a replica: a user's last click must count in
the very next answer. Reads are queued on a pipeline the caller may share, so a request that
needs a user's state and something else pays one round trip."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from recengine.errors import classified_errors
from recengine.layout import DISMISSED_FIELD, LIST_SEPARATOR, RECENT_CLICKS_KEPT, RECENT_FIELD, SEEN_FIELD, KeyLayout
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


def id_list(stored: Mapping[bytes, Any], field: str) -> list[str]:
    """A list field of the user's hash as HGETALL gives it (ids one per line, newest first); []
    when absent."""
    raw = stored.get(field.encode())
    return [text(item) for item in raw.split(LIST_SEPARATOR) if item] if raw else []


@dataclass(eq=False)
class UserReads:
    """What the engine reads of its users."""

    store: Store
    keys: KeyLayout
    vector_dim: int
    names: ProductNames

    def _hash(self, user_id: str) -> str:
        return self.keys.user(user_id).features

    # what a request needs: features and exclusions

    def queue_context(self, pipe: Any, user_id: str, exclude_clicked: bool) -> None:
        pipe.hgetall(self._hash(user_id))

    def context_from(self, user_id: str, replies: Sequence[Any], exclude_clicked: bool) -> UserContext:
        """The UserContext from the replies of queue_context."""
        stored = replies[0]
        dismissed = frozenset(id_list(stored, DISMISSED_FIELD))
        # The seen list holds dismissals too: here it is what was clicked and not dismissed.
        seen = frozenset(id_list(stored, SEEN_FIELD)) - dismissed if exclude_clicked else frozenset()
        return UserContext(features_from_hash(user_id, stored, self.vector_dim), dismissed, seen)

    def context(self, user_id: str, exclude_clicked: bool) -> UserContext:
        """The user's features and the products to leave out, in one round trip."""
        pipe = self.store.pipeline()
        self.queue_context(pipe, user_id, exclude_clicked)
        return self.context_from(user_id, self.store.execute(pipe), exclude_clicked)

    # what a user's panel shows

    def queue_panel_ids(self, pipe: Any, user_id: str) -> None:
        """The products the user's panel shows now (recent clicks, dismissed): a caller about to
        change the user reads them first, so that their names can be read with the new state."""
        pipe.hmget(self._hash(user_id), [RECENT_FIELD, DISMISSED_FIELD])

    def panel_ids_from(self, reply: Sequence[Any]) -> list[str]:
        """The ids from the reply of queue_panel_ids."""
        recent, dismissed = reply
        stored = {RECENT_FIELD.encode(): recent, DISMISSED_FIELD.encode(): dismissed}
        return [*id_list(stored, RECENT_FIELD)[:RECENT_CLICKS_KEPT], *id_list(stored, DISMISSED_FIELD)]

    def queue_state(self, pipe: Any, user_id: str, named: Sequence[str] = ()) -> None:
        """The state's read, and the names of the `named` products (those the state is expected
        to show), so that a state changed by a click needs no second round trip for names."""
        pipe.hgetall(self._hash(user_id))
        self.names.queue_names(pipe, named)

    def state_replies(self, user_id: str, named: Sequence[str] = ()) -> StateReplies:
        pipe = self.store.pipeline()
        self.queue_state(pipe, user_id, named)
        return StateReplies(self.store.execute(pipe), tuple(named))

    def state_from(self, user_id: str, state: StateReplies) -> UserState:
        """A UserState from the replies of queue_state; the names of shown products that were
        not among the named ones are looked up (a second round trip, only then)."""
        stored = state.replies[0]
        recent_ids = id_list(stored, RECENT_FIELD)[:RECENT_CLICKS_KEPT]
        dismissed_ids = sorted(id_list(stored, DISMISSED_FIELD))
        names = {**dict(state.known), **self.names.names_from(state.named, state.replies[1:])}
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

    def _list(self, user_id: str, field: str) -> list[str]:
        with classified_errors():
            raw = self.store.primary.hget(self._hash(user_id), field)
        return id_list({field.encode(): raw} if raw is not None else {}, field)

    def recent_clicks(self, user_id: str) -> list[str]:
        return self._list(user_id, RECENT_FIELD)[:RECENT_CLICKS_KEPT]

    def seen(self, user_id: str) -> list[str]:
        return self._list(user_id, SEEN_FIELD)

    def dismissed(self, user_id: str) -> list[str]:
        return sorted(self._list(user_id, DISMISSED_FIELD))

    def reset(self, user_id: str) -> None:
        """The user's key, the older layout's keys beside it (one slot, one DEL), and the key
        still older versions kept. What the user's clicks counted for popularity stays counted
        (a reset does not let one user count a product twice in a window)."""
        keys = self.keys.user(user_id)
        with classified_errors():
            self.store.primary.delete(*keys)
            self.store.primary.delete(self.keys.legacy_recent(user_id))
