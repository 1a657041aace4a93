"""Crowd benchmark: does what shoppers buy together predict a basket better than what looks alike?

Real baskets (data/online-retail/, made by bench/online_retail.py) and generated ones, measured
through Redis where the library serves the ranking:

1. Item task (issue 20's protocol). Invoices before 2011-10-01 train, later ones test. For
   `--baskets` test baskets of 2+ distinct products, chosen with `--seed`, the basket's first
   product is the query and the rest of the catalogue is ranked; HR@10, recall@10 and MRR@10
   (ranx) against the basket's other products. Methods, in one run: popularity (train purchase
   counts), content KNN (`RedisRecommender.similar()` as served, read from Redis), co-occurrence
   counts in train baskets (raw and cosine-normalised), and `implicit`'s BM25 item-item and ALS
   (64 factors) fitted on the same train baskets.
2. Feed task. Every customer (up to `--customers`) with purchases before the split and an invoice
   after it: recall@20 of a feed against the products of their first test invoice they had not
   bought before. Methods: today's `for_you` after replaying their last FEED_REPLAYED train
   purchases as `record_click`s, `implicit` ALS `recommend` (fitted on train users × products)
   and popularity.
3. Complements: generated baskets on a sample of the real products, where each product goes
   with products from other embedding clusters (a fixed, seeded map), so that looking alike
   predicts nothing. The item task's methods run on them too.

The library's crowd signal plugs in through `library_serves_crowd_signals()`,
`load_train_events()` and `library_item_methods()` / `library_feed_methods()`: once
`RedisRecommender.record_event` exists and `similar()` takes `signal`, the run loads the train
events into Redis through the library and measures `similar(signal="co_occurrence")` and
`signal="blend"` beside the peers; until then those methods are not registered.

Run: .venv/bin/python -m bench.crowd            (the full run, a few minutes)
     .venv/bin/python -m bench.crowd --quick    (the most bought products, a few hundred baskets)
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import gzip
import hashlib
import inspect
import logging
import os
import random
import time
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from bench.harness import ROOT, machine, package_versions, write_result
from embeddings import LocalEmbedder
from local_redis import LocalRedis, connect
from recengine.catalog_file import product_text
from recengine.catalog_input import check_records, parse_jsonl
from recommender import PastEvent, Recommendation, RedisRecommender, Signal

log = logging.getLogger("bench.crowd")

DATA_DIR = ROOT / "data" / "online-retail"
RESULTS_PATH = ROOT / "bench" / "results" / "crowd.json"
CACHE_DIR = ROOT / "bench" / "cache"
SPLIT_AT = datetime(2011, 10, 1, tzinfo=UTC)
ITEM_K = 10
FEED_K = 20
ITEM_METRICS = (f"hit_rate@{ITEM_K}", f"recall@{ITEM_K}", f"mrr@{ITEM_K}", f"recall_capped@{ITEM_K}")
FEED_METRICS = (f"recall@{FEED_K}", f"hit_rate@{FEED_K}", f"recall_capped@{FEED_K}")
# A customer's last purchases replayed as clicks before today's feed is asked: the library keeps
# the last 6 clicks for exclusion and folds every click into the session vector (EWMA), so a
# few more than 6 reach the session without replaying years of history.
FEED_REPLAYED = 10
ALS_FACTORS = 64
ALS_ITERATIONS = 15
QUICK_PRODUCTS = 600
PACKAGES = ("implicit", "ranx", "numpy", "scipy", "redis", "onnxruntime")

# A ranking function: (query product id, k) -> up to k product ids, best first, never the query.
ItemRanker = Callable[[str, int], list[str]]
# A feed: (case, k) -> up to k product ids, best first.
FeedRanker = Callable[["FeedCase", int], list[str]]


class CrowdDataError(ValueError):
    """Data the benchmark cannot use; the message names the file, line and fix."""


# --- the data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Purchase:
    user_id: str
    product_id: str
    at: float  # seconds since the epoch
    session_id: str


def read_products(path: Path) -> list[dict[str, Any]]:
    """The catalogue, checked by build_catalog's own rules (what it accepts is what we embed)."""
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        records, problems = parse_jsonl(stream.read())
    products, record_problems = check_records(records, from_text=False)
    problems += record_problems
    if problems:
        line_no, message = problems[0]
        raise CrowdDataError(f"{path}: line {line_no}: {message} (rebuild it with bench/online_retail.py)")
    return products


