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
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis
from threadpoolctl import threadpool_info, threadpool_limits
from tqdm import tqdm

from bench.harness import ROOT, machine, percentiles
from local_redis import LocalRedis, connect
from recommender import RedisRecommender, info_dict, product_to_hash

log = logging.getLogger("bench.retrieval")

DIM = 384
K = 10
RESULTS_DIR = ROOT / "bench" / "results"
INDEX_NAME = "bench:retrieval:idx"
# Our own prefix, so that --redis-url never touches a user's `product:` keys.
KEY_PREFIX = "bench:product:"
RECALL_TARGET = 0.98
FILTERED_P50_TARGET_MS = 2.0
# Other processes using more than this many cores during a timed run make it suspect: it is
# measured again after the machine calms down (a 2-core machine shared with test runs).
CONTENDED_CORES = 0.3
MIN_LOAD_WINDOW_S = 0.5

# --- the synthetic catalog ------------------------------------------------------------------

# (category, median price, share of items whose description says "waterproof", nouns).
# The waterproof shares differ by category, as in a real store, and average about 15 %.
CATEGORIES: tuple[tuple[str, float, float, tuple[str, ...]], ...] = (
    ("outerwear", 140.0, 0.45, ("jacket", "parka", "shell", "vest", "coat", "anorak")),
    ("footwear", 95.0, 0.35, ("boot", "sneaker", "sandal", "trail shoe", "loafer")),
    ("tops", 35.0, 0.03, ("shirt", "tee", "sweater", "hoodie", "blouse")),
    ("bottoms", 55.0, 0.05, ("trousers", "jeans", "shorts", "leggings", "skirt")),
    ("bags", 70.0, 0.30, ("backpack", "duffel", "tote", "messenger bag", "daypack")),
    ("accessories", 25.0, 0.08, ("hat", "gloves", "scarf", "belt", "sunglasses")),
    ("camping", 120.0, 0.30, ("tent", "sleeping bag", "stove", "lantern", "hammock")),
    ("electronics", 180.0, 0.15, ("speaker", "headphones", "smartwatch", "action camera", "power bank")),
    ("kitchen", 40.0, 0.01, ("kettle", "pan", "knife set", "blender", "mug")),
    ("home", 60.0, 0.02, ("lamp", "throw blanket", "cushion", "rug", "planter")),
    ("beauty", 20.0, 0.03, ("moisturiser", "serum", "lip balm", "shampoo", "sunscreen")),
    ("sports", 45.0, 0.08, ("yoga mat", "dumbbell", "racket", "cycling jersey", "bottle")),
)
CATEGORY_WEIGHTS = np.array([1.4, 1.2, 1.5, 1.0, 0.8, 1.1, 0.7, 0.9, 1.0, 0.9, 0.6, 0.9])
BRANDS = (
    "Northpeak", "Urban Loom", "Tidewater", "Alder & Co", "Brightfield", "Cobalt Ridge",
    "Driftline", "Emberwood", "Fjordvik", "Granite Bay", "Harbor Lane", "Ironbark",
    "Juniper Row", "Kestrel", "Larkspur", "Meridian", "Nimbus", "Oakhollow", "Pinecrest",
    "Quarry", "Redtail", "Saltmarsh", "Thornbury", "Umber", "Valewood", "Westerly",
    "Yarrow", "Zephyr", "Ashgrove", "Bramble",
)  # fmt: skip
ADJECTIVES = (
    "lightweight", "durable", "insulated", "breathable", "compact", "classic", "modern",
    "recycled", "packable", "stretchy", "soft", "rugged", "minimalist", "premium", "everyday",
)  # fmt: skip
MATERIALS = ("cotton", "wool", "nylon", "leather", "polyester", "bamboo", "steel", "ceramic", "canvas", "merino")
PHRASES = (
    "for city commutes", "for weekend trips", "for cold mornings", "for the trail",
    "for everyday use", "with a lifetime warranty", "with reinforced seams", "with zip pockets",
)  # fmt: skip
SUBCLUSTERS_PER_CATEGORY = 8
PRICE_SIGMA = 0.6
# Weights of the parts of an item vector (each part a unit vector): a direction shared by the
# whole catalog (text embeddings all sit in one cone), the category, the sub-cluster (the kind
# of product), a "waterproof" direction for items that say so, and the item's own noise.
# Cosine similarity comes out near 0.6 within a sub-cluster, 0.35 within a category, 0.15
# across categories: close to what a sentence model gives for product texts.
W_GLOBAL, W_CATEGORY, W_SUBCLUSTER, W_WATERPROOF, W_NOISE = 0.35, 0.45, 0.45, 0.25, 0.6


