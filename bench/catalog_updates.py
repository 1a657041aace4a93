"""What does a price or stock update cost at 100k products? Measured, for issue 21.

RediSearch re-indexes a whole hash, its vector included, on any write to it. An HSET of one
price then costs a delete and a re-insert in the HNSW graph, on Redis' main thread, where every
search waits its turn. Two designs are measured in one run, phases interleaved with idle ones so
that all see the same machine:

- `hash`: HSET price and in_stock in the product hash itself. Searches stay one FT.SEARCH with
  the price and stock pre-filter (candidate_retrieve, the library's query).
- `library`: the chosen design (`hash`) as the library runs it, RedisRecommender.update_product,
  one round trip per update, flat out; and the same with unchanged values (the library's Lua
  compares and writes nothing, so Redis re-indexes nothing).
- `side`: price and in_stock also in a hash of their own per product (`<prefix>offer:<id>`),
  indexed by a second index without a vector. An update never touches the vector index, but a
  search can no longer pre-filter on price and stock: it asks the vector index for
  k x OVERFETCH neighbours with the category filter, reads their offers (a second round trip),
  and keeps the first k that pass.

For each design: updates/s with a writer process going flat out (pipelined, BATCH per round
trip), and a paced stream (PACED_RATE single updates/s, a shop's live feed); meanwhile one
client searches (filter: category + in stock + price band, k = 10) and its p50/p99 are
compared with idle phases of the same run. Recall@10 against an exact numpy search: both
query strategies before any write, and the `hash` strategy again after its writes (HNSW churn).

The writer rewrites each product's current price and stock: the index does the same work as
for a new value (any HSET re-indexes: max_doc_id grows by one per write, recorded), and the
exact ground truth stays valid after the writes.

    .venv/bin/python -m bench.catalog_updates              # 100k products, 20 s phases (~6 min)
    .venv/bin/python -m bench.catalog_updates --quick      # 5k products, 4 s phases

Writes bench/results/catalog_updates.json and .png.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis
from redis.typing import EncodableT, FieldT

from bench.contention import cpu_snapshot, other_cores, server_cpu_s
from bench.harness import RESULTS_DIR, machine, percentiles, write_result
from bench.retrieval import exact_top_k, pack_batches, recall_at_k, wait_indexed, write_batches
from bench.synthetic_catalog import (
    CATEGORIES,
    DIM,
    FILTER_CASES,
    Catalog,
    FilterSpec,
    make_catalog,
    make_queries,
    specs_for,
)
from local_redis import LocalRedis, connect
from recommender import RedisRecommender, SearchFilters, info_dict, knn_query, vector_to_bytes

log = logging.getLogger("bench.catalog_updates")

K = 10
OVERFETCH = 4
BATCH = 50
PACED_RATE = 100.0
INDEX_NAME = "bench:updates:idx"
KEY_PREFIX = "bench:product:"
OFFER_PREFIX = "bench:offer:"
OFFER_INDEX = "bench:offer:idx"
FILTER_CASE = "cat+stock+price"


# --- the two designs' writes and searches -----------------------------------------------------


def offer_fields(catalog: Catalog, i: int) -> dict[FieldT, EncodableT]:
    return {"price": repr(float(catalog.price[i])), "in_stock": "true" if catalog.in_stock[i] else "false"}


def load_offers(client: redis.Redis, catalog: Catalog) -> None:
    client.execute_command(
        "FT.CREATE", OFFER_INDEX, "ON", "HASH", "PREFIX", "1", OFFER_PREFIX,
        "SCHEMA", "price", "NUMERIC", "SORTABLE", "in_stock", "TAG",
    )  # fmt: skip
    for start in range(0, catalog.size, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + 1000, catalog.size)):
            pipe.hset(f"{OFFER_PREFIX}{i}", mapping=offer_fields(catalog, i))
        pipe.execute()


def search_hash(rec: RedisRecommender, query: np.ndarray, spec: FilterSpec) -> list[int]:
    """Design `hash`: the library's one FT.SEARCH, price and stock pre-filtered."""
    return [int(c.id) for c in rec.candidate_retrieve(query, k=K, **spec.kwargs())]