@functools.lru_cache(maxsize=4096)
def parse_timestamp(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 time (cached: an invoice's lines share one)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def read_events(path: Path, known_products: set[str]) -> list[Purchase]:
    """The purchase events, in file order (invoices are contiguous and in time order)."""
    events: list[Purchase] = []
    with gzip.open(path, "rt", encoding="utf-8", newline="") as stream:
        reader = csv.DictReader(stream)
        for row in reader:
            try:
                event = Purchase(
                    row["user_id"], row["product_id"], parse_timestamp(row["timestamp"]), row["session_id"]
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise CrowdDataError(f"{path}: line {reader.line_num}: {exc}") from None
            if event.product_id not in known_products:
                raise CrowdDataError(f"{path}: line {reader.line_num}: unknown product {event.product_id!r}")
            events.append(event)
    return events


def split_by_time(events: Sequence[Purchase], split_at: float) -> tuple[list[Purchase], list[Purchase]]:
    """(train, test): a whole invoice goes to the side of its first event's time, so no basket
    is cut in two."""
    session_start: dict[str, float] = {}
    for event in events:
        session_start.setdefault(event.session_id, event.at)
    train = [e for e in events if session_start[e.session_id] < split_at]
    test = [e for e in events if session_start[e.session_id] >= split_at]
    return train, test


def baskets_of(events: Iterable[Purchase]) -> dict[str, list[str]]:
    """session id -> its distinct products in the order they were first bought."""
    baskets: dict[str, list[str]] = {}
    for event in events:
        basket = baskets.setdefault(event.session_id, [])
        if event.product_id not in basket:
            basket.append(event.product_id)
    return baskets


@dataclass(frozen=True)
class ItemQuery:
    id: str
    product_id: str
    relevant: tuple[str, ...]


def choose_item_queries(baskets: Mapping[str, Sequence[str]], count: int, seed: int) -> list[ItemQuery]:
    """`count` baskets of 2+ distinct products, drawn with `seed` from all such baskets (in
    session id order, so the draw does not depend on the file's order): the first product asks,
    the others are what should come back."""
    eligible = sorted(session for session, products in baskets.items() if len(set(products)) >= 2)
    chosen = sorted(random.Random(seed).sample(eligible, min(count, len(eligible))))
    return [ItemQuery(s, baskets[s][0], tuple(p for p in baskets[s][1:] if p != baskets[s][0])) for s in chosen]


@dataclass(frozen=True)
class FeedCase:
    user_id: str
    history: tuple[str, ...]  # distinct train purchases, oldest first
    target: tuple[str, ...]  # the first test invoice's products not in history


def choose_feed_cases(
    train: Sequence[Purchase], test: Sequence[Purchase], count: int, seed: int, is_guest: Callable[[str], bool]
) -> list[FeedCase]:
    """Customers with train purchases and a test invoice that holds something new to them, up to
    `count` of them drawn with `seed`. Guests have one invoice each, so they are never both."""
    histories: dict[str, list[str]] = {}
    for event in train:
        if not is_guest(event.user_id):
            history = histories.setdefault(event.user_id, [])
            if event.product_id in history:
                history.remove(event.product_id)
            history.append(event.product_id)  # most recent last
    first_test: dict[str, str] = {}
    for event in test:
        first_test.setdefault(event.user_id, event.session_id)
    test_baskets = baskets_of(e for e in test if first_test.get(e.user_id) == e.session_id)
    cases = []
    for user_id in sorted(histories.keys() & first_test.keys()):
        seen = set(histories[user_id])
        target = tuple(p for p in test_baskets[first_test[user_id]] if p not in seen)
        if target:
            cases.append(FeedCase(user_id, tuple(histories[user_id]), target))
    return sorted(random.Random(seed).sample(cases, min(count, len(cases))), key=lambda c: c.user_id)


def is_guest(user_id: str) -> bool:
    return user_id.startswith("guest-")


# --- the peers: counted, not served ----------------------------------------------------------


@dataclass
class TrainMatrix:
    """Train baskets (or users) as rows of a binary CSR matrix over the catalogue's columns."""

    product_ids: list[str]
    column: dict[str, int]
    rows: sp.csr_matrix

    @classmethod
    def build(cls, product_ids: Sequence[str], row_sets: Iterable[Iterable[str]]) -> TrainMatrix:
        column = {pid: i for i, pid in enumerate(product_ids)}
        indptr, indices = [0], []
        for products in row_sets:
            indices.extend(sorted({column[p] for p in products}))
            indptr.append(len(indices))
        data = np.ones(len(indices), dtype=np.float32)
        rows = sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, len(product_ids)))
        return cls(list(product_ids), column, rows)

    def counts(self) -> np.ndarray:
        """Rows holding each product: its train purchase count (baskets or users)."""
        return np.asarray(self.rows.sum(axis=0)).ravel()


def top_ids(scores: np.ndarray, product_ids: Sequence[str], k: int, exclude: Iterable[int]) -> list[str]:
    """The k best-scoring products with a score above 0, ties by catalogue order."""
    scores = scores.astype(np.float64, copy=True)
    for index in exclude:
        scores[index] = 0.0
    positive = np.flatnonzero(scores > 0)
    order = positive[np.lexsort((positive, -scores[positive]))][:k]
    return [product_ids[i] for i in order]


def popularity_order(matrix: TrainMatrix) -> list[str]:
    """Products with train purchases, most bought first, ties in catalogue order."""
    counts = matrix.counts()
    order = np.lexsort((np.arange(len(counts)), -counts))
    return [matrix.product_ids[i] for i in order if counts[i] > 0]


def popularity_ranker(matrix: TrainMatrix) -> ItemRanker:
    ranked = popularity_order(matrix)

    def rank(product_id: str, k: int) -> list[str]:
        return [pid for pid in ranked[: k + 1] if pid != product_id][:k]

    return rank


def co_occurrence_rankers(matrix: TrainMatrix) -> dict[str, ItemRanker]:
    """Raw counts of train baskets holding both products, and the same divided by the
    geometric mean of each product's basket count (cosine of their basket columns)."""
    together = (matrix.rows.T @ matrix.rows).tocsr()
    baskets = together.diagonal().astype(np.float64)
    norm = np.sqrt(np.maximum(baskets, 1.0))

    def raw(product_id: str, k: int) -> list[str]:
        index = matrix.column[product_id]
        return top_ids(together[index].toarray().ravel(), matrix.product_ids, k, (index,))

    def cosine(product_id: str, k: int) -> list[str]:
        index = matrix.column[product_id]
        return top_ids(together[index].toarray().ravel() / (norm[index] * norm), matrix.product_ids, k, (index,))

    return {"co-occurrence (counts)": raw, "co-occurrence (cosine)": cosine}


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """implicit runs its own loops and asks for a single-threaded BLAS (it warns otherwise); one
    thread also keeps the fit off the cores other work on this machine is using. Its note that
    BM25 converts a COO matrix to CSR (milliseconds) is silenced."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        yield


def implicit_item_rankers(matrix: TrainMatrix, seed: int) -> dict[str, ItemRanker]:
    """`implicit`'s BM25 item-item neighbours and ALS item factors, fitted on the same baskets."""
    from implicit.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import BM25Recommender

    with one_blas_thread():
        bm25 = BM25Recommender(num_threads=1)
        als = AlternatingLeastSquares(factors=ALS_FACTORS, iterations=ALS_ITERATIONS, random_state=seed, num_threads=1)
        bm25.fit(matrix.rows, show_progress=False)
        als.fit(matrix.rows, show_progress=False)

    def neighbours(model: Any) -> ItemRanker:
        def rank(product_id: str, k: int) -> list[str]:
            index = matrix.column[product_id]
            ids, scores = model.similar_items(index, N=k + 1)
            return [matrix.product_ids[i] for i, s in zip(ids, scores, strict=True) if i != index and s > 0][:k]

        return rank

    return {"implicit BM25 item-item": neighbours(bm25), f"implicit ALS ({ALS_FACTORS} factors)": neighbours(als)}


# --- served by the library, read from Redis ---------------------------------------------------


def served_ids(recommendation: Recommendation) -> list[str]:
    return [candidate.id for candidate in recommendation.candidates]


def content_ranker(rec: RedisRecommender) -> ItemRanker:
    """ "More like this" as the library serves it today: text similarity alone (asked for by name
    once similar() has other signals, whose default is the blend)."""
    options: dict[str, Any] = {"signal": "content"} if library_serves_crowd_signals() else {}

    def rank(product_id: str, k: int) -> list[str]:
        return served_ids(rec.similar(product_id, k=k, **options))

    return rank


def library_serves_crowd_signals() -> bool:
    """Whether this library learns from everyone's events: `RedisRecommender.record_event` and a
    `signal` argument on `similar()` (issue 20). Until it does, the crowd methods below are not
    registered and the run measures the peers alone."""
    return (
        hasattr(RedisRecommender, "record_event") and "signal" in inspect.signature(RedisRecommender.similar).parameters
    )


def load_train_events(rec: RedisRecommender, train: Sequence[Purchase]) -> float:
    """Feed the train purchases to the library, each at its own time and in its invoice (the
    session), so that its co-occurrence counts are built by the code that serves them. Returns
    the events per second. Called only when library_serves_crowd_signals()."""
    started = time.perf_counter()
    rec.import_events(
        (PastEvent(e.user_id, e.product_id, "purchase", e.at, e.session_id) for e in train),
        f"crowd-train-{len(train)}",
    )
    return len(train) / max(1e-9, time.perf_counter() - started)


def library_item_methods(rec: RedisRecommender) -> dict[str, ItemRanker]:
    """similar() with the crowd's signals, once load_train_events has fed them."""

    def signal(name: Signal) -> ItemRanker:
        def rank(product_id: str, k: int) -> list[str]:
            return served_ids(rec.similar(product_id, k=k, signal=name))

        return rank

    return {"library co-occurrence": signal("co_occurrence"), "library blend": signal("blend")}


def item_methods(rec: RedisRecommender, matrix: TrainMatrix, seed: int) -> dict[str, ItemRanker]:
    """Every method of the item task that exists in this checkout, in table order."""
    methods = {"popularity": popularity_ranker(matrix), "content KNN (similar())": content_ranker(rec)}
    methods |= co_occurrence_rankers(matrix)
    methods |= implicit_item_rankers(matrix, seed)
    if library_serves_crowd_signals():
        methods |= library_item_methods(rec)
    return methods


# --- the feed ---------------------------------------------------------------------------------


def replay_as_clicks(rec: RedisRecommender, user_id: str, history: Sequence[str]) -> None:
    """What today's library can learn about a returning customer: their last purchases, clicked."""
    rec.reset_user(user_id)
    for product_id in history[-FEED_REPLAYED:]:
        rec.record_click(user_id, product_id)


def for_you_feed(rec: RedisRecommender, user_prefix: str, **options: Any) -> FeedRanker:
    def rank(case: FeedCase, k: int) -> list[str]:
        user_id = f"{user_prefix}{case.user_id}"
        replay_as_clicks(rec, user_id, case.history)
        return served_ids(rec.for_you(user_id, k=k, **options))

    return rank


def library_feed_methods(rec: RedisRecommender, user_prefix: str) -> dict[str, FeedRanker]:
    """The feed with the crowd's signal, once for_you() takes `signal`: after the same replayed
    clicks as today's, and as the import of the train events left the customer (their last
    events, recent and seen products; no session vector, which would have faded)."""

    def imported(case: FeedCase, k: int) -> list[str]:
        return served_ids(rec.for_you(case.user_id, k=k, signal="blend"))

    return {"for_you (blend)": for_you_feed(rec, user_prefix, signal="blend"), "for_you (blend, imported)": imported}


def implicit_feed(users: TrainMatrix, user_row: Mapping[str, int], seed: int) -> FeedRanker:
    from implicit.als import AlternatingLeastSquares

    with one_blas_thread():
        als = AlternatingLeastSquares(factors=ALS_FACTORS, iterations=ALS_ITERATIONS, random_state=seed, num_threads=1)
        als.fit(users.rows, show_progress=False)

    def rank(case: FeedCase, k: int) -> list[str]:
        row = user_row[case.user_id]
        ids, _ = als.recommend(row, users.rows[row], N=k, filter_already_liked_items=True)
        return [users.product_ids[i] for i in ids]

    return rank


def popularity_feed(matrix: TrainMatrix) -> FeedRanker:
    ranked = popularity_order(matrix)

    def rank(case: FeedCase, k: int) -> list[str]:
        bought = set(case.history)
        return [pid for pid in ranked[: k + len(bought)] if pid not in bought][:k]

    return rank


def feed_methods(
    rec: RedisRecommender, train: Sequence[Purchase], baskets: TrainMatrix, seed: int
) -> dict[str, FeedRanker]:
    """Today's feed and its peers; ALS is fitted on train users (customers, and each guest
    invoice as a user of its own) x products, popularity counts the train baskets."""
    by_user: dict[str, set[str]] = {}
    for event in train:
        by_user.setdefault(event.user_id, set()).add(event.product_id)
    user_ids = sorted(by_user)
    users = TrainMatrix.build(baskets.product_ids, (by_user[u] for u in user_ids))
    user_prefix = "feed-"
    blends = library_serves_crowd_signals() and "signal" in inspect.signature(RedisRecommender.for_you).parameters
    today = for_you_feed(rec, user_prefix, **({"signal": "content"} if blends else {}))
    methods: dict[str, FeedRanker] = {"for_you (today: session of replayed clicks)": today}
    methods["implicit ALS recommend"] = implicit_feed(users, {u: i for i, u in enumerate(user_ids)}, seed)
    methods["popularity"] = popularity_feed(baskets)
    if blends:
        methods |= library_feed_methods(rec, user_prefix)
    return methods


# --- the complements: generated baskets where looking alike predicts nothing -------------------


@dataclass(frozen=True)
class ComplementData:
    product_ids: list[str]
    train: dict[str, list[str]]
    test: dict[str, list[str]]
    clusters: int


def kmeans_labels(vectors: np.ndarray, clusters: int, seed: int, rounds: int = 20) -> np.ndarray:
    """Lloyd's k-means on unit vectors (cosine), seeded: which products look alike."""
    rng = np.random.default_rng(seed)
    centres = vectors[rng.choice(len(vectors), clusters, replace=False)]
    labels = np.zeros(len(vectors), dtype=np.int64)
    for _ in range(rounds):
        labels = np.argmax(vectors @ centres.T, axis=1)
        for c in range(clusters):
            members = vectors[labels == c]
            if len(members):
                centre = members.mean(axis=0)
                centres[c] = centre / max(1e-9, float(np.linalg.norm(centre)))
    return labels


def complement_baskets(
    product_ids: Sequence[str], vectors: np.ndarray, *, train: int, test: int, seed: int, clusters: int = 12
) -> ComplementData:
    """Baskets of an anchor and 1-3 of its complements (plus, in 3 of 10, one product at random).
    Each product's 4 complements are drawn once, from clusters other than its own, so the products
    bought together do not look alike. Anchors are Zipf-popular, as real products are."""
    rng = random.Random(seed)
    labels = kmeans_labels(vectors, clusters, seed)
    by_cluster: dict[int, list[str]] = {}
    for pid, label in zip(product_ids, labels, strict=True):
        by_cluster.setdefault(int(label), []).append(pid)
    label_of = dict(zip(product_ids, labels.tolist(), strict=True))
    complements = {
        pid: rng.sample([q for c, members in by_cluster.items() if c != label_of[pid] for q in members], 4)
        for pid in product_ids
    }
    anchors = list(product_ids)
    rng.shuffle(anchors)
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(anchors))]

    def basket() -> list[str]:
        anchor = rng.choices(anchors, weights)[0]
        items = [anchor, *rng.sample(complements[anchor], rng.randint(1, 3))]
        if rng.random() < 0.3:
            items.append(rng.choice(anchors))
        return list(dict.fromkeys(items))

    return ComplementData(
        list(product_ids),
        {f"g{i}": basket() for i in range(train)},
        {f"t{i}": basket() for i in range(test)},
        clusters,
    )