@dataclass(frozen=True)
class Catalog:
    """A catalog as columns: what numpy filters on and what Redis receives are the same data."""

    vectors: np.ndarray  # (n, DIM) float32, unit rows
    category: np.ndarray  # (n,) int index into CATEGORIES
    subcluster: np.ndarray  # (n,) int, within the category
    brand: np.ndarray  # (n,) int index into BRANDS
    price: np.ndarray  # (n,) float64, 2 decimals
    rating: np.ndarray  # (n,) float64, 1 decimal
    in_stock: np.ndarray  # (n,) bool
    waterproof: np.ndarray  # (n,) bool: the description contains the word "waterproof"
    names: list[str]
    descriptions: list[str]
    centroids: np.ndarray  # (categories, subclusters, DIM) float32, before noise

    @property
    def size(self) -> int:
        return len(self.price)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=-1, keepdims=True)).astype(np.float32)


def random_unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return unit_rows(rng.standard_normal((*shape, DIM), dtype=np.float32))


def brand_popularity() -> np.ndarray:
    """Zipf-like: a few brands carry most of the catalog, as in real stores."""
    weights = 1.0 / np.arange(1, len(BRANDS) + 1) ** 0.9
    return weights / weights.sum()


def make_centroids(rng: np.random.Generator) -> np.ndarray:
    """One composite centre per (category, sub-cluster): global + category + sub-cluster parts."""
    shared = random_unit(rng, ())
    categories = random_unit(rng, (len(CATEGORIES),))
    subclusters = random_unit(rng, (len(CATEGORIES), SUBCLUSTERS_PER_CATEGORY))
    return (W_GLOBAL * shared + W_CATEGORY * categories[:, None, :] + W_SUBCLUSTER * subclusters).astype(np.float32)


def make_vectors(
    rng: np.random.Generator,
    centroids: np.ndarray,
    waterproof_direction: np.ndarray,
    category: np.ndarray,
    subcluster: np.ndarray,
    waterproof: np.ndarray,
    chunk: int = 20_000,
) -> np.ndarray:
    """Chunked so that 100k x 384 never needs float64 temporaries of the whole catalog."""
    out = np.empty((len(category), DIM), dtype=np.float32)
    for start in range(0, len(category), chunk):
        part = slice(start, start + chunk)
        base = centroids[category[part], subcluster[part]]
        base = base + W_WATERPROOF * waterproof[part, None] * waterproof_direction
        out[part] = unit_rows(base + W_NOISE * random_unit(rng, (len(base),)))
    return out


def make_texts(
    rng: np.random.Generator, category: np.ndarray, subcluster: np.ndarray, brand: np.ndarray, waterproof: np.ndarray
) -> tuple[list[str], list[str]]:
    """Names and descriptions from a small vocabulary; the noun follows the sub-cluster, so
    text and vector agree. "waterproof" appears exactly where the flag says so."""
    n = len(category)
    adjectives = rng.integers(0, len(ADJECTIVES), (n, 2))
    materials = rng.integers(0, len(MATERIALS), n)
    phrases = rng.integers(0, len(PHRASES), n)
    names, descriptions = [], []
    for i in range(n):
        nouns = CATEGORIES[category[i]][3]
        noun = nouns[subcluster[i] % len(nouns)]
        first, second = ADJECTIVES[adjectives[i, 0]], ADJECTIVES[adjectives[i, 1]]
        names.append(f"{BRANDS[brand[i]]} {first.title()} {noun.title()}")
        words = [first, "waterproof"] if waterproof[i] else [first]
        descriptions.append(
            f"A {' '.join(words)} {MATERIALS[materials[i]]} {noun} {PHRASES[phrases[i]]}. "
            f"{second.capitalize()} and easy to care for."
        )
    return names, descriptions


