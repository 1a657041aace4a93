"""The Lua scripts (in lua/*.lua), each beside the typed arguments it takes, and the runner
that sends scripts by EVALSHA in one pipeline and recovers from NOSCRIPT.

Every script touches the keys of one Redis Cluster slot only, so the same code runs on one
Redis, behind a sharding proxy and on a cluster: the user's script touches the user's keys (the
product's vector and category are read before, by the caller, and passed in), popularity has a
slot of its own, faded counts touch one sorted set and its epoch (one product's co-occurrence,
or popularity's for an import), and the refresh and the product write touch the one product
hash.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import redis
from redis.commands.core import Script

from ranking import POPULARITY_REBASE_HALF_LIVES
from recengine.layout import (
    AFFINITY_AT_FIELD,
    AFFINITY_PREFIX,
    CLICKS_FIELD,
    DISMISSED_FIELD,
    EMBEDDING_FIELD,
    EVENT_IDS_FIELD,
    LAST_CLICKED_CATEGORY_FIELD,
    LAST_CLICKED_ID_FIELD,
    NEGATIVE_AT_FIELD,
    NEGATIVE_VEC_FIELD,
    RECENT_FIELD,
    SEEN_FIELD,
    SESSION_AT_FIELD,
    SESSION_VEC_FIELD,
    WINDOW_FIELD,
)
from recengine.replies import number, text

# Which running vector an event moves: a click the session vector, a dismissal the negative one.
EventMode = Literal["click", "dismiss"]


def _lua(name: str) -> str:
    return (Path(__file__).parent / "lua" / f"{name}.lua").read_text(encoding="utf-8")


USER_EVENT_LUA = _lua("user_event")
POPULARITY_LUA = _lua("popularity")
FADED_COUNTS_LUA = _lua("faded_counts")
REFRESH_EMBEDDING_LUA = _lua("refresh_embedding")
WRITE_PRODUCT_LUA = _lua("write_product")
RELOAD_LOCK_LUA = _lua("reload_lock")
# upsert creates a missing product; update never does (errors.NO_PRODUCT_CODE instead).
WriteMode = Literal["upsert", "update"]


# --- lua/user_event.lua ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UserEvent:
    """One click or dismissal, done entirely inside Redis on the user's one key, so that
    concurrent events of one user serialise and a memory cap evicts the user whole: fold the
    item's vector into the session (click) or negative (dismiss) vector as an EWMA against the
    *faded* previous one, fade every category affinity to now and step the item's category up
    or down, remember what was clicked, seen and dismissed, refresh the user's expiry. A
    client-side read-modify-write would let two clicks read the same session and lose one.

    `event_id` (empty: none) makes it idempotent: an id among the user's last `event_ids_kept`
    events changes nothing and is answered with `already_applied`.

    A typed event also remembers `window_entry` (co_occurrence_rules.WindowEntry, encoded; empty
    for a dismissal) in the user's co-occurrence window, the newest `window_kept` (an event id
    applied before remembers nothing again).

    Everything is read and computed before the first write: Redis does not roll a script back,
    so a failure half-way would leave a half-applied event. Counters that hold junk restart at
    0 (reported back as `repaired`) instead of failing after the vector was written.

    KEYS: layout.UserKeys (the user's hash; the older layout's keys, folded in and deleted).
    ARGV: argv(), the only place that knows their order.
    """

    mode: EventMode
    product_id: str
    category: str
    vector: bytes  # the item's stored vector; any other length than vector_dim × 4 moves no vector
    alpha: float
    step: float
    vector_dim: int
    now: float
    vector_half_life_s: float
    affinity_half_life_s: float
    seen_kept: int
    recent_kept: int
    ttl_s: int
    event_id: str
    event_ids_kept: int
    window_entry: str = ""
    window_kept: int = 0

    def argv(self) -> list[Any]:
        """ARGV[1..29] of lua/user_event.lua, in its order."""
        vec_field, vec_at_field = (
            (SESSION_VEC_FIELD, SESSION_AT_FIELD) if self.mode == "click" else (NEGATIVE_VEC_FIELD, NEGATIVE_AT_FIELD)
        )
        return [
            self.mode, self.product_id, self.category, self.vector,
            repr(float(self.alpha)), repr(float(self.step)), self.vector_dim, repr(self.now),
            repr(self.vector_half_life_s), repr(self.affinity_half_life_s),
            self.seen_kept, self.recent_kept, self.ttl_s,
            vec_field, vec_at_field, AFFINITY_AT_FIELD,
            AFFINITY_PREFIX, CLICKS_FIELD, LAST_CLICKED_ID_FIELD, LAST_CLICKED_CATEGORY_FIELD,
            RECENT_FIELD, SEEN_FIELD, DISMISSED_FIELD, EVENT_IDS_FIELD,
            self.event_id, self.event_ids_kept,
            WINDOW_FIELD, self.window_entry, self.window_kept,
        ]  # fmt: skip


@dataclass(frozen=True)
class UserEventReply:
    """What lua/user_event.lua returns: the category's affinity after the event, the user's
    click count, whether the running vector moved, whether a junk counter was restarted, and
    whether the event id had been applied before (then nothing changed)."""

    affinity: float
    clicks: int
    vector_updated: bool
    repaired: bool
    already_applied: bool

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> UserEventReply:
        affinity, clicks, updated, repaired, already = reply
        return cls(number(affinity), int(clicks), bool(updated), bool(repaired), bool(already))


# --- lua/popularity.lua -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PopularityClick:
    """One click's share of popularity (see ranking.py for the arithmetic): add
    2^((now − epoch)/h) to the product's sum; when that exponent passes `rebase_half_lives`,
    scale every sum down and move the epoch to now, so the numbers stay far from overflow
    whatever the half-life. A user's clicks on one product count once per `window_s`: the
    script keeps the products each user's clicks counted (a set that expires with the window)
    and answers false for a click already counted.
    KEYS: layout.KeyLayout.popularity() and popularity_counted(user)."""

    product_id: str
    now: float
    half_life_s: float
    window_s: float
    rebase_half_lives: float = POPULARITY_REBASE_HALF_LIVES

    def argv(self) -> list[Any]:
        """ARGV[1..5] of lua/popularity.lua, in its order."""
        return [self.product_id, repr(self.now), repr(self.half_life_s), self.rebase_half_lives, repr(self.window_s)]


# --- lua/faded_counts.lua ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FadedCounts:
    """Counts added to sorted sets that each have an epoch of their own (ranking.py has the
    arithmetic, as for popularity): each value, given at `reference_s`, is added as value ×
    2^((reference − epoch)/h); when that exponent passes `rebase_half_lives`, the set's scores are
    scaled down and its epoch moves first, so sums stay far from overflow whatever the half-life.
    Then each set keeps its `keep` best members (0: all) and its keys expire after `ttl_s` (0:
    never). A value that is not a positive finite number is the error reply BADCOUNT, before
    anything is written.

    Each product's co-occurrence is such a set (its neighbours); an import adds a batch's
    popularity with it too. KEYS: each set and its epoch, in the order of `sets` (keys that may
    share one script: Store.shard_of)."""

    reference_s: float
    half_life_s: float
    sets: Sequence[Sequence[tuple[str, float]]]
    keep: int = 0
    ttl_s: int = 0
    rebase_half_lives: float = POPULARITY_REBASE_HALF_LIVES

    def argv(self) -> list[Any]:
        """ARGV[1..6] of lua/faded_counts.lua: five settings, then every set's values as one JSON
        array of arrays of [member, value] pairs (an import sends thousands: one argument each
        would cost more to pack than Redis takes to add them). A value that is not finite is
        sent as JSON's null, which the script refuses."""
        sets = [
            [[member, float(value) if math.isfinite(value) else None] for member, value in values]
            for values in self.sets
        ]
        return [
            repr(self.reference_s), repr(self.half_life_s), self.rebase_half_lives, self.keep, self.ttl_s,
            json.dumps(sets, separators=(",", ":"), allow_nan=False),
        ]  # fmt: skip


