"""Where should a product's popularity live? Measured, for issue 11.

RediSearch indexes a hash as a whole: writing any field of a `product:<id>` hash re-indexes the
document, its 384-d vector included. So a click counter kept in the product hash may cost far
more than it looks, slow down every click and disturb the HNSW graph. For each design this
script starts a fresh bundled Redis with Search, loads a catalog of products with random unit
384-d vectors into the project's index (RedisRecommender.create_index / index_products), and:

- measures recall@10 of KNN queries (candidate_retrieve, the library's EF_RUNTIME) against an
  exact numpy search, before and after the clicks;
- applies the clicks' popularity writes (Zipf-distributed over the products, pipelined in
  batches) and times them, with Redis' own microseconds per write (INFO commandstats);
- times single clicks, one round trip each: RedisRecommender.record_click alone against
  record_click followed by the design's write (interleaved, so both see the same machine);
- reads the index memory (FT.INFO, the vector index's own figure) before and after, and again
  after a forced garbage collection; and times the "top 10 popular" read where the design has
  one.

Designs (--designs keys): `hash` (HINCRBYFLOAT product:<id> popularity, a field not in the
schema), `hash-indexed` (the same field declared NUMERIC SORTABLE, so FT.SEARCH could sort or
filter by it), `hash-partial` (not in the schema, with RediSearch loaded with
PARTIAL_INDEXED_DOCS 1, which may skip re-indexing a hash when no indexed field changed; a
load-time module option, so not available on every managed Redis) and `zset` (ZINCRBY on one
sorted set beside the index).

    .venv/bin/python -m bench.popularity            # 10k products, 100k clicks (14 min at load avg 6-10)
    .venv/bin/python -m bench.popularity --quick    # 2k products, 10k clicks: about 30 s

Writes bench/results/popularity.json and bench/results/popularity.png.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis

from bench.contention import cpu_snapshot, other_cores, server_cpu_s
from bench.harness import RESULTS_DIR, ROOT, machine, percentiles, write_result
from bench.synthetic_catalog import DIM, make_catalog, product_dict
from embeddings import normalize_rows
from local_redis import LocalRedis, connect, free_port, redis_server_binary, search_module_path
from recommender import RedisRecommender, info_dict

log = logging.getLogger("bench.popularity")

K = 10
POPULARITY_FIELD = "popularity"
# The contract's key for the sorted-set design: one slot, beside the index.
ZSET_KEY = "{recommend:idx:popularity}"
# The bar: a click may get at most this much slower, and recall must not move.
CLICK_RATIO_LIMIT = 1.2
RECALL_TOLERANCE = 0.005
USERS = 100
CLICK_VARIANTS = ("today_record_click", "one_round_trip", "two_round_trips", "write_alone", "library_record_click_now")
# The last commit that changed recommender.py before record_click began counting popularity.
BASELINE_COMMIT = "23adc68"


@dataclass(frozen=True)
class Design:
    """One place for popularity: how a click writes it, and how the page would read the top."""

    key: str  # for --designs
    name: str
    write: Callable[[Any, RedisRecommender, str, float], Any]  # (client or pipeline, rec, id, weight)
    indexed_field: bool = False
    partial_indexing: bool = False
    command: str = "hincrbyfloat"  # the write's entry in INFO commandstats
    top_read: Callable[[redis.Redis, RedisRecommender], Any] | None = None


def hash_write(client: Any, rec: RedisRecommender, product_id: str, weight: float) -> Any:
    return client.hincrbyfloat(rec.product_key(product_id), POPULARITY_FIELD, weight)


def zset_write(client: Any, rec: RedisRecommender, product_id: str, weight: float) -> Any:
    return client.zincrby(ZSET_KEY, weight, product_id)


def zset_top(client: redis.Redis, rec: RedisRecommender) -> Any:
    return client.zrevrange(ZSET_KEY, 0, K - 1, withscores=True)


def indexed_top(client: redis.Redis, rec: RedisRecommender) -> Any:
    return client.execute_command(
        "FT.SEARCH", rec.index_name, "*", "SORTBY", POPULARITY_FIELD, "DESC",
        "RETURN", "1", POPULARITY_FIELD, "LIMIT", "0", str(K), "DIALECT", "2",
    )  # fmt: skip


DESIGNS = (
    Design("hash", "hash field", hash_write),
    Design("hash-indexed", "hash field, indexed", hash_write, indexed_field=True, top_read=indexed_top),
    Design("hash-partial", "hash field, partial indexing", hash_write, partial_indexing=True),
    Design("zset", "sorted set", zset_write, command="zincrby", top_read=zset_top),
)


# --- servers --------------------------------------------------------------------------------


@contextmanager
def search_server(partial_indexing: bool) -> Iterator[str]:
    """A fresh bundled Redis with Search; with partial_indexing, the same binaries started with
    the module option PARTIAL_INDEXED_DOCS 1, which LocalRedis has no way to pass (RediSearch
    refuses it at run time: "Not modifiable at runtime")."""
    if not partial_indexing:
        with LocalRedis() as server:
            yield server.url
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="redis-partial-") as data_dir:
        process = subprocess.Popen(
            [str(redis_server_binary()), "--bind", "127.0.0.1", "--port", str(port), "--dir", data_dir,
             "--save", "", "--appendonly", "no", "--loglevel", "warning",
             "--loadmodule", str(search_module_path()), "PARTIAL_INDEXED_DOCS", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            url = f"redis://127.0.0.1:{port}"
            deadline = time.monotonic() + 15
            while True:
                try:
                    connect(url).close()
                    break
                except redis.ConnectionError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(
                            f"redis-server with PARTIAL_INDEXED_DOCS did not start on port {port}"
                        ) from None
                    time.sleep(0.05)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=15)


# --- data -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    products: list[dict[str, Any]]
    vectors: np.ndarray  # (n, DIM) unit rows, the products' embeddings
    queries: np.ndarray  # (q, DIM) unit rows
    truth: list[set[int]]  # exact top-K ids per query
    clicks: np.ndarray  # product indices of the bulk clicks, Zipf-distributed
    sample_clicks: np.ndarray  # product indices of the timed single clicks


def make_workload(items: int, clicks: int, samples: int, queries: int, seed: int) -> Workload:
    """The synthetic catalog's fields with random unit vectors (the issue's setting), queries
    half near an item and half random, and a Zipf-like click distribution: a few products take
    most clicks, as on a real shop, so the same hashes are rewritten again and again."""
    rng = np.random.default_rng(seed)
    vectors = normalize_rows(rng.standard_normal((items, DIM), dtype=np.float32))
    catalog = make_catalog(items, seed)
    products = [{**product_dict(catalog, i), "embedding": vectors[i]} for i in range(items)]
    near = queries // 2
    query_vectors = normalize_rows(
        np.concatenate(
            [
                vectors[rng.integers(0, items, near)] + 0.7 * normalize_rows(rng.standard_normal((near, DIM))),
                rng.standard_normal((queries - near, DIM)),
            ]
        )
    )
    scores = query_vectors @ vectors.T
    truth = [set(np.argsort(-row, kind="stable")[:K].tolist()) for row in scores]
    weights = 1.0 / np.arange(1, items + 1) ** 0.9
    order = rng.permutation(items)
    p = weights / weights.sum()
    return Workload(
        products=products,
        vectors=vectors,
        queries=query_vectors,
        truth=truth,
        clicks=order[rng.choice(items, clicks, p=p)],
        sample_clicks=order[rng.choice(items, samples, p=p)],
    )


# --- measurements ---------------------------------------------------------------------------


def recall_at_k(rec: RedisRecommender, workload: Workload) -> float:
    found = [{int(c.id) for c in rec.candidate_retrieve(q, k=K)} for q in workload.queries]
    return round(float(np.mean([len(f & t) / K for f, t in zip(found, workload.truth, strict=True)])), 4)


def vecsim_info(client: redis.Redis, rec: RedisRecommender) -> dict[str, Any]:
    """The HNSW layer's own view (FT.DEBUG VECSIM_INFO): its memory and how many vectors it
    holds marked deleted, waiting to be swept out of the graph."""
    raw = client.execute_command("FT.DEBUG", "VECSIM_INFO", rec.index_name, "embedding")
    top = info_dict(raw)
    backend = info_dict(top.get("BACKEND_INDEX") or [])
    return {
        "vecsim_memory_mb": round(int(top.get("MEMORY", 0)) / 2**20, 3),
        "hnsw_marked_deleted": int(backend.get("NUMBER_OF_MARKED_DELETED", 0)),
        "hnsw_index_size": int(backend.get("INDEX_SIZE", 0)),
    }


def index_stats(client: redis.Redis, rec: RedisRecommender) -> dict[str, Any]:
    info = info_dict(client.execute_command("FT.INFO", rec.index_name))
    return {
        "num_docs": int(info["num_docs"]),
        # Every re-index gives the document a new internal id: this counts them.
        "max_doc_id": int(info["max_doc_id"]),
        "vector_index_sz_mb": round(float(info["vector_index_sz_mb"]), 3),
        "total_index_memory_sz_mb": round(float(info.get("total_index_memory_sz_mb", 0)), 3),
        "inverted_sz_mb": round(float(info["inverted_sz_mb"]), 3),
        "doc_table_size_mb": round(float(info["doc_table_size_mb"]), 3),
        "used_memory_mb": round(int(client.info("memory")["used_memory"]) / 2**20, 2),
        **vecsim_info(client, rec),
    }


def command_usec(client: redis.Redis, command: str) -> float | None:
    stats = client.info("commandstats").get(f"cmdstat_{command}")
    return round(float(stats["usec_per_call"]), 2) if stats else None


def bulk_writes(client: redis.Redis, rec: RedisRecommender, design: Design, clicks: np.ndarray, batch: int) -> dict:
    """Every click's popularity write, pipelined `batch` at a time (the bulk of a busy shop)."""
    client.config_resetstat()
    cpu_before, snapshot = server_cpu_s(client), cpu_snapshot(client)
    started = time.perf_counter()
    for start in range(0, len(clicks), batch):
        pipe = client.pipeline(transaction=False)
        for index in clicks[start : start + batch]:
            design.write(pipe, rec, str(index), 1.0)
        pipe.execute()
    rec.wait_until_indexed(timeout_s=600)
    seconds = time.perf_counter() - started
    return {
        "writes": len(clicks),
        "batch": batch,
        "seconds": round(seconds, 3),
        "writes_per_s": round(len(clicks) / seconds, 1),
        "server_usec_per_write": command_usec(client, design.command),
        "server_main_thread_busy": round((server_cpu_s(client) - cpu_before) / seconds, 3),
        "other_load_cores": other_cores(snapshot, cpu_snapshot(client)),
    }