def make_catalog(n: int, seed: int) -> Catalog:
    """Seeded: the same n and seed give the same catalog, so runs compare."""
    rng = np.random.default_rng(seed)
    centroids = make_centroids(rng)
    waterproof_direction = random_unit(rng, ())
    category = rng.choice(len(CATEGORIES), n, p=CATEGORY_WEIGHTS / CATEGORY_WEIGHTS.sum())
    subcluster = rng.integers(0, SUBCLUSTERS_PER_CATEGORY, n)
    brand = rng.choice(len(BRANDS), n, p=brand_popularity())
    medians = np.array([c[1] for c in CATEGORIES])
    price = np.maximum(1.0, np.round(rng.lognormal(np.log(medians[category]), PRICE_SIGMA), 2))
    # Ratings skew high: most products sit between 3.5 and 5.
    rating = np.round(np.clip(5.0 - rng.gamma(1.5, 0.5, n), 0.0, 5.0), 1)
    in_stock = rng.random(n) >= 0.10
    waterproof = rng.random(n) < np.array([c[2] for c in CATEGORIES])[category]
    vectors = make_vectors(rng, centroids, waterproof_direction, category, subcluster, waterproof)
    names, descriptions = make_texts(rng, category, subcluster, brand, waterproof)
    return Catalog(
        vectors, category, subcluster, brand, price, rating, in_stock, waterproof, names, descriptions, centroids
    )


def catalog_summary(catalog: Catalog) -> dict[str, Any]:
    return {
        "items": catalog.size,
        "categories": len(CATEGORIES),
        "brands": len(BRANDS),
        "in_stock_share": round(float(catalog.in_stock.mean()), 4),
        "waterproof_share": round(float(catalog.waterproof.mean()), 4),
        "price_median": round(float(np.median(catalog.price)), 2),
        "rating_mean": round(float(catalog.rating.mean()), 2),
    }


def product_dict(catalog: Catalog, i: int) -> dict[str, Any]:
    """One product in the shape RedisRecommender takes (see tests/conftest.py make_products)."""
    return {
        "id": str(i),
        "name": catalog.names[i],
        "description": catalog.descriptions[i],
        "category": CATEGORIES[catalog.category[i]][0],
        "brand": BRANDS[catalog.brand[i]],
        "price": float(catalog.price[i]),
        "rating": float(catalog.rating[i]),
        "in_stock": bool(catalog.in_stock[i]),
        "embedding": catalog.vectors[i],
    }


# --- ingest ---------------------------------------------------------------------------------


def pack_batches(catalog: Catalog, batch_size: int) -> tuple[list[list[tuple[str, dict]]], float]:
    """Every hash exactly as RedisRecommender stores it (product_to_hash), before the clock
    starts: ingest then measures Redis, not Python. Returns the batches and the packing time."""
    started = time.perf_counter()
    batches = []
    for start in range(0, catalog.size, batch_size):
        batches.append(
            [
                (f"{KEY_PREFIX}{i}", product_to_hash(product_dict(catalog, i), DIM))
                for i in range(start, min(start + batch_size, catalog.size))
            ]
        )
    return batches, time.perf_counter() - started


