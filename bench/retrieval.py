"""Retrieval benchmark: how fast and how exact is one filtered KNN FT.SEARCH as the catalog grows?

For each catalog size it starts a fresh Redis with Search, streams a synthetic but realistic
catalog into it through RedisRecommender, and measures:

- ingest: items/s of pipelined HSETs into the HNSW index, Redis memory and vector index size
  per item;
- retrieval: `candidate_retrieve(..., k=10)` latency (p50/p95/p99, through the Python client)
  and recall@10 against an exact numpy search over the same vectors with the same filter,
  plus that numpy search's own time per query, for four filter cases;
- an EF_RUNTIME sweep (recall against latency) and a HYBRID_POLICY comparison on each filter
  plus a very selective and a very broad one.

`--sweep-build` instead sweeps the HNSW build parameters (M, EF_CONSTRUCTION) at the largest
size and merges that section into the same JSON; a later default run keeps it.

Run: .venv/bin/python -m bench.retrieval            (about 4 minutes on 2 cores)

The work is split in four modules: bench/synthetic_catalog.py (the catalog and its queries),
bench/contention.py (is other work competing for the cores), this runner, and
bench/retrieval_report.py (targets, tables and plots).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis
from threadpoolctl import threadpool_info, threadpool_limits
from tqdm import tqdm

from bench.contention import (
    QuietBudget,
    cpu_snapshot,
    machine_busy,
    measured_quietly,
    other_cores,
    server_cpu_s,
    wait_for_quiet,
)
from bench.harness import RESULTS_DIR, machine, percentiles
from bench.retrieval_report import (
    FILTERED_P50_TARGET_MS,
    RECALL_TARGET,
    check_targets,
    draw_plots,
    fastest_at_target,
    print_build_sweep,
    print_size,
    print_targets,
    recommendation,
    smallest_good_ef,
)
from bench.synthetic_catalog import (
    DIM,
    FILTER_CASES,
    HYBRID_CASES,
    Catalog,
    FilterSpec,
    Queries,
    catalog_summary,
    make_catalog,
    make_queries,
    product_dict,
    specs_for,
)
from local_redis import LocalRedis, connect
from recommender import RedisRecommender, aggregate_rows, info_dict, product_to_hash

log = logging.getLogger("bench.retrieval")

K = 10
INDEX_NAME = "bench:retrieval:idx"
# Our own prefix, so that --redis-url never touches a user's `product:` keys.
KEY_PREFIX = "bench:product:"

# --- ingest ---------------------------------------------------------------------------------


def pack_batches(
    rec: RedisRecommender, catalog: Catalog, batch_size: int
) -> tuple[list[list[tuple[str, dict]]], float]:
    """Every key and hash exactly as index_products would store them (product_key,
    product_to_hash), before the clock starts: ingest then measures Redis, not Python.
    Returns the batches and the packing time."""
    started = time.perf_counter()
    keys = rec.product_keys(str(i) for i in range(catalog.size))  # one question, not one a product
    batches = []
    for start in range(0, catalog.size, batch_size):
        batches.append(
            [
                (keys[i], product_to_hash(product_dict(catalog, i), rec.vector_dim))
                for i in range(start, min(start + batch_size, catalog.size))
            ]
        )
    return batches, time.perf_counter() - started


def write_batches(rec: RedisRecommender, batches: list[list[tuple[str, dict]]], total: int) -> None:
    """Through the library's own batch writer, the one index_products uses (one pipelined
    round trip per batch, no MULTI), so the figures are those of the library's ingest."""
    with tqdm(total=total, unit="item", desc="ingest", leave=False) as progress:
        for batch in batches:
            progress.update(rec._write_batch(batch))


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def wait_indexed(rec: RedisRecommender, expected: int, timeout_s: float = 600.0) -> dict[str, Any]:
    """HSETs into an index are indexed synchronously, but check rather than assume."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = rec.index_info()
        if info["percent_indexed"] >= 1.0 and info["num_docs"] >= expected:
            return info
        if time.monotonic() > deadline:
            raise TimeoutError(f"index holds {info['num_docs']} of {expected} after {timeout_s}s")
        time.sleep(0.02)


def ingest(client: redis.Redis, rec: RedisRecommender, catalog: Catalog, batch_size: int) -> dict[str, Any]:
    batches, pack_s = pack_batches(rec, catalog, batch_size)
    gc.collect()
    memory_before = used_memory(client)
    rec.create_index()
    server_cpu_0, client_cpu_0, snapshot_0 = server_cpu_s(client), time.process_time(), cpu_snapshot(client)
    started = time.perf_counter()
    write_batches(rec, batches, catalog.size)
    info = wait_indexed(rec, catalog.size)
    seconds = time.perf_counter() - started
    server_cpu, client_cpu = server_cpu_s(client) - server_cpu_0, time.process_time() - client_cpu_0
    others = other_cores(snapshot_0, cpu_snapshot(client))
    memory_after = used_memory(client)
    raw = info_dict(client.execute_command("FT.INFO", rec.index_name))
    if info["indexing_failures"]:
        log.warning("%d indexing failures", info["indexing_failures"])
    return {
        "items": catalog.size,
        "batch_size": batch_size,
        "seconds": round(seconds, 3),
        "items_per_s": round(catalog.size / seconds, 1),
        "client_packing_items_per_s": round(catalog.size / pack_s, 1),
        "server_main_thread_busy": round(server_cpu / seconds, 3),
        # Robust to other load on the machine: what one Redis core can index per second.
        "items_per_server_cpu_s": round(catalog.size / server_cpu, 1),
        "other_load_cores": others,
        "client_cpu_busy": round(client_cpu / seconds, 3),
        "num_docs": info["num_docs"],
        "indexing_failures": info["indexing_failures"],
        "used_memory_delta_bytes": memory_after - memory_before,
        "memory_bytes_per_item": round((memory_after - memory_before) / catalog.size, 1),
        "vector_index_sz_mb": round(float(raw.get("vector_index_sz_mb", 0) or 0), 3),
        "vector_index_bytes_per_item": round(float(raw.get("vector_index_sz_mb", 0) or 0) * 2**20 / catalog.size, 1),
    }


# --- exact search with numpy ----------------------------------------------------------------


def exact_top_k(catalog: Catalog, query: np.ndarray, spec: FilterSpec, k: int) -> np.ndarray:
    """Exact filtered top-k, done the way a competent numpy user would: evaluate the filter,
    then score either only the matching rows (few) or all rows with the rest masked out
    (many: copying 90 % of the matrix costs more than scoring it), then argpartition."""
    mask = spec.mask(catalog)
    if mask is None:
        rows, scores = None, catalog.vectors @ query
    elif mask.mean() < 0.25:
        rows = np.flatnonzero(mask)
        scores = catalog.vectors[rows] @ query
    else:
        rows, scores = None, np.where(mask, catalog.vectors @ query, -np.inf)
    top = np.argpartition(-scores, k)[:k] if len(scores) > k else np.arange(len(scores))
    top = top[np.isfinite(scores[top])]
    top = top[np.argsort(-scores[top], kind="stable")]
    return top if rows is None else rows[top]


def time_exact(catalog: Catalog, queries: Queries, specs: list[FilterSpec], k: int) -> tuple[np.ndarray, list]:
    times, truth = [], []
    for query, spec in zip(queries.vectors, specs, strict=True):
        started = time.perf_counter()
        truth.append(exact_top_k(catalog, query, spec, k))
        times.append(time.perf_counter() - started)
    return np.array(times) * 1000, truth


def exact_search(catalog: Catalog, queries: Queries, specs: list[FilterSpec], k: int) -> dict[str, Any]:
    """Ground truth and the numpy baseline's time per query, twice: with every core BLAS can
    use (the strict comparison) and with one thread (like Redis, which runs a query on one
    core while the other serves someone else)."""
    (times_ms, truth), others = measured_quietly(lambda: time_exact(catalog, queries, specs, k), None, "numpy")

    def one_thread() -> tuple[np.ndarray, list]:
        with threadpool_limits(limits=1):
            return time_exact(catalog, queries, specs, k)

    (one_thread_ms, _), others_1 = measured_quietly(one_thread, None, "numpy, one thread")
    matching = []
    for spec in specs:
        mask = spec.mask(catalog)
        matching.append(catalog.size if mask is None else int(mask.sum()))
    return {
        "truth": truth,
        "times_ms": times_ms,
        "one_thread_ms": one_thread_ms,
        "matching": np.array(matching),
        "other_load_cores": max(others, others_1),
    }


# --- retrieval through Redis ----------------------------------------------------------------


def recall_at_k(found: list[list[int]], truth: list[np.ndarray], k: int) -> float | None:
    """Mean over queries of |found ∩ exact| / min(k, matching); queries nothing matches have
    no recall and are left out (None when no query has any match)."""
    scores = [
        len(set(got) & set(exact.tolist())) / min(k, len(exact))
        for got, exact in zip(found, truth, strict=True)
        if len(exact)
    ]
    return round(float(np.mean(scores)), 4) if scores else None


def time_redis(
    rec: RedisRecommender, queries: Queries, specs: list[FilterSpec], k: int, warmup: int
) -> tuple[np.ndarray, list[list[int]]]:
    """Wall time of candidate_retrieve as an application sees it: query building, the round
    trip, parsing. A few unmeasured queries first warm the connection and Redis' caches."""
    for query, spec in list(zip(queries.vectors, specs, strict=True))[:warmup]:
        rec.candidate_retrieve(query, k=k, **spec.kwargs())
    gc.collect()
    times, found = [], []
    for query, spec in zip(queries.vectors, specs, strict=True):
        kwargs = spec.kwargs()
        started = time.perf_counter()
        candidates = rec.candidate_retrieve(query, k=k, **kwargs)
        times.append(time.perf_counter() - started)
        found.append([int(c.id) for c in candidates])
    return np.array(times) * 1000, found


