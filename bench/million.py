"""A million products: ingest, memory, recall and retrieval latency under concurrency (issue 25).

It starts a fresh bundled Redis with Search and streams a seeded synthetic catalogue into it:
50 categories of Zipf-like popularity, 500 brands of Zipf-like popularity, log-normal prices
around a per-category median, ratings skewed high, 10 % out of stock, short descriptions from a
small vocabulary, and 384-d unit vectors clustered by category and sub-cluster (the centres of
bench/synthetic_catalog.py's mixture, whose weights it reuses). By default (`--generator
catalogue`) products come in families of variants spread in a low-rank subspace of their
sub-cluster, calibrated to real all-MiniLM-L6-v2 product vectors by bench/vector_realism.py;
`--generator isotropic` gives each product an isotropic 384-d offset instead, HNSW's worst case
rather than a catalogue (intrinsic dimension about 80 at 100k, against about 12). Vectors are
generated chunk by chunk from (seed, chunk), so the catalogue is never held in memory: the exact
search regenerates the chunks instead.

It measures:

- ingest: the first half through one pipelined client (the library's own batch writer, batches
  of 500), the second half through `--ingest-clients` processes at once, items/s of each, and
  the time until FT.INFO reports every product indexed;
- memory: `used_memory` (INFO memory) per product, FT.INFO's parts per product, MEMORY USAGE of
  sampled product hashes, and of users after 10 clicks each (for the capacity estimate);
- recall@10 of `candidate_retrieve(k=10)` against an exact search (numpy, chunked) on
  `--queries` queries, for four filters: none; broad (in stock, about 90 %); medium (the query's
  category, in stock, a price band: about 1.5 %); narrow (that + one of the 20 most common
  brands); and the medium filter with HYBRID_POLICY BATCHES forced (CASES);
- p50/p99 of `candidate_retrieve` at 1, 8 and 32 concurrent clients, each a process of its own
  (one Python process would measure its GIL, not Redis), for the same cases, with Redis' own
  time per FT.SEARCH (INFO commandstats).

`--vector-type FLOAT16` has the library create the index over half-precision vectors (the
hashes then hold FLOAT16 bytes, and queries are sent as FLOAT16), to compare memory, recall and
latency.

`--ef-sweep 100,200,400` measures recall at each EF_RUNTIME and latency at the smallest reaching
`--target-recall` unfiltered. `--data-dir DIR` keeps the ingested catalogue (an RDB and a
manifest) and `--reuse DIR` measures it again without ingesting: Redis loads the dump and
rebuilds the index from the hashes (RediSearch does not save it), which takes about as long as
the ingest's indexing but needs no client (e.g. to re-measure latency on a quieter machine).

Run: .venv/bin/python -m bench.million --vector-type FLOAT16   (1M products: 23 minutes on 2 cores)
     .venv/bin/python -m bench.million --products 100000    (about 4 minutes)
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import redis

import local_redis
from bench.harness import RESULTS_DIR, machine, percentiles, write_result
from bench.synthetic_catalog import (
    ADJECTIVES,
    DIM,
    MATERIALS,
    PHRASES,
    PRICE_SIGMA,
    W_CATEGORY,
    W_GLOBAL,
    W_NOISE,
    W_SUBCLUSTER,
    random_unit,
)
from embeddings import normalize_rows
from local_redis import LocalRedis, connect
from recengine import query
from recengine.layout import SESSION_VEC_FIELD, product_to_hash
from recengine.replies import info_dict
from recommender import RedisRecommender

log = logging.getLogger("bench.million")

K = 10
CATEGORIES = 50
BRANDS = 500
SUBCLUSTERS = 8
CHUNK = 10_000
BATCH = 500
INDEX_NAME = "bench:million:idx"
KEY_PREFIX = "bench:million:"
USER_PREFIX = "bench:million:user:"
NARROW_BRANDS = 20
NOUNS = ("jacket", "boot", "shirt", "lamp", "kettle", "tent", "speaker", "mug", "bag", "scarf", "serum", "mat")
VectorType = Literal["FLOAT32", "FLOAT16"]
Generator = Literal["catalogue", "isotropic"]
# The "catalogue" generator's shape, calibrated by bench/vector_realism.py against the 3,905 UCI
# Online Retail products embedded by all-MiniLM-L6-v2 (intrinsic dimension, nearest-neighbour
# cosine and contrast at the same size): products per family (mean), the rank of a sub-cluster's
# subspace and its directions' decay, and the weights of a family's place in it, a variant's
# offset from its family, and the isotropic part.
MEAN_FAMILY = 2.0
SUBSPACE_RANK = 32
SUBSPACE_SCALES = (np.arange(1, SUBSPACE_RANK + 1, dtype=np.float32) ** -0.3) / np.linalg.norm(
    np.arange(1, SUBSPACE_RANK + 1, dtype=np.float32) ** -0.3
)
W_FAMILY, W_VARIANT, W_ISOTROPIC = 0.9, 0.45, 0.35
# A query near an item is another variant of its family, a farther one than the catalogue's.
W_QUERY = 0.6
FILTERS = ("none", "broad", "medium", "narrow")
# What recall and latency are measured for: each filter under Redis' own choice of hybrid policy,
# and the medium filter with BATCHES forced (the policy Redis does not pick for it; see the report).
CASES = (*FILTERS, "medium+BATCHES")
# The data dir's description of what it holds (--data-dir writes it, --reuse reads it).
MANIFEST = "million.json"


def case_parts(case: str) -> tuple[str, query.HybridPolicy | None]:
    """A measured case's filter and forced hybrid policy (None: Redis chooses)."""
    name, _, policy = case.partition("+")
    return name, cast(query.HybridPolicy, policy) if policy else None