# --- running a task ----------------------------------------------------------------------------


@dataclass
class MethodResult:
    metrics: dict[str, float]
    ms_per_query: float
    full_lists: float  # share of queries answered with k results
    per_query: dict[str, dict[str, float]] = field(repr=False, default_factory=dict)


def ranking_metrics(ranked: Sequence[str], relevant: Collection[str], k: int) -> dict[str, float]:
    """One query's hit rate, recall, capped recall and reciprocal rank at k, with binary relevance.

    recall@k is hits / |relevant|, as ranx and most papers define it; a basket of 30 products can
    reach at most 10/30 with 10 slots. recall_capped@k divides by min(k, |relevant|) instead, so a
    perfect top k scores 1 whatever the basket's size (tests/integration/test_crowd_bench.py
    checks the first three against ranx)."""
    top = ranked[:k]
    hits = sum(1 for pid in top if pid in relevant)
    first = next((rank for rank, pid in enumerate(top, start=1) if pid in relevant), None)
    return {
        f"hit_rate@{k}": float(hits > 0),
        f"recall@{k}": hits / len(relevant) if relevant else 0.0,
        f"recall_capped@{k}": hits / min(k, len(relevant)) if relevant else 0.0,
        f"mrr@{k}": 1.0 / first if first else 0.0,
    }