def measure_case(
    rec: RedisRecommender, queries: Queries, specs: list[FilterSpec], exact: dict[str, Any], k: int, warmup: int
) -> dict[str, Any]:
    """Latency percentiles, recall@10, and Redis' main-thread CPU per query: the part of the
    latency the server spends, the rest being the client, the protocol and the loopback."""

    client = rec.redis
    assert isinstance(client, redis.Redis)  # one Redis, whose CPU is measured

    def run() -> tuple[np.ndarray, list[list[int]], float]:
        before = server_cpu_s(client)
        times_ms, found = time_redis(rec, queries, specs, k, warmup)
        return times_ms, found, server_cpu_s(client) - before

    (times_ms, found, server_s), others = measured_quietly(run, client, "query run")
    return {
        **percentiles(times_ms),
        "recall_at_10": recall_at_k(found, exact["truth"], k),
        "server_cpu_ms_per_query": round(server_s * 1000 / (len(specs) + warmup), 3),
        "other_load_cores": others,
    }


def retriever(client: redis.Redis, **settings: Any) -> RedisRecommender:
    return RedisRecommender(client, index_name=INDEX_NAME, key_prefix=KEY_PREFIX, vector_dim=DIM, **settings)


def check_text_filter(client: redis.Redis, catalog: Catalog) -> None:
    """The numpy side's "contains waterproof" must be what RediSearch's TEXT match finds,
    or every recall figure of the TEXT case would be measured against the wrong truth."""
    reply = client.execute_command(
        "FT.AGGREGATE", INDEX_NAME, "@description:waterproof", "GROUPBY", "0", "REDUCE", "COUNT", "0", "AS", "matching"
    )
    rows = aggregate_rows(reply)
    found = int(rows[0]["matching"]) if rows else 0
    if found != int(catalog.waterproof.sum()):
        log.warning("TEXT filter finds %d items, numpy mask has %d", found, int(catalog.waterproof.sum()))


