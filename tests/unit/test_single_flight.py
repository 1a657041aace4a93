"""demo_api.SingleFlight, which lets concurrent readiness probes share one Redis check."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from demo_api import SingleFlight

CALLERS = 8


def test_callers_that_arrive_meanwhile_share_one_call() -> None:
    """The run is held until every other caller has arrived (they wait for it, which a short
    pause makes certain), so all must get its one value."""
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def run() -> int:
        calls.append(1)
        started.set()
        assert release.wait(10)
        return len(calls)

    check = SingleFlight(run)
    with ThreadPoolExecutor(CALLERS) as pool:
        leader = pool.submit(check)
        assert started.wait(10)
        waiters = [pool.submit(check) for _ in range(CALLERS - 1)]
        while not all(waiter.running() for waiter in waiters):
            time.sleep(0.01)
        time.sleep(0.2)
        release.set()
        assert [future.result(10) for future in [leader, *waiters]] == [1] * CALLERS
    assert len(calls) == 1
    assert check() == 2  # once it is over, the next caller runs it afresh


def test_an_exception_reaches_every_caller_and_is_not_kept() -> None:
    outcomes: Iterator[Exception | str] = iter([RuntimeError("Redis is down"), "ok"])

    def run() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    check = SingleFlight(run)
    with pytest.raises(RuntimeError, match="Redis is down"):
        check()
    assert check() == "ok"