def timed(call: Callable[..., Any], *args: Any) -> float:
    started = time.perf_counter()
    call(*args)
    return (time.perf_counter() - started) * 1000


def click_then_write(client: redis.Redis, rec: Any, design: Design, user: str, product_id: str) -> None:
    rec.record_click(user, product_id)
    design.write(client, rec, product_id, 1.0)


def one_trip_clicker(today_class: type, client: redis.Redis, design: Design) -> Any:
    """Today's record_click with the design's write in the same round trip: its click script
    and the write go out in one pipeline. The click script is sent by EVALSHA directly (it is
    loaded by then): a redis-py Script run in a pipeline first asks SCRIPT EXISTS, a round trip
    of its own on every execute. This relies on the baseline's private `_record_click(keys=,
    args=)`, which cannot change: the baseline is a fixed commit."""
    rec = today_class(client)
    script = rec._record_click

    def click_and_write(keys: list[str], args: list[Any]) -> Any:
        pipe = rec.redis.pipeline(transaction=False)
        pipe.evalsha(script.sha, len(keys), *keys, *args)
        design.write(pipe, rec, keys[0][len(rec.key_prefix) :], 1.0)
        return pipe.execute()[0]

    rec._record_click = click_and_write
    return rec


def click_latency(
    client: redis.Redis, today_class: type, rec: RedisRecommender, design: Design, sample_clicks: np.ndarray
) -> dict:
    """One click at a time, as /click does it, five ways interleaved sample by sample (so all
    see the same machine): today's record_click alone; with the design's write in the same
    round trip; followed by the write in a second round trip; the write alone; and the
    library's record_click as it is now (which may count popularity already, among other new
    work). The two libraries click for different users: their user keys differ."""
    today, one_trip = today_class(client), one_trip_clicker(today_class, client, design)
    times: dict[str, list[float]] = {name: [] for name in CLICK_VARIANTS}
    for n, index in enumerate(sample_clicks[:20]):  # warm the connection and load the scripts
        today.record_click(f"warm-today-{n % 4}", str(index))
        rec.record_click(f"warm-now-{n % 4}", str(index))
    gc.collect()
    gc.disable()
    snapshot = cpu_snapshot(client)
    try:
        for n, index in enumerate(sample_clicks):
            product_id, user = str(index), f"user-{n % USERS}"
            times["today_record_click"].append(timed(today.record_click, f"today-{user}", product_id))
            times["one_round_trip"].append(timed(one_trip.record_click, f"today-{user}", product_id))
            times["two_round_trips"].append(timed(click_then_write, client, today, design, f"today-{user}", product_id))
            times["write_alone"].append(timed(design.write, client, rec, product_id, 1.0))
            times["library_record_click_now"].append(timed(rec.record_click, f"now-{user}", product_id))
    finally:
        gc.enable()
    out: dict[str, Any] = {"samples": len(sample_clicks)}
    out.update({name: percentiles(values) for name, values in times.items()})
    today_p50 = out["today_record_click"]["p50_ms"]
    for name in ("one_round_trip", "two_round_trips", "library_record_click_now"):
        out[f"ratio_p50_{name}"] = round(out[name]["p50_ms"] / today_p50, 3)
    out["other_load_cores"] = other_cores(snapshot, cpu_snapshot(client))
    return out