def method_result(
    rankings: Mapping[str, Sequence[str]], relevant: Mapping[str, Collection[str]], k: int, seconds: float
) -> MethodResult:
    """The mean of each metric over the queries, each query's value, time and how often k came back."""
    per_query: dict[str, dict[str, float]] = {}
    for qid, ranked in rankings.items():
        for metric, value in ranking_metrics(ranked, relevant[qid], k).items():
            per_query.setdefault(metric, {})[qid] = value
    count = max(1, len(rankings))
    return MethodResult(
        {metric: round(sum(values.values()) / count, 4) for metric, values in per_query.items()},
        round(seconds * 1000 / count, 3),
        round(sum(len(r) == k for r in rankings.values()) / count, 4),
        per_query,
    )


def run_item_task(methods: Mapping[str, ItemRanker], queries: Sequence[ItemQuery]) -> dict[str, MethodResult]:
    relevant = {q.id: frozenset(q.relevant) for q in queries}
    results = {}
    for name, rank in methods.items():
        started = time.perf_counter()
        rankings = {q.id: rank(q.product_id, ITEM_K) for q in queries}
        seconds = time.perf_counter() - started
        if any(q.product_id in rankings[q.id] for q in queries):
            raise AssertionError(f"{name} returned the query product itself")
        results[name] = method_result(rankings, relevant, ITEM_K, seconds)
        log.info("%s: %s", name, results[name].metrics)
    return results