# --- one catalog size -----------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    queries: int
    warmup: int
    seed: int
    batch_size: int
    ef_values: tuple[int, ...]
    hnsw_m: int | None = None
    hnsw_ef_construction: int | None = None


def truth_for_cases(
    catalog: Catalog, queries: Queries, cases: dict[str, Callable[[int, int], FilterSpec]]
) -> dict[str, tuple[list[FilterSpec], dict[str, Any]]]:
    out = {}
    for name, case in cases.items():
        specs = specs_for(case, queries)
        out[name] = (specs, exact_search(catalog, queries, specs, K))
    return out


def case_header(catalog: Catalog, exact: dict[str, Any]) -> dict[str, Any]:
    matching = exact["matching"]
    return {
        "selectivity_mean": round(float(matching.mean() / catalog.size), 5),
        "matching_items_median": int(np.median(matching)),
        "queries_without_match": int((matching == 0).sum()),
        "numpy_exact": percentiles(exact["times_ms"]),
        "numpy_exact_1_thread": percentiles(exact["one_thread_ms"]),
        "numpy_other_load_cores": exact["other_load_cores"],
    }


def run_headline(client, catalog, queries, truths, settings: Settings) -> dict[str, Any]:
    """Every filter case with the library's current defaults: what the product does today."""
    rec = retriever(client)
    out = {}
    for name, (specs, exact) in truths.items():
        result = {**case_header(catalog, exact), **measure_case(rec, queries, specs, exact, K, settings.warmup)}
        result["numpy_over_redis_p50"] = round(result["numpy_exact"]["p50_ms"] / result["p50_ms"], 2)
        result["numpy_1_thread_over_redis_p50"] = round(result["numpy_exact_1_thread"]["p50_ms"] / result["p50_ms"], 2)
        out[name] = result
    return {"ef_runtime": rec.ef_runtime, "hybrid_policy": rec.hybrid_policy, "cases": out}