def top_read_latency(client: redis.Redis, rec: RedisRecommender, design: Design, samples: int) -> dict | None:
    """The page's "popular now" list: the 10 most popular products, if the design can say."""
    if design.top_read is None:
        return None
    design.top_read(client, rec)
    return percentiles([timed(design.top_read, client, rec) for _ in range(samples)])


def library_writes_popularity(client: redis.Redis, rec: RedisRecommender, product_id: str) -> list[str]:
    """Keys a click creates besides the user's: if the library's record_click already counts
    popularity itself, every "alone" figure below includes that write, and this says so."""
    before = set(client.scan_iter(count=10_000))
    rec.record_click("probe", product_id)
    created = set(client.scan_iter(count=10_000)) - before
    return sorted(k.decode() for k in created if b"probe" not in k)


def run_design(design: Design, workload: Workload, batch: int, today_class: type) -> dict[str, Any]:
    load_start = round(os.getloadavg()[0], 2)
    with search_server(design.partial_indexing) as url:
        client = connect(url, timeout_s=300)
        try:
            rec = RedisRecommender(client)
            rec.create_index()
            if design.indexed_field:
                client.execute_command(
                    "FT.ALTER", rec.index_name, "SCHEMA", "ADD", POPULARITY_FIELD, "NUMERIC", "SORTABLE"
                )
            started = time.perf_counter()
            rec.index_products(workload.products)
            rec.wait_until_indexed(timeout_s=600)
            load_s = time.perf_counter() - started
            log.info("%s: %d products loaded in %.1f s", design.name, len(workload.products), load_s)
            before = index_stats(client, rec)
            recall_before = recall_at_k(rec, workload)
            library_keys = library_writes_popularity(client, rec, str(workload.sample_clicks[0]))
            log.info("%s: %d popularity writes", design.name, len(workload.clicks))
            bulk = bulk_writes(client, rec, design, workload.clicks, batch)
            after = index_stats(client, rec)
            recall_after = recall_at_k(rec, workload)
            client.execute_command("FT.DEBUG", "GC_FORCEINVOKE", rec.index_name)
            after_gc = index_stats(client, rec)
            recall_after_gc = recall_at_k(rec, workload)
            log.info("%s: %d single clicks", design.name, len(workload.sample_clicks))
            clicks = click_latency(client, today_class, rec, design, workload.sample_clicks)
            top = top_read_latency(client, rec, design, min(500, len(workload.sample_clicks)))
        finally:
            client.close()
    result = {
        "design": design.name,
        "key": design.key,
        "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        "load_seconds": round(load_s, 2),
        "library_click_creates_keys": library_keys,
        "bulk": bulk,
        "recall_at_10": {"before": recall_before, "after": recall_after, "after_gc": recall_after_gc},
        "index": {"before": before, "after": after, "after_gc": after_gc},
        "click": clicks,
        "top_10_read": top,
    }
    result["verdict"] = verdict(result)
    return result


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    recall = result["recall_at_10"]
    recall_ok = min(recall["after"], recall["after_gc"]) >= recall["before"] - RECALL_TOLERANCE
    click_ok = result["click"]["ratio_p50_one_round_trip"] <= CLICK_RATIO_LIMIT
    return {
        "click_within_limit": click_ok,
        "recall_unchanged": recall_ok,
        "top_n_readable": result["top_10_read"] is not None,
        "passes": click_ok and recall_ok,
    }


