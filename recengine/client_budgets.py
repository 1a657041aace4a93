"""What one client may hold or do, counted per client (its IP address) inside one server process.

Two budgets, both against one client crowding out the others (issue 24, findings 4 and 7):

- NewUserBudget: how many new users a client may create per minute. Every new user costs Redis
  memory (bench/user_memory.py) until it expires, so a client inventing a `user_id` per request
  would otherwise grow Redis at its request rate.
- WaitingLimit: how many of a client's requests may wait for one shared resource at a time (the
  model's queue): past it, the client's next request is refused at once instead of queueing
  behind its own.

A client is whatever the caller names it, normally the peer's IP address: behind a reverse proxy
every browser is the proxy, so raise the budgets or turn them off there. With `--workers N` each
worker keeps its own counts, so a client's allowance is N times a budget at most.
Memory stays bounded: a client is forgotten once it holds nothing and spent nothing in the last
minute.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

WINDOW_S = 60.0


class BudgetExceeded(Exception):
    """A client over a budget; `retry_after_s` says when it may try again (whole seconds, ≥ 1)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NewUserBudget:
    """At most `per_minute` new users per client in any 60 seconds (a sliding window: the
    times of the client's last `per_minute` creations are kept, nothing more)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError(f"per_minute must be at least 1, got {per_minute}")
        self.per_minute = per_minute
        self._clock = clock
        self._created: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def spend(self, client: str) -> None:
        """Count one new user for `client`; BudgetExceeded (nothing counted) when it has created
        `per_minute` in the last minute."""
        now = self._clock()
        with self._lock:
            self._forget_idle(now)
            times = self._created.setdefault(client, deque())
            if len(times) >= self.per_minute:
                wait = WINDOW_S - (now - times[0])
                raise BudgetExceeded(
                    f"this client created {self.per_minute} new users in the last minute, the most allowed",
                    max(1, math.ceil(wait)),
                )
            times.append(now)

    def _forget_idle(self, now: float) -> None:
        for client in list(self._created):
            times = self._created[client]
            while times and now - times[0] >= WINDOW_S:
                times.popleft()
            if not times:
                del self._created[client]


class WaitingLimit:
    """At most `per_client` requests of one client inside `waiting(client)` at a time."""

    def __init__(self, per_client: int, what: str, retry_after_s: int = 1) -> None:
        if per_client < 1:
            raise ValueError(f"per_client must be at least 1, got {per_client}")
        self.per_client = per_client
        self.what = what
        self.retry_after_s = retry_after_s
        self._waiting: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def waiting(self, client: str) -> Iterator[None]:
        """Hold one of the client's places while the block runs; BudgetExceeded at once when
        it holds them all."""
        with self._lock:
            held = self._waiting.get(client, 0)
            if held >= self.per_client:
                raise BudgetExceeded(
                    f"{held} requests of this client are already waiting for {self.what}, the most allowed",
                    self.retry_after_s,
                )
            self._waiting[client] = held + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._waiting[client] - 1
                if left:
                    self._waiting[client] = left
                else:
                    del self._waiting[client]

    def held(self, client: str) -> int:
        with self._lock:
            return self._waiting.get(client, 0)