# --- lua/refresh_embedding.lua ------------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshEmbedding:
    """Replace one item's vector only if the item still exists: HSET alone would resurrect a
    product deleted between an existence check and the write. KEYS: the product hash; an
    unknown product is the error reply errors.NO_PRODUCT_CODE."""

    vector: bytes

    def argv(self) -> list[Any]:
        """ARGV[1..2] of lua/refresh_embedding.lua."""
        return [EMBEDDING_FIELD, self.vector]


# --- lua/write_product.lua --------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteProduct:
    """Write a product's fields, only those whose stored value differs (RediSearch re-indexes
    the whole hash, vector included, on any HSET, even of an unchanged value), and delete the
    extra fields it no longer has. KEYS: the product hash. `fields` are the stored forms
    (layout.product_fields, encode_updates), the vector among them when it is new."""

    mode: WriteMode
    fields: tuple[tuple[str, bytes | str], ...]
    deletes: tuple[str, ...] = ()

    def argv(self) -> list[Any]:
        """ARGV of lua/write_product.lua: mode, how many deletes, their names, field/value pairs."""
        return [self.mode, len(self.deletes), *self.deletes, *(item for pair in self.fields for item in pair)]


@dataclass(frozen=True)
class WriteProductReply:
    """Whether the product was created, and the fields written or deleted, in argv order."""

    created: bool
    changed: tuple[str, ...]

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> WriteProductReply:
        return cls(bool(int(reply[0])), tuple(text(name) for name in reply[1:]))