def run_feed_task(methods: Mapping[str, FeedRanker], cases: Sequence[FeedCase]) -> dict[str, MethodResult]:
    """Each feed's metrics against the cases' targets, and the share of its slots spent on
    products the customer had bought before (never in a target)."""
    relevant = {c.user_id: frozenset(c.target) for c in cases}
    results = {}
    for name, rank in methods.items():
        started = time.perf_counter()
        rankings = {c.user_id: rank(c, FEED_K) for c in cases}
        result = method_result(rankings, relevant, FEED_K, time.perf_counter() - started)
        bought = sum(len(set(rankings[c.user_id]) & set(c.history)) for c in cases)
        result.metrics["already_bought_share"] = round(bought / max(1, sum(len(r) for r in rankings.values())), 4)
        results[name] = result
        log.info("feed %s: %s", name, result.metrics)
    return results


def paired_difference(a: MethodResult, b: MethodResult, metric: str) -> dict[str, float]:
    """Mean of a - b over the same queries, with its standard error: what separates two methods
    on one run, not the noise of drawing the baskets."""
    queries = sorted(a.per_query[metric])
    diffs = np.array([a.per_query[metric][q] - b.per_query[metric][q] for q in queries])
    se = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else 0.0
    return {"mean": round(float(diffs.mean()), 4), "se": round(se, 4)}