def search_side(rec: RedisRecommender, query: np.ndarray, spec: FilterSpec) -> list[int]:
    """Design `side`: KNN with what the vector index still holds (the category), then the
    offers of k x OVERFETCH neighbours, filtered in the client."""
    clause = SearchFilters(category=CATEGORIES[spec.category][0] if spec.category is not None else None).clause()
    knn, params = knn_query(clause, K * OVERFETCH, rec.ef_runtime, None)
    params["vec"] = vector_to_bytes(query, DIM)
    reply = rec.redis.execute_command(
        "FT.SEARCH", rec.index_name, knn, "PARAMS", str(2 * len(params)), *[x for p in params.items() for x in p],
        "RETURN", "2", "name", "vector_score", "SORTBY", "vector_score", "LIMIT", "0", str(K * OVERFETCH),
        "DIALECT", "2",
    )  # fmt: skip
    results = reply[b"results"] if isinstance(reply, dict) else [{b"id": reply[i]} for i in range(1, len(reply), 2)]
    ids = [int(r[b"id"].decode()[len(KEY_PREFIX) :]) for r in results]
    pipe = rec.redis.pipeline(transaction=False)
    for i in ids:
        pipe.hmget(f"{OFFER_PREFIX}{i}", ["price", "in_stock"])
    kept = []
    for i, (price, stock) in zip(ids, pipe.execute(), strict=True):
        if spec.in_stock and stock != b"true":
            continue
        if spec.price is not None and not spec.price[0] <= float(price) <= spec.price[1]:
            continue
        kept.append(i)
    return kept[:K]


SEARCHES: dict[str, Callable[[RedisRecommender, np.ndarray, FilterSpec], list[int]]] = {
    "hash": search_hash,
    "side": search_side,
}


# --- the writer: its own process, so that it never holds the searcher's GIL -------------------


@dataclass(frozen=True)
class WriterPlan:
    url: str
    design: str  # hash | side | library | library-unchanged
    rate: float | None  # updates per second, None: flat out in pipelined batches
    seconds: float
    seed: int


def library_writer(plan: WriterPlan, catalog: Catalog, client: redis.Redis) -> tuple[int, list[float]]:
    """The chosen design as the library runs it: update_product, one round trip per update
    (its Lua compares and writes only changed fields). `library` moves each price by a cent
    and back, so every update changes the hash; `library-unchanged` sends the stored values,
    which the script leaves alone (no re-indexing)."""
    rec = RedisRecommender(client, index_name=INDEX_NAME, key_prefix=KEY_PREFIX, vector_dim=DIM)
    rng = random.Random(plan.seed)
    moved: dict[int, bool] = {}
    written, latencies = 0, []
    deadline = time.perf_counter() + plan.seconds
    next_at = time.perf_counter()
    while time.perf_counter() < deadline:
        i = rng.randrange(catalog.size)
        if plan.design == "library":
            moved[i] = not moved.get(i, False)
        price = round(float(catalog.price[i]) + (0.01 if moved.get(i) else 0.0), 2)
        started = time.perf_counter()
        rec.update_product(str(i), price=price, in_stock=bool(catalog.in_stock[i]))
        latencies.append((time.perf_counter() - started) * 1000)
        written += 1
        if plan.rate is not None:
            next_at += 1.0 / plan.rate
            time.sleep(max(0.0, next_at - time.perf_counter()))
    return written, latencies


def writer_main(plan: WriterPlan, catalog: Catalog, results: Any) -> None:
    client = connect(plan.url, timeout_s=60)
    if plan.design.startswith("library"):
        written, latencies = library_writer(plan, catalog, client)
        results.put({"written": written, "latencies_ms": latencies})
        client.close()
        return
    rng = random.Random(plan.seed)
    prefix = KEY_PREFIX if plan.design == "hash" else OFFER_PREFIX
    written, latencies = 0, []
    deadline = time.perf_counter() + plan.seconds
    next_at = time.perf_counter()
    while time.perf_counter() < deadline:
        if plan.rate is None:
            pipe = client.pipeline(transaction=False)
            for _ in range(BATCH):
                i = rng.randrange(catalog.size)
                pipe.hset(f"{prefix}{i}", mapping=offer_fields(catalog, i))
            pipe.execute()
            written += BATCH
            continue
        i = rng.randrange(catalog.size)
        started = time.perf_counter()
        client.hset(f"{prefix}{i}", mapping=offer_fields(catalog, i))
        latencies.append((time.perf_counter() - started) * 1000)
        written += 1
        next_at += 1.0 / plan.rate
        time.sleep(max(0.0, next_at - time.perf_counter()))
    results.put({"written": written, "latencies_ms": latencies})
    client.close()