# --- lua/reload_lock.lua ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReloadLock:
    """Renew or release the reload lock, only by its holder (KEYS: the lock; reply 1 or 0)."""

    action: Literal["renew", "release"]
    token: str
    ttl_ms: int = 0

    def argv(self) -> list[Any]:
        return [self.action, self.token, self.ttl_ms]


# --- running them -----------------------------------------------------------------------------------


class Scripts:
    """The scripts, registered on the primary client (each knows its SHA)."""

    def __init__(self, client: Any) -> None:
        self.user_event: Script = client.register_script(USER_EVENT_LUA)
        self.popularity: Script = client.register_script(POPULARITY_LUA)
        self.faded_counts: Script = client.register_script(FADED_COUNTS_LUA)
        self.refresh_embedding: Script = client.register_script(REFRESH_EMBEDDING_LUA)
        self.write_product: Script = client.register_script(WRITE_PRODUCT_LUA)
        self.reload_lock: Script = client.register_script(RELOAD_LOCK_LUA)


class ScriptCall(NamedTuple):
    """One script to run, with its keys and its argv()."""

    script: Script
    keys: list[str]
    args: list[Any]


def run_scripts_then(client: Any, calls: Sequence[ScriptCall], then: Callable[[Any], None]) -> list[Any]:
    """Scripts by EVALSHA, then what `then` queues, pipelined in one round trip; the replies in
    order, an error reply as its exception in its place (each script applied or not on its own:
    the caller says which). (A redis-py Script run in a pipeline first asks SCRIPT EXISTS, a
    round trip of its own, on every execute.) A Redis that lost its scripts (restarted, flushed,
    or a promoted replica) answers NOSCRIPT and runs nothing of that script: the scripts are
    loaded and only the ones that did not run are sent again, with what follows them, so none
    runs twice."""

    def send(selected: Sequence[ScriptCall]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for script, keys, args in selected:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        then(pipe)
        return list(pipe.execute(raise_on_error=False))

    replies = send(calls)
    missing = [i for i in range(len(calls)) if isinstance(replies[i], redis.exceptions.NoScriptError)]
    if missing:
        for call in calls:
            client.script_load(call.script.script)
        again = send([calls[i] for i in missing])
        for i, reply in zip(missing, again, strict=False):
            replies[i] = reply
        replies[len(calls) :] = again[len(missing) :]
    return replies
