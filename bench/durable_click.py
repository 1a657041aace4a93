"""What `--durable` costs a click (issue 24, finding 6).

Without it, a 200 from /click means Redis applied the click and wrote it to its append-only
file (the kernel has it); the fsync that puts it on disk follows within a second
(`appendfsync everysec`). With `--durable` the server sends `WAITAOF 1 0` after the click's
scripts and answers 200 only once Redis reports the click fsynced. This measures the price:
/click latency through the demo server, with and without `--durable`, interleaved (one click
of each in turn, so both see the same machine), under each fsync policy of the Redis:

- `everysec` (the bundled Redis' setting): WAITAOF waits for the next once-a-second fsync;
- `always`: Redis fsyncs before it replies, so WAITAOF has nothing left to wait for.

It starts a persistent bundled Redis in a temporary folder on the disk under the repository
(not /tmp, which may be memory), and two demo servers on it.

    .venv/bin/python -m bench.durable_click            # 200 clicks per cell
    .venv/bin/python -m bench.durable_click --quick    # 40 per cell

Writes bench/results/durable_click.json and bench/results/durable_click.png.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import RESULTS_DIR, ROOT, JsonClient, machine, percentiles, start_demo_server, write_result
from local_redis import LocalRedis, connect
from recengine.catalog_file import read_catalog

POLICIES = ("everysec", "always")
VARIANTS = {"plain": [], "--durable": ["--durable"]}


def click_latencies(clients: dict[str, JsonClient], product_ids: list[str], clicks: int) -> dict[str, list[float]]:
    """`clicks` clicks per variant, alternating, each by a user of its own variant."""
    users = {name: f"bench-durable-{name.strip('-')}-{secrets.token_hex(3)}" for name in clients}
    timings: dict[str, list[float]] = {name: [] for name in clients}
    for number in range(clicks):
        for name, client in clients.items():
            status, body, ms = client.call(
                "POST", "/click", {"product_id": product_ids[number % len(product_ids)], "user_id": users[name]}
            )
            if status != 200:
                raise RuntimeError(f"{name} /click answered {status}: {body}")
            timings[name].append(ms)
    return timings


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.6))
    labels, p50, p99 = [], [], []
    for policy, variants in result["cells"].items():
        for name, stats in variants.items():
            labels.append(f"{policy}\n{name}")
            p50.append(stats["p50_ms"])
            p99.append(stats["p99_ms"])
    positions = range(len(labels))
    axis.bar([p - 0.2 for p in positions], p50, 0.4, label="p50")
    axis.bar([p + 0.2 for p in positions], p99, 0.4, label="p99")
    axis.set_xticks(list(positions), labels)
    axis.set_ylabel("/click latency, ms")
    axis.set_yscale("log")
    axis.set_title("What --durable costs a click")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 clicks per cell instead of 200")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "durable_click.json")
    args = parser.parse_args(argv)
    clicks = 40 if args.quick else 200
    product_ids = [product["id"] for product in read_catalog(ROOT / "catalog.json")["products"]]
    load_at_start = os.getloadavg()[0]
    cells: dict[str, dict[str, dict[str, float]]] = {}
    with (
        tempfile.TemporaryDirectory(dir=ROOT, prefix=".bench-durable-") as folder,
        LocalRedis(Path(folder), persistent=True) as server,
    ):
        admin = connect(server.url)
        demos = {name: start_demo_server(server.url, extra) for name, extra in VARIANTS.items()}
        try:
            clients = {name: JsonClient(demo.url) for name, demo in demos.items()}
            click_latencies(clients, product_ids, 5)  # warm up: scripts loaded, connections open
            for policy in POLICIES:
                admin.config_set("appendfsync", policy)
                timings = click_latencies(clients, product_ids, clicks)
                cells[policy] = {name: percentiles(values) for name, values in timings.items()}
            for client in clients.values():
                client.close()
        finally:
            for demo in demos.values():
                demo.stop()
        redis_info = machine(admin)
    print(f"/click latency, {clicks} clicks per cell, interleaved")
    print(f"{'appendfsync':<12} {'server':<10} {'p50':>8} {'p95':>8} {'p99':>8}")
    for policy, variants in cells.items():
        for name, stats in variants.items():
            print(
                f"{policy:<12} {name:<10} {stats['p50_ms']:>6.2f}ms {stats['p95_ms']:>6.2f}ms {stats['p99_ms']:>6.2f}ms"
            )
    print(f"load average {load_at_start:.2f} at start, {os.getloadavg()[0]:.2f} at the end")
    result = {"machine": redis_info, "clicks_per_cell": clicks, "cells": cells}
    write_result(args.output, result)
    plot(result, args.output.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
