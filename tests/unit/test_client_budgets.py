"""The per-client budgets (recengine/client_budgets.py): new users per minute as a sliding
window, places in a queue per client, bounded memory, and concurrency."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recengine.client_budgets import BudgetExceeded, NewUserBudget, WaitingLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_new_users_are_allowed_up_to_the_budget_then_refused_with_when_to_retry() -> None:
    clock = Clock()
    budget = NewUserBudget(3, clock)
    for _ in range(3):
        budget.spend("10.0.0.1")
        clock.now += 10
    with pytest.raises(BudgetExceeded, match="created 3 new users in the last minute") as refused:
        budget.spend("10.0.0.1")
    assert refused.value.retry_after_s == 30  # the first creation leaves the window at 1060
    budget.spend("10.0.0.2")  # another client has its own budget
    clock.now = 1060.0
    budget.spend("10.0.0.1")  # the first one left the window


def test_a_refused_creation_is_not_counted() -> None:
    clock = Clock()
    budget = NewUserBudget(1, clock)
    budget.spend("a")
    for _ in range(5):
        with pytest.raises(BudgetExceeded):
            budget.spend("a")
    clock.now += 60
    budget.spend("a")


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 30)), max_size=80))
def test_no_client_ever_creates_more_than_the_budget_in_any_minute(steps: list[tuple[str, float]]) -> None:
    clock = Clock()
    budget = NewUserBudget(4, clock)
    allowed: dict[str, list[float]] = {}
    for client, pause in steps:
        clock.now += pause
        try:
            budget.spend(client)
        except BudgetExceeded as exc:
            assert exc.retry_after_s >= 1
            continue
        allowed.setdefault(client, []).append(clock.now)
    for times in allowed.values():
        for start in times:
            assert sum(start <= t < start + 60 for t in times) <= 4


def test_idle_clients_are_forgotten() -> None:
    clock = Clock()
    budget = NewUserBudget(2, clock)
    for number in range(1000):
        budget.spend(f"client-{number}")
    clock.now += 61
    budget.spend("late")
    assert list(budget._created) == ["late"]


def test_budgets_must_be_positive() -> None:
    with pytest.raises(ValueError):
        NewUserBudget(0)
    with pytest.raises(ValueError):
        WaitingLimit(0, "the model")


def test_a_client_holds_at_most_its_places_and_gets_them_back() -> None:
    limit = WaitingLimit(2, "the model")
    with limit.waiting("a"), limit.waiting("a"):
        assert limit.held("a") == 2
        with (
            pytest.raises(BudgetExceeded, match="2 requests of this client are already waiting for the model"),
            limit.waiting("a"),
        ):
            pass
        with limit.waiting("b"):
            assert limit.held("b") == 1
    assert limit.held("a") == 0 and limit._waiting == {}


def test_a_place_is_given_back_when_the_block_raises() -> None:
    limit = WaitingLimit(1, "the model")
    with pytest.raises(RuntimeError), limit.waiting("a"):
        raise RuntimeError("the model failed")
    with limit.waiting("a"):
        pass


def test_concurrent_requests_never_exceed_the_places() -> None:
    limit = WaitingLimit(3, "the model")
    inside = 0
    most = 0
    lock = threading.Lock()
    barrier = threading.Barrier(12)

    def request(_: int) -> bool:
        nonlocal inside, most
        barrier.wait()
        try:
            with limit.waiting("a"):
                with lock:
                    inside += 1
                    most = max(most, inside)
                threading.Event().wait(0.01)
                with lock:
                    inside -= 1
            return True
        except BudgetExceeded:
            return False

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(request, range(12)))
    assert most <= 3 and any(results) and not all(results)
    assert limit.held("a") == 0