def run_ef_sweep(client, queries, truths, settings: Settings) -> dict[str, Any]:
    sweep: dict[str, Any] = {}
    for ef in settings.ef_values:
        rec = retriever(client, ef_runtime=ef)
        sweep[str(ef)] = {
            name: measure_case(rec, queries, specs, exact, K, settings.warmup)
            for name, (specs, exact) in truths.items()
        }
    return sweep


def run_hybrid(client, catalog, queries, truths, ef_values: list[int], settings: Settings) -> dict[str, Any]:
    """auto lets RediSearch pick per query; BATCHES walks the graph and filters what it finds,
    asking for more batches until k pass; ADHOC_BF scores every item that passes the filter
    (exact, and EF_RUNTIME does not apply)."""
    out: dict[str, Any] = {}
    for name, (specs, exact) in truths.items():
        rows: dict[str, Any] = {}
        for policy in ("auto", "BATCHES"):
            for ef in ef_values:
                rec = retriever(client, ef_runtime=ef, hybrid_policy=None if policy == "auto" else policy)
                rows[f"{policy} ef={ef}"] = measure_case(rec, queries, specs, exact, K, settings.warmup)
        rows["ADHOC_BF"] = measure_case(
            retriever(client, hybrid_policy="ADHOC_BF"), queries, specs, exact, K, settings.warmup
        )
        out[name] = {**case_header(catalog, exact), "policies": rows, "fastest_at_target": fastest_at_target(rows)}
    return out


def open_server(redis_url: str | None) -> tuple[redis.Redis, LocalRedis | None]:
    """A fresh bundled Redis per size, or the user's Redis with our own index and prefix."""
    if redis_url:
        client = connect(redis_url, timeout_s=120)
        retriever(client).drop_index(delete_documents=True)
        return client, None
    server = LocalRedis().start()
    return connect(server.url, timeout_s=120), server


def close_server(client: redis.Redis, server: LocalRedis | None) -> None:
    if server is None:
        retriever(client).drop_index(delete_documents=True)
    client.close()
    if server is not None:
        server.stop()


def run_size(
    catalog: Catalog, queries: Queries, settings: Settings, redis_url: str | None, full: bool = True
) -> dict[str, Any]:
    """Fresh server, ingest, then (full) the headline, EF and hybrid runs, or (not full, for
    the build sweep) only the EF sweep."""
    truths = truth_for_cases(catalog, queries, FILTER_CASES)
    busy = wait_for_quiet(60)
    client, server = open_server(redis_url)
    try:
        build = {"hnsw_m": settings.hnsw_m, "hnsw_ef_construction": settings.hnsw_ef_construction}
        rec = retriever(client, **build)
        result: dict[str, Any] = {"items": catalog.size, "build": build, "machine_busy_before": busy}
        log.info("%d items: ingest (M %s, EF_CONSTRUCTION %s)", catalog.size, *build.values())
        result["ingest"] = ingest(client, rec, catalog, settings.batch_size)
        check_text_filter(client, catalog)
        if full:
            log.info("%d items: filter cases with the library defaults", catalog.size)
            result["headline"] = run_headline(client, catalog, queries, truths, settings)
        log.info("%d items: EF_RUNTIME sweep %s", catalog.size, settings.ef_values)
        result["ef_sweep"] = run_ef_sweep(client, queries, truths, settings)
        result["smallest_ef_reaching_target"] = smallest_good_ef(result["ef_sweep"])
        if full:
            log.info("%d items: hybrid policies", catalog.size)
            hybrid_truths = {name: truth for name, truth in truths.items() if name != "none"}
            hybrid_truths.update(truth_for_cases(catalog, queries, HYBRID_CASES))
            good_ef = result["smallest_ef_reaching_target"] or max(settings.ef_values)
            efs = sorted({min(settings.ef_values), good_ef})
            result["hybrid_policy"] = run_hybrid(client, catalog, queries, hybrid_truths, efs, settings)
        result["machine_busy_after"] = machine_busy()
        return result
    finally:
        close_server(client, server)


# --- main -----------------------------------------------------------------------------------