# --- phases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    name: str
    search: str  # which design's search runs
    writer: str | None  # which design's writes stream meanwhile
    rate: float | None = None


def run_phase(
    phase: Phase,
    rec: RedisRecommender,
    catalog: Catalog,
    queries: np.ndarray,
    specs: list[FilterSpec],
    url: str,
    seconds: float,
    seed: int,
) -> dict[str, Any]:
    client = rec.redis
    assert isinstance(client, redis.Redis)  # one Redis, whose CPU is measured
    client.config_resetstat()
    max_doc_before = int(info_dict(client.execute_command("FT.INFO", INDEX_NAME))["max_doc_id"])
    snapshot, server_0 = cpu_snapshot(client), server_cpu_s(client)
    results: Any = multiprocessing.get_context("fork").Queue()
    writer = None
    if phase.writer is not None:
        plan = WriterPlan(url, phase.writer, phase.rate, seconds, seed)
        writer = multiprocessing.get_context("fork").Process(target=writer_main, args=(plan, catalog, results))
        writer.start()
    search = SEARCHES[phase.search]
    times: list[float] = []
    started = time.perf_counter()
    n = 0
    while time.perf_counter() - started < seconds:
        q = n % len(queries)
        t0 = time.perf_counter()
        search(rec, queries[q], specs[q])
        times.append((time.perf_counter() - t0) * 1000)
        n += 1
    wall = time.perf_counter() - started
    out: dict[str, Any] = {
        "phase": phase.name,
        "search_design": phase.search,
        "writer": phase.writer,
        "rate": phase.rate,
    }
    if writer is not None:
        report = results.get(timeout=seconds + 120)
        writer.join(timeout=60)
        wall = max(wall, time.perf_counter() - started)
        out["updates"] = report["written"]
        out["updates_per_s"] = round(report["written"] / wall, 1)
        if report["latencies_ms"]:
            out["update_latency"] = percentiles(report["latencies_ms"])
        stats = client.info("commandstats")
        command = (
            stats.get("cmdstat_evalsha") if (phase.writer or "").startswith("library") else stats.get("cmdstat_hset")
        )
        out["server_usec_per_write"] = round(float(command["usec_per_call"]), 1) if command else None
    out["searches"] = len(times)
    out["searches_per_s"] = round(len(times) / wall, 1)
    out["search"] = percentiles(times)
    out["reindexed_docs"] = int(info_dict(client.execute_command("FT.INFO", INDEX_NAME))["max_doc_id"]) - max_doc_before
    out["server_main_thread_busy"] = round((server_cpu_s(client) - server_0) / wall, 3)
    out["other_load_cores"] = other_cores(snapshot, cpu_snapshot(client))
    out["load_average_1min"] = round(os.getloadavg()[0], 2)
    log.info(
        "%-22s search p50 %.2f p99 %.2f ms (%d)  updates/s %s",
        phase.name,
        out["search"]["p50_ms"],
        out["search"]["p99_ms"],
        len(times),
        out.get("updates_per_s", "-"),
    )
    return out


def phases(rate: float) -> list[Phase]:
    return [
        Phase("idle (hash search)", "hash", None),
        Phase("hash: flat out", "hash", "hash"),
        Phase("idle (side search)", "side", None),
        Phase("side: flat out", "side", "side"),
        Phase("idle (hash search) 2", "hash", None),
        Phase(f"hash: {rate:g}/s", "hash", "hash", rate),
        Phase("idle (side search) 2", "side", None),
        Phase(f"side: {rate:g}/s", "side", "side", rate),
        Phase("idle (hash search) 3", "hash", None),
        Phase("library update_product", "hash", "library"),
        Phase("idle (hash search) 4", "hash", None),
        Phase("library, unchanged values", "hash", "library-unchanged"),
    ]


