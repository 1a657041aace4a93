"""The co-occurrence counts on a real Redis: the faded-counts script, its bounds and its slots.
The windows are kept here by the pure rules (the user's script keeps them in the library:
tests/integration/test_crowd_signal.py)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import redis
from conftest import raw
from redis.crc import key_slot

from recengine.co_occurrence import SETS_PER_CALL, CoOccurrence
from recengine.co_occurrence_rules import CoOccurrenceConfig, WindowEntry, pair_increments, window_after
from recengine.event_types import EventWeights
from recengine.layout import KeyLayout
from recengine.scripts import ScriptCall, Scripts

DAY = 86400.0
NOW = 1_790_000_000.0
WEIGHTS = EventWeights()


WINDOWS: dict[str, list[WindowEntry]] = {}


def one_redis(key: str) -> int:
    """Store.shard_of on one Redis: any keys may share a script."""
    return 0


def cluster_slot(key: str) -> int:
    """Store.shard_of on a cluster: a script's keys share one slot."""
    return key_slot(key.encode())


def store(client: redis.Redis, shard_of: Callable[[str], int] = one_redis, **settings: object) -> CoOccurrence:
    config = CoOccurrenceConfig(**{"half_life_s": 30 * DAY, **settings})  # type: ignore[arg-type]
    WINDOWS.clear()
    return CoOccurrence(KeyLayout("test:idx", "product:", "user:"), Scripts(client), config, shard_of)


def run(call: ScriptCall) -> object:
    return call.script(keys=call.keys, args=call.args)


