"""Load test for the demo server: concurrent clients mixing /search, /click and /state for
several users, bounded in time, then a check that no click and no session update was lost.

By default it starts its own Redis with Search and its own demo server on free loopback
ports, so one command measures a clean system:

    .venv/bin/python -m bench.load                        # 16 clients, 30 s
    .venv/bin/python -m bench.load --clients 4 --seconds 10
    .venv/bin/python -m bench.load --url http://127.0.0.1:8084 --redis-url redis://127.0.0.1:6379

Traffic goes only to the loopback address it is given. Results: a table on stdout and
bench/results/load.json.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.harness import RESULTS_DIR, JsonClient, check_loopback, machine, percentiles, start_demo_server, write_result
from local_redis import LocalRedis, connect
from recommender import RedisRecommender

log = logging.getLogger("bench.load")

RESULTS = RESULTS_DIR / "load.json"
POPULAR_QUERIES = [
    "insulated down jacket for cold weather",
    "comfortable shoes for trail running",
    "waterproof hiking boots",
    "warm wool hat",
    "lightweight daypack for hiking",
    "rain jacket",
    "merino base layer",
    "camping stove",
    "sunglasses for the beach",
    "leather belt",
]
ADJECTIVES = ["warm", "light", "waterproof", "cheap", "durable", "soft", "packable", "breathable", "rugged", "stylish"]
ITEMS = ["jacket", "boots", "backpack", "gloves", "tent", "shorts", "scarf", "sandals", "hoodie", "headlamp"]
REPEATED_SHARE = 0.7
MIX: tuple[tuple[str, float], ...] = (("search", 0.6), ("click", 0.25), ("state", 0.15))
ALPHA = 0.4


@dataclass
class Tally:
    """What one client thread saw; merged after the run."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error_samples: list[str] = field(default_factory=list)
    clicks: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))


def fresh_query(rng: random.Random) -> str:
    """A query text unlikely to have been seen: the embedding cache misses on it."""
    return f"{rng.choice(ADJECTIVES)} {rng.choice(ADJECTIVES)} {rng.choice(ITEMS)} {rng.randrange(10**6)}"


def client_loop(
    base_url: str, users: list[str], product_ids: list[str], deadline: float, seed: int, tally: Tally
) -> None:
    rng = random.Random(seed)
    client = JsonClient(base_url)
    kinds, weights = [kind for kind, _ in MIX], [weight for _, weight in MIX]
    while time.monotonic() < deadline:
        kind = rng.choices(kinds, weights)[0]
        user = rng.choice(users)
        if kind == "search":
            query = rng.choice(POPULAR_QUERIES) if rng.random() < REPEATED_SHARE else fresh_query(rng)
            body = {"query": query, "k": 10, "use_session": True, "rerank": True, "user_id": user}
            if rng.random() < 0.5:
                body |= {"in_stock_only": True, "max_price": 300}
            status, data, elapsed_ms = client.call("POST", "/search", body)
        elif kind == "click":
            product_id = rng.choice(product_ids)
            status, data, elapsed_ms = client.call("POST", "/click", {"product_id": product_id, "user_id": user})
        else:
            status, data, elapsed_ms = client.call("GET", f"/state?user_id={user}")
        if status == 200:
            tally.latencies[kind].append(elapsed_ms)
            if kind == "click":
                tally.clicks[user].append((data["clicks"], product_id))
        else:
            tally.errors[kind] += 1
            if len(tally.error_samples) < 5:
                tally.error_samples.append(f"{kind} -> {status}: {data.get('error')}")
    client.close()


def replay_session(recommender: RedisRecommender, product_ids: list[str]) -> np.ndarray | None:
    """The session vector a serial history of these clicks must end with."""
    pipe = recommender.redis.pipeline(transaction=False)
    for key in recommender.product_keys(product_ids):
        pipe.hget(key, "embedding")
    session = None
    for blob in pipe.execute():
        item = np.frombuffer(blob, dtype="<f4").astype(np.float64)
        session = item if session is None else ALPHA * item + (1 - ALPHA) * session
        session = (session / np.linalg.norm(session)).astype(np.float32).astype(np.float64)
    return session


