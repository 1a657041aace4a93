"""Reading a user's state: the features hash, recent clicks, what they saw and dismissed.
Always from the primary, never a replica: a user's last click must count in the very next
answer. Reads are queued on a pipeline the caller may share, so a request that needs a user's
state and something else pays one round trip."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from recengine.errors import classified_errors
from recengine.layout import RECENT_CLICKS_KEPT, KeyLayout
from recengine.replies import features_from_hash, text
from recengine.results import UserContext, UserState
from recengine.store import Store

# Product names by id (unknown ids left out), for a user's panel.
NameLookup = Callable[[Sequence[str]], dict[str, str]]


@dataclass(eq=False)
class UserReads:
    """What the engine reads of its users."""

    store: Store
    keys: KeyLayout
    vector_dim: int
    product_names: NameLookup

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

    def queue_state(self, pipe: Any, user_id: str) -> None:
        user = self.keys.user(user_id)
        pipe.hgetall(user.features)
        pipe.lrange(user.recent, 0, RECENT_CLICKS_KEPT - 1)
        pipe.smembers(user.dismissed)

    def state_replies(self, user_id: str) -> list[Any]:
        pipe = self.store.pipeline()
        self.queue_state(pipe, user_id)
        return self.store.execute(pipe)

    def state_from(self, user_id: str, replies: Sequence[Any]) -> UserState:
        """A UserState from the replies of queue_state, with the names looked up (a second
        round trip)."""
        stored, recent, dismissed = replies
        recent_ids = [text(pid) for pid in recent]
        dismissed_ids = sorted(text(pid) for pid in dismissed)
        return UserState(
            features=features_from_hash(user_id, stored, self.vector_dim),
            recent_clicks=recent_ids,
            dismissed=dismissed_ids,
            product_names=self.product_names([*recent_ids, *dismissed_ids]),
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
