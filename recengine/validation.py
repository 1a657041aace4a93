"""The checks every argument that becomes part of a key, a hash or a query passes first, so a
caller's mistake is a ValueError naming it, not a Redis error or a silently empty answer."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

# The largest k (and over-fetch) one query may ask for: RediSearch's own MAXSEARCHRESULTS
# default is 10,000 rows.
MAX_K = 10_000
# RediSearch splits TAG values on it.
TAG_SEPARATOR = ","
# An idempotency key: what a UUID, a random hex string or a client's own counter looks like.
EVENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def check_literal(name: str, value: str) -> str:
    """A string Redis can store and match as it is: no control characters, valid UTF-8."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError(f"{name} contains control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: Redis only takes valid UTF-8
        raise ValueError(f"{name} is not valid Unicode text (it contains a lone surrogate)") from None
    return value


def check_k(k: Any, name: str = "k") -> int:
    """k is a whole number from 1 to MAX_K: 0 or a negative k is a caller's mistake, not an
    empty answer."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise ValueError(f"{name} must be an integer between 1 and {MAX_K}, got {k!r}")
    return int(k)


def check_user_id(user_id: Any) -> str:
    """User ids become key names: no spaces, control characters or braces (a brace would change
    the Redis Cluster hash slot of the user's keys and split them across nodes)."""
    if not isinstance(user_id, str) or not user_id:
        raise ValueError(f"user_id must be a non-empty string, got {user_id!r}")
    if any(ch.isspace() or ord(ch) < 32 or ch in "{}" for ch in user_id):
        raise ValueError(f"user_id must not contain spaces, control characters or braces, got {user_id!r}")
    check_literal("user_id", user_id)
    return user_id


def check_event_id(event_id: Any) -> str:
    """An event's idempotency key: 1-128 letters, digits, '_', '.', ':' or '-' (a line break
    would split the user's list of recent event ids)."""
    if not isinstance(event_id, str) or not EVENT_ID_PATTERN.fullmatch(event_id):
        raise ValueError(f"event_id must be 1-128 letters, digits, '_', '.', ':' or '-', got {event_id!r:.60}")
    return event_id


def field_problem(name: str, value: str) -> str | None:
    """What would make a product field misbehave in the index, for every writer to check:
    RediSearch splits TAG values on commas (one category "a,b" would become two tags), and
    a key-unsafe id could not be addressed by the API."""
    if name in ("category", "brand") and TAG_SEPARATOR in value:
        return f"{name} must not contain {TAG_SEPARATOR!r} (the tag separator), got {value!r}"
    if name == "id" and any(ch.isspace() or ord(ch) < 32 for ch in value):
        return f"id must not contain spaces or control characters, got {value!r}"
    return None


def check_product_id(product_id: Any) -> str:
    """A product id that can be a key name: a non-empty string without whitespace or control
    characters."""
    if not isinstance(product_id, str) or not product_id:
        raise ValueError(f"product_id must be a non-empty string, got {product_id!r}")
    problem = field_problem("id", product_id)
    if problem:
        raise ValueError(f"product_{problem}")
    return check_literal("product_id", product_id)


def check_optional_positive(name: str, value: Any) -> None:
    """A setting that is a positive integer, or None for Redis' default."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


def check_count(name: str, value: Any) -> None:
    """A setting that is a whole number of at least 0."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a whole number of at least 0, got {value!r}")
