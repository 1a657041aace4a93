"""POST /event against today's POST /click, in one interleaved A/B run over HTTP.

Two demo servers, each with a Redis of its own: this checkout's, and a baseline's (a git ref,
default `main`, exported to a temporary directory: its /click records no co-occurrence). One
client per server and endpoint, over keep-alive connections, one request at a time; each round
sends the baseline's /click, this checkout's /click and its /event (view, click, cart and
purchase in turn) in a shuffled order, so that load on the machine falls on all three alike.
Shoppers are reused in turn, so every event meets a full window (up to partners_per_event
recent products to pair with), as a busy shop's would.

    .venv/bin/python -m bench.event_latency [--rounds 1500] [--baseline main]

Results: a table on stdout and bench/results/event_latency.json.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import (
    RESULTS_DIR,
    ROOT,
    JsonClient,
    export_tree,
    machine,
    percentiles,
    start_checkout_server,
    write_result,
)
from local_redis import LocalRedis

EVENTS = ("view", "click", "cart", "purchase")
# Shoppers reused in turn: each server allows a client 60 new users a minute, and this one asks
# for two per shopper (its /click and /event users).
SHOPPERS = 25


def product_ids(client: JsonClient) -> list[str]:
    status, state, _ = client.call("GET", "/state?user_id=bench-reader")
    if status != 200:
        raise RuntimeError(f"GET /state answered {status}: {state}")
    return [p["id"] for p in state["products"]]


def run(rounds: int, baseline_url: str, current_url: str, seed: int) -> dict[str, list[float]]:
    clients = {
        "baseline /click": JsonClient(baseline_url),
        "/click": JsonClient(current_url),
        "/event": JsonClient(current_url),
    }
    products = product_ids(clients["/click"])
    rng = random.Random(seed)
    times: dict[str, list[float]] = {name: [] for name in clients}
    warmup = 100
    for n in range(-warmup, rounds):
        shopper, product = f"bench-{n % SHOPPERS}", products[rng.randrange(len(products))]
        calls = {
            "baseline /click": ("/click", {"product_id": product, "user_id": shopper}),
            "/click": ("/click", {"product_id": product, "user_id": shopper}),
            "/event": ("/event", {"product_id": product, "user_id": f"{shopper}-e", "event": EVENTS[n % 4]}),
        }
        order = list(calls)
        rng.shuffle(order)
        for name in order:
            path, body = calls[name]
            status, answer, ms = clients[name].call("POST", path, body)
            if status != 200:
                raise RuntimeError(f"{name} answered {status}: {answer}")
            if n >= 0:
                times[name].append(ms)
    for client in clients.values():
        client.close()
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1500)
    parser.add_argument("--baseline", default="main", help="git ref whose /click is today's (default %(default)s)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "event_latency.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="event-latency-") as tmp, LocalRedis() as base_redis, LocalRedis() as redis:
        baseline_commit = export_tree(args.baseline, Path(tmp))
        baseline = start_checkout_server(Path(tmp), base_redis.url)
        try:
            current = start_checkout_server(ROOT, redis.url)
        except Exception:
            baseline.stop()
            raise
        try:
            report: dict[str, Any] = {
                "command": "python -m bench.event_latency" + (f" --baseline {args.baseline}"),
                "machine": machine(),
                "baseline": {"ref": args.baseline, "commit": baseline_commit},
                "rounds": args.rounds,
            }
            times = run(args.rounds, baseline.url, current.url, args.seed)
        finally:
            baseline.stop()
            current.stop()
    report["latency"] = {name: percentiles(values) for name, values in times.items()}
    base = report["latency"]["baseline /click"]["p50_ms"]
    report["p50_ratio_to_baseline_click"] = {
        name: round(row["p50_ms"] / base, 3) for name, row in report["latency"].items()
    }
    report["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    for name, row in report["latency"].items():
        ratio = report["p50_ratio_to_baseline_click"][name]
        print(f"{name:18} p50 {row['p50_ms']:7.3f} ms  p95 {row['p95_ms']:7.3f} ms  ({ratio:.2f}x baseline /click)")
    write_result(args.output, report)


if __name__ == "__main__":
    main()