def check_users(
    recommender: RedisRecommender, clicks: dict[str, list[tuple[int, str]]], reset_counts: dict[str, int]
) -> dict:
    """Every successful click must be counted once, and the stored session vector must equal
    the EWMA replayed in the order the server numbered the clicks."""
    report = {}
    for user, sent in sorted(clicks.items()):
        features = recommender.get_user_features(user)
        numbers = sorted(n for n, _ in sent)
        expected_numbers = list(range(reset_counts.get(user, 0) + 1, reset_counts.get(user, 0) + len(sent) + 1))
        ordered = [pid for _, pid in sorted(sent)]
        replayed = replay_session(recommender, ordered) if reset_counts.get(user, 0) == 0 else None
        session_ok = replayed is None or bool(np.allclose(features["session_vec"], replayed, atol=1e-4))
        report[user] = {
            "clicks_sent_ok": len(sent),
            "clicks_stored": features["clicks"] - reset_counts.get(user, 0),
            "click_numbers_unique_and_contiguous": numbers == expected_numbers,
            "session_matches_serial_replay": session_ok,
        }
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent client threads (default 16)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to send requests (default 30)")
    parser.add_argument("--users", type=int, default=8, help="distinct user ids the clients share (default 8)")
    parser.add_argument("--url", help="an already running demo server (loopback only); default: start one")
    parser.add_argument("--redis-url", help="the Redis that server uses, for the lost-update check")
    parser.add_argument("--index-name", default="bench:idx", help="with --url: the server's --index-name")
    parser.add_argument("--key-prefix", default="bench:product:", help="with --url: the server's --key-prefix")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.url and not args.redis_url:
        parser.error("--url needs --redis-url too, for the lost-update check")
    if args.url:
        check_loopback(args.url)
    if not (1 <= args.clients <= 256 and 0 < args.seconds <= 600 and 1 <= args.users <= 1000):
        parser.error("--clients 1-256, --seconds up to 600, --users 1-1000")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    local = None if args.url else LocalRedis().start()
    redis_url = args.redis_url or (local.url if local is not None else "")
    server = None if args.url else start_demo_server(redis_url)
    base_url = args.url or (server.url if server is not None else "")
    try:
        recommender = RedisRecommender(connect(redis_url), index_name=args.index_name, key_prefix=args.key_prefix)
        product_ids = [p["id"] for p in recommender.list_products(limit=10_000)]
        users = [f"load-{args.seed}-{i}" for i in range(args.users)]
        reset_counts = {user: recommender.get_user_features(user)["clicks"] for user in users}
        log.info(
            "%d clients for %.0f s against %s (%d products, %d users)",
            args.clients,
            args.seconds,
            base_url,
            len(product_ids),
            len(users),
        )
        tallies = [Tally() for _ in range(args.clients)]
        deadline = time.monotonic() + args.seconds
        started = time.perf_counter()
        threads = [
            threading.Thread(
                target=client_loop, args=(base_url, users, product_ids, deadline, args.seed * 1000 + i, tally)
            )
            for i, tally in enumerate(tallies)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started

        latencies: defaultdict[str, list[float]] = defaultdict(list)
        errors: defaultdict[str, int] = defaultdict(int)
        clicks: defaultdict[str, list[tuple[int, str]]] = defaultdict(list)
        samples: list[str] = []
        for tally in tallies:
            for kind, values in tally.latencies.items():
                latencies[kind] += values
            for kind, count in tally.errors.items():
                errors[kind] += count
            for user, sent in tally.clicks.items():
                clicks[user] += sent
            samples += tally.error_samples
        users_report = check_users(recommender, clicks, reset_counts)
    finally:
        if server:
            server.stop()
        if local:
            local.stop()

    endpoints = {
        kind: {
            "ok": len(latencies[kind]),
            "errors": errors[kind],
            "rps": round(len(latencies[kind]) / elapsed, 1),
            **percentiles(latencies[kind]),
        }
        for kind, _ in MIX
    }
    total_ok = sum(len(v) for v in latencies.values())
    total_errors = sum(errors.values())
    lost = [
        u
        for u, r in users_report.items()
        if r["clicks_stored"] != r["clicks_sent_ok"]
        or not r["click_numbers_unique_and_contiguous"]
        or not r["session_matches_serial_replay"]
    ]
    print(
        f"\n{args.clients} clients, {elapsed:.1f} s, {total_ok} ok, {total_errors} errors, {total_ok / elapsed:.1f} requests/s"
    )
    print(f"{'endpoint':<8} {'ok':>7} {'errors':>7} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for kind, row in endpoints.items():
        print(
            f"{kind:<8} {row['ok']:>7} {row['errors']:>7} {row['rps']:>8} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['p99_ms']:>8}"
        )
    print(f"users checked: {len(users_report)}; users with lost clicks or session updates: {len(lost)}")
    for sample in samples:
        print("error sample:", sample)
    result = {
        "command": "python -m bench.load " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "clients": args.clients, "seconds": round(elapsed, 2), "users": args.users,
        "repeated_query_share": REPEATED_SHARE, "mix": dict(MIX),
        "requests_ok": total_ok, "errors": total_errors, "requests_per_s": round(total_ok / elapsed, 1),
        "endpoints": endpoints, "users_report": users_report, "users_with_lost_updates": lost, "error_samples": samples,
    }  # fmt: skip
    write_result(args.output, result)
    return 1 if total_errors or lost else 0


if __name__ == "__main__":
    sys.exit(main())
