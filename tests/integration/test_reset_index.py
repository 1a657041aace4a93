"""Issue 24, finding 3: `/reset-index` was neither atomic nor self-healing. It dropped the index
and its products, created the index, then wrote the products, so:

- with Redis at maxmemory it answered 503 "...nothing was saved" and left 0 products and no
  index, and the demo stayed down (503s, clicks 404) until someone reset again;
- under concurrent resets over two workers, searches saw part of the catalogue, got 503s, and
  clicks on real products got 404;
- a server that found its index missing told every reader to POST /reset-index instead of
  re-seeding by itself.

Each test runs its own Redis and two demo servers on it (two workers, as `--workers 2` runs them:
separate processes' worth of app, one Redis), so it can fill memory or drop the index freely.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from conftest import serving
from test_http import call, get_state, post
from test_reliability import new_user

from demo_api import DemoApp
from local_redis import LocalRedis, connect
from recommender import RedisRecommender, info_dict

CONCURRENT_FOR_S = 3.0
# The fix is the live-catalogue issue's one reload path (RedisRecommender.reload_catalog, on the
# `catalog` branch): these fail until it is merged, and run as plain tests from then on.
WITHOUT_RELOAD_PATH = pytest.mark.xfail(
    not hasattr(RedisRecommender, "reload_catalog"),
    reason="issue 24 finding 3: /reset-index drops, recreates and refills in place",
    strict=True,
)
HEALS_WITHIN_S = 5.0


@dataclass(frozen=True)
class TwoWorkers:
    redis_server: LocalRedis
    apps: list[DemoApp]
    urls: list[str]

    @property
    def client(self) -> redis.Redis:
        return self.redis_server.client()


@pytest.fixture
def workers(onnx_embedder, catalog: dict) -> Iterator[TwoWorkers]:
    with LocalRedis() as redis_server:
        apps = [
            DemoApp(RedisRecommender(connect(redis_server.url)), onnx_embedder, catalog, redis_description="test")
            for _ in range(2)
        ]
        apps[0].seed()
        with serving(apps[0]) as first, serving(apps[1]) as second:
            yield TwoWorkers(redis_server, apps, [first, second])
        for app in apps:
            app.close()


def catalogue_served(url: str, user_id: str, catalog: dict) -> bool:
    """The whole catalogue answers: /state counts it and a search and a click work."""
    state = call(url, "GET", f"/state?user_id={user_id}")
    if state.status != 200 or state.json()["index"]["num_docs"] != len(catalog["products"]):
        return False
    search = call(url, "POST", "/search", {"query": "warm winter coat", "k": 10, "user_id": user_id})
    click = call(url, "POST", "/click", {"product_id": catalog["products"][-1]["id"], "user_id": user_id})
    return search.status == 200 and len(search.json()["candidates"]) == 10 and click.status == 200


@WITHOUT_RELOAD_PATH
def test_a_reset_refused_for_memory_leaves_the_old_catalogue_serving_and_says_so(
    workers: TwoWorkers, catalog: dict
) -> None:
    url, user_id = workers.urls[0], new_user("oom-reset")
    client = workers.client
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)  # every write is refused from here on
    try:
        reply = call(url, "POST", "/reset-index", {"user_id": user_id})
        assert reply.status == 503
        assert "still serving" in reply.json()["error"], reply.json()
        assert get_state(url, user_id)["index"]["num_docs"] == len(catalog["products"])
    finally:
        client.config_set("maxmemory", 0)
    assert catalogue_served(url, user_id, catalog)
    assert post(url, "/reset-index", {"user_id": user_id}) == {"seeded": len(catalog["products"])}
    assert catalogue_served(url, user_id, catalog)


@WITHOUT_RELOAD_PATH
def test_concurrent_resets_over_two_workers_never_show_a_partial_catalogue(workers: TwoWorkers, catalog: dict) -> None:
    products = catalog["products"]
    stop = threading.Event()
    resets: Counter[int] = Counter()
    problems: Counter[str] = Counter()
    served = Counter[str]()

    def reset(url: str) -> None:
        user_id = new_user("resetter")
        while not stop.is_set():
            resets[call(url, "POST", "/reset-index", {"user_id": user_id}).status] += 1

    def use(url: str) -> None:
        user_id = new_user("shopper")
        for turn in range(10_000):
            if stop.is_set():
                return
            state = call(url, "GET", f"/state?user_id={user_id}")
            if state.status != 200:
                problems[f"/state {state.status}"] += 1
            elif state.json()["index"]["num_docs"] != len(products):
                problems["/state counted part of the catalogue"] += 1
            search = call(url, "POST", "/search", {"query": "waterproof boots", "k": 10, "user_id": user_id})
            if search.status != 200:
                problems[f"/search {search.status}"] += 1
            elif len(search.json()["candidates"]) < 10:
                problems["/search found part of the catalogue"] += 1
            click = call(
                url, "POST", "/click", {"product_id": products[turn % len(products)]["id"], "user_id": user_id}
            )
            if click.status != 200:
                problems[f"/click {click.status}"] += 1
            served["rounds"] += 1

    threads = [threading.Thread(target=reset, args=(url,)) for url in workers.urls * 2]
    threads += [threading.Thread(target=use, args=(url,)) for url in workers.urls]
    for thread in threads:
        thread.start()
    time.sleep(CONCURRENT_FOR_S)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert served["rounds"] > 0 and resets[200] > 0, (served, resets)
    assert set(resets) <= {200, 409}, resets  # a reset runs, or is told another one is running
    assert problems == Counter(), f"{dict(problems)} in {served['rounds']} rounds, resets {dict(resets)}"


def drop_the_serving_index(client: redis.Redis, name: str) -> None:
    """What an operator's mistake or a FLUSH of the wrong database does: the index the server
    searches (the real one, if `name` is an alias) is dropped with its products."""
    real_name = info_dict(client.execute_command("FT.INFO", name))["index_name"]
    client.execute_command("FT.DROPINDEX", real_name, "DD")


@WITHOUT_RELOAD_PATH
def test_a_server_that_finds_its_index_missing_reseeds_it_by_itself(workers: TwoWorkers, catalog: dict) -> None:
    url, user_id = workers.urls[1], new_user("missing")
    drop_the_serving_index(workers.client, workers.apps[0].recommender.index_name)
    deadline = time.monotonic() + HEALS_WITHIN_S
    while not catalogue_served(url, user_id, catalog):
        assert time.monotonic() < deadline, f"still not serving the catalogue {HEALS_WITHIN_S} s after the drop"
        time.sleep(0.2)
    assert catalogue_served(workers.urls[0], user_id, catalog)