# --- report ---------------------------------------------------------------------------------


def print_table(results: list[dict[str, Any]]) -> None:
    print(
        f"\n{'design':29s} {'writes/s':>9s} {'us/write':>8s} {'today':>6s} {'1 trip':>6s} {'x':>5s} "
        f"{'2 trips':>6s} {'x':>5s} {'lib now':>7s} {'recall@10':>11s} {'vector MB':>11s} {'index MB':>11s} "
        f"{'max_doc_id':>10s} {'top10':>6s}  verdict"
    )
    for r in results:
        before, after, click, recall = r["index"]["before"], r["index"]["after_gc"], r["click"], r["recall_at_10"]
        v = r["verdict"]
        top = f"{r['top_10_read']['p50_ms']:.3f}" if r["top_10_read"] else "-"
        notes = [] if v["click_within_limit"] else [f"click > {CLICK_RATIO_LIMIT}x"]
        notes += [] if v["recall_unchanged"] else ["recall moved"]
        notes += [] if v["top_n_readable"] else ["no top-N read"]
        print(
            f"{r['design']:29s} {r['bulk']['writes_per_s']:9,.0f} {r['bulk']['server_usec_per_write'] or 0:8.1f} "
            f"{click['today_record_click']['p50_ms']:6.3f} {click['one_round_trip']['p50_ms']:6.3f} "
            f"{click['ratio_p50_one_round_trip']:5.2f} {click['two_round_trips']['p50_ms']:6.3f} "
            f"{click['ratio_p50_two_round_trips']:5.2f} "
            f"{click['library_record_click_now']['p50_ms']:7.3f} {recall['before']:.3f}->{recall['after']:.3f} "
            f"{before['vector_index_sz_mb']:5.1f}->{after['vector_index_sz_mb']:<5.1f} "
            f"{before['total_index_memory_sz_mb']:5.2f}->{after['total_index_memory_sz_mb']:<5.2f} "
            f"{r['index']['after']['max_doc_id']:>10,} {top:>6s}  {'PASS' if v['passes'] else 'fail'} {', '.join(notes)}"
        )
    print(
        "writes/s: the pipelined bulk; us/write: Redis' own time per write (INFO commandstats); click p50 in ms: today's\n"
        "record_click alone, with the write in the same round trip, followed by it in a second round trip, and the\n"
        "library's record_click as it is now; recall@10 before -> after the writes; memory before -> after the writes\n"
        "and a GC; "
        "max_doc_id counts re-indexed documents; top10: p50 ms of reading the 10 most popular."
    )


