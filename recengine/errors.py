"""The errors the library raises, and the one place that reads Redis' error replies.

    Exception
    ├── ValueError ·························· a bad argument (the message names it and its range)
    └── RecommenderError ···················· a condition of Redis or of the data
        ├── IndexMissingError ··············· (also a redis.ResponseError) no such index
        ├── WriteRefusedError ··············· (also a redis.ResponseError) MISCONF, OOM, READONLY,
        │                                     NOREPLICAS; `.reason` says which, in words
        ├── ReplicationTimeoutError ········· WAIT: too few replicas acknowledged a write in time
        ├── DurabilityTimeoutError ·········· WAITAOF: the write was not confirmed on disk in time
        ├── WriteOutcomeUnknownError ········ a write was sent and its reply lost: applied or not
        ├── PartlyAppliedError ·············· a write's parts (user, popularity) went different ways
        ├── NewUserRefusedError ············· a write would create a user, and the caller said no
        └── ProductNotFoundError ············ (also a KeyError) no product with that id

Redis' replies are text: every wording this library recognises is listed below, and only
`classify_response_error` (and the two predicates beside it) read them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import redis

# --- Redis' wordings, all of them ---------------------------------------------------------------

# FT.SEARCH and FT.DROPINDEX say "no such index", FT.INFO "Unknown index name" (matched lower-cased).
MISSING_INDEX_WORDINGS = ("no such index", "unknown index name")
# FT.CREATE of an index that exists (lower-cased).
INDEX_EXISTS_WORDING = "index already exists"
# Error codes at the start of a reply (redis-py strips them for OOM and READONLY, which it turns
# into classes of their own, but not when they come back inside a pipeline).
OUT_OF_MEMORY_CODE = "OOM "
READ_ONLY_CODE = "READONLY "
# Anywhere in the reply: in a pipeline redis-py prefixes it with the failing command.
DISK_REFUSED_CODE = "MISCONF"
TOO_FEW_REPLICAS_CODE = "NOREPLICAS"  # the primary's min-replicas-to-write
# Not Redis' but our own: the refresh script's error for a product that does not exist
# (lua/refresh_embedding.lua).
NO_PRODUCT_CODE = "NOPRODUCT"


class RecommenderError(Exception):
    """Base of the errors this library raises for conditions of Redis (not of the arguments:
    those are ValueError), and of the data (an unknown product: ProductNotFoundError)."""


class IndexMissingError(RecommenderError, redis.ResponseError):
    """The search index does not exist (never created, or dropped). A ResponseError too, so code
    written against plain redis-py keeps catching it."""


class WriteRefusedError(RecommenderError, redis.ResponseError):
    """Redis refused a write: its disk is full or unwritable (MISCONF), it reached maxmemory
    (OOM), or this is a read-only replica (READONLY). `reason` says which, in words."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"Redis refused the write: {reason} ({detail})")
        self.reason = reason


class ProductNotFoundError(RecommenderError, KeyError):
    """No product with that id. A KeyError too, as the reference raises, so `except KeyError`
    keeps working; `product_id` names it."""

    def __init__(self, product_id: str) -> None:
        super().__init__(product_id)
        self.product_id = product_id


class ReplicationTimeoutError(RecommenderError):
    """The write was applied on the primary but fewer replicas than required acknowledged it in
    time (WAIT), so a failover could still lose it."""

    def __init__(self, acked: int, required: int, timeout_ms: int) -> None:
        super().__init__(f"only {acked} of {required} replica(s) acknowledged the write within {timeout_ms} ms")
        self.acked = acked
        self.required = required


class DurabilityTimeoutError(RecommenderError):
    """The write was applied, but Redis did not confirm it fsynced to its append-only file (and
    to `required_replicas` replicas' files) within the time allowed (WAITAOF): a crash or a full
    disk could still lose it."""

    def __init__(self, local: int, replicas: int, required_replicas: int, timeout_ms: int) -> None:
        where = "on the primary's disk" if not local else f"on {replicas} of {required_replicas} replicas' disks"
        super().__init__(f"the write was applied but not confirmed {where} within {timeout_ms} ms")
        self.local = local
        self.replicas = replicas


class WriteOutcomeUnknownError(RecommenderError):
    """A write was sent to Redis and no reply came back (the connection timed out or broke):
    Redis may have applied it or not. Retrying with the same event id applies it at most once."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"the write was sent but its outcome is unknown ({cause})")


class PartlyAppliedError(RecommenderError):
    """A write of several parts (a click: the user's state, popularity) applied some parts and
    not others. `applied` maps each part to whether it was applied; `cause` is the refusal."""

    def __init__(self, applied: Mapping[str, bool], cause: Exception) -> None:
        done = ", ".join(part for part, ok in applied.items() if ok) or "nothing"
        undone = ", ".join(part for part, ok in applied.items() if not ok)
        super().__init__(f"applied: {done}; not applied: {undone} ({cause})")
        self.applied = dict(applied)
        self.cause = cause


class NewUserRefusedError(RecommenderError):
    """The event's user has no state yet, and the caller's `may_create` said not to create one.
    Nothing was written."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id!r} does not exist and may not be created now")
        self.user_id = user_id


def is_missing_index_error(exc: BaseException) -> bool:
    """Whether an error says the search index does not exist, classified or not (a server that
    catches redis-py's ResponseError can ask this instead of reading the text itself)."""
    if isinstance(exc, IndexMissingError):
        return True
    lowered = str(exc).lower()
    return isinstance(exc, redis.ResponseError) and any(words in lowered for words in MISSING_INDEX_WORDINGS)


def is_index_exists_error(exc: redis.ResponseError) -> bool:
    """Whether FT.CREATE failed because the index is already there."""
    return INDEX_EXISTS_WORDING in str(exc).lower()


def is_no_product_error(exc: redis.ResponseError) -> bool:
    """Whether the refresh script found no product to refresh."""
    return NO_PRODUCT_CODE in str(exc)


def classify_response_error(exc: redis.ResponseError) -> Exception:
    """The library's error for a Redis error reply, or the reply itself when it is none of ours.
    redis-py already turns OOM and READONLY into classes of their own (and strips the code from
    the text); MISCONF it leaves as text, which in a pipeline is prefixed with the failing
    command."""
    message = str(exc)
    if is_missing_index_error(exc):
        return IndexMissingError(message)
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or message.startswith(OUT_OF_MEMORY_CODE):
        return WriteRefusedError("memory is full", message)
    if isinstance(exc, redis.exceptions.ReadOnlyError) or message.startswith(READ_ONLY_CODE):
        return WriteRefusedError("this is a read-only replica", message)
    if DISK_REFUSED_CODE in message:
        return WriteRefusedError("the disk is full or not writable", message)
    if TOO_FEW_REPLICAS_CODE in message:
        return WriteRefusedError("too few replicas are in sync with the primary", message)
    return exc


@contextmanager
def classified_errors() -> Iterator[None]:
    """Raise Redis' error replies met inside the block as the library's errors."""
    try:
        yield
    except RecommenderError:
        raise
    except redis.ResponseError as exc:
        raise classify_response_error(exc) from exc