def record(co: CoOccurrence, user: str, product: str, at: float = NOW, session: str = "", weight: float = 4.0) -> int:
    """One event's pairs as the library writes them (the window kept here by the same rules).
    Returns how many count sets it wrote."""
    entry = WindowEntry(product, weight, at, session)
    previous = WINDOWS.get(user, [])
    WINDOWS[user] = window_after(previous, entry, co.config)
    calls = co.pair_calls(product, at, pair_increments(previous, entry, co.config, WEIGHTS))
    for call in calls:
        run(call)
    return sum(len(call.keys) // 2 for call in calls)


def neighbours(client: redis.Redis, co: CoOccurrence, product: str, now: float = NOW) -> dict[str, float]:
    pipe = client.pipeline(transaction=False)
    co.queue_neighbours(pipe, product, 100)
    return {n.product_id: n.count for n in co.neighbours_from(pipe.execute(), now)}


def test_a_pair_is_counted_both_ways_and_read_at_once(redis_client: redis.Redis) -> None:
    co = store(redis_client)
    assert record(co, "u1", "a", session="s1") == 0
    assert record(co, "u1", "b", session="s1") == 2
    assert neighbours(redis_client, co, "a") == {"b": pytest.approx(1.0)}
    assert neighbours(redis_client, co, "b") == {"a": pytest.approx(1.0)}
    assert neighbours(redis_client, co, "never-counted") == {}


def test_counts_fade_with_the_half_life(redis_client: redis.Redis) -> None:
    co = store(redis_client)
    record(co, "u1", "a", at=NOW - 30 * DAY, session="old")
    record(co, "u1", "b", at=NOW - 30 * DAY, session="old")
    record(co, "u2", "a", session="new")
    record(co, "u2", "b", session="new")
    assert neighbours(redis_client, co, "a") == {"b": pytest.approx(1.5)}


def test_the_epoch_moves_before_the_sums_overflow(redis_client: redis.Redis) -> None:
    co = store(redis_client, half_life_s=1.0)
    record(co, "u1", "a", at=NOW, session="s1")
    record(co, "u1", "b", at=NOW, session="s1")
    later = NOW + 1000  # a thousand half-lives: 2^1000 would overflow a double's exponent range soon after
    record(co, "u2", "a", at=later, session="s2")
    record(co, "u2", "b", at=later, session="s2")
    scores: list[tuple[bytes, float]] = redis_client.zrange(co.keys.co_occurrence("a")[0], 0, -1, withscores=True)  # type: ignore[assignment]
    assert all(math.isfinite(score) and score < 2**70 for _, score in scores)
    assert float(raw(redis_client.get(co.keys.co_occurrence("a")[1]))) == later
    assert neighbours(redis_client, co, "a", now=later) == {"b": pytest.approx(1.0)}


def test_each_product_keeps_its_best_neighbours_only(redis_client: redis.Redis) -> None:
    co = store(redis_client, neighbours_kept=5, partners_per_event=50, window_kept=60)
    for i in range(20):
        record(co, "u1", f"p{i:02d}", session="big")
    for i in range(3):  # p00's strongest partners: bought with it again, later, twice
        for later in (60.0, 120.0):
            record(co, f"again{i}", "p00", at=NOW + later, session=f"again{i}-{later}")
            record(co, f"again{i}", f"p1{i}", at=NOW + later, session=f"again{i}-{later}")
    kept = neighbours(redis_client, co, "p00")
    assert len(kept) == 5 and {"p10", "p11", "p12"} <= set(kept)
    assert all(redis_client.zcard(co.keys.co_occurrence(f"p{i:02d}")[0]) <= 5 for i in range(20))


def test_one_event_writes_at_most_partners_plus_one_count_sets(redis_client: redis.Redis) -> None:
    co = store(redis_client, partners_per_event=4, window_kept=32)
    for i in range(30):
        assert record(co, "u1", f"p{i}", session="s") <= 4 + 1


def test_every_count_call_touches_one_slot_on_a_cluster(redis_client: redis.Redis) -> None:
    co = store(redis_client, shard_of=cluster_slot)
    calls = [
        *co.pair_calls("{odd}id", NOW, [("x", 1.0), ("y}", 1.0)]),
        *co.batch_calls(NOW, {"a": {"b": 1.0}, "b": {"a": 1.0}}),
    ]
    for call in calls:
        assert len({key_slot(key.encode()) for key in call.keys}) == 1, call.keys


def test_on_one_redis_an_events_pairs_are_one_call_and_a_batch_is_cut_in_bounded_calls(
    redis_client: redis.Redis,
) -> None:
    co = store(redis_client)
    (call,) = co.pair_calls("p0", NOW, [(f"p{i}", 1.0) for i in range(1, 9)])
    assert len(call.keys) == 2 * 9
    run(call)
    assert neighbours(redis_client, co, "p0") == {f"p{i}": pytest.approx(1.0) for i in range(1, 9)}
    assert neighbours(redis_client, co, "p5") == {"p0": pytest.approx(1.0)}
    products = 2 * SETS_PER_CALL + 1
    calls = co.batch_calls(NOW, {f"q{i}": {"p0": 2.0} for i in range(products)})
    assert [len(call.keys) // 2 for call in calls] == [SETS_PER_CALL, SETS_PER_CALL, 1]
    for call in calls:
        run(call)
    assert all(neighbours(redis_client, co, f"q{i}") == {"p0": pytest.approx(2.0)} for i in range(products))


def test_a_stored_window_reads_back_as_its_entries() -> None:
    entries = [WindowEntry("p|1", 4.0, NOW, "s"), WindowEntry("p2", 0.5, NOW - 1)]
    stored = "\n".join(entry.encode() for entry in entries)
    assert CoOccurrence.window_from(stored) == entries == CoOccurrence.window_from(stored.encode())
    assert CoOccurrence.window_from(stored + "\ngarbled") == entries and CoOccurrence.window_from(None) == []


@pytest.mark.parametrize("bad", ['["b", null]', '["b", -1]', '["b", 0]', '["b", "1"]', "[7, 1]", '"x"', "7"])
def test_a_count_that_is_not_a_positive_number_writes_nothing(redis_client: redis.Redis, bad: str) -> None:
    """Not even the sets before it: every value is checked before the first write."""
    co = store(redis_client)
    (call,) = co.counts_calls(NOW, [("a", [("c", 1.0)]), ("b", [("c", 1.0)])])
    with pytest.raises(redis.ResponseError, match="BADCOUNT"):
        call.script(keys=call.keys, args=[*call.args[:-1], f'[[["c", 1.0]], [["c", 1.0], {bad}]]'])
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize("bad", ["{", '"x"', '[[["c", 1.0]]]', '[[["c", 1.0]], [], []]', '[[["c", 1.0]], 5]'])
def test_counts_that_are_not_one_array_per_set_write_nothing(redis_client: redis.Redis, bad: str) -> None:
    co = store(redis_client)
    (call,) = co.counts_calls(NOW, [("a", [("c", 1.0)]), ("b", [("c", 1.0)])])
    with pytest.raises(redis.ResponseError, match="BADCOUNT"):
        call.script(keys=call.keys, args=[*call.args[:-1], bad])
    assert redis_client.dbsize() == 0


def test_counts_expire_when_nothing_is_added(redis_client: redis.Redis) -> None:
    co = store(redis_client, half_life_s=100.0)
    record(co, "u1", "a", session="s")
    record(co, "u1", "b", session="s")
    for key in co.keys.co_occurrence("a"):
        assert 0 < redis_client.ttl(key) <= co.config.ttl_s == 1000