def recall(rec: RedisRecommender, design: str, queries: np.ndarray, specs: list[FilterSpec], truth: list) -> float:
    found = [SEARCHES[design](rec, q, s) for q, s in zip(queries, specs, strict=True)]
    return recall_at_k(found, truth, K) or 0.0


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios within the run: each design's search p99 while its writes stream, over the mean
    p99 of the idle phases that ran its search."""
    summary: dict[str, Any] = {}
    for design in ("hash", "side", "library", "library-unchanged"):
        search = "side" if design == "side" else "hash"
        idle = [r["search"]["p99_ms"] for r in results if r["writer"] is None and r["search_design"] == search]
        idle_p99 = float(np.mean(idle))
        summary[design] = {"idle_p99_ms": round(idle_p99, 3)}
        for r in results:
            if r["writer"] == design:
                mode = "paced" if r["rate"] else "flat_out"
                summary[design][mode] = {
                    "updates_per_s": r["updates_per_s"],
                    "search_p99_ms": r["search"]["p99_ms"],
                    "p99_ratio_to_idle": round(r["search"]["p99_ms"] / idle_p99, 2),
                    "server_usec_per_write": r["server_usec_per_write"],
                }
    return summary


def print_table(results: list[dict[str, Any]]) -> None:
    print(
        f"\n{'phase':24} {'updates/s':>10} {'µs/write':>9} {'search/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'other cores':>11}"
    )
    for r in results:
        usec = r.get("server_usec_per_write")
        print(
            f"{r['phase']:24} {r.get('updates_per_s', '-')!s:>10} {usec if usec is not None else '-'!s:>9} "
            f"{r['searches_per_s']:>9} {r['search']['p50_ms']:>8.2f} {r['search']['p99_ms']:>8.2f} "
            f"{r['other_load_cores']:>11}"
        )


def plot(results: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [r["phase"] for r in results]
    left.barh(
        names, [r["search"]["p99_ms"] for r in results], color=["grey" if not r["writer"] else "C1" for r in results]
    )
    left.set_xlabel("search p99 (ms)")
    left.invert_yaxis()
    writes = [r for r in results if r["writer"]]
    right.barh([r["phase"] for r in writes], [r["updates_per_s"] for r in writes], color="C0")
    right.set_xscale("log")
    right.set_xlabel("updates/s (log)")
    right.invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--rate", type=float, default=PACED_RATE, help="updates/s of the paced phases")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="5k products, 4 s phases: a smoke run")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "catalog_updates.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    if args.quick:
        args.products, args.seconds, args.queries = 5000, 4.0, 100
    catalog = make_catalog(args.products, args.seed)
    query_set = make_queries(catalog, args.queries, args.seed)
    specs = specs_for(FILTER_CASES[FILTER_CASE], query_set)
    truth = [exact_top_k(catalog, q, s, K) for q, s in zip(query_set.vectors, specs, strict=True)]
    with LocalRedis() as server:
        client = connect(server.url, timeout_s=120)
        rec = RedisRecommender(client, index_name=INDEX_NAME, key_prefix=KEY_PREFIX, vector_dim=DIM)
        info = machine(client)
        batches, _ = pack_batches(rec, catalog, 500)
        rec.create_index()
        started = time.perf_counter()
        write_batches(rec, batches, catalog.size)
        wait_indexed(rec, catalog.size)
        load_s = time.perf_counter() - started
        del batches
        load_offers(client, catalog)
        log.info("%d products loaded in %.1f s", catalog.size, load_s)
        recall_before = {design: recall(rec, design, query_set.vectors, specs, truth) for design in SEARCHES}
        results = [
            run_phase(phase, rec, catalog, query_set.vectors, specs, server.url, args.seconds, args.seed + n)
            for n, phase in enumerate(phases(args.rate))
        ]
        recall_after = recall(rec, "hash", query_set.vectors, specs, truth)
        memory_mb = round(int(client.info("memory")["used_memory"]) / 2**20, 1)
        client.close()
    summary = summarise(results)
    print_table(results)
    print(f"\nrecall@10 before writes: {recall_before}; hash design after its writes: {recall_after}")
    for design, figures in summary.items():
        print(design, figures)
    result = {
        "benchmark": "catalog_updates",
        "command": "python -m bench.catalog_updates" + (" --quick" if args.quick else ""),
        "machine": info,
        "parameters": {
            "products": catalog.size,
            "phase_seconds": args.seconds,
            "paced_rate": args.rate,
            "batch": BATCH,
            "overfetch": OVERFETCH,
            "filter_case": FILTER_CASE,
            "queries": args.queries,
            "ef_runtime": rec.ef_runtime,
        },
        "load_seconds": round(load_s, 1),
        "used_memory_mb": memory_mb,
        "recall_at_10": {"before_writes": recall_before, "hash_after_writes": recall_after},
        "phases": results,
        "summary": summary,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    write_result(args.output, result)
    plot(results, args.output.with_suffix(".png"), f"price/stock updates at {catalog.size:,} products")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
