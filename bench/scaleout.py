"""Scaling out on Redis' own machinery, measured on local processes (local_ha.py): searches on
replicas, Sentinel failover time, acknowledged clicks lost in a failover with and without WAIT,
what WAIT costs a click, and Redis memory per product and per user.

    .venv/bin/python -m bench.scaleout            # about 3 minutes on 2 cores
    .venv/bin/python -m bench.scaleout --quick    # a smaller run of every section, about 1 minute

Every process runs on this machine, so on 2 cores the replica section shows the mechanism (the
primary stops answering searches; the replicas share them) rather than more throughput: the
client threads, the primary and both replicas compete for the same two cores. It prints tables
and writes bench/results/scaleout.json (with the load average before each section) and
bench/results/scaleout.png.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from bench.harness import RESULTS_DIR, ROOT, machine, percentiles, write_result
from bench.synthetic_catalog import make_catalog, make_queries, product_dict
from embeddings import normalize_rows
from local_ha import HASetup
from local_redis import LocalRedis, connect
from recengine.catalog_file import read_catalog
from recommender import RedisRecommender, ReplicationTimeoutError

log = logging.getLogger("bench.scaleout")

INDEX = "scale:idx"
PREFIX = "scale:product:"
CLICK_CLIENTS = 4
# Clicks answered before the primary is killed, so that the failover happens under traffic.
CLICKS_BEFORE_KILL = 40
# In the "cut" scenario the replicas lose their link this long before the primary dies.
CUT_BEFORE_KILL_S = 0.3
FAILOVER_TIMEOUT_S = 30.0
# After a failed click a client waits this long before the next, as a real client would.
RETRY_PAUSE_S = 0.02
# The Sentinel log events of a failover, in the order they happen.
SENTINEL_EVENTS = ("+sdown master", "+odown master", "+elected-leader", "+promoted-slave", "+switch-master")
GB = 1_000_000_000


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def sentinel_clients(setup: HASetup) -> tuple[redis.Redis, redis.Redis]:
    """The primary (master_for) and the reads (slave_for), both following a failover, with the
    demo server's connection settings: no retries (a click re-sent after a lost reply would
    count twice) and 2 s socket timeouts; Sentinels are asked with a 0.5 s timeout."""
    sentinel = Sentinel(setup.sentinels, sentinel_kwargs={"socket_connect_timeout": 0.5, "socket_timeout": 0.5})
    options: dict[str, Any] = {
        "decode_responses": False,
        "socket_connect_timeout": 2.0,
        "socket_timeout": 2.0,
        "retry": Retry(NoBackoff(), 0),
    }
    return sentinel.master_for(setup.service, **options), sentinel.slave_for(setup.service, **options)


def cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def search_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats").get("cmdstat_FT.SEARCH")
    return int(stats["calls"]) if stats else 0


def catalogue_products(path: Path) -> list[dict[str, Any]]:
    return list(read_catalog(path)["products"])


# --- 1. searches on replicas ---------------------------------------------------------------------


def run_searches(rec: RedisRecommender, queries: np.ndarray, threads: int, seconds: float) -> list[float]:
    """`threads` clients send KNN searches (k=10, no user) back to back for `seconds`; returns
    every search's latency in ms."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    stop = threading.Event()

    def client(number: int) -> None:
        position = number
        mine = latencies[number]
        while not stop.is_set():
            started = time.perf_counter()
            rec.recommend(queries[position % len(queries)], k=10, use_rerank=False)
            mine.append((time.perf_counter() - started) * 1000)
            position += threads

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    return [value for values in latencies for value in values]


NODE_NAMES = ("primary", "replica-1", "replica-2")