# --- Redis and the model ------------------------------------------------------------------------


def embed_cached(embedder: LocalEmbedder, products: Sequence[dict[str, Any]], cache_dir: Path) -> np.ndarray:
    """The products' vectors (of product_text, as build_catalog embeds them), from cache_dir when
    these texts were embedded by this model and backend before."""
    texts = [product_text(p) for p in products]
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache_dir / f"online-retail-{digest}-{embedder.model_name}-{embedder.backend}.npy"
    if path.exists():
        vectors = np.load(path)
        if vectors.shape == (len(products), embedder.dim):
            return vectors
    started = time.perf_counter()
    vectors = embedder.encode_many(texts, batch_size=64)
    log.info("embedded %d products in %.1f s", len(texts), time.perf_counter() - started)
    cache_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp.npy")
    np.save(temporary, vectors)
    os.replace(temporary, path)
    return vectors


def load_catalogue(
    client: Any, name: str, products: Sequence[dict[str, Any]], vectors: np.ndarray, clock: float
) -> RedisRecommender:
    """A recommender on its own index and key prefixes, holding these products; its clock stands
    at the split, so what the library fades by time is as old as it was then."""
    rec = RedisRecommender(
        client,
        index_name=f"crowd:{name}:idx",
        key_prefix=f"crowd:{name}:product:",
        user_key_prefix=f"crowd:{name}:user:",
        clock=lambda: clock,
    )
    rec.create_index()
    rec.index_products(p | {"embedding": v} for p, v in zip(products, vectors, strict=True))
    rec.wait_until_indexed(timeout_s=120)
    if rec.count_indexed() != len(products):
        raise RuntimeError(f"{name}: {rec.count_indexed()} of {len(products)} products indexed")
    return rec