def server_info(redis_url: str | None) -> dict[str, Any]:
    client, server = open_server(redis_url)
    try:
        blas = [f"{pool['internal_api']} {pool['version']} x{pool['num_threads']}" for pool in threadpool_info()]
        return {**machine(client), "blas": blas}
    finally:
        close_server(client, server)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="1000,10000,100000", help="catalog sizes, comma-separated")
    parser.add_argument("--queries", type=int, default=500, help="query vectors per size")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured queries before each timed run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=500, help="HSETs per pipeline")
    parser.add_argument("--ef", default="10,20,50,100,200", help="EF_RUNTIME values to sweep")
    parser.add_argument("--hnsw-m", type=int, default=None, help="M for the index (default: the library's)")
    parser.add_argument("--hnsw-ef-construction", type=int, default=None, help="EF_CONSTRUCTION (default: library)")
    parser.add_argument(
        "--sweep-build",
        action="store_true",
        help="only sweep M x EF_CONSTRUCTION at the largest size and merge it into the JSON",
    )
    parser.add_argument("--build-grid", default="16:100,16:200,16:400,32:200,32:400", help="M:EF_CONSTRUCTION pairs")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=180.0,
        help="seconds this run may spend in all waiting for other processes to leave the cores idle",
    )
    parser.add_argument("--redis-url", default=None, help="your own Redis with Search instead of a fresh local one")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "retrieval.json")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plots from the JSON, measure nothing")
    return parser.parse_args(argv)


def load_previous(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def build_sweep(args: argparse.Namespace, settings: Settings, size: int) -> list[dict[str, Any]]:
    catalog = make_catalog(size, args.seed)
    queries = make_queries(catalog, args.queries, args.seed)
    rows = []
    for pair in args.build_grid.split(","):
        m, efc = (int(x) for x in pair.split(":"))
        build_settings = replace(settings, hnsw_m=m, hnsw_ef_construction=efc)
        rows.append(run_size(catalog, queries, build_settings, args.redis_url, full=False))
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.plot_only:
        draw_plots(load_previous(args.output)["sizes"])
        return
    sizes = [int(s) for s in args.items.split(",")]
    settings = Settings(
        queries=args.queries,
        warmup=args.warmup,
        seed=args.seed,
        batch_size=args.batch_size,
        ef_values=tuple(int(e) for e in args.ef.split(",")),
        hnsw_m=args.hnsw_m,
        hnsw_ef_construction=args.hnsw_ef_construction,
    )
    QuietBudget.remaining_s = args.wait_quiet
    previous = load_previous(args.output)
    report: dict[str, Any] = {
        "benchmark": "bench/retrieval.py",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": server_info(args.redis_url),
        "parameters": {**vars(args), "output": str(args.output), "dim": DIM, "k": K},
        "targets": {
            "p50_ms_1k": 0.7,
            "p50_ms_100k_unfiltered": 1.0,
            "p50_ms_100k_filtered": FILTERED_P50_TARGET_MS,
            "numpy_over_redis_at_100k": 10,
            "recall_at_10": RECALL_TARGET,
            "ingest_items_per_s": 2000,
        },
    }
    started = time.perf_counter()
    if args.sweep_build:
        report["build_sweep"] = build_sweep(args, settings, max(sizes))
        print_build_sweep(report["build_sweep"])
        # Keep the per-size results of the last default run: one file holds everything.
        report = {**previous, "build_sweep": report["build_sweep"], "build_sweep_meta": report}
        report["build_sweep_meta"].pop("build_sweep")
    else:
        results = []
        for size in sizes:
            catalog = make_catalog(size, args.seed)
            queries = make_queries(catalog, args.queries, args.seed)
            result = {"catalog": catalog_summary(catalog), **run_size(catalog, queries, settings, args.redis_url)}
            print_size(result)
            results.append(result)
        report["sizes"] = results
        report["recommendation"] = recommendation(results)
        report["targets_at_library_defaults"] = check_targets(results, None)
        print_targets("library defaults", report["targets_at_library_defaults"])
        good_ef = report["recommendation"]["ef_runtime"]
        if good_ef is not None:
            report["targets_at_recommended_ef"] = check_targets(results, good_ef)
            print_targets(f"EF_RUNTIME {good_ef}", report["targets_at_recommended_ef"])
        if "build_sweep" in previous:
            report["build_sweep"] = previous["build_sweep"]
            report["build_sweep_meta"] = previous.get("build_sweep_meta", {})
        if not args.no_plot:
            draw_plots(results)
        report["total_seconds"] = round(time.perf_counter() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s in %.0f s", args.output, time.perf_counter() - started)


if __name__ == "__main__":
    main()