def measure_setting(
    rec: RedisRecommender, nodes: list[redis.Redis], queries: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    """One timed run: searches/s and latency, and where the searches and the CPU went."""
    calls_before = [search_calls(node) for node in nodes]
    cpu_before = [cpu_seconds(node) for node in nodes]
    client_cpu_before = time.process_time()
    load = load_average()
    latencies = run_searches(rec, queries, args.threads, args.seconds)
    client_cpu = time.process_time() - client_cpu_before
    calls = [search_calls(node) - before for node, before in zip(nodes, calls_before, strict=True)]
    cpu = [cpu_seconds(node) - before for node, before in zip(nodes, cpu_before, strict=True)]
    return {
        "replicas": len(rec.read_clients),
        "searches_per_s": round(len(latencies) / args.seconds, 1),
        **percentiles(latencies),
        "searches_by_node": dict(zip(NODE_NAMES, calls, strict=True)),
        "redis_cpu_s_by_node": {name: round(value, 2) for name, value in zip(NODE_NAMES, cpu, strict=True)},
        "client_cpu_s": round(client_cpu, 2),
        "load_average_1min": load,
    }


def replica_section(args: argparse.Namespace) -> dict[str, Any]:
    """The same catalogue on a primary and two replicas; searches through RedisRecommender with
    0, 1 and 2 read_clients, in interleaved rounds (the machine's load drifts between them)."""
    load_before = load_average()
    catalog = make_catalog(args.items, args.seed)
    queries = make_queries(catalog, 2000, args.seed).vectors
    with HASetup(replicas=2, sentinels=1) as setup:
        primary = connect(setup.primary_url)
        replicas = [connect(url) for url in setup.replica_urls]
        writer = RedisRecommender(primary, index_name=INDEX, key_prefix=PREFIX)
        writer.create_index()
        started = time.perf_counter()
        writer.index_products(product_dict(catalog, i) for i in range(catalog.size))
        if primary.wait(len(replicas), 120_000) != len(replicas):
            raise RuntimeError("the replicas did not acknowledge the catalogue within 120 s")
        indexed_s = time.perf_counter() - started
        for replica in replicas:
            on_replica = RedisRecommender(replica, index_name=INDEX, key_prefix=PREFIX).count_indexed()
            if on_replica != catalog.size:
                raise RuntimeError(f"a replica indexed {on_replica} of {catalog.size} products")
        nodes = [primary, *replicas]
        recs = [
            RedisRecommender(primary, index_name=INDEX, key_prefix=PREFIX, read_clients=replicas[:count])
            for count in (0, 1, 2)
        ]
        for rec in recs:
            run_searches(rec, queries, args.threads, 0.5)  # warm the connections and the nodes
        rounds = [measure_setting(rec, nodes, queries, args) for _ in range(args.rounds) for rec in recs]
        for client in nodes:
            client.close()
    rows = []
    for count in (0, 1, 2):
        mine = [r for r in rounds if r["replicas"] == count]
        rows.append(
            {
                "replicas": count,
                "searches_per_s_median": statistics.median(r["searches_per_s"] for r in mine),
                "p50_ms_median": statistics.median(r["p50_ms"] for r in mine),
                "p99_ms_median": statistics.median(r["p99_ms"] for r in mine),
                "searches_by_node": {n: sum(r["searches_by_node"][n] for r in mine) for n in NODE_NAMES},
                "redis_cpu_s_by_node": {
                    n: round(sum(r["redis_cpu_s_by_node"][n] for r in mine), 2) for n in NODE_NAMES
                },
                "client_cpu_s": round(sum(r["client_cpu_s"] for r in mine), 2),
                "redis_cpu_us_per_search": round(
                    1e6
                    * sum(sum(r["redis_cpu_s_by_node"].values()) for r in mine)
                    / max(1, sum(sum(r["searches_by_node"].values()) for r in mine)),
                    1,
                ),
                "client_cpu_us_per_search": round(
                    1e6
                    * sum(r["client_cpu_s"] for r in mine)
                    / max(1, sum(sum(r["searches_by_node"].values()) for r in mine)),
                    1,
                ),
            }
        )
    return {
        "load_average_before": load_before,
        "items": args.items,
        "threads": args.threads,
        "seconds_per_round": args.seconds,
        "rounds": args.rounds,
        "catalogue_written_and_replicated_s": round(indexed_s, 2),
        "rows": rows,
        "all_rounds": rounds,
    }


# --- 2 and 3. failover: time to the first click, clicks lost ---------------------------------------


@dataclass
class ClickLog:
    """Every click the clients sent: (sent, answered, ok, user), monotonic seconds."""

    clicks: list[tuple[float, float, bool, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sent: float, answered: float, ok: bool, user: str) -> None:
        with self.lock:
            self.clicks.append((sent, answered, ok, user))

    def acknowledged(self, sent_after: float = 0.0) -> list[str]:
        with self.lock:
            return [user for sent, _, ok, user in self.clicks if ok and sent > sent_after]

    def first_success_after(self, moment: float) -> float | None:
        with self.lock:
            answered = [done for sent, done, ok, _ in self.clicks if ok and sent > moment]
        return min(answered) if answered else None


def click_forever(
    rec: RedisRecommender, name: str, product_ids: Sequence[str], log_: ClickLog, stop: threading.Event
) -> None:
    """Each click as a new user, so each is its user's only click and can be checked afterwards."""
    number = 0
    while not stop.is_set():
        number += 1
        user = f"{name}-{number}"
        sent = time.monotonic()
        try:
            rec.record_click(user, product_ids[number % len(product_ids)])
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError, ReplicationTimeoutError):
            log_.add(sent, time.monotonic(), False, user)
            time.sleep(RETRY_PAUSE_S)
        else:
            log_.add(sent, time.monotonic(), True, user)


def sentinel_timeline(setup: HASetup, killed_wall: float) -> dict[str, float]:
    """Seconds from the kill to each failover event, the earliest any Sentinel logged it."""
    earliest: dict[str, float] = {}
    for node in setup.sentinel_nodes:
        if not node.log_path.exists():
            continue
        for line in node.log_path.read_text(errors="replace").splitlines():
            event = next((e for e in SENTINEL_EVENTS if e in line), None)
            if event is None:
                continue
            # "pid:X 08 Jan 2026 20:38:07.123 # +sdown master mymaster 127.0.0.1 4242"
            try:
                stamp = datetime.strptime(" ".join(line.split()[1:5]), "%d %b %Y %H:%M:%S.%f").timestamp()
            except ValueError:
                continue
            seconds = round(stamp - killed_wall, 3)
            if seconds >= 0 and (event not in earliest or seconds < earliest[event]):
                earliest[event] = seconds
    return {event.split()[0].lstrip("+"): earliest[event] for event in SENTINEL_EVENTS if event in earliest}


def failover_run(products: list[dict[str, Any]], min_replicas_ack: int, cut: bool, run: int) -> dict[str, Any]:
    load = load_average()
    with HASetup() as setup:
        primary, reads = sentinel_clients(setup)
        rec = RedisRecommender(
            primary, index_name=INDEX, key_prefix=PREFIX, read_clients=[reads], min_replicas_ack=min_replicas_ack
        )
        rec.create_index()
        rec.index_products(products)
        primary.wait(2, 10_000)
        clicks = ClickLog()
        stop = threading.Event()
        ids = [p["id"] for p in products]
        clients = [
            threading.Thread(target=click_forever, args=(rec, f"r{run}-c{n}", ids, clicks, stop))
            for n in range(CLICK_CLIENTS)
        ]
        for client in clients:
            client.start()
        try:
            deadline = time.monotonic() + FAILOVER_TIMEOUT_S
            while len(clicks.acknowledged()) < CLICKS_BEFORE_KILL and time.monotonic() < deadline:
                time.sleep(0.01)
            cut_at = time.monotonic()
            with setup.replication_cut() if cut else contextlib.nullcontext():
                if cut:
                    time.sleep(CUT_BEFORE_KILL_S)
                setup.kill_primary()  # returns once the process is gone
                killed_at, killed_wall = time.monotonic(), time.time()
            while clicks.first_success_after(killed_at) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.5)
        finally:
            stop.set()
            for client in clients:
                client.join()
        first = clicks.first_success_after(killed_at)
        if first is None:
            raise RuntimeError(f"no click succeeded within {FAILOVER_TIMEOUT_S:.0f} s of the kill")
        setup.wait_for_failover()
        acknowledged = clicks.acknowledged()
        pipe = primary.pipeline(transaction=False)
        for user in acknowledged:
            pipe.hget(rec.features_key(user), "clicks")
        lost = sum(1 for clicks_stored in pipe.execute() if clicks_stored != b"1")
        timeline = sentinel_timeline(setup, killed_wall)
        during_cut = len(set(clicks.acknowledged(cut_at)) - set(clicks.acknowledged(killed_at))) if cut else 0
        result = {
            "scenario": "cut" if cut else "kill",
            "min_replicas_ack": min_replicas_ack,
            "run": run,
            "kill_to_first_click_s": round(first - killed_at, 3),
            "sentinel_events_s": timeline,
            "clicks_acknowledged": len(acknowledged),
            "acknowledged_during_cut": during_cut,
            "acknowledged_lost": lost,
            "clicks_refused": sum(1 for _, _, ok, _ in clicks.clicks if not ok),
            "load_average_1min": load,
        }
        primary.close()
        reads.close()
    log.info("failover run: %s", result)
    return result


