"""A full catalogue reload while clients search: does any search fail, and what happens to p99?

Issue 21's target: at 40,000 products or more, 0 failed searches and a p99 during the reload of
at most 3x the idle p99, measured in one run. The reload is RedisRecommender.reload_catalog,
the one path behind /reset-index, file reloads and model changes: a new generation is built
beside the serving one, the index name is switched to it with FT.ALIASUPDATE, the old keys are
unlinked. The new generation has other vectors (another seed: what a model change looks like),
so every answer says which generation it came from, by its keys.

Searcher processes (their own, so that the reload's client never holds their GIL) each run one
filtered KNN FT.SEARCH after another against the index name, as the library does, and record
for each: when, how long, whether it failed (an error, or no rows: the index missing or empty)
and which generation its rows came from (a mixture would be a failure too). Windows: idle before
the reload, the build, the switch and cleanup, and after.

    .venv/bin/python -m bench.reload                  # 40k products, 2 searchers
    .venv/bin/python -m bench.reload --quick          # 5k products

Writes bench/results/reload.json and .png.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis

from bench.contention import cpu_snapshot, other_cores
from bench.harness import RESULTS_DIR, machine, percentiles, write_result
from bench.retrieval import pack_batches, wait_indexed, write_batches
from bench.synthetic_catalog import CATEGORIES, DIM, make_catalog, make_queries, product_dict
from local_redis import LocalRedis, connect
from recommender import RedisRecommender, ReloadResult, SearchFilters, knn_query, vector_to_bytes

log = logging.getLogger("bench.reload")

K = 10
INDEX_NAME = "bench:reload:idx"
KEY_PREFIX = "bench:rproduct:"
P99_RATIO_TARGET = 3.0


@dataclass(frozen=True)
class SearcherPlan:
    url: str
    seed: int
    queries: np.ndarray
    categories: np.ndarray


def generation_of(key: str) -> int:
    """0 for `bench:rproduct:<id>`, n for `bench:rproduct@n:<id>`."""
    head = key[: len(KEY_PREFIX) + 8]
    if head.startswith(KEY_PREFIX):
        return 0
    return int(head[len(KEY_PREFIX) - 1 :].split("@", 1)[1].split(":", 1)[0])


def one_search(client: redis.Redis, query: np.ndarray, category: str) -> tuple[str, int]:
    """(outcome, generation): the library's query shape, over the index name. The outcome is
    "ok", "error" (Redis answered with an error: the index missing, ...), "short" (fewer than
    k rows: the index half-loaded, or Search's query TIMEOUT cut the answer) or "mixed" (rows
    of two generations in one answer)."""
    knn, params = knn_query(SearchFilters(category=category, in_stock_only=True).clause(), K, 100, None)
    params["vec"] = vector_to_bytes(query, DIM)
    try:
        reply = client.execute_command(
            "FT.SEARCH", INDEX_NAME, knn, "PARAMS", str(2 * len(params)), *[x for p in params.items() for x in p],
            "RETURN", "2", "name", "vector_score", "SORTBY", "vector_score", "LIMIT", "0", str(K), "DIALECT", "2",
        )  # fmt: skip
    except redis.RedisError:
        return "error", -1
    keys = [r[b"id"].decode() for r in reply[b"results"]] if isinstance(reply, dict) else []
    if not isinstance(reply, dict):
        keys = [reply[i].decode() for i in range(1, len(reply), 2)]
    generations = {generation_of(key) for key in keys}
    if len(generations) > 1:
        return "mixed", -2
    generation = generations.pop() if generations else -1
    return ("ok" if len(keys) == K else "short"), generation


def searcher_main(plan: SearcherPlan, stop: Any, results: Any) -> None:
    """Search until `stop` is set, then send every (when, ms, ok, generation) back."""
    client = connect(plan.url, timeout_s=30)
    rng = np.random.default_rng(plan.seed)
    rows: list[tuple[float, float, str, int]] = []
    while not stop.is_set():
        q = int(rng.integers(len(plan.queries)))
        at = time.time()
        t0 = time.perf_counter()
        outcome, generation = one_search(client, plan.queries[q], CATEGORIES[int(plan.categories[q])][0])
        rows.append((at, (time.perf_counter() - t0) * 1000, outcome, generation))
    results.put(rows)
    client.close()


def load_generation_zero(rec: RedisRecommender, n: int, seed: int) -> float:
    """The catalogue that serves before the reload, as create_index + index_products write it."""
    catalog = make_catalog(n, seed)
    batches, _ = pack_batches(rec, catalog, 500)
    rec.create_index()
    started = time.perf_counter()
    write_batches(rec, batches, catalog.size)
    wait_indexed(rec, catalog.size)
    return time.perf_counter() - started


def window(rows: list[tuple[float, float, str, int]], start: float, end: float) -> dict[str, Any]:
    inside = [r for r in rows if start <= r[0] < end]
    failures = Counter(r[2] for r in inside if r[2] != "ok")
    return {
        "searches": len(inside),
        "failed": sum(failures.values()),
        "failures": dict(failures),
        "slowest_ms": round(max((r[1] for r in inside), default=0.0), 1),
        "generations": sorted({r[3] for r in inside}),
        **percentiles([r[1] for r in inside]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    queries = make_queries(make_catalog(args.products, args.seed), 500, args.seed)
    with LocalRedis() as server:
        client = connect(server.url, timeout_s=120)
        info = machine(client)
        rec = RedisRecommender(client, index_name=INDEX_NAME, key_prefix=KEY_PREFIX, vector_dim=DIM)
        load_s = load_generation_zero(rec, args.products, args.seed)
        log.info("generation 0: %d products in %.1f s", args.products, load_s)
        new_catalog = make_catalog(args.products, args.seed + 1)
        new_products = [product_dict(new_catalog, i) for i in range(new_catalog.size)]
        context = multiprocessing.get_context("fork")
        results: Any = context.Queue()
        stop = context.Event()
        searchers = [
            context.Process(
                target=searcher_main,
                args=(SearcherPlan(server.url, args.seed + n, queries.vectors, queries.category), stop, results),
            )
            for n in range(args.searchers)
        ]
        for process in searchers:
            process.start()
        time.sleep(args.idle_s)
        snapshot = cpu_snapshot(client)
        reload_started = time.time()
        outcome: ReloadResult = rec.reload_catalog(new_products, model="synthetic-seed-2", batch_size=args.batch)
        reload_ended = time.time()
        others = other_cores(snapshot, cpu_snapshot(client))
        time.sleep(args.after_s)
        stop_at = time.time()
        stop.set()
        rows: list[tuple[float, float, str, int]] = []
        for _ in searchers:
            rows += results.get(timeout=120)
        for process in searchers:
            process.join(timeout=30)
        client.close()
    switch_at = reload_started + outcome.build_s
    windows = {
        "idle": window(rows, reload_started - args.idle_s, reload_started),
        "build": window(rows, reload_started, switch_at),
        "switch_and_cleanup": window(rows, switch_at, reload_ended),
        "whole_reload": window(rows, reload_started, reload_ended),
        "after": window(rows, reload_ended, stop_at),
    }
    ratio = windows["whole_reload"]["p99_ms"] / max(1e-9, windows["idle"]["p99_ms"])
    failed = sum(w["failed"] for name, w in windows.items() if name != "whole_reload")
    return {
        "benchmark": "reload",
        "command": "python -m bench.reload" + (" --quick" if args.quick else ""),
        "machine": info,
        "parameters": {
            "products": args.products,
            "searchers": args.searchers,
            "batch": args.batch,
            "idle_s": args.idle_s,
            "after_s": args.after_s,
        },
        "generation_zero_load_s": round(load_s, 1),
        "reload": {
            "seconds": round(reload_ended - reload_started, 2),
            "build_s": round(outcome.build_s, 2),
            "switch_ms": round(outcome.switch_ms, 2),
            "removed_keys": outcome.removed_keys,
            "cleanup_s": round(outcome.cleanup_s, 2),
            "serving": vars(outcome.serving),
            "other_load_cores": others,
        },
        "windows": windows,
        "failed_searches": failed,
        "p99_ratio_reload_to_idle": round(ratio, 2),
        "targets": {"zero_failed": failed == 0, "p99_within_3x": ratio <= P99_RATIO_TARGET},
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["idle", "build", "switch_and_cleanup", "after"]
    windows = result["windows"]
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(names))
    for offset, stat in ((-0.2, "p50_ms"), (0.2, "p99_ms")):
        ax.bar(x + offset, [windows[n][stat] for n in names], width=0.4, label=stat.replace("_ms", ""))
    ax.set_xticks(x, names)
    ax.set_ylabel("search latency (ms)")
    ax.set_title(
        f"reload of {result['parameters']['products']:,} products under search load: "
        f"{result['failed_searches']} failed, p99 x{result['p99_ratio_reload_to_idle']}"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=40_000)
    parser.add_argument("--searchers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=500, help="products per pipelined round trip of the build")
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--after-s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="5k products: a smoke run")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "reload.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    if args.quick:
        args.products, args.idle_s, args.after_s = 5000, 4.0, 2.0
    result = run(args)
    print(f"\n{'window':20} {'searches':>9} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8}  generations")
    for name, w in result["windows"].items():
        print(
            f"{name:20} {w['searches']:>9} {w['failed']:>7} {w['p50_ms']:>8.2f} {w['p99_ms']:>8.2f}  {w['generations']}"
        )
    print(f"reload: {result['reload']}")
    print(f"failed searches: {result['failed_searches']}; p99 reload/idle: {result['p99_ratio_reload_to_idle']}")
    write_result(args.output, result)
    plot(result, args.output.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