def plot(results: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["design"].replace(", ", ",\n") for r in results]
    x = np.arange(len(results))
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.8))
    today = [r["click"]["today_record_click"]["p50_ms"] for r in results]
    two_trips = [r["click"]["two_round_trips"]["p50_ms"] for r in results]
    one_trip = [r["click"]["one_round_trip"]["p50_ms"] for r in results]
    left.bar(x - 0.27, today, 0.27, label="today's record_click")
    left.bar(x, one_trip, 0.27, label="+ write, same round trip")
    left.bar(x + 0.27, two_trips, 0.27, label="+ write, second round trip")
    for i, a in enumerate(today):
        left.hlines(a * CLICK_RATIO_LIMIT, i - 0.45, i + 0.45, colors="grey", linestyles="dashed")
    left.set_title(f"click p50 (ms); dashes: {CLICK_RATIO_LIMIT}x today's")
    middle.bar(x, [r["bulk"]["writes_per_s"] for r in results], color="tab:green")
    middle.set_yscale("log")
    middle.set_title("popularity writes/s, pipelined (log scale)")
    right.bar(x - 0.2, [r["recall_at_10"]["before"] for r in results], 0.4, label="before")
    right.bar(x + 0.2, [r["recall_at_10"]["after"] for r in results], 0.4, label="after the writes")
    low = min(min(r["recall_at_10"].values()) for r in results)
    right.set_ylim(max(0.0, low - 0.05), 1.0)
    right.set_title("recall@10 against exact numpy")
    for ax in (left, middle, right):
        ax.set_xticks(x, names, fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    left.legend(fontsize=7.5)
    right.legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def git_state() -> dict[str, Any]:
    """Which library was measured: the commit, and whether recommender.py had local edits."""
    head = git("rev-parse", "--short", "HEAD")
    return {"commit": head, "recommender_py_edited": bool(git("status", "--short", "recommender.py"))}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def baseline_recommender(commit: str) -> type[RedisRecommender]:
    """RedisRecommender as it was at `commit`, before clicks counted popularity: "today's"
    click, measured in the same run and on the same Redis as the designs, so their ratios do
    not depend on how busy the machine was between two runs."""
    try:
        source = git("show", f"{commit}:recommender.py")
    except subprocess.CalledProcessError as exc:
        raise SystemExit(
            f"cannot read recommender.py at {commit!r} ({exc.stderr.strip()}): pass --baseline-commit"
        ) from None
    module = types.ModuleType(f"recommender_at_{commit}")
    module.__file__ = f"{commit}:recommender.py"
    sys.modules[module.__name__] = module  # dataclasses look their module up while the class is built
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module.RedisRecommender


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2k products, 10k clicks, 300 samples, 100 queries")
    parser.add_argument("--items", type=int, default=None, help="products (default 10,000)")
    parser.add_argument("--clicks", type=int, default=None, help="bulk popularity writes (default 100,000)")
    parser.add_argument("--samples", type=int, default=None, help="timed single clicks per variant (default 2,000)")
    parser.add_argument("--queries", type=int, default=None, help="KNN queries for recall (default 200)")
    parser.add_argument("--batch", type=int, default=1000, help="writes per pipeline in the bulk")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--baseline-commit",
        default=BASELINE_COMMIT,
        help="the commit whose record_click is today's click (default: the last before clicks counted popularity)",
    )
    parser.add_argument(
        "--designs", default=None, help=f"comma-separated subset of {','.join(d.key for d in DESIGNS)} (default: all)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "popularity.json")
    args = parser.parse_args(argv)
    quick = {"items": 2000, "clicks": 10_000, "samples": 300, "queries": 100}
    full = {"items": 10_000, "clicks": 100_000, "samples": 2000, "queries": 200}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.items, args.clicks, args.samples, args.queries, args.batch) < 1:
        parser.error("--items, --clicks, --samples, --queries and --batch must be positive")
    if args.items < K:
        parser.error(f"--items must be at least {K}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    designs = list(DESIGNS)
    if args.designs:
        wanted = [key.strip() for key in args.designs.split(",") if key.strip()]
        unknown = [key for key in wanted if key not in {d.key for d in DESIGNS}]
        if unknown:
            raise SystemExit(f"unknown design(s) {unknown}: choose from {','.join(d.key for d in DESIGNS)}")
        designs = [d for d in DESIGNS if d.key in wanted]
    workload = make_workload(args.items, args.clicks, args.samples, args.queries, args.seed)
    with LocalRedis() as server:
        about = machine(connect(server.url))
    today_class = baseline_recommender(args.baseline_commit)
    results = [run_design(design, workload, args.batch, today_class) for design in designs]
    print_table(results)
    winners = [r["design"] for r in results if r["verdict"]["passes"] and r["verdict"]["top_n_readable"]]
    print(f"passes the issue's bar and can list the top products: {', '.join(winners) or 'none'}")
    command = "python -m bench.popularity " + " ".join(argv if argv is not None else sys.argv[1:])
    write_result(
        args.output,
        {
            "benchmark": "bench/popularity.py",
            "command": command.strip(),
            "machine": about,
            "library": git_state(),
            "baseline_commit": args.baseline_commit,
            "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "limits": {"click_ratio_p50": CLICK_RATIO_LIMIT, "recall_tolerance": RECALL_TOLERANCE},
            "designs": results,
            "passing_with_top_n": winners,
        },
    )
    png = args.output.with_suffix(".png")
    plot(results, png, f"Popularity writes: {args.items:,} products, {args.clicks:,} clicks ({command.strip()})")
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