def failover_section(args: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    products = catalogue_products(args.catalog)
    runs = []
    for run in range(args.failover_runs):
        for ack in (0, 1):
            runs.append(failover_run(products, ack, cut=False, run=run))
    for run in range(args.cut_runs):
        for ack in (0, 1):
            runs.append(failover_run(products, ack, cut=True, run=run))
    seconds = [r["kill_to_first_click_s"] for r in runs]
    return {
        "load_average_before": load_before,
        "sentinel_settings": {"down_after_ms": 1000, "failover_timeout_ms": 3000, "sentinels": 3, "quorum": 2},
        "replicas": 2,
        "click_clients": CLICK_CLIENTS,
        "cut_before_kill_s": CUT_BEFORE_KILL_S,
        "runs": runs,
        "kill_to_first_click_s": {
            "median": round(statistics.median(seconds), 3),
            "min": min(seconds),
            "max": max(seconds),
            "runs": len(seconds),
        },
    }


# --- 4. what WAIT costs a click ----------------------------------------------------------------------


def wait_cost_section(args: argparse.Namespace) -> dict[str, Any]:
    """The same clicks with WAIT 0, 1 and 2 interleaved one by one, so that the three see the
    same machine."""
    load_before = load_average()
    products = catalogue_products(args.catalog)
    with HASetup(replicas=2, sentinels=1) as setup:
        primary = connect(setup.primary_url)
        recs = {
            ack: RedisRecommender(primary, index_name=INDEX, key_prefix=PREFIX, min_replicas_ack=ack)
            for ack in (0, 1, 2)
        }
        recs[0].create_index()
        recs[0].index_products(products)
        primary.wait(2, 10_000)
        latencies: dict[int, list[float]] = {ack: [] for ack in recs}
        for number in range(args.clicks + 20):
            for ack, rec in recs.items():
                started = time.perf_counter()
                rec.record_click(f"wait{ack}-{number % 50}", products[number % len(products)]["id"])
                if number >= 20:  # the first clicks warm the connections and the script cache
                    latencies[ack].append((time.perf_counter() - started) * 1000)
        primary.close()
    rows: dict[str, dict[str, float | None]] = {}
    base = percentiles(latencies[0])["p50_ms"]
    for ack, values in latencies.items():
        row = percentiles(values)
        rows[f"wait_{ack}"] = {**row, "p50_over_wait_0": round(row["p50_ms"] / base, 2) if base else None}
    return {"load_average_before": load_before, "clicks_each": args.clicks, "replicas": 2, "rows": rows}


# --- 5. memory per product and per user -------------------------------------------------------------


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def scaled_catalogue(products: list[dict[str, Any]], count: int, seed: int) -> Iterator[dict[str, Any]]:
    """`count` products with catalog.json's texts and fields; each copy's vector is its
    original's, jittered and re-normalised, so the index holds distinct vectors."""
    rng = np.random.default_rng(seed)
    base = np.stack([np.frombuffer(base64.b64decode(p["embedding_b64"]), dtype=np.float32) for p in products])
    for i in range(count):
        original = products[i % len(products)]
        jittered = base[i % len(products)] + 0.05 * rng.normal(size=base.shape[1])
        vector = normalize_rows(jittered.astype(np.float32)[None])[0]
        yield {**{k: v for k, v in original.items() if k != "embedding_b64"}, "id": f"m{i}", "embedding": vector}


def shopper(rec: RedisRecommender, users: range, product_ids: Sequence[str]) -> None:
    """Per user: five clicks, then two dismissals, spread over the catalogue: a session vector, a
    negative vector, a handful of category affinities, five recent clicks, seven seen (the JSON's
    user_shape says what one user ended up with)."""
    for user in users:
        for step in range(5):
            rec.record_click(f"u{user}", product_ids[(user * 7 + step * 13) % len(product_ids)])
        for step in range(2):
            rec.dismiss(f"u{user}", product_ids[(user * 11 + step * 17 + 5) % len(product_ids)])


def memory_section(args: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    products = catalogue_products(args.catalog)
    with LocalRedis() as server:
        client = connect(server.url)
        rec = RedisRecommender(client, index_name=INDEX, key_prefix=PREFIX)
        rec.create_index()
        empty = used_memory(client)
        rec.index_products(scaled_catalogue(products, args.memory_products, args.seed))
        rec.wait_until_indexed()
        with_products = used_memory(client)
        vector_index_mb = rec.index_info().vector_index_size_mb
        ids = [f"m{i}" for i in range(len(products))]
        per_thread = args.memory_users // CLICK_CLIENTS
        threads = [
            threading.Thread(target=shopper, args=(rec, range(n * per_thread, (n + 1) * per_thread), ids))
            for n in range(CLICK_CLIENTS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        users = per_thread * CLICK_CLIENTS
        with_users = used_memory(client)
        sample = rec.get_user_features("u1")
        keys_per_user = sum(1 for _ in client.scan_iter(match="*user:u1:features*"))
        client.close()
    per_product = (with_products - empty) / args.memory_products
    per_user = (with_users - with_products) / users
    return {
        "load_average_before": load_before,
        "products": args.memory_products,
        "users": users,
        "bytes_per_product": round(per_product),
        "vector_index_bytes_per_product": round(vector_index_mb * 1024 * 1024 / args.memory_products),
        "bytes_per_user": round(per_user),
        "user_shape": {
            "clicks": sample.clicks,
            "affinities": len(sample.affinities),
            "session_vector": sample.session_vec is not None,
            "negative_vector": sample.negative_vec is not None,
            "keys": keys_per_user,
        },
        "products_per_gb": int(GB / per_product),
        "users_per_gb": int(GB / per_user),
        "used_memory_empty_bytes": empty,
    }


# --- report -------------------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    replicas = report.get("replicas")
    if replicas:
        print(
            f"\nSearches (k=10) on {replicas['items']} products, {replicas['threads']} threads, "
            f"{replicas['rounds']} interleaved rounds of {replicas['seconds_per_round']} s "
            f"(load before {replicas['load_average_before']})"
        )
        print(
            f"{'replicas':>8} {'searches/s':>11} {'p50 ms':>7} {'p99 ms':>7}  {'searches primary/r1/r2':<24} "
            f"{'Redis CPU s p/r1/r2':<20} {'Redis us/search':>15} {'client us/search':>16}"
        )
        for row in replicas["rows"]:
            calls = "/".join(str(v) for v in row["searches_by_node"].values())
            cpu = "/".join(f"{v:.2f}" for v in row["redis_cpu_s_by_node"].values())
            print(
                f"{row['replicas']:>8} {row['searches_per_s_median']:>11} {row['p50_ms_median']:>7} "
                f"{row['p99_ms_median']:>7}  {calls:<24} {cpu:<20} {row['redis_cpu_us_per_search']:>15} "
                f"{row['client_cpu_us_per_search']:>16}"
            )
        print("load average per round: " + ", ".join(str(r["load_average_1min"]) for r in replicas["all_rounds"]))
    failover = report.get("failover")
    if failover:
        print(
            f"\nFailover (down-after 1000 ms, failover-timeout 3000 ms, 3 Sentinels, 2 replicas; load before {failover['load_average_before']})"
        )
        print(
            f"{'scenario':>8} {'WAIT':>4} {'kill->click s':>13} {'sdown':>6} {'odown':>6} {'switch':>6} {'acked':>6} {'in cut':>6} {'lost':>5}  load"
        )
        for run in failover["runs"]:
            events = run["sentinel_events_s"]
            print(
                f"{run['scenario']:>8} {run['min_replicas_ack']:>4} {run['kill_to_first_click_s']:>13} "
                f"{events.get('sdown', '-'):>6} {events.get('odown', '-'):>6} {events.get('switch-master', '-'):>6} "
                f"{run['clicks_acknowledged']:>6} {run['acknowledged_during_cut']:>6} {run['acknowledged_lost']:>5}  "
                f"{run['load_average_1min']}"
            )
        summary = failover["kill_to_first_click_s"]
        print(
            f"kill -9 -> first click: median {summary['median']} s, min {summary['min']} s, max {summary['max']} s over {summary['runs']} runs"
        )
    wait = report.get("wait_cost")
    if wait:
        print(
            f"\nClick latency by WAIT, {wait['clicks_each']} clicks each, interleaved (load before {wait['load_average_before']})"
        )
        for name, row in wait["rows"].items():
            print(
                f"{name:>8}: p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms, p99 {row['p99_ms']} ms ({row['p50_over_wait_0']}x)"
            )
    memory = report.get("memory")
    if memory:
        print(
            f"\nMemory (load before {memory['load_average_before']}): {memory['bytes_per_product']} B per product "
            f"({memory['vector_index_bytes_per_product']} B of it the vector index) over {memory['products']} products; "
            f"{memory['bytes_per_user']} B per user over {memory['users']} users {memory['user_shape']}"
        )
        print(f"per GB of Redis memory: {memory['products_per_gb']:,} products or {memory['users_per_gb']:,} users")


def draw(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    replicas = report.get("replicas")
    if replicas:
        rows = replicas["rows"]
        x = np.arange(len(rows))
        axis = axes[0]
        axis.bar(x, [r["searches_per_s_median"] for r in rows], color="#4c72b0")
        axis.set_xticks(x, [f"{r['replicas']} replica(s)" for r in rows])
        axis.set_ylabel("searches/s (8 threads)")
        twin = axis.twinx()
        twin.plot(x, [r["redis_cpu_s_by_node"]["primary"] for r in rows], "o-", color="#dd8452", label="primary CPU s")
        twin.set_ylabel("primary's Redis CPU seconds")
        twin.legend(loc="upper right")
        axis.set_title(f"Searches, {replicas['items']:,} products, 2 cores")
    failover = report.get("failover")
    if failover:
        axis = axes[1]
        for ack, colour in ((0, "#c44e52"), (1, "#55a868")):
            for scenario, marker in (("kill", "o"), ("cut", "x")):
                runs = [r for r in failover["runs"] if r["min_replicas_ack"] == ack and r["scenario"] == scenario]
                axis.scatter(
                    [r["kill_to_first_click_s"] for r in runs],
                    [r["acknowledged_lost"] for r in runs],
                    color=colour,
                    label=f"WAIT {ack}, {scenario}",
                    marker=marker,
                )
        axis.set_xlabel("kill -9 to first successful click (s)")
        axis.set_ylabel("acknowledged clicks lost")
        axis.set_title("Failover: time and losses (cut = link down 0.3 s)")
        axis.legend()
    wait = report.get("wait_cost")
    if wait:
        axis = axes[2]
        names = list(wait["rows"])
        x = np.arange(len(names))
        axis.bar(x - 0.2, [wait["rows"][n]["p50_ms"] for n in names], 0.4, label="p50")
        axis.bar(x + 0.2, [wait["rows"][n]["p99_ms"] for n in names], 0.4, label="p99")
        axis.set_xticks(x, [n.replace("_", " ").upper() for n in names])
        axis.set_ylabel("click latency (ms)")
        axis.set_title("What WAIT costs a click (2 replicas)")
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer runs in every section")
    parser.add_argument(
        "--sections",
        default="replicas,failover,wait,memory",
        help="comma-separated subset of replicas, failover, wait, memory",
    )
    parser.add_argument("--items", type=int, default=10_000, help="products for the replica section")
    parser.add_argument("--threads", type=int, default=8, help="client threads for the replica section")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per replica setting and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the three replica settings")
    parser.add_argument("--failover-runs", type=int, default=3, help="plain kill -9 runs per WAIT setting")
    parser.add_argument("--cut-runs", type=int, default=2, help="runs with the link cut first, per WAIT setting")
    parser.add_argument("--clicks", type=int, default=400, help="clicks per WAIT setting")
    parser.add_argument("--memory-products", type=int, default=10_000)
    parser.add_argument("--memory-users", type=int, default=2_000)
    parser.add_argument("--catalog", type=Path, default=ROOT / "catalog.json")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "scaleout.json")
    parser.add_argument("--plot", type=Path, default=RESULTS_DIR / "scaleout.png")
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.seconds, args.rounds, args.failover_runs, args.cut_runs = 2_000, 1.5, 2, 1, 1
        args.clicks, args.memory_products, args.memory_users = 100, 2_000, 400
    return args


SECTIONS: dict[str, tuple[str, Callable[[argparse.Namespace], dict[str, Any]]]] = {
    "replicas": ("replicas", replica_section),
    "failover": ("failover", failover_section),
    "wait": ("wait_cost", wait_cost_section),
    "memory": ("memory", memory_section),
}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    chosen = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        raise SystemExit(f"error: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "bench/scaleout.py",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    for name in chosen:
        key, section = SECTIONS[name]
        report[key] = section(args)
    report["load_average_at_end"] = load_average()
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    print_report(report)
    write_result(args.output, report)
    draw(report, args.plot)


if __name__ == "__main__":
    main()
