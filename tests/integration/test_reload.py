"""Whole-catalogue reloads against a real Redis with Search: a new generation is built beside the
serving one and switched to in one step; readers and writers that cached the old one follow;
a reload that fails (Redis at maxmemory, the reloader killed) leaves the old catalogue serving
and says so; reloads from several processes run one at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import redis
from conftest import ROOT, make_products, unit_vectors

from local_redis import LocalRedis
from recommender import RedisRecommender, ReloadFailedError


def ids_found(rec: RedisRecommender, k: int = 50) -> set[str]:
    return {c.id for c in rec.candidate_retrieve(unit_vectors(1, 99)[0], k=k)}


def leftover_indexes(rec: RedisRecommender) -> list[str]:
    names = [n.decode() for n in rec.redis.execute_command("FT._LIST")]
    return sorted(n for n in names if n.startswith(rec.index_name))


def test_a_reload_replaces_the_catalogue_and_keeps_plain_ids(recommender: RedisRecommender) -> None:
    recommender.index_products(make_products(10, seed=1))
    new = [{**p, "id": f"n{i}"} for i, p in enumerate(make_products(6, seed=2))]
    result = recommender.reload_catalog(new, model="test")
    assert result.serving.generation == 1 and result.replaced is not None and result.replaced.products == 10
    assert ids_found(recommender) == {f"n{i}" for i in range(6)}
    assert recommender.count_indexed() == 6
    assert leftover_indexes(recommender) == [f"{recommender.index_name}@1"]
    assert not list(recommender.redis.scan_iter(match="product:*"))
    # A second reload switches again and removes generation 1.
    recommender.reload_catalog(make_products(3, seed=3))
    assert leftover_indexes(recommender) == [f"{recommender.index_name}@2"]
    assert ids_found(recommender) == {"t0000", "t0001", "t0002"}


def test_a_recommender_made_before_the_reload_follows_it(redis_client: redis.Redis) -> None:
    """Another worker's recommender cached generation 0's key prefix: its reads and writes of a
    product find generation 1's hash, and a write never lands in the retired generation."""
    stale = RedisRecommender(redis_client)
    stale.create_index()
    stale.index_products(make_products(5))
    assert stale.get_products(["t0001"])  # caches the prefix
    RedisRecommender(redis_client).reload_catalog(make_products(5, seed=7))
    assert stale.get_products(["t0001"])["t0001"]["name"] == "Test item 1"
    assert stale.record_click("u", "t0001").last_clicked_id == "t0001"
    assert [c.id for c in stale.similar("t0001", k=2).candidates]
    assert stale.update_product("t0001", price=2.0).fields == ("price",)
    stale.refresh_embedding("t0002", make_products(1, seed=3)[0]["embedding"])
    fresh = RedisRecommender(redis_client)
    assert fresh.get_products(["t0001"])["t0001"]["price"] == 2.0
    assert not list(redis_client.scan_iter(match="product:*"))
    keys = stale.product_keys(["t0001", "t0004"])
    assert keys == [stale.product_key("t0001"), stale.product_key("t0004")]
    assert all(redis_client.exists(key) for key in keys) and not keys[0].startswith("product:")


def test_a_reload_over_a_missing_index_creates_it(redis_client: redis.Redis) -> None:
    rec = RedisRecommender(redis_client)
    result = rec.reload_catalog(make_products(4))
    assert result.replaced is None and rec.count_indexed() == 4


def test_a_reload_that_runs_out_of_memory_leaves_the_old_catalogue_serving(
    recommender: RedisRecommender, redis_client: redis.Redis
) -> None:
    recommender.index_products(make_products(20))
    used = int(redis_client.info("memory")["used_memory"])
    redis_client.config_set("maxmemory", used + 1_000_000)
    try:
        with pytest.raises(ReloadFailedError, match=r"still serving") as caught:
            recommender.reload_catalog(make_products(400, seed=5), batch_size=20)
    finally:
        redis_client.config_set("maxmemory", 0)
    assert "Redis refused a write: memory is full" in str(caught.value)
    assert caught.value.serving is not None and caught.value.serving.products == 20
    assert caught.value.written < caught.value.total == 400
    assert ids_found(recommender) == {p["id"] for p in make_products(20)}
    assert leftover_indexes(recommender) == [recommender.index_name]
    # With memory back, the same reload goes through.
    recommender.reload_catalog(make_products(400, seed=5))
    assert recommender.count_indexed() == 400


RELOADER = textwrap.dedent(
    """
    import sys
    from local_redis import connect
    from recommender import RedisRecommender
    from conftest import make_products

    rec = RedisRecommender(connect(sys.argv[1]))
    print("started", flush=True)
    rec.reload_catalog(make_products(3000, seed=9), batch_size=10, lock_ttl_ms=1500)
    """
)


def test_a_reloader_killed_half_way_leaves_the_old_catalogue_and_the_next_reload_cleans_up(
    local_redis: LocalRedis, redis_client: redis.Redis
) -> None:
    rec = RedisRecommender(redis_client)
    rec.create_index()
    rec.index_products(make_products(30))
    child = subprocess.Popen(
        [sys.executable, "-c", RELOADER, local_redis.url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "integration")])},
    )
    assert child.stdout is not None and child.stdout.readline().strip() == b"started"
    deadline = time.monotonic() + 30
    while not list(redis_client.scan_iter(match="product@1:*", count=1000)) and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert ids_found(rec) == {p["id"] for p in make_products(30)}
    assert rec.count_indexed() == 30
    result = rec.reload_catalog(make_products(8, seed=4), lock_wait_s=10)
    # The half-built generation 1 was dropped with its keys first; its number is free again.
    assert leftover_indexes(rec) == [result.serving.index]
    assert len(list(redis_client.scan_iter(match="product@*", count=1000))) == 8
    assert ids_found(rec) == {p["id"] for p in make_products(8, seed=4)}


def test_concurrent_reloads_run_one_at_a_time(redis_client: redis.Redis, local_redis: LocalRedis) -> None:
    base = RedisRecommender(redis_client)
    base.create_index()
    base.index_products(make_products(10))
    errors: list[BaseException] = []

    def reload(seed: int) -> None:
        try:
            client = local_redis.client()
            RedisRecommender(client).reload_catalog(make_products(200, seed=seed), batch_size=20)
            client.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reload, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert base.count_indexed() == 200
    assert leftover_indexes(base) == [f"{base.index_name}@4"]
    assert len(list(redis_client.scan_iter(match="product@*", count=1000))) == 200


def test_a_catalogue_dropped_after_a_reload_can_be_created_and_loaded_the_old_way(
    recommender: RedisRecommender,
) -> None:
    """drop_index + create_index + index_products, as tools and other ports do it, after a
    reload: the new real index and the writes agree on generation 0's keys."""
    recommender.reload_catalog(make_products(5))
    assert recommender.drop_index(delete_documents=True)
    assert recommender.create_index()
    recommender.index_products(make_products(4, seed=2))
    assert recommender.count_indexed() == 4
    serving = recommender.serving()
    assert serving is not None and serving.generation == 0
    assert recommender.get_products(["t0003"])["t0003"]["name"] == "Test item 3"


def test_index_products_after_a_reload_writes_into_the_serving_generation(redis_client: redis.Redis) -> None:
    RedisRecommender(redis_client).reload_catalog(make_products(3))
    late = RedisRecommender(redis_client)  # a tool started after the reload, knowing nothing of it
    late.index_products([{**make_products(1, seed=8)[0], "id": "late"}])
    assert late.count_indexed() == 4 and "late" in ids_found(late)