# --- the report --------------------------------------------------------------------------------


def results_json(results: Mapping[str, MethodResult]) -> dict[str, Any]:
    return {
        name: {"metrics": r.metrics, "ms_per_query": r.ms_per_query, "full_lists": r.full_lists}
        for name, r in results.items()
    }


def print_table(title: str, results: Mapping[str, MethodResult], metrics: Sequence[str]) -> None:
    print(f"\n{title}")
    print(f"| method | {' | '.join(metrics)} | ms/query | full lists |")
    print(f"|---|{'---|' * len(metrics)}---|---|")
    for name, r in results.items():
        values = " | ".join(f"{r.metrics[m]:.3f}" for m in metrics)
        print(f"| {name} | {values} | {r.ms_per_query:.2f} | {r.full_lists:.2f} |")


def draw_plot(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    item_sets = report["item_task"]
    figure, axes = plt.subplots(1, len(item_sets) + 1, figsize=(6 * (len(item_sets) + 1), 4.8))
    for axis, (set_name, section) in zip(axes, item_sets.items(), strict=False):
        names = list(section["methods"])
        x = np.arange(len(names))
        for offset, metric in zip((-0.27, 0, 0.27), ITEM_METRICS[:3], strict=True):
            axis.bar(x + offset, [section["methods"][n]["metrics"][metric] for n in names], 0.27, label=metric)
        axis.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
        axis.set_title(f"{set_name}: {section['queries']} baskets")
        axis.legend(fontsize=7, loc="upper left")
    feed = report["feed_task"]
    names = list(feed["methods"])
    axes[-1].bar(names, [feed["methods"][n]["metrics"][FEED_METRICS[0]] for n in names], color="tab:green")
    axes[-1].set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    axes[-1].set_title(f"feed: {FEED_METRICS[0]} over {feed['customers']} customers")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


# --- the run ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"the {QUICK_PRODUCTS} most bought products, fewer baskets"
    )
    parser.add_argument("--baskets", type=int, default=None, help="test baskets (default 3000; quick 300)")
    parser.add_argument("--customers", type=int, default=None, help="feed customers (default 2000; quick 100)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="where product vectors are cached")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="JSON to write; the PNG goes beside it")
    args = parser.parse_args(argv)
    args.baskets = args.baskets or (300 if args.quick else 3000)
    args.customers = args.customers or (100 if args.quick else 2000)
    return args


def most_bought(products: list[dict[str, Any]], events: Sequence[Purchase], count: int) -> list[dict[str, Any]]:
    counts = Counter(e.product_id for e in events)
    keep = {pid for pid, _ in counts.most_common(count)}
    return [p for p in products if p["id"] in keep]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    started = time.perf_counter()
    load_at_start = round(os.getloadavg()[0], 2)
    try:
        products = read_products(args.data_dir / "products.jsonl.gz")
        events = read_events(args.data_dir / "events.csv.gz", {p["id"] for p in products})
    except (OSError, CrowdDataError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if args.quick:
        products = most_bought(products, events, QUICK_PRODUCTS)
        kept = {p["id"] for p in products}
        events = [e for e in events if e.product_id in kept]
    product_ids = [p["id"] for p in products]
    split_at = SPLIT_AT.timestamp()
    train, test = split_by_time(events, split_at)
    train_baskets, test_baskets = baskets_of(train), baskets_of(test)
    queries = choose_item_queries(test_baskets, args.baskets, args.seed)
    cases = choose_feed_cases(train, test, args.customers, args.seed, is_guest)
    log.info("%d products, %d train and %d test invoices", len(products), len(train_baskets), len(test_baskets))

    embedder = LocalEmbedder(backend="onnx")
    vectors = embed_cached(embedder, products, args.cache_dir)
    gen_count = min(len(products), 300 if args.quick else 1000)
    gen_rows = sorted(random.Random(args.seed).sample(range(len(products)), gen_count))
    generated = complement_baskets(
        [product_ids[i] for i in gen_rows],
        vectors[gen_rows],
        train=3000 if args.quick else 20000,
        test=args.baskets,
        seed=args.seed,
    )

    with LocalRedis() as server:
        client = connect(server.url)
        report: dict[str, Any] = {
            "benchmark": "bench/crowd.py",
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python -m bench.crowd" + (" --quick" if args.quick else ""),
            "machine": machine(client) | {"load_average_1min_at_start": load_at_start},
            "packages": package_versions(PACKAGES),
            "model": {"name": embedder.model_name, "backend": embedder.backend},
            "library_serves_crowd_signals": library_serves_crowd_signals(),
            "parameters": {
                "seed": args.seed,
                "quick": args.quick,
                "split_at": SPLIT_AT.isoformat(),
                "item_k": ITEM_K,
                "feed_k": FEED_K,
                "feed_replayed_clicks": FEED_REPLAYED,
                "als_factors": ALS_FACTORS,
                "als_iterations": ALS_ITERATIONS,
            },
            "data": {
                "products": len(products),
                "events": len(events),
                "train_events": len(train),
                "test_events": len(test),
                "train_invoices": len(train_baskets),
                "test_invoices": len(test_baskets),
                "test_invoices_with_2_plus_products": sum(len(b) >= 2 for b in test_baskets.values()),
                "item_queries": len(queries),
                "feed_customers": len(cases),
            },
            "item_task": {},
        }
        retail = load_catalogue(client, "retail", products, vectors, split_at)
        if library_serves_crowd_signals():
            report["data"]["library_import_events_per_s"] = round(load_train_events(retail, train))
        matrix = TrainMatrix.build(product_ids, train_baskets.values())
        retail_results = run_item_task(item_methods(retail, matrix, args.seed), queries)
        report["item_task"]["online-retail"] = {"queries": len(queries), "methods": results_json(retail_results)}

        gen_products = [products[i] for i in gen_rows]
        gen_rec = load_catalogue(client, "complements", gen_products, vectors[gen_rows], split_at)
        if library_serves_crowd_signals():
            load_train_events(gen_rec, [
                Purchase(f"gen-{s}", pid, split_at - 1, s) for s, basket in generated.train.items() for pid in basket
            ])  # fmt: skip
        gen_matrix = TrainMatrix.build(generated.product_ids, generated.train.values())
        gen_queries = choose_item_queries(generated.test, args.baskets, args.seed)
        gen_results = run_item_task(item_methods(gen_rec, gen_matrix, args.seed), gen_queries)
        report["item_task"]["complements (generated)"] = {
            "queries": len(gen_queries),
            "products": len(generated.product_ids),
            "train_baskets": len(generated.train),
            "clusters": generated.clusters,
            "methods": results_json(gen_results),
        }

        feed_results = run_feed_task(feed_methods(retail, train, matrix, args.seed), cases)
        report["feed_task"] = {"customers": len(cases), "methods": results_json(feed_results)}
        client.close()

    content = "content KNN (similar())"
    report["item_task"]["online-retail"]["paired_vs_content_hit_rate"] = {
        name: paired_difference(result, retail_results[content], ITEM_METRICS[0])
        for name, result in retail_results.items()
        if name != content
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    print_table(f"Online Retail: {len(queries)} test baskets, first product asks", retail_results, ITEM_METRICS)
    print_table(f"Complements (generated): {len(gen_queries)} baskets", gen_results, ITEM_METRICS)
    print_table(
        f"Feed: {len(cases)} returning customers, their next basket",
        feed_results,
        (*FEED_METRICS, "already_bought_share"),
    )
    write_result(args.output, report)
    draw_plot(report, args.output.with_suffix(".png"))
    print(
        f"{report['seconds']:.0f} s; load average {load_at_start} at the start, {report['load_average_1min_at_end']} at the end"
    )


if __name__ == "__main__":
    main()