def write_batches(client: redis.Redis, batches: list[list[tuple[str, dict]]], total: int) -> None:
    """One pipelined round trip per batch (no MULTI: atomicity buys nothing here)."""
    with tqdm(total=total, unit="item", desc="ingest", leave=False) as progress:
        for batch in batches:
            pipe = client.pipeline(transaction=False)
            for key, mapping in batch:
                pipe.hset(key, mapping=mapping)
            pipe.execute()
            progress.update(len(batch))


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def server_cpu_s(client: redis.Redis) -> float:
    """CPU seconds of Redis' main thread, where commands (and HNSW inserts) run: comparing it
    with wall time tells whether the server or the client is the bottleneck."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores since boot, from /proc/stat's first line."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - values[3] - values[4]) / tick, sum(values) / tick


def machine_busy(seconds: float = 1.0) -> float:
    """Share of all cores busy over `seconds` while we sit idle: other people's test runs on a
    2-core machine would otherwise silently inflate every latency here."""
    busy_0, total_0 = machine_cpu_s()
    time.sleep(seconds)
    busy_1, total_1 = machine_cpu_s()
    return round((busy_1 - busy_0) / max(1e-9, total_1 - total_0), 3)


class QuietBudget:
    """Seconds this whole run may still spend waiting for other processes to stop competing
    for the cores: bounded, so that a machine busy for good cannot stretch a run forever."""

    remaining_s = 180.0


def wait_for_quiet(max_wait_s: float, threshold: float = 0.15) -> float:
    """Wait (up to max_wait_s, within the run's budget) until the machine is mostly idle;
    returns the last busy share."""
    started = time.monotonic()
    deadline = started + min(max_wait_s, QuietBudget.remaining_s)
    busy = machine_busy()
    while busy > threshold and time.monotonic() < deadline:
        log.info("machine %.0f%% busy with other work; waiting for it to calm down", busy * 100)
        busy = machine_busy(3.0)
    QuietBudget.remaining_s = max(0.0, QuietBudget.remaining_s - (time.monotonic() - started))
    if busy > threshold:
        log.warning("machine still %.0f%% busy: latencies will be pessimistic", busy * 100)
    return busy


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


@dataclass(frozen=True)
class CpuSnapshot:
    wall_s: float
    machine_busy_s: float  # all processes, from /proc/stat
    client_cpu_s: float  # this process (all its threads)
    server_cpu_s: float  # the Redis server (all its threads); 0 when there is none


def cpu_snapshot(client: redis.Redis | None) -> CpuSnapshot:
    busy, _ = machine_cpu_s()
    server = 0.0
    if client is not None:
        cpu = client.info("cpu")
        server = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    return CpuSnapshot(time.perf_counter(), busy, time.process_time(), server)


def other_cores(before: CpuSnapshot, after: CpuSnapshot) -> float:
    """Cores that processes other than ours and our Redis kept busy between two snapshots."""
    ours = (after.client_cpu_s - before.client_cpu_s) + (after.server_cpu_s - before.server_cpu_s)
    others = (after.machine_busy_s - before.machine_busy_s) - ours
    return round(max(0.0, others / max(1e-9, after.wall_s - before.wall_s)), 2)


def measured_quietly(run: Callable[[], Any], client: redis.Redis | None, what: str) -> tuple[Any, float]:
    """run() up to three times until no other process competes for the cores while it runs;
    returns its result and the other processes' load (cores) during the kept run."""
    for attempt in range(3):
        before = cpu_snapshot(client)
        result = run()
        # /proc/stat counts in 10 ms ticks: judge the load over at least half a second.
        time.sleep(max(0.0, MIN_LOAD_WINDOW_S - (time.perf_counter() - before.wall_s)))
        others = other_cores(before, cpu_snapshot(client))
        if others < CONTENDED_CORES or attempt == 2 or QuietBudget.remaining_s <= 0:
            return result, others
        log.info("%s: other processes used %.1f cores meanwhile; measuring again", what, others)
        wait_for_quiet(30)
    raise AssertionError("unreachable")


def ingest(client: redis.Redis, rec: RedisRecommender, catalog: Catalog, batch_size: int) -> dict[str, Any]:
    batches, pack_s = pack_batches(catalog, batch_size)
    gc.collect()
    memory_before = used_memory(client)
    rec.create_index()
    server_cpu_0, client_cpu_0, snapshot_0 = server_cpu_s(client), time.process_time(), cpu_snapshot(client)
    started = time.perf_counter()
    write_batches(client, batches, catalog.size)
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


# --- queries and filters --------------------------------------------------------------------


@dataclass(frozen=True)
class FilterSpec:
    """One query's filter, in a form both Redis (kwargs) and numpy (a mask) can apply."""

    category: int | None = None
    brand: int | None = None
    in_stock: bool = False
    price: tuple[float, float] | None = None
    waterproof: bool = False

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.category is not None:
            out["category"] = CATEGORIES[self.category][0]
        if self.brand is not None:
            out["brand"] = BRANDS[self.brand]
        if self.in_stock:
            out["in_stock_only"] = True
        if self.price is not None:
            out["min_price"], out["max_price"] = self.price
        if self.waterproof:
            out["text_match"] = "waterproof"
        return out

    def mask(self, catalog: Catalog) -> np.ndarray | None:
        """None when nothing filters (numpy then scores every row without a copy)."""
        mask = None
        for part in self._parts(catalog):
            mask = part if mask is None else mask & part
        return mask

    def _parts(self, catalog: Catalog) -> Iterator[np.ndarray]:
        if self.category is not None:
            yield catalog.category == self.category
        if self.brand is not None:
            yield catalog.brand == self.brand
        if self.in_stock:
            yield catalog.in_stock
        if self.price is not None:
            yield (catalog.price >= self.price[0]) & (catalog.price <= self.price[1])
        if self.waterproof:
            yield catalog.waterproof


@dataclass(frozen=True)
class Queries:
    vectors: np.ndarray  # (q, DIM) float32
    category: np.ndarray  # (q,) the category each query came from
    brand: np.ndarray  # (q,) a popular brand, for the selective filter


def make_queries(catalog: Catalog, count: int, seed: int) -> Queries:
    """Half are perturbed catalog items ("more like this"), half are fresh points around a
    sub-cluster centre ("a text query about this kind of product"): both near the data."""
    rng = np.random.default_rng(seed + 1)
    half = count // 2
    items = rng.integers(0, catalog.size, half)
    from_items = unit_rows(catalog.vectors[items] + 0.5 * random_unit(rng, (half,)))
    cats = rng.choice(len(CATEGORIES), count - half, p=CATEGORY_WEIGHTS / CATEGORY_WEIGHTS.sum())
    subs = rng.integers(0, SUBCLUSTERS_PER_CATEGORY, count - half)
    from_centres = unit_rows(catalog.centroids[cats, subs] + W_NOISE * random_unit(rng, (count - half,)))
    return Queries(
        vectors=np.concatenate([from_items, from_centres]),
        category=np.concatenate([catalog.category[items], cats]),
        brand=rng.integers(0, 8, count),
    )


def price_band(category: int, low: float, high: float) -> tuple[float, float]:
    median = CATEGORIES[category][1]
    return round(median * low, 2), round(median * high, 2)


# Each case turns a query's category (and brand) into a filter. Filtering on the category the
# query came from is what a shopper does (a query about jackets, filtered to outerwear).
FILTER_CASES: dict[str, Callable[[int, int], FilterSpec]] = {
    "none": lambda c, b: FilterSpec(),
    "category": lambda c, b: FilterSpec(category=c),
    "cat+stock+price": lambda c, b: FilterSpec(category=c, in_stock=True, price=price_band(c, 0.6, 1.6)),
    "cat+stock+price+text": lambda c, b: FilterSpec(
        category=c, in_stock=True, price=price_band(c, 0.6, 1.6), waterproof=True
    ),
}
HYBRID_CASES: dict[str, Callable[[int, int], FilterSpec]] = {
    "selective (cat+brand+narrow price)": lambda c, b: FilterSpec(category=c, brand=b, price=price_band(c, 0.8, 1.25)),
    "broad (in stock only)": lambda c, b: FilterSpec(in_stock=True),
}


def specs_for(case: Callable[[int, int], FilterSpec], queries: Queries) -> list[FilterSpec]:
    return [case(int(c), int(b)) for c, b in zip(queries.category, queries.brand, strict=True)]


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

    def run() -> tuple[np.ndarray, list[list[int]], float]:
        before = server_cpu_s(rec.redis)
        times_ms, found = time_redis(rec, queries, specs, k, warmup)
        return times_ms, found, server_cpu_s(rec.redis) - before

    (times_ms, found, server_s), others = measured_quietly(run, rec.redis, "query run")
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
    reply = client.execute_command("FT.SEARCH", INDEX_NAME, "@description:waterproof", "LIMIT", "0", "0")
    found = int(reply[0] if isinstance(reply, list) else reply[b"total_results"])
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


def fastest_at_target(rows: dict[str, Any]) -> str | None:
    """The policy with the lowest p50 among those whose recall@10 reaches the target."""
    good = {label: row for label, row in rows.items() if (row["recall_at_10"] or 0) >= RECALL_TARGET}
    return min(good, key=lambda label: good[label]["p50_ms"]) if good else None


def smallest_good_ef(sweep: dict[str, Any]) -> int | None:
    """The smallest swept EF_RUNTIME whose recall@10 reaches the target in every filter case."""
    for ef, cases in sweep.items():
        recalls = [c["recall_at_10"] for c in cases.values() if c["recall_at_10"] is not None]
        if recalls and min(recalls) >= RECALL_TARGET:
            return int(ef)
    return None


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


# --- verdicts -------------------------------------------------------------------------------


def at_ef(result: dict[str, Any], ef: int | None) -> dict[str, Any]:
    """Per-case figures at one EF_RUNTIME: the headline run for the library default (None)."""
    if ef is None:
        return result["headline"]["cases"]
    return result["ef_sweep"][str(ef)]


def check_targets(results: list[dict[str, Any]], ef: int | None) -> dict[str, Any]:
    """The issue's targets against what was measured, at one EF_RUNTIME. Reported, not asserted."""
    smallest, largest = results[0], results[-1]
    small, large = at_ef(smallest, ef), at_ef(largest, ef)
    headline = largest["headline"]["cases"]
    filtered = [name for name in large if name != "none"]
    recalls = [c["recall_at_10"] for r in results for c in at_ef(r, ef).values() if c["recall_at_10"] is not None]
    checks = {
        f"p50 at {smallest['items']:,} items <= 0.7 ms (slowest case)": (max(c["p50_ms"] for c in small.values()), 0.7),
        f"unfiltered p50 at {largest['items']:,} <= 1.0 ms": (large["none"]["p50_ms"], 1.0),
        f"filtered p50 at {largest['items']:,} <= 2.0 ms (slowest case)": (
            max(large[n]["p50_ms"] for n in filtered),
            FILTERED_P50_TARGET_MS,
        ),
        "recall@10 >= 0.98 (worst case, all sizes)": (min(recalls), RECALL_TARGET),
        "ingest >= 2,000 items/s (slowest size)": (min(r["ingest"]["items_per_s"] for r in results), 2000),
    }
    out = {}
    for label, (value, target) in checks.items():
        higher_is_better = label.startswith(("recall", "ingest"))
        out[label] = {"measured": value, "met": value >= target if higher_is_better else value <= target}
    # numpy's time is per case; compare it with Redis' p50 at this ef.
    for name in large:
        ratio = headline[name]["numpy_exact"]["p50_ms"] / large[name]["p50_ms"]
        one_thread = headline[name]["numpy_exact_1_thread"]["p50_ms"] / large[name]["p50_ms"]
        out[f"numpy exact / Redis p50 at {largest['items']:,} >= 10x ({name})"] = {
            "measured": round(ratio, 2),
            "met": ratio >= 10,
            "numpy_1_thread_ratio": round(one_thread, 2),
        }
    return out


def recommendation(results: list[dict[str, Any]]) -> dict[str, Any]:
    """EF_RUNTIME: the smallest swept value that reaches the recall target in every case at the
    largest size; HYBRID_POLICY: the fastest policy at the target recall, per filter."""
    largest = results[-1]
    ef = largest["smallest_ef_reaching_target"]
    return {
        "items": largest["items"],
        "ef_runtime": ef,
        "at_that_ef": at_ef(largest, ef) if ef else None,
        "fastest_hybrid_policy": {
            name: block["fastest_at_target"] for name, block in largest.get("hybrid_policy", {}).items()
        },
    }


def print_targets(title: str, checks: dict[str, Any]) -> None:
    print(f"\ntargets, {title}:")
    for label, row in checks.items():
        print(f"  {'met   ' if row['met'] else 'MISSED'} {label}: {row['measured']}")


# --- reporting ------------------------------------------------------------------------------


def server_info(redis_url: str | None) -> dict[str, Any]:
    client, server = open_server(redis_url)
    try:
        blas = [f"{pool['internal_api']} {pool['version']} x{pool['num_threads']}" for pool in threadpool_info()]
        return {**machine(client), "blas": blas}
    finally:
        close_server(client, server)


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def contended(row: dict[str, Any]) -> str:
    """A mark for figures measured while other processes competed for the cores."""
    return "!" if row.get("other_load_cores", 0) >= CONTENDED_CORES else " "


def print_size(result: dict[str, Any]) -> None:
    ingest_ = result["ingest"]
    print(
        f"\n=== {result['items']:,} items: ingest {ingest_['items_per_s']:,.0f} items/s{contended(ingest_)}"
        f"(Redis main thread {ingest_['server_main_thread_busy']:.0%} busy, "
        f"{ingest_['items_per_server_cpu_s']:,.0f} items per Redis CPU second; client packing "
        f"{ingest_['client_packing_items_per_s']:,.0f}/s), "
        f"{ingest_['memory_bytes_per_item']:,.0f} B/item used_memory, "
        f"{ingest_['vector_index_bytes_per_item']:,.0f} B/item vector index"
    )
    if "headline" in result:
        print(f"library defaults (ef_runtime={result['headline']['ef_runtime']}):")
        print(
            f"{'case':22s} {'select.':>8s} {'p50':>7s} {'p95':>7s} {'p99':>7s} {'recall':>7s} {'srv cpu':>7s} "
            f"{'numpy':>7s} {'x':>6s} {'np 1thr':>7s} {'x':>6s}"
        )
        for name, c in result["headline"]["cases"].items():
            print(
                f"{name:22s} {c['selectivity_mean']:8.4f} {c['p50_ms']:7.3f} {c['p95_ms']:7.3f} {c['p99_ms']:7.3f} "
                f"{fmt(c['recall_at_10'])!s:>7s} {c['server_cpu_ms_per_query']:7.3f} {c['numpy_exact']['p50_ms']:7.3f} "
                f"{c['numpy_over_redis_p50']:6.1f} {c['numpy_exact_1_thread']['p50_ms']:7.3f} "
                f"{c['numpy_1_thread_over_redis_p50']:6.1f}{contended(c)}"
            )
    cases = list(next(iter(result["ef_sweep"].values())))
    print("EF_RUNTIME sweep, recall@10 / p50 ms:")
    print(f"{'ef':>5s} " + " ".join(f"{name:>22s}" for name in cases))
    for ef, row in result["ef_sweep"].items():
        cells = [f"{fmt(row[n]['recall_at_10'])} / {row[n]['p50_ms']:.3f}{contended(row[n])}" for n in cases]
        print(f"{ef:>5s} " + " ".join(f"{cell:>22s}" for cell in cells))
    if "hybrid_policy" in result:
        print("HYBRID_POLICY, recall@10 / p50 / p99 ms (* fastest at recall target):")
    for name, block in result.get("hybrid_policy", {}).items():
        print(f"  {name} (selectivity {block['selectivity_mean']:.4f}, median {block['matching_items_median']} items)")
        for label, row in block["policies"].items():
            mark = "*" if label == block["fastest_at_target"] else " "
            print(
                f"   {mark}{label:14s} {fmt(row['recall_at_10'])} / {row['p50_ms']:6.3f} / {row['p99_ms']:6.3f}"
                f"{contended(row)}"
            )
    print(f"(! = measured while other processes used >= {CONTENDED_CORES} cores)")


def print_build_sweep(sweep: list[dict[str, Any]]) -> None:
    print("\n=== HNSW build sweep")
    for row in sweep:
        build = row["build"]
        print(
            f"M {build['hnsw_m']} EF_CONSTRUCTION {build['hnsw_ef_construction']}: "
            f"ingest {row['ingest']['items_per_s']:,.0f} items/s{contended(row['ingest'])}"
            f"({row['ingest']['items_per_server_cpu_s']:,.0f} per Redis CPU second), "
            f"{row['ingest']['memory_bytes_per_item']:,.0f} B/item, smallest good ef {row['smallest_ef_reaching_target']}"
        )
        for ef, cases in row["ef_sweep"].items():
            cells = ", ".join(
                f"{n} {fmt(c['recall_at_10'])}/{c['p50_ms']:.2f}ms{contended(c).strip()}" for n, c in cases.items()
            )
            print(f"  ef {ef:>4s}: {cells}")


def plot_latency(results: list[dict[str, Any]], path: Path) -> None:
    """Left: Redis p50 and p99 per filter case. Right: Redis p50 against numpy exact p50, on a
    log scale because numpy grows linearly with the catalog and Redis barely does."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["items"] for r in results]
    cases = list(results[0]["headline"]["cases"])
    colors = dict(zip(cases, ("tab:blue", "tab:orange", "tab:green", "tab:red"), strict=False))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    for name in cases:
        rows = [r["headline"]["cases"][name] for r in results]
        left.plot(sizes, [c["p50_ms"] for c in rows], "o-", color=colors[name], label=f"{name} p50")
        left.plot(sizes, [c["p99_ms"] for c in rows], "s--", color=colors[name], alpha=0.7, label=f"{name} p99")
        right.plot(sizes, [c["p50_ms"] for c in rows], "o-", color=colors[name], label=f"Redis {name}")
        right.plot(
            sizes, [c["numpy_exact"]["p50_ms"] for c in rows], "^:", color=colors[name], label=f"numpy exact {name}"
        )
    left.axhline(2.0, color="grey", lw=0.8, ls="-.")
    left.text(sizes[0], 2.03, "2 ms filtered target", color="grey", fontsize=8, va="bottom")
    ef = results[0]["headline"]["ef_runtime"]
    left.set_title(f"Redis candidate_retrieve(k=10) latency (EF_RUNTIME {ef or '10, default'})")
    right.set_title("p50: Redis HNSW vs numpy exact search (same filter)")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("catalog size (items)")
        ax.set_ylabel("latency per query (ms)")
        ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper left")
    left.set_ylim(bottom=0)
    right.set_yscale("log")
    fig.suptitle(f"Filtered KNN retrieval, {DIM}-d vectors, 2-core machine", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ef_tradeoff(result: dict[str, Any], path: Path) -> None:
    """Recall against p50 along the EF_RUNTIME sweep at one size: where the knee is."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    sweep = result["ef_sweep"]
    for i, name in enumerate(next(iter(sweep.values()))):
        points = [(row[name]["p50_ms"], row[name]["recall_at_10"], ef) for ef, row in sweep.items()]
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=name)
        # Filtered cases bunch up (their recall barely moves with EF_RUNTIME): label their ends
        # only, alternately below and above the curve so that neighbours do not collide.
        labelled = points if name == "none" else [points[0], points[-1]]
        for x, y, ef in labelled:
            offset = (4, -11) if i % 2 == 0 else (-8, 7)
            ax.annotate(f"ef {ef}", (x, y), textcoords="offset points", xytext=offset, fontsize=7)
    ax.axhline(RECALL_TARGET, color="grey", lw=0.8, ls="-.")
    ax.axvline(FILTERED_P50_TARGET_MS, color="grey", lw=0.8, ls=":")
    ax.text(ax.get_xlim()[0], RECALL_TARGET, f" recall {RECALL_TARGET}", color="grey", fontsize=7, va="bottom")
    ax.set_xlabel("p50 latency (ms)")
    ax.set_ylabel("recall@10")
    build = result["build"]
    m, efc = build["hnsw_m"] or "16 (default)", build["hnsw_ef_construction"] or "200 (default)"
    ax.set_title(f"EF_RUNTIME sweep at {result['items']:,} items, M {m}, EF_CONSTRUCTION {efc}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main -----------------------------------------------------------------------------------


def draw_plots(results: list[dict[str, Any]]) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    plot_latency(results, RESULTS_DIR / "latency_vs_size.png")
    plot_ef_tradeoff(results[-1], RESULTS_DIR / "ef_runtime_tradeoff.png")
    log.info("plots in %s", RESULTS_DIR)


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