# --- the catalogue, streamed ---------------------------------------------------------------------


@dataclass(frozen=True)
class Columns:
    """The filter fields of every product (a few bytes each, so kept); vectors are not."""

    category: np.ndarray  # int16
    subcluster: np.ndarray  # int8
    brand: np.ndarray  # int16
    price: np.ndarray  # float64, 2 decimals
    rating: np.ndarray  # float64, 1 decimal
    in_stock: np.ndarray  # bool
    medians: np.ndarray  # (CATEGORIES,) median price per category


def subspace_coefficients(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, SUBSPACE_RANK) Gaussian coefficients of decaying scale (norm about 1): the few
    strongest directions carry most of a sub-cluster's spread, as in real embeddings."""
    return rng.standard_normal((count, SUBSPACE_RANK), dtype=np.float32) * SUBSPACE_SCALES


def zipf(count: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, count + 1) ** exponent
    return weights / weights.sum()


class ScaleCatalog:
    """n products from one seed; chunk c's vectors and texts come from (seed, c) alone.

    Two generators of vectors. "catalogue" (the default) is calibrated to real all-MiniLM-L6-v2
    product vectors by bench/vector_realism.py (intrinsic dimension and nearest-neighbour
    contrast): products come in families of variants (one to several, like colours or sizes of
    one product; a family shares category, sub-cluster and brand), and a sub-cluster's products
    spread in a low-rank subspace of its own (SUBSPACE_RANK directions of decaying weight), with a
    small isotropic part. "isotropic" is the earlier mixture, each product its sub-cluster's
    centre plus an isotropic 384-d offset: a worst case for HNSW (every point nearly equidistant
    from its cloud's others), not a catalogue; kept to measure that worst case and to re-measure
    catalogues kept by earlier runs."""

    def __init__(self, n: int, seed: int, generator: Generator = "catalogue") -> None:
        self.n, self.seed, self.generator = n, seed, generator
        rng = np.random.default_rng(seed)
        shared = random_unit(rng, ())
        categories = random_unit(rng, (CATEGORIES,))
        subclusters = random_unit(rng, (CATEGORIES, SUBCLUSTERS))
        self.centroids = (W_GLOBAL * shared + W_CATEGORY * categories[:, None, :] + W_SUBCLUSTER * subclusters).astype(
            np.float32
        )
        medians = np.clip(rng.lognormal(np.log(45.0), 0.8, CATEGORIES), 5.0, 900.0)
        category = rng.choice(CATEGORIES, n, p=zipf(CATEGORIES, 0.6)).astype(np.int16)
        subcluster = rng.integers(0, SUBCLUSTERS, n).astype(np.int8)
        brand = rng.choice(BRANDS, n, p=zipf(BRANDS, 1.0)).astype(np.int16)
        price = np.maximum(1.0, np.round(rng.lognormal(np.log(medians[category]), PRICE_SIGMA), 2))
        rating = np.round(np.clip(5.0 - rng.gamma(1.5, 0.5, n), 0.0, 5.0), 1)
        in_stock = rng.random(n) >= 0.10
        # Drawn after the columns above, so that the isotropic generator's catalogue is the one
        # earlier runs kept. A family's first product gives the family its category, sub-cluster
        # and brand (so their shares are unchanged).
        self.family = np.arange(n, dtype=np.int32)
        self.bases = np.zeros((CATEGORIES, SUBCLUSTERS, SUBSPACE_RANK, DIM), np.float32)
        self.family_latents = np.zeros((0, SUBSPACE_RANK), np.float32)
        if generator == "catalogue":
            self.bases = random_unit(rng, (CATEGORIES, SUBCLUSTERS, SUBSPACE_RANK))
            sizes = 1 + rng.poisson(MEAN_FAMILY - 1, n)
            self.family = np.repeat(np.arange(n, dtype=np.int32), sizes)[:n]
            heads = np.searchsorted(self.family, np.arange(int(self.family[-1]) + 1 if n else 0))
            category, subcluster, brand = (
                category[heads][self.family],
                subcluster[heads][self.family],
                brand[heads][self.family],
            )
            self.family_latents = subspace_coefficients(rng, len(heads))
        self.columns = Columns(
            category=category,
            subcluster=subcluster,
            brand=brand,
            price=price,
            rating=rating,
            in_stock=in_stock,
            medians=medians,
        )

    @property
    def chunks(self) -> int:
        return -(-self.n // CHUNK)

    def span(self, chunk: int) -> slice:
        return slice(chunk * CHUNK, min((chunk + 1) * CHUNK, self.n))

    def vectors(self, chunk: int) -> np.ndarray:
        part = self.span(chunk)
        rng = np.random.default_rng([self.seed, 1, chunk])
        category, subcluster = self.columns.category[part], self.columns.subcluster[part]
        if self.generator == "isotropic":
            base = self.centroids[category, subcluster]
            return normalize_rows(base + W_NOISE * random_unit(rng, (len(base),)))
        latents = W_FAMILY * self.family_latents[self.family[part]]
        return self.in_subspaces(
            category, subcluster, latents + W_VARIANT * subspace_coefficients(rng, len(latents)), rng
        )

    def in_subspaces(
        self, category: np.ndarray, subcluster: np.ndarray, coefficients: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Unit vectors: each row's sub-cluster centre, plus its coefficients over that
        sub-cluster's subspace, plus the small isotropic part."""
        out = self.centroids[category, subcluster] + W_ISOTROPIC * random_unit(rng, (len(category),))
        groups = category.astype(np.int64) * SUBCLUSTERS + subcluster
        for group in np.unique(groups):
            rows = np.flatnonzero(groups == group)
            out[rows] += coefficients[rows] @ self.bases[group // SUBCLUSTERS, group % SUBCLUSTERS]
        return normalize_rows(out)

    def products(self, chunk: int) -> Iterator[dict[str, Any]]:
        """Chunk c's products in the shape RedisRecommender takes."""
        part, cols = self.span(chunk), self.columns
        rng = np.random.default_rng([self.seed, 2, chunk])
        vectors = self.vectors(chunk)
        words = rng.integers(0, 1 << 30, (part.stop - part.start, 4))
        for row, i in enumerate(range(part.start, part.stop)):
            w = words[row]
            adjective, noun = ADJECTIVES[w[0] % len(ADJECTIVES)], NOUNS[int(cols.subcluster[i]) % len(NOUNS)]
            yield {
                "id": str(i),
                "name": f"{brand_name(int(cols.brand[i]))} {adjective.title()} {noun.title()}",
                "description": f"A {adjective} {MATERIALS[w[1] % len(MATERIALS)]} {noun} "
                f"{PHRASES[w[2] % len(PHRASES)]}. {ADJECTIVES[w[3] % len(ADJECTIVES)].capitalize()} and easy to care for.",
                "category": category_name(int(cols.category[i])),
                "brand": brand_name(int(cols.brand[i])),
                "price": float(cols.price[i]),
                "rating": float(cols.rating[i]),
                "in_stock": bool(cols.in_stock[i]),
                "embedding": vectors[row],
            }


def category_name(index: int) -> str:
    return f"category-{index:02d}"


def brand_name(index: int) -> str:
    return f"Brand {index:03d}"


# --- queries and their filters -------------------------------------------------------------------


@dataclass(frozen=True)
class Queries:
    vectors: np.ndarray  # (q, DIM) float32
    category: np.ndarray  # (q,) the category each query is about
    brand: np.ndarray  # (q,) one of the NARROW_BRANDS most common brands


def make_queries(catalog: ScaleCatalog, count: int, seed: int) -> Queries:
    """Half near catalogue items, half near a sub-cluster centre: both near the data. For the
    catalogue generator a query is a product that is not in the catalogue: a farther variant of
    an item's family, or a new family; for the isotropic one, an item or a centre plus isotropic
    noise."""
    rng = np.random.default_rng([seed, 3])
    half = count // 2
    items = np.sort(rng.integers(0, catalog.n, half))
    cats = rng.choice(CATEGORIES, count - half, p=zipf(CATEGORIES, 0.6))
    subs = rng.integers(0, SUBCLUSTERS, count - half)
    if catalog.generator == "catalogue":
        cols = catalog.columns
        near_items = W_FAMILY * catalog.family_latents[catalog.family[items]]
        from_items = catalog.in_subspaces(
            cols.category[items], cols.subcluster[items], near_items + W_QUERY * subspace_coefficients(rng, half), rng
        )
        new_families = W_FAMILY * subspace_coefficients(rng, count - half)
        from_centres = catalog.in_subspaces(
            cats, subs, new_families + W_VARIANT * subspace_coefficients(rng, count - half), rng
        )
    else:
        item_vectors = np.empty((half, DIM), dtype=np.float32)
        for chunk in np.unique(items // CHUNK):
            rows = np.flatnonzero(items // CHUNK == chunk)
            item_vectors[rows] = catalog.vectors(int(chunk))[items[rows] - chunk * CHUNK]
        from_items = normalize_rows(item_vectors + 0.5 * random_unit(rng, (half,)))
        from_centres = normalize_rows(catalog.centroids[cats, subs] + W_NOISE * random_unit(rng, (count - half,)))
    popular_brands = np.argsort(-np.bincount(catalog.columns.brand, minlength=BRANDS))[:NARROW_BRANDS]
    return Queries(
        vectors=np.concatenate([from_items, from_centres]).astype(np.float32),
        category=np.concatenate([catalog.columns.category[items], cats]).astype(int),
        brand=rng.choice(popular_brands, count),
    )


def price_band(catalog: ScaleCatalog, category: int) -> tuple[float, float]:
    median = float(catalog.columns.medians[category])
    return round(median * 0.5, 2), round(median * 2.0, 2)


def filter_kwargs(catalog: ScaleCatalog, case: str, category: int, brand: int) -> dict[str, Any]:
    """candidate_retrieve's filters for one query."""
    if case == "none":
        return {}
    if case == "broad":
        return {"in_stock_only": True}
    low, high = price_band(catalog, category)
    medium = {"category": category_name(category), "in_stock_only": True, "min_price": low, "max_price": high}
    return medium if case == "medium" else {**medium, "brand": brand_name(brand)}


def filter_mask(catalog: ScaleCatalog, case: str, part: slice, categories: np.ndarray, brands: np.ndarray) -> Any:
    """(queries, chunk) bool: which of the chunk's products each query's filter lets through;
    None when nothing filters."""
    cols = catalog.columns
    if case == "none":
        return None
    stock = cols.in_stock[part][None, :]
    if case == "broad":
        return np.broadcast_to(stock, (len(categories), part.stop - part.start))
    low = np.round(cols.medians[categories] * 0.5, 2)[:, None]
    high = np.round(cols.medians[categories] * 2.0, 2)[:, None]
    price = cols.price[part][None, :]
    mask = (cols.category[part][None, :] == categories[:, None]) & stock & (price >= low) & (price <= high)
    if case == "narrow":
        mask &= cols.brand[part][None, :] == brands[:, None]
    return mask


def exact_neighbours(catalog: ScaleCatalog, queries: Queries) -> dict[str, list[list[int]]]:
    """The exact top 10 of every query under every filter, over regenerated chunks (so memory
    stays at one chunk's scores)."""
    count = len(queries.vectors)
    best = {case: (np.full((count, K), -np.inf, np.float32), np.full((count, K), -1, np.int64)) for case in FILTERS}
    for chunk in range(catalog.chunks):
        part = catalog.span(chunk)
        scores = queries.vectors @ catalog.vectors(chunk).T
        for case in FILTERS:
            mask = filter_mask(catalog, case, part, queries.category, queries.brand)
            masked = scores if mask is None else np.where(mask, scores, -np.inf).astype(np.float32)
            top = (
                np.argpartition(-masked, K - 1, axis=1)[:, :K]
                if masked.shape[1] > K
                else np.tile(np.arange(masked.shape[1]), (count, 1))
            )
            old_scores, old_ids = best[case]
            all_scores = np.concatenate([old_scores, np.take_along_axis(masked, top, 1)], axis=1)
            all_ids = np.concatenate([old_ids, top + part.start], axis=1)
            keep = np.argsort(-all_scores, axis=1, kind="stable")[:, :K]
            best[case] = (np.take_along_axis(all_scores, keep, 1), np.take_along_axis(all_ids, keep, 1))
    return {
        case: [
            [int(i) for i, s in zip(ids, scores, strict=True) if np.isfinite(s)]
            for ids, scores in zip(*best[case][::-1], strict=True)
        ]
        for case in FILTERS
    }


# --- talking to Redis ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """What every process needs to reach the index: picklable, so workers rebuild the rest."""

    url: str
    vector_type: VectorType
    hnsw_m: int | None
    hnsw_ef_construction: int | None
    ef_runtime: int
    hybrid_policy: query.HybridPolicy | None = None

    def recommender(self) -> RedisRecommender:
        return RedisRecommender(
            connect(self.url, timeout_s=300),
            INDEX_NAME,
            KEY_PREFIX,
            USER_PREFIX,
            hnsw_m=self.hnsw_m,
            hnsw_ef_construction=self.hnsw_ef_construction,
            ef_runtime=self.ef_runtime,
            hybrid_policy=self.hybrid_policy,
            vector_type=self.vector_type,
        )


def write_chunk(setup: Setup, rec: RedisRecommender, catalog: ScaleCatalog, chunk: int) -> int:
    """One chunk through the library's batch writer (product_to_hash, pipelined HSETs)."""
    written, batch = 0, []
    products = list(catalog.products(chunk))
    for key, product in zip(rec.product_keys(p["id"] for p in products), products, strict=True):
        mapping = product_to_hash(product, DIM, (), setup.vector_type)
        batch.append((key, mapping))
        if len(batch) == BATCH:
            written += rec._write_batch(batch)
            batch = []
    return written + rec._write_batch(batch)


def in_processes(work: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> list[Any]:
    """work(*a) for each a, each in a forked process of its own (so no GIL is shared, and the
    arguments are inherited rather than pickled); their results, in order."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()

    def run_one(index: int, one: tuple[Any, ...]) -> None:
        results.put((index, work(*one)))

    processes = [context.Process(target=run_one, args=(i, one)) for i, one in enumerate(args)]
    for process in processes:
        process.start()
    out = dict(results.get() for _ in processes)
    for process in processes:
        process.join()
        if process.exitcode:
            raise RuntimeError(f"a worker failed with exit code {process.exitcode}")
    return [out[i] for i in range(len(args))]


def _ingest_worker(setup: Setup, catalog: ScaleCatalog, chunks: list[int]) -> int:
    rec = setup.recommender()
    return sum(write_chunk(setup, rec, catalog, chunk) for chunk in chunks)


def ingest(setup: Setup, rec: RedisRecommender, catalog: ScaleCatalog, clients: int) -> dict[str, Any]:
    """First half by one client, second half by `clients` processes; then wait for FT.INFO."""
    half = catalog.chunks // 2 if catalog.chunks > 1 else catalog.chunks
    started = time.perf_counter()
    single = sum(write_chunk(setup, rec, catalog, chunk) for chunk in range(half))
    single_s = time.perf_counter() - started
    log.info("one client: %d items in %.1f s", single, single_s)
    rest = list(range(half, catalog.chunks))
    multi_started = time.perf_counter()
    multi = sum(in_processes(_ingest_worker, [(setup, catalog, rest[w::clients]) for w in range(clients)]))
    multi_s = time.perf_counter() - multi_started
    info = wait_indexed(rec, catalog.n)
    total_s = time.perf_counter() - started
    log.info("%d clients: %d items in %.1f s; indexed after %.1f s", clients, multi, multi_s, total_s)
    return {
        "one_client": {"items": single, "seconds": round(single_s, 2), "items_per_s": round(single / single_s)},
        "several_clients": {
            "clients": clients,
            "items": multi,
            "seconds": round(multi_s, 2),
            "items_per_s": round(multi / multi_s) if multi else None,
            "note": "the second half, into a graph already holding the first",
        },
        "fully_indexed_after_s": round(total_s, 2),
        "indexing_failures": int(info["hash_indexing_failures"]),
    }


def wait_indexed(rec: RedisRecommender, expected: int, timeout_s: float = 3600.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        info = info_dict(rec.redis.execute_command(*query.info_command(rec.index_name)))
        if float(info["percent_indexed"]) >= 1.0 and int(info["num_docs"]) >= expected:
            return info
        if time.monotonic() > deadline:
            raise TimeoutError(f"index holds {info['num_docs']} of {expected} after {timeout_s}s")
        time.sleep(0.05)


FT_INFO_SIZES = (
    "vector_index_sz_mb",
    "inverted_sz_mb",
    "offset_vectors_sz_mb",
    "doc_table_size_mb",
    "sortable_values_size_mb",
    "key_table_size_mb",
    "tag_overhead_sz_mb",
    "text_overhead_sz_mb",
    "total_index_memory_sz_mb",
)


def memory(rec: RedisRecommender, n: int, baseline: int) -> dict[str, Any]:
    """Redis' memory per product: INFO's used_memory over the empty server's, FT.INFO's parts,
    and MEMORY USAGE and encoding of 200 sampled hashes; with what reading a hash costs Redis
    (a listpack is read by a linear scan, a hash table by lookup): µs per HMGET of the fields a
    search returns, over 2,000 sampled products (INFO commandstats)."""
    client = rec.redis
    info = info_dict(client.execute_command(*query.info_command(INDEX_NAME)))
    used = int(client.info("memory")["used_memory"])
    sample = np.random.default_rng(7).integers(0, n, 200)
    sample_keys = rec.product_keys(str(i) for i in sample)
    hash_bytes = [int(client.memory_usage(key, samples=0) or 0) for key in sample_keys]
    encodings = [bytes(client.object("encoding", key)).decode() for key in sample_keys]
    parts = {name: round(float(info[name]) * 2**20 / n, 1) for name in FT_INFO_SIZES if name in info}
    read_keys = rec.product_keys(str(i) for i in np.random.default_rng(8).integers(0, n, 2000))
    client.config_resetstat()  # from here, only the product HMGETs the figure is about
    pipe = client.pipeline(transaction=False)
    for key in read_keys:
        pipe.hmget(key, ["name", "category", "brand", "price", "rating", "in_stock"])
    pipe.execute()
    return {
        "used_memory_bytes": used,
        "used_memory_per_product": round((used - baseline) / n, 1),
        "product_hash_bytes_mean": round(float(np.mean(hash_bytes)), 1),
        "product_hash_encodings": {e: encodings.count(e) for e in set(encodings)},
        "hash_max_listpack_value": int(str(client.config_get("hash-max-listpack-value")["hash-max-listpack-value"])),
        "hmget_us_per_call": float(client.info("commandstats")["cmdstat_hmget"]["usec_per_call"]),
        "ft_info_bytes_per_product": parts,
    }


def user_memory(rec: RedisRecommender, catalog: ScaleCatalog, users: int, clicks: int) -> dict[str, Any]:
    """Bytes per user after `clicks` clicks each (features hash with a session vector, recent
    list, seen zset), by MEMORY USAGE of every key, and the click time."""
    rng = np.random.default_rng(11)
    client = rec.redis
    started = time.perf_counter()
    for u in range(users):
        for pid in rng.integers(0, catalog.n, clicks):
            rec.record_click(f"u{u}", str(pid))
    click_s = time.perf_counter() - started
    sizes, with_session = [], 0
    for u in range(min(users, 200)):
        keys = rec._user_keys(f"u{u}")
        sizes.append(sum(int(client.memory_usage(key, samples=0) or 0) for key in keys))
        with_session += bool(client.hexists(keys.features, SESSION_VEC_FIELD))
    return {
        "users": users,
        "clicks_each": clicks,
        "bytes_per_user": round(float(np.mean(sizes)), 1),
        "share_with_session_vector": round(with_session / len(sizes), 3),
        "click_ms_mean": round(click_s * 1000 / (users * clicks), 3),
    }


# --- retrieval: recall and latency ---------------------------------------------------------------


def searcher(rec: RedisRecommender) -> Callable[[np.ndarray, dict[str, Any]], list[str]]:
    """candidate_retrieve's ids (the library sends the query in the index's vector type)."""
    return lambda vector, kwargs: [c.id for c in rec.candidate_retrieve(vector, k=K, **kwargs)]


def recall(
    setup: Setup, catalog: ScaleCatalog, queries: Queries, truth: dict[str, list[list[int]]], cases: Sequence[str]
) -> dict[str, Any]:
    """recall@10 per case, and the p50 of those (sequential) searches."""
    out = {}
    for case in cases:
        name, policy = case_parts(case)
        search = searcher(replace(setup, hybrid_policy=policy).recommender())
        hits, possible, matching, times = 0, 0, [], []
        for i, vector in enumerate(queries.vectors):
            kwargs = filter_kwargs(catalog, name, int(queries.category[i]), int(queries.brand[i]))
            expected = {str(pid) for pid in truth[name][i]}
            started = time.perf_counter()
            found = search(vector, kwargs)
            times.append((time.perf_counter() - started) * 1000)
            hits += len(expected & set(found))
            possible += len(expected)
            matching.append(len(expected))
        out[case] = {
            "recall_at_10": round(hits / max(possible, 1), 4),
            "queries_with_10": sum(m == K for m in matching),
            "p50_ms_one_client": round(float(np.median(times)), 3),
        }
    return out


def ef_sweep(
    setup: Setup,
    catalog: ScaleCatalog,
    queries: Queries,
    truth: dict[str, list[list[int]]],
    values: Sequence[int],
    cases: Sequence[str],
) -> dict[str, Any]:
    """recall@10 and one client's p50 at each EF_RUNTIME (same index: EF_RUNTIME is per query)."""
    out = {}
    for ef in values:
        swept = replace(setup, ef_runtime=ef)
        out[str(ef)] = recall(swept, catalog, queries, truth, cases)
        log.info("EF_RUNTIME %d: %s", ef, {case: row["recall_at_10"] for case, row in out[str(ef)].items()})
    return out


def _latency_worker(
    setup: Setup, catalog: ScaleCatalog, queries: Queries, case: str, offset: int, count: int, barrier: Any
) -> list[float]:
    name, policy = case_parts(case)
    setup = replace(setup, hybrid_policy=policy)
    rec = setup.recommender()
    search = searcher(rec)
    n = len(queries.vectors)
    work = [
        (
            queries.vectors[(offset + j) % n],
            int(queries.category[(offset + j) % n]),
            int(queries.brand[(offset + j) % n]),
        )
        for j in range(count)
    ]
    for vector, category, brand in work[:5]:  # warm the connection
        search(vector, filter_kwargs(catalog, name, category, brand))
    barrier.wait()
    times = []
    for vector, category, brand in work:
        kwargs = filter_kwargs(catalog, name, category, brand)
        started = time.perf_counter()
        search(vector, kwargs)
        times.append((time.perf_counter() - started) * 1000)
    return times


def latency(
    setup: Setup,
    catalog: ScaleCatalog,
    queries: Queries,
    clients: Sequence[int],
    per_level: int,
    cases: Sequence[str],
) -> dict[str, Any]:
    """p50/p99 of one search at each concurrency, every client a process, all started together;
    with Redis' own time per FT.SEARCH (INFO commandstats) and the searches per second, which
    split a client's wait between the search itself and queueing for Redis' one thread."""
    out: dict[str, Any] = {}
    context = multiprocessing.get_context("fork")
    client = setup.recommender().redis
    for case in cases:
        out[case] = {}
        for level in clients:
            each = max(per_level // level, 20)
            barrier = context.Barrier(level)
            args = [(setup, catalog, queries, case, w * each, each, barrier) for w in range(level)]
            client.config_resetstat()
            started = time.perf_counter()
            times = [t for part in in_processes(_latency_worker, args) for t in part]
            wall = time.perf_counter() - started
            search_stats = client.info("commandstats").get("cmdstat_FT.SEARCH", {})
            row = {
                **percentiles(times),
                "samples": len(times),
                "searches_per_s": round(len(times) / wall),
                "redis_ms_per_search": round(float(search_stats.get("usec_per_call", 0.0)) / 1000, 3),
                "load_average": round(os.getloadavg()[0], 2),
            }
            log.info(
                "%s, %d clients: p50 %.2f ms, p99 %.2f ms, Redis %.2f ms per search (%.0f s)",
                case, level, row["p50_ms"], row["p99_ms"], row["redis_ms_per_search"], wall,
            )  # fmt: skip
            out[case][str(level)] = row
    return out


# --- the run ------------------------------------------------------------------------------------


def filter_shares(catalog: ScaleCatalog, queries: Queries) -> dict[str, float]:
    """Median share of the catalogue each filter lets through, over the queries."""
    shares = {}
    for case in FILTERS:
        counts = np.zeros(len(queries.vectors))
        for chunk in range(catalog.chunks):
            mask = filter_mask(catalog, case, catalog.span(chunk), queries.category, queries.brand)
            counts += catalog.span(chunk).stop - catalog.span(chunk).start if mask is None else mask.sum(axis=1)
        shares[case] = round(float(np.median(counts)) / catalog.n, 5)
    return shares


def draw(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for case, rows in result["latency"].items():
        levels = [int(level) for level in rows]
        line = ax.plot(levels, [rows[str(level)]["p50_ms"] for level in levels], marker="o", label=f"{case} p50")
        ax.plot(
            levels,
            [rows[str(level)]["p99_ms"] for level in levels],
            marker="x",
            ls="--",
            color=line[0].get_color(),
            label=f"{case} p99",
        )
    ax.axhline(10, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent clients (processes)")
    ax.set_ylabel("candidate_retrieve, ms")
    ax.set_title(f"{result['products']:,} products, {result['settings']['vector_type']}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict[str, Any]:
    kept = read_manifest(args.reuse) if args.reuse else None
    if kept:
        args.products, args.seed, args.vector_type = kept["products"], kept["seed"], kept["settings"]["vector_type"]
        args.hnsw_m, args.hnsw_ef_construction = kept["settings"]["hnsw_m"], kept["settings"]["hnsw_ef_construction"]
        # Catalogues kept before there was a choice were made by the isotropic generator.
        args.generator = kept["settings"].get("generator", "isotropic")
    catalog = ScaleCatalog(args.products, args.seed, args.generator)
    queries = make_queries(catalog, args.queries, args.seed)
    started = time.perf_counter()
    truth = exact_neighbours(catalog, queries)
    exact_s = time.perf_counter() - started
    log.info("exact top 10 of %d queries under %d filters: %.1f s", len(queries.vectors), len(FILTERS), exact_s)
    data_dir = args.reuse or args.data_dir
    # A kept catalogue's dump takes longer to load than the bundled Redis' start-up timeout.
    local_redis.STARTUP_TIMEOUT_S = max(local_redis.STARTUP_TIMEOUT_S, 3600.0)
    loading = time.perf_counter()
    with LocalRedis(data_dir) as server:
        setup = Setup(server.url, args.vector_type, args.hnsw_m, args.hnsw_ef_construction, args.ef_runtime)
        rec = setup.recommender()
        assert isinstance(rec.redis, redis.Redis)  # the bundled Redis this benchmark starts
        result: dict[str, Any] = {
            "products": args.products,
            "settings": {k: v for k, v in asdict(setup).items() if k not in ("url", "hybrid_policy")}
            | {"queries": len(queries.vectors), "seed": args.seed, "batch": BATCH, "generator": args.generator},
            "machine": machine(rec.redis),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "filter_share_median": filter_shares(catalog, queries),
            "exact_search_s": round(exact_s, 1),
        }
        if kept:
            wait_indexed(rec, catalog.n)
            baseline = kept["baseline_used_memory"]
            result["ingest"] = kept["ingest"]
            result["reused"] = {
                "data_dir": str(args.reuse),
                "loaded_and_indexed_after_s": round(time.perf_counter() - loading, 1),
            }
            log.info(
                "reused %s: loaded and indexed in %.1f s", args.reuse, result["reused"]["loaded_and_indexed_after_s"]
            )
        else:
            if args.hash_max_listpack_value is not None:
                rec.redis.config_set("hash-max-listpack-value", args.hash_max_listpack_value)
            baseline = int(rec.redis.info("memory")["used_memory"])
            rec.create_index()
            result["ingest"] = ingest(setup, rec, catalog, args.ingest_clients)
            if args.data_dir:
                keep(rec, args.data_dir, result, baseline)
        result["memory"] = memory(rec, catalog.n, baseline)
        if args.ef_sweep:
            result["ef_runtime_sweep"] = ef_sweep(setup, catalog, queries, truth, args.ef_sweep, args.cases)
            setup = replace(setup, ef_runtime=chosen_ef_runtime(result["ef_runtime_sweep"], args.target_recall))
            result["settings"]["ef_runtime"] = setup.ef_runtime
            result["settings"]["ef_runtime_chosen_for_recall"] = args.target_recall
            result["recall"] = result["ef_runtime_sweep"][str(setup.ef_runtime)]
        else:
            result["recall"] = recall(setup, catalog, queries, truth, args.cases)
        result["latency"] = latency(setup, catalog, queries, args.clients, args.latency_queries, args.cases)
        if args.users:
            result["users"] = user_memory(rec, catalog, args.users, 10)
        result["machine"]["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    return result


def chosen_ef_runtime(sweep: dict[str, Any], target: float) -> int:
    """The smallest swept EF_RUNTIME whose unfiltered recall@10 reaches the target (filters only
    raise recall: a filtered KNN searches a smaller set), else the largest swept."""
    values = sorted(int(ef) for ef in sweep)
    return next((ef for ef in values if sweep[str(ef)]["none"]["recall_at_10"] >= target), values[-1])


def keep(rec: RedisRecommender, data_dir: Path, result: dict[str, Any], baseline: int) -> None:
    """Save the ingested catalogue (an RDB in data_dir) and what it is, for --reuse. The index is
    not in the RDB: Redis rebuilds it from the hashes when the dump is loaded."""
    started = time.perf_counter()
    rec.redis.execute_command("SAVE")
    manifest = {
        "products": result["products"],
        "seed": result["settings"]["seed"],
        "settings": result["settings"],
        "ingest": result["ingest"],
        "baseline_used_memory": baseline,
        "saved": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (data_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("saved the catalogue in %s in %.1f s", data_dir, time.perf_counter() - started)


def read_manifest(data_dir: Path) -> dict[str, Any]:
    path = data_dir / MANIFEST
    if not path.exists():
        raise SystemExit(
            f"{data_dir} holds no kept catalogue ({MANIFEST} is missing): make one with --data-dir {data_dir}"
        )
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def print_table(result: dict[str, Any]) -> None:
    ingest_ = result["ingest"]
    print(
        f"\n{result['products']:,} products, {result['settings']['vector_type']}, load {result['machine']['load_average_1min_at_start']} -> {result['machine']['load_average_1min_at_end']}"
    )
    print(
        f"ingest: 1 client {ingest_['one_client']['items_per_s']:,}/s, "
        f"{ingest_['several_clients']['clients']} clients {ingest_['several_clients']['items_per_s']}/s, "
        f"fully indexed after {ingest_['fully_indexed_after_s']} s"
    )
    mem = result["memory"]
    print(f"memory: {mem['used_memory_per_product']} B/product used_memory; FT.INFO {mem['ft_info_bytes_per_product']}")
    if "users" in result:
        print(f"users: {result['users']['bytes_per_user']} B per user after 10 clicks")
    levels = list(next(iter(result["latency"].values())))
    print(f"EF_RUNTIME {result['settings']['ef_runtime']}")
    print("| filter | median share | recall@10 | " + " | ".join(f"{lv} clients p50 / p99 ms" for lv in levels) + " |")
    for case in result["latency"]:
        cells = [f"{result['latency'][case][lv]['p50_ms']} / {result['latency'][case][lv]['p99_ms']}" for lv in levels]
        share = result["filter_share_median"][case_parts(case)[0]]
        print(f"| {case} | {share:.4%} | {result['recall'][case]['recall_at_10']} | " + " | ".join(cells) + " |")


def cases_list(text: str) -> list[str]:
    chosen = text.split(",")
    unknown = [case for case in chosen if case not in CASES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown case {', '.join(unknown)}: choose from {','.join(CASES)}")
    return chosen


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000, help="recall queries (default 1000)")
    parser.add_argument("--latency-queries", type=int, default=1000, help="searches per concurrency level")
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    parser.add_argument("--ingest-clients", type=int, default=2)
    parser.add_argument(
        "--cases",
        type=cases_list,
        default=list(CASES),
        help=f"what recall and latency are measured for (default all: {','.join(CASES)})",
    )
    parser.add_argument(
        "--hash-max-listpack-value",
        type=int,
        default=None,
        help="set this Redis option before ingesting (default: the bundled Redis' own): product hashes whose every "
        "value fits are stored as listpacks, smaller than hash tables",
    )
    parser.add_argument(
        "--users", type=int, default=1000, help="users clicked 10 times each, for bytes per user (0: skip)"
    )
    parser.add_argument("--vector-type", choices=("FLOAT32", "FLOAT16"), default="FLOAT32")
    parser.add_argument(
        "--generator",
        choices=("catalogue", "isotropic"),
        default="catalogue",
        help="vectors like real product embeddings (default), or isotropic clouds: HNSW's worst case, not a catalogue",
    )
    parser.add_argument("--hnsw-m", type=int, default=None)
    parser.add_argument("--hnsw-ef-construction", type=int, default=None)
    parser.add_argument("--ef-runtime", type=int, default=100)
    parser.add_argument(
        "--ef-sweep",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[],
        help="EF_RUNTIME values, e.g. 100,200,400: recall is measured at each, latency at the smallest reaching "
        "--target-recall unfiltered",
    )
    parser.add_argument("--target-recall", type=float, default=0.95)
    kept = parser.add_mutually_exclusive_group()
    kept.add_argument(
        "--data-dir", type=Path, default=None, help="run Redis here and keep the ingested catalogue (for --reuse)"
    )
    kept.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="measure the catalogue kept in this data dir (by --data-dir) without ingesting it again; "
        "--products, --seed, --vector-type and the HNSW options are taken from it",
    )
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument(
        "--output", type=Path, default=None, help="JSON path (default bench/results/million[-N][-FLOAT16].json)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    result = run(args)
    print_table(result)
    suffix = "-reused" if args.reuse else ""
    suffix += ("" if args.products == 1_000_000 else f"-{args.products}") + (
        "" if args.vector_type == "FLOAT32" else "-float16"
    )
    if args.generator == "isotropic":
        suffix += "-isotropic"
    if args.hnsw_m or args.hnsw_ef_construction:
        suffix += f"-m{args.hnsw_m}-ef{args.hnsw_ef_construction}"
    output = args.output or RESULTS_DIR / f"million{suffix}.json"
    write_result(output, result)
    draw(result, output.with_suffix(".png"))
    return result


if __name__ == "__main__":
    main()
