"""Quality benchmark: how good are the recommendations, and what does each layer add?

1. Graded query relevance on the bundled catalogue: the shopper queries of
   data/eval/queries.jsonl, judged by hand (data/eval/README.md), against catalog.json.
2. The same on a larger generated catalogue (bench/catalog_gen.py) whose queries and graded labels
   follow from the products' attributes.
   For both: NDCG@10, recall@10 and MRR@10 (ranx) for plain KNN; KNN with the TEXT filter on the
   query's must-have word; KNN with the filters the query states; both; and the stated filters
   with diversity (MMR) λ 0, 0.3 and 0.7.
3. Simulated sessions: shoppers with a hidden intent type a vague query, then for 10 rounds click
   the best visible result that fits and (where the configuration has it) dismiss one that
   clearly does not. Per round: NDCG@10, precision@10 and hit rate of the intent's products they
   have not clicked yet, for no session / session blend / + affinity rerank / + dismiss /
   + diversity / the for-you feed. Then a one-at-a-time sweep of the RankingConfig weights around
   the defaults, and of the half-lives on shoppers who come back after a break.

Every run starts its own bundled Redis with Search on a free port, under its own index names and
key prefixes, and writes bench/results/quality.json (package versions, model, catalogue checksums,
load average) and two plots.

Run: .venv/bin/python -m bench.quality            (the full run)
     .venv/bin/python -m bench.quality --quick    (fewer queries and shoppers: a smoke run)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench import catalog_gen
from bench.harness import ROOT, machine, package_versions, write_result
from embeddings import LocalEmbedder
from local_redis import LocalRedis, connect
from recengine.catalog_file import catalog_vectors, product_text, read_catalog
from recommender import Candidate, RankingConfig, RedisRecommender, SearchFilters, build_filter_clause

log = logging.getLogger("bench.quality")

K = 10
METRICS = ("ndcg@10", "recall@10", "mrr@10")
QUERIES_PATH = ROOT / "data" / "eval" / "queries.jsonl"
CATALOG_PATH = ROOT / "catalog.json"
PRODUCTS_PATH = ROOT / "data" / "products.jsonl"
RESULTS_PATH = ROOT / "bench" / "results" / "quality.json"
CACHE_DIR = ROOT / "bench" / "cache"
INDEX_PREFIX = "bench:quality"
FILTER_KEYS = frozenset({"category", "brand", "min_price", "max_price", "in_stock_only", "min_rating"})
GRADES = frozenset({1, 2})
PACKAGES = ("ranx", "numpy", "redis", "onnxruntime", "tokenizers", "matplotlib")
DIVERSITY_LEVELS = (0.0, 0.3, 0.7)


class EvalDataError(ValueError):
    """A query file the benchmark cannot use; the message names the line and the fix."""


# --- the metrics ----------------------------------------------------------------------------


def evaluate_rankings(
    qrels: Mapping[str, Mapping[str, int]], rankings: Mapping[str, Sequence[str]], metrics: Sequence[str] = METRICS
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(mean of each metric, each metric per query) for ranked id lists against graded qrels.

    ranx scores a run by its scores, so a ranking becomes descending scores len..1; a query the
    rankings lack, or rank nothing for, scores 0. NDCG uses ranx's default gain (the grade itself)
    and log2 discount; recall and MRR count any grade of 1 or more as relevant.
    """
    from ranx import Qrels, Run, evaluate

    qrels_dict = {qid: {doc: int(grade) for doc, grade in judged.items()} for qid, judged in qrels.items()}
    run_dict = {
        qid: {doc: float(len(ranked) - rank) for rank, doc in enumerate(ranked)}
        for qid, ranked in rankings.items()
        if qid in qrels_dict
    }
    run = Run(run_dict)
    with warnings.catch_warnings():
        # ranx's numba kernels warn about an integer cast that cannot overflow at these sizes.
        warnings.simplefilter("ignore")
        means = evaluate(Qrels(qrels_dict), run, list(metrics), make_comparable=True)
    if isinstance(means, float | np.floating):
        means = {metrics[0]: means}
    per_query = {metric: {qid: float(run.scores[metric].get(qid, 0.0)) for qid in qrels_dict} for metric in metrics}
    return {metric: float(value) for metric, value in means.items()}, per_query


# --- the judged queries ---------------------------------------------------------------------


@dataclass(frozen=True)
class JudgedQuery:
    """One shopper query: its text, the filters and must-have word it states, and its graded
    judgements (product id -> 1 acceptable or 2 wanted; anything absent is not relevant)."""

    id: str
    text: str
    kind: str
    filters: dict[str, Any]
    must_have: str | None
    relevance: dict[str, int]


def parse_query(record: Any, known_ids: set[str], where: str) -> JudgedQuery:
    if not isinstance(record, dict):
        raise EvalDataError(f"{where}: expected a JSON object")
    missing = [name for name in ("id", "query", "relevance") if name not in record]
    if missing:
        raise EvalDataError(f"{where}: missing {', '.join(missing)}")
    filters = record.get("filters") or {}
    unknown = set(filters) - FILTER_KEYS
    if unknown:
        raise EvalDataError(f"{where}: unknown filter(s) {sorted(unknown)}; use {sorted(FILTER_KEYS)}")
    must_have = record.get("must_have") or None
    try:
        build_filter_clause(**filters, text_match=must_have)
    except (TypeError, ValueError) as exc:
        raise EvalDataError(f"{where}: filters or must_have rejected by the library: {exc}") from None
    relevance = record["relevance"]
    if not isinstance(relevance, dict) or not relevance:
        raise EvalDataError(f"{where}: relevance must be a non-empty object of product id -> 1 or 2")
    for product_id, grade in relevance.items():
        if product_id not in known_ids:
            raise EvalDataError(f"{where}: judged product {product_id!r} is not in the catalogue")
        if grade not in GRADES:
            raise EvalDataError(f"{where}: grade {grade!r} for {product_id}: use 2 (wanted) or 1 (acceptable)")
    return JudgedQuery(
        id=str(record["id"]),
        text=str(record["query"]),
        kind=str(record.get("kind", "")),
        filters=dict(filters),
        must_have=must_have,
        relevance=dict(relevance),
    )


def load_judged_queries(path: Path, known_ids: set[str]) -> list[JudgedQuery]:
    """Read and check every line before anything runs, naming the line of each problem."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvalDataError(f"{path}: cannot read the judged queries ({exc.strerror})") from None
    queries: list[JudgedQuery] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise EvalDataError(f"{where}: not JSON ({exc})") from None
        queries.append(parse_query(record, known_ids, where))
    ids = [q.id for q in queries]
    duplicated = sorted({qid for qid in ids if ids.count(qid) > 1})
    if duplicated:
        raise EvalDataError(f"{path.name}: duplicated query ids {duplicated}")
    if not queries:
        raise EvalDataError(f"{path.name}: no queries")
    return queries


def generated_as_judged(queries: Sequence[dict[str, Any]]) -> list[JudgedQuery]:
    return [
        JudgedQuery(q["id"], q["query"], q["kind"], dict(q["filters"]), q["must_have"], dict(q["relevance"]))
        for q in queries
    ]


# --- retrieval configurations ---------------------------------------------------------------

Retriever = Callable[[RedisRecommender, np.ndarray, JudgedQuery], list[Candidate]]


def plain_knn(rec: RedisRecommender, vector: np.ndarray, query: JudgedQuery) -> list[Candidate]:
    return rec.candidate_retrieve(vector, k=K)


def knn_text(rec: RedisRecommender, vector: np.ndarray, query: JudgedQuery) -> list[Candidate]:
    return rec.candidate_retrieve(vector, k=K, text_match=query.must_have)


def knn_filters(rec: RedisRecommender, vector: np.ndarray, query: JudgedQuery) -> list[Candidate]:
    return rec.candidate_retrieve(vector, k=K, **query.filters)


def knn_filters_text(rec: RedisRecommender, vector: np.ndarray, query: JudgedQuery) -> list[Candidate]:
    return rec.candidate_retrieve(vector, k=K, text_match=query.must_have, **query.filters)


def filters_with_diversity(diversity: float) -> Retriever:
    """The stated filters through recommend() with maximal marginal relevance at `diversity`
    (no user, so no session and no rerank: only MMR differs from knn+filters)."""

    def retrieve(rec: RedisRecommender, vector: np.ndarray, query: JudgedQuery) -> list[Candidate]:
        filters = SearchFilters(**query.filters)
        return rec.recommend(
            vector, k=K, filters=filters, use_session=False, use_rerank=False, diversity=diversity
        ).candidates

    return retrieve


def text_only(understand: bool) -> Retriever:
    """The query text alone through recommend(), no filters set by hand: BM25 fused with the KNN,
    and with `understand` the facets the words name (no user, so nothing personal)."""

    def retrieve(rec: RedisRecommender, vector: np.ndarray, query: JudgedQuery) -> list[Candidate]:
        return rec.recommend(
            vector, k=K, use_session=False, use_rerank=False, query_text=query.text, understand=understand
        ).candidates

    return retrieve


def text_only_category_filter(rec: RedisRecommender, vector: np.ndarray, query: JudgedQuery) -> list[Candidate]:
    """The query text alone, with the category it names as a filter instead of a boost: what the
    engine understood, asked again with that category set as the request's filter."""
    first = rec.recommend(vector, k=K, use_session=False, use_rerank=False, query_text=query.text)
    category = (first.understood or {}).get("category")
    if category is None:
        return first.candidates
    return rec.recommend(
        vector, k=K, filters=SearchFilters(category=category), use_session=False, use_rerank=False,
        query_text=query.text,
    ).candidates  # fmt: skip


QUERY_CONFIGS: dict[str, Retriever] = {
    "text only": text_only(True),
    "text only, category as a filter": text_only_category_filter,
    "text only, no understanding": text_only(False),
    "knn": plain_knn,
    "knn+text": knn_text,
    "knn+filters": knn_filters,
    "knn+filters+text": knn_filters_text,
    **{f"filters, MMR λ={level:g}": filters_with_diversity(level) for level in DIVERSITY_LEVELS},
}


def query_subsets(queries: Sequence[JudgedQuery]) -> dict[str, list[str]]:
    """The query groups reported apart: a configuration only changes the queries it applies to."""
    subsets: dict[str, list[str]] = {
        "all": [q.id for q in queries],
        "with stated filters": [q.id for q in queries if q.filters],
        "with a must-have word": [q.id for q in queries if q.must_have],
    }
    for key in sorted(FILTER_KEYS):
        stating = [q.id for q in queries if key in q.filters]
        if stating:
            subsets[f"states {key}"] = stating
    for kind in sorted({q.kind for q in queries if q.kind}):
        subsets[f"kind: {kind}"] = [q.id for q in queries if q.kind == kind]
    return subsets


def run_query_configs(
    rec: RedisRecommender, queries: Sequence[JudgedQuery], vectors: np.ndarray, configs: Mapping[str, Retriever]
) -> dict[str, Any]:
    """Every configuration over every query: means overall and per subset, and per-query NDCG."""
    qrels = {q.id: q.relevance for q in queries}
    subsets = query_subsets(queries)
    report: dict[str, Any] = {"queries": len(queries), "subset_sizes": {n: len(ids) for n, ids in subsets.items()}}
    configs_report: dict[str, Any] = {}
    for name, retrieve in configs.items():
        started = time.perf_counter()
        rankings = {q.id: [c.id for c in retrieve(rec, vector, q)] for q, vector in zip(queries, vectors, strict=True)}
        elapsed = time.perf_counter() - started
        means, per_query = evaluate_rankings(qrels, rankings)
        configs_report[name] = {
            "mean": means,
            "subsets": {
                subset: {metric: float(np.mean([per_query[metric][qid] for qid in ids])) for metric in METRICS}
                for subset, ids in subsets.items()
                if ids
            },
            "per_query_ndcg@10": {qid: round(score, 4) for qid, score in per_query["ndcg@10"].items()},
            "seconds": round(elapsed, 2),
        }
    report["configs"] = configs_report
    return report


def print_query_report(title: str, report: Mapping[str, Any]) -> None:
    print(f"\n{title} ({report['queries']} queries)")
    print(f"{'configuration':32} {'NDCG@10':>8} {'recall@10':>9} {'MRR@10':>7}")
    for name, result in report["configs"].items():
        mean = result["mean"]
        print(f"{name:32} {mean['ndcg@10']:8.3f} {mean['recall@10']:9.3f} {mean['mrr@10']:7.3f}")
    subsets = [s for s in report["subset_sizes"] if s != "all"]
    print(f"\nNDCG@10 by query group: {title}")
    print(f"{'group':26}" + "".join(f"{name:>20}" for name in report["configs"]))
    for subset in subsets:
        row = [report["configs"][name]["subsets"].get(subset, {}).get("ndcg@10") for name in report["configs"]]
        label = f"{subset} ({report['subset_sizes'][subset]})"
        print(f"{label:26}" + "".join(f"{value:20.3f}" if value is not None else f"{'-':>20}" for value in row))


# --- catalogues, embeddings and Redis -------------------------------------------------------


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def embed_cached(embedder: LocalEmbedder, products: Sequence[dict[str, Any]], checksum: str) -> np.ndarray:
    """The products' vectors, from bench/cache/ when this catalogue and model were embedded
    before (the file name carries both), else embedded now and cached."""
    path = CACHE_DIR / f"generated-{checksum[:16]}-{embedder.model_name}-{embedder.backend}.npy"
    if path.exists():
        vectors = np.load(path)
        if vectors.shape == (len(products), embedder.dim):
            log.info("generated catalogue vectors from %s", path.relative_to(ROOT))
            return vectors
        log.warning("%s has shape %s, expected %s; embedding again", path, vectors.shape, (len(products), embedder.dim))
    started = time.perf_counter()
    vectors = embedder.encode_many([product_text(p) for p in products], batch_size=64, progress=True)
    log.info("embedded %d generated products in %.1f s", len(products), time.perf_counter() - started)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp.npy")
    np.save(temporary, vectors)
    os.replace(temporary, path)
    return vectors


def load_index(rec: RedisRecommender, products: Sequence[dict[str, Any]], vectors: np.ndarray) -> None:
    rec.create_index()
    rec.index_products(
        {key: value for key, value in product.items() if key not in ("attributes", "embedding_b64")} | {"embedding": v}
        for product, v in zip(products, vectors, strict=True)
    )
    rec.wait_until_indexed(timeout_s=120)
    indexed = rec.count_indexed()
    if indexed != len(products):
        raise RuntimeError(f"index {rec.index_name} holds {indexed} products, expected {len(products)}")


def make_recommender(client: Any, name: str) -> RedisRecommender:
    """A recommender under this run's own index name and key prefixes."""
    return RedisRecommender(
        client,
        index_name=f"{INDEX_PREFIX}:{name}:idx",
        key_prefix=f"{INDEX_PREFIX}:{name}:product:",
        user_key_prefix=f"{INDEX_PREFIX}:{name}:user:",
    )


# --- simulated sessions ---------------------------------------------------------------------

ROUNDS = 10
THINK_TIME_S = (20.0, 90.0)
SESSION_METRICS = ("ndcg@10", "precision@10", "hit_rate@10")
# Shoppers who come back: the first visit has this many rounds, then they return after one of
# these breaks, half of them still after the same thing, half after something new.
FIRST_VISIT_ROUNDS = 5
BREAKS_S = (2 * 3600.0, 86400.0, 4 * 86400.0)
SIM_START_S = 1_700_000_000.0
# A change of default needs a gain of this many standard errors. The sweep makes about 18
# comparisons with the defaults: at 2 SE about one in three runs would find a "better" value by
# chance alone; at 3 SE the chance of any false find stays near 2.5 %.
CHANGE_THRESHOLD_SE = 3.0


class SimClock:
    """The recommenders' clock in a simulation: time moves only when a shopper waits, so fading
    follows the simulated think times and breaks, not the benchmark's own speed."""

    def __init__(self, start_s: float = SIM_START_S) -> None:
        self.now = start_s

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Intent:
    """What a simulated shopper is after, which they never type.

    fits: the products they want; near: what they click when nothing that fits is visible (the
    right kind in the wrong price band, a close relative); unfit: what clearly is not it, the
    kind of result they dismiss. query: the vague words they do type."""

    label: str
    fits: frozenset[str]
    near: frozenset[str]
    unfit: frozenset[str]
    query: str


@dataclass(frozen=True)
class SwitchQuery:
    """A typed, specific query for something other than the session's intent, with its graded
    judgements: what a session costs when the shopper moves on."""

    id: str
    text: str
    relevance: dict[str, int]


@dataclass(frozen=True)
class Shopper:
    id: str
    intent: Intent
    think_s: tuple[float, ...]
    # After the last round the shopper types this (single-visit shoppers only).
    switch: SwitchQuery | None = None
    # Returning shoppers only: the break before round FIRST_VISIT_ROUNDS and the intent after it.
    break_s: float = 0.0
    returns_with: Intent | None = None


@dataclass(frozen=True)
class SessionConfig:
    """One way of showing results round after round. From round `feed_from` on, the list is
    for_you() (no query at all); None: always the shopper's query through recommend()."""

    name: str
    use_session: bool = True
    use_rerank: bool = True
    dismiss: bool = False
    diversity: float = 0.0
    feed_from: int | None = None


SESSION_CONFIGS = (
    SessionConfig("no session", use_session=False, use_rerank=False),
    SessionConfig("session blend", use_rerank=False),
    SessionConfig("+ affinity rerank"),
    SessionConfig("+ dismiss", dismiss=True),
    SessionConfig("+ diversity 0.3", dismiss=True, diversity=0.3),
    SessionConfig("for-you feed", dismiss=True, feed_from=0),
    SessionConfig("search, then feed", dismiss=True, feed_from=1),
)
FULL_STACK = SESSION_CONFIGS[3]


def choose_click(shown: Sequence[str], intent: Intent, clicked: set[str]) -> str | None:
    """The shopper scans top-down and clicks the first result that fits and is new to them; if
    none fits, the first near miss; if there is none either, nothing."""
    for pool in (intent.fits, intent.near):
        pick = next((pid for pid in shown if pid in pool and pid not in clicked), None)
        if pick is not None:
            return pick
    return None


def choose_dismiss(shown: Sequence[str], intent: Intent) -> str | None:
    """The first result that clearly is not what they want (dismissed ones never come back)."""
    return next((pid for pid in shown if pid in intent.unfit), None)


def bundled_intents(products: Sequence[dict[str, Any]]) -> list[Intent]:
    """A category each: 12 products, enough for 10 rounds of clicks (a category and a price band
    would leave 6). The query names no category."""
    intents = []
    for category in sorted({p["category"] for p in products}):
        fits = frozenset(p["id"] for p in products if p["category"] == category)
        others = frozenset(p["id"] for p in products) - fits
        intents.append(Intent(category, fits, frozenset(), others, ""))
    return intents


def generated_intents(products: Sequence[dict[str, Any]]) -> list[Intent]:
    """A sub-type (near: the same family), or a category in a price band (near: the category),
    as the issue describes; the query is filled in per shopper."""
    all_ids = frozenset(p["id"] for p in products)
    by: dict[tuple[str, str], set[str]] = {}
    for product in products:
        attributes = product["attributes"]
        for key in (("subtype", attributes["subtype"]), ("family", attributes["family"]),
                    ("category", attributes["category"]),
                    ("band", f"{attributes['category']}/{attributes['price_band']}")):  # fmt: skip
            by.setdefault(key, set()).add(product["id"])
    intents = []
    for subtype in catalog_gen.SUBTYPES:
        fits = frozenset(by.get(("subtype", subtype.key), ()))
        if fits:
            near = frozenset(by[("family", subtype.family)]) - fits
            intents.append(
                Intent(f"sub-type {subtype.key}", fits, near, all_ids - by[("category", subtype.category)], "")
            )
    for category in catalog_gen.CATEGORIES:
        for band in catalog_gen.PRICE_BANDS:
            fits = frozenset(by.get(("band", f"{category}/{band}"), ()))
            if fits:
                near = frozenset(by[("category", category)]) - fits
                intents.append(Intent(f"{category}, {band}", fits, near, all_ids - by[("category", category)], ""))
    return intents


def vague_query(rng: random.Random, intent: Intent) -> str:
    """What the shopper types: for a sub-type, its category or one of its uses in everyday words
    ("looking for shoes", "something for hiking"); otherwise a query that names nothing."""
    if intent.label.startswith("sub-type "):
        subtype = catalog_gen.SUBTYPES_BY_KEY[intent.label.removeprefix("sub-type ")]
        if rng.random() < 0.5:
            return f"looking for {rng.choice(catalog_gen.CATEGORY_QUERY_NOUNS[subtype.category])}"
        return f"something for {rng.choice(catalog_gen.USES[rng.choice(subtype.uses)].query)}"
    return rng.choice(catalog_gen.GENERIC_VAGUE_QUERIES)


def make_shoppers(
    intents: Sequence[Intent], count: int, seed: int, returning: bool, switches: Sequence[JudgedQuery] = ()
) -> list[Shopper]:
    """Seeded shoppers; intents are dealt round-robin from a shuffled list, so each gets its share.
    Single-visit shoppers end by typing one of `switches` that wants nothing of their intent."""
    rng = random.Random(seed)
    order = list(intents)
    shoppers = []
    for i in range(count):
        if i % len(order) == 0:
            rng.shuffle(order)
        intent = replace(order[i % len(order)], query="")
        intent = replace(intent, query=vague_query(rng, intent))
        think = tuple(rng.uniform(*THINK_TIME_S) for _ in range(ROUNDS))
        if not returning:
            elsewhere = [q for q in switches if not any(pid in intent.fits for pid in q.relevance)]
            switch = rng.choice(elsewhere) if elsewhere else None
            shoppers.append(
                Shopper(
                    f"s{i:04d}",
                    intent,
                    think,
                    SwitchQuery(switch.id, switch.text, switch.relevance) if switch else None,
                )
            )
            continue
        if rng.random() < 0.5:
            later = intent
        else:
            later = rng.choice([other for other in intents if other.label != intent.label])
            later = replace(later, query=vague_query(rng, later))
        shoppers.append(Shopper(f"r{i:04d}", intent, think, break_s=rng.choice(BREAKS_S), returns_with=later))
    return shoppers


@dataclass
class RoundView:
    """One round as the shopper saw it: the list, and what they still had to find."""

    shown: list[str]
    to_find: frozenset[str]
    clicked: bool = False


@dataclass
class ShopperRun:
    rounds: list[RoundView]
    # The switch query's results after the session (None when the shopper typed none), and the
    # same query for the same shopper with session and rerank off: what the shopper's clicks and
    # dismissals alone (exclusions, marks) leave of it, which splits a session's cost in two.
    switch_shown: list[str] | None = None
    switch_unpersonalised: list[str] | None = None
    dismissed: frozenset[str] = frozenset()
    # Whether the engine took the switch query as specific (it names a kind of product: then
    # personalisation is bounded by relevance tiers) or vague (personalised freely).
    switch_specific: bool | None = None


def run_shopper(
    rec: RedisRecommender, config: SessionConfig, shopper: Shopper, query_vectors: Mapping[str, np.ndarray],
    clock: SimClock, user_id: str,
) -> ShopperRun:  # fmt: skip
    """Rounds 0..ROUNDS: show a list, record it, click and maybe dismiss, wait; then the switch
    query (same configuration, typed, with the session as it stands); then forget the user."""
    clicked: set[str] = set()
    dismissed: set[str] = set()
    intent = shopper.intent
    views = []
    for round_no in range(ROUNDS + 1):
        if shopper.returns_with is not None and round_no == FIRST_VISIT_ROUNDS:
            clock.advance(shopper.break_s)
            intent = shopper.returns_with
        if config.feed_from is not None and round_no >= config.feed_from:
            result = rec.for_you(user_id, k=K, exclude_clicked=True, diversity=config.diversity)
        else:
            result = rec.recommend(
                query_vectors[intent.query], user_id=user_id, k=K, use_session=config.use_session,
                use_rerank=config.use_rerank, exclude_clicked=True, diversity=config.diversity,
                query_text=intent.query,
            )  # fmt: skip
        shown = [c.id for c in result.candidates]
        views.append(RoundView(shown, intent.fits - clicked))
        if round_no == ROUNDS:
            break
        pick = choose_click(shown, intent, clicked)
        if pick is not None:
            rec.record_click(user_id, pick)
            clicked.add(pick)
            views[-1].clicked = True
        unwanted = choose_dismiss(shown, intent) if config.dismiss else None
        if unwanted is not None:
            rec.dismiss(user_id, unwanted)
            dismissed.add(unwanted)
        clock.advance(shopper.think_s[round_no])
    switch_shown = switch_unpersonalised = None
    switch_specific = None
    if shopper.switch is not None:
        vector, text = query_vectors[shopper.switch.text], shopper.switch.text
        result = rec.recommend(
            vector, user_id=user_id, k=K, use_session=config.use_session, use_rerank=config.use_rerank,
            exclude_clicked=True, diversity=config.diversity, query_text=text,
        )  # fmt: skip
        switch_shown = [c.id for c in result.candidates]
        switch_specific = bool((result.understood or {}).get("specific"))
        unpersonalised = rec.recommend(
            vector, user_id=user_id, k=K, use_session=False, use_rerank=False, exclude_clicked=True,
            diversity=config.diversity, query_text=text,
        )  # fmt: skip
        switch_unpersonalised = [c.id for c in unpersonalised.candidates]
    rec.reset_user(user_id)
    return ShopperRun(views, switch_shown, switch_unpersonalised, frozenset(dismissed), switch_specific)


@dataclass
class SessionOutcome:
    """Per round: the mean metrics over shoppers who still had something to find, and how many
    did; per shopper: NDCG@10 per round (None once they had found everything)."""

    rounds: list[dict[str, float]]
    per_shopper_ndcg: dict[str, list[float | None]] = field(repr=False)
    # NDCG@10 of each shopper's switch query, graded by its own judgements; the same with session
    # and rerank off for the same shopper; and how many of the query's relevant products (grade 1
    # or 2) the shopper had dismissed before typing it.
    switch_ndcg: dict[str, float] = field(repr=False, default_factory=dict)
    switch_unpersonalised_ndcg: dict[str, float] = field(repr=False, default_factory=dict)
    switch_relevant_dismissed: dict[str, int] = field(repr=False, default_factory=dict)
    switch_specific: dict[str, bool] = field(repr=False, default_factory=dict)

    def switch_mean(self) -> float | None:
        return _mean_of(self.switch_ndcg)

    def switch_breakdown(self) -> dict[str, float | None]:
        """The switch query with session and rerank off for the same shopper (what exclusions
        and dismissal marks alone leave), and the share of shoppers who had dismissed at least
        one of its relevant products, with how many on average."""
        dismissed = list(self.switch_relevant_dismissed.values())
        return {
            "unpersonalised_ndcg@10": _mean_of(self.switch_unpersonalised_ndcg),
            "shoppers_who_dismissed_a_relevant_product": (
                round(float(np.mean([n > 0 for n in dismissed])), 4) if dismissed else None
            ),
            "relevant_products_dismissed_per_shopper": round(float(np.mean(dismissed)), 4) if dismissed else None,
        }

    def objective(self, shopper_id: str, first_round: int = 1) -> float | None:
        """A shopper's mean NDCG@10 over rounds first_round..ROUNDS: how well the session served them."""
        values = [v for v in self.per_shopper_ndcg[shopper_id][first_round:] if v is not None]
        return float(np.mean(values)) if values else None


def score_sessions(runs: Mapping[str, ShopperRun], shoppers: Sequence[Shopper]) -> SessionOutcome:
    """ranx over shoppers, round by round: relevant = the intent's products not clicked yet; and
    the switch queries against their graded judgements."""
    rounds: list[dict[str, float]] = []
    per_shopper: dict[str, list[float | None]] = {sid: [None] * (ROUNDS + 1) for sid in runs}
    for round_no in range(ROUNDS + 1):
        qrels = {sid: {pid: 1 for pid in run.rounds[round_no].to_find} for sid, run in runs.items()}
        qrels = {sid: judged for sid, judged in qrels.items() if judged}
        rankings = {sid: runs[sid].rounds[round_no].shown for sid in qrels}
        click_share = round(float(np.mean([run.rounds[round_no].clicked for run in runs.values()])), 4)
        if not qrels:
            rounds.append({"round": round_no, "shoppers": 0, "clicked": click_share})
            continue
        means, per_query = evaluate_rankings(qrels, rankings, SESSION_METRICS)
        for sid, value in per_query["ndcg@10"].items():
            per_shopper[sid][round_no] = value
        rounds.append({
            "round": round_no, "shoppers": len(qrels), **{m: round(v, 4) for m, v in means.items()}, "clicked": click_share,
        })  # fmt: skip
    switched = [s for s in shoppers if s.switch is not None and runs[s.id].switch_shown is not None]
    outcome = SessionOutcome(rounds, per_shopper)
    if switched:
        qrels = {s.id: s.switch.relevance for s in switched if s.switch}
        for shown, scores in (("switch_shown", outcome.switch_ndcg),
                              ("switch_unpersonalised", outcome.switch_unpersonalised_ndcg)):  # fmt: skip
            _, per_query = evaluate_rankings(
                qrels, {sid: getattr(runs[sid], shown) or [] for sid in qrels}, ("ndcg@10",)
            )
            scores.update(per_query["ndcg@10"])
        outcome.switch_relevant_dismissed.update(
            {sid: len(runs[sid].dismissed & set(judged)) for sid, judged in qrels.items()}
        )
        outcome.switch_specific.update({sid: bool(runs[sid].switch_specific) for sid in qrels})
    return outcome


def switch_by_kind(outcome: SessionOutcome, baseline: SessionOutcome) -> dict[str, dict[str, float | int | None]]:
    """The switch query's NDCG@10 and its ratio to the baseline's on the same shoppers, apart
    for the queries the engine took as specific (personalisation bounded by relevance tiers)
    and as vague (personalised freely)."""
    split: dict[str, dict[str, float | int | None]] = {}
    for kind, flag in (("specific", True), ("vague", False)):
        ids = [sid for sid, specific in outcome.switch_specific.items() if specific == flag]
        ours = _mean_of({sid: outcome.switch_ndcg[sid] for sid in ids})
        theirs = _mean_of({sid: baseline.switch_ndcg[sid] for sid in ids if sid in baseline.switch_ndcg})
        split[kind] = {"shoppers": len(ids), "ndcg@10": ours, "ratio_to_baseline": _ratio(ours, theirs)}
    return split


def _mean_of(values: Mapping[str, float]) -> float | None:
    return round(float(np.mean(list(values.values()))), 4) if values else None


@contextmanager
def session_recommender(
    client: Any, catalogue: str, label: str, config: RankingConfig, clock: SimClock,
    own_copy: tuple[Sequence[dict[str, Any]], np.ndarray] | None,
) -> Iterator[RedisRecommender]:  # fmt: skip
    """A recommender over the catalogue's products with this RankingConfig and the simulated clock.

    With own_copy (the products and their vectors) it gets an index, and so a popularity ranking,
    of its own over its own copy of the products, deleted afterwards: the for-you feed of a new
    shopper is the popular list, which must count only this configuration's clicks. The copy is
    written after the index exists, so documents enter it in catalogue order; an index built over
    existing keys takes them in Redis' keyspace order, which changes from one server to the next
    and would reorder ties (the rating fallback of popular()). recommend() never reads popularity,
    so the other configurations share the catalogue's index."""
    slug = "".join(ch if ch.isalnum() else "-" for ch in label)
    base = f"{INDEX_PREFIX}:{catalogue}"
    rec = RedisRecommender(
        client,
        index_name=f"{base}:{slug}:idx" if own_copy else f"{base}:idx",
        key_prefix=f"{base}:{slug}:product:" if own_copy else f"{base}:product:",
        user_key_prefix=f"{base}:{slug}:user:",
        config=config,
        clock=clock,
    )
    if own_copy:
        load_index(rec, *own_copy)
    try:
        yield rec
    finally:
        if own_copy:
            rec.drop_index(delete_documents=True)


def simulate(
    client: Any, catalogue: str, config: SessionConfig, ranking: RankingConfig, shoppers: Sequence[Shopper],
    query_vectors: Mapping[str, np.ndarray], label: str,
    products: tuple[Sequence[dict[str, Any]], np.ndarray] | None = None,
) -> SessionOutcome:  # fmt: skip
    """Every shopper through one configuration; `products` (with their vectors) are needed by the
    feed configurations, which get a copy of their own (see session_recommender)."""
    if config.feed_from is not None and products is None:
        raise ValueError(f"configuration {config.name!r} shows the feed: pass the products for its own index")
    clock = SimClock()
    own_copy = products if config.feed_from is not None else None
    with session_recommender(client, catalogue, label, ranking, clock, own_copy) as rec:
        runs = {s.id: run_shopper(rec, config, s, query_vectors, clock, s.id) for s in shoppers}
    return score_sessions(runs, shoppers)


@dataclass(frozen=True)
class SweepPoint:
    parameter: str
    value: float

    @property
    def label(self) -> str:
        return f"{self.parameter}={self.value:g}"

    def config(self, base: RankingConfig) -> RankingConfig:
        value: Any = int(self.value) if self.parameter in ("overfetch", "typed_query_tier") else self.value
        return replace(base, **{self.parameter: value})


# Around each default, a step down and a step up (two for the session weight, the one that
# matters most); the defaults are in each tuple, and run once, as the baseline.
SWEEP: dict[str, tuple[float, ...]] = {
    "session_weight": (0.1, 0.2, 0.3, 0.45, 0.6),
    "ewma_alpha": (0.2, 0.4, 0.7),
    "affinity_weight": (0.0, 0.05, 0.15, 0.3),
    "negative_weight": (0.0, 0.3, 0.5),
    "overfetch": (1, 3, 5),
    "dismiss_step": (0.0, 0.5, 1.0),
    "typed_query_tier": (1, 3, 5, 10),
    "dismissed_penalty": (0.3, 1.0, 2.0),
}
HALF_LIFE_SWEEP: dict[str, tuple[float, ...]] = {
    "session_half_life_s": (600.0, 1800.0, 7200.0),
    "affinity_half_life_s": (86400.0, 7 * 86400.0, 30 * 86400.0),
}
QUICK_SWEEP: dict[str, tuple[float, ...]] = {
    "session_weight": (0.1, 0.3, 0.6),
    "dismiss_step": (0.0, 1.0),
    "typed_query_tier": (1, 3, 10),
}
QUICK_HALF_LIFE_SWEEP: dict[str, tuple[float, ...]] = {"session_half_life_s": (600.0, 1800.0, 28800.0)}


def paired_difference(
    outcome: SessionOutcome, baseline: SessionOutcome, shoppers: Sequence[Shopper], first_round: int
) -> dict[str, float]:
    """Mean and standard error of (this − baseline) in each shopper's objective: the same
    shoppers, seeds and think times ran both, so their difference is the setting's alone."""
    diffs = []
    for shopper in shoppers:
        ours, theirs = outcome.objective(shopper.id, first_round), baseline.objective(shopper.id, first_round)
        if ours is not None and theirs is not None:
            diffs.append(ours - theirs)
    return mean_and_se(diffs)


def paired_switch_difference(outcome: SessionOutcome, baseline: SessionOutcome) -> dict[str, float]:
    """The same for the switch query's NDCG@10."""
    return mean_and_se(
        [value - baseline.switch_ndcg[sid] for sid, value in outcome.switch_ndcg.items() if sid in baseline.switch_ndcg]
    )


def mean_and_se(diffs: Sequence[float]) -> dict[str, float]:
    values = np.array(diffs)
    mean = float(values.mean()) if len(values) else 0.0
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return {"mean": round(mean, 4), "se": round(se, 4), "shoppers": len(values)}


def mean_objective(outcome: SessionOutcome, shoppers: Sequence[Shopper], first_round: int) -> float:
    values = [v for s in shoppers if (v := outcome.objective(s.id, first_round)) is not None]
    return round(float(np.mean(values)), 4) if values else 0.0


def run_sweep(
    client: Any, catalogues: Mapping[str, tuple[Sequence[Shopper], Mapping[str, np.ndarray]]],
    grid: Mapping[str, tuple[float, ...]], first_round: int,
) -> dict[str, Any]:  # fmt: skip
    """Each value of each parameter, the others at their defaults, on the full stack (session,
    rerank, dismiss), on every catalogue; each compared with the defaults shopper by shopper."""
    default = RankingConfig()
    results: dict[str, Any] = {}
    for catalogue, (shoppers, vectors) in catalogues.items():
        baseline = simulate(client, catalogue, FULL_STACK, default, shoppers, vectors, "sweep-default")
        rows: dict[str, dict[str, Any]] = {"default": {"objective": mean_objective(baseline, shoppers, first_round)}}
        if baseline.switch_ndcg:
            rows["default"]["switch_ndcg"] = baseline.switch_mean()
        if first_round == FIRST_VISIT_ROUNDS + 1:
            rows["default"] |= split_by_return(baseline, shoppers)
        for parameter, values in grid.items():
            for value in values:
                point = SweepPoint(parameter, value)
                if point.config(default) == default:
                    continue
                started = time.perf_counter()
                outcome = simulate(client, catalogue, FULL_STACK, point.config(default), shoppers, vectors, point.label)
                rows[point.label] = {
                    "objective": mean_objective(outcome, shoppers, first_round),
                    "vs_default": paired_difference(outcome, baseline, shoppers, first_round),
                    "seconds": round(time.perf_counter() - started, 1),
                }
                if outcome.switch_ndcg:
                    rows[point.label]["switch_ndcg"] = outcome.switch_mean()
                    rows[point.label]["switch_vs_default"] = paired_switch_difference(outcome, baseline)
                    rows[point.label]["switch_by_kind_vs_default"] = switch_by_kind(outcome, baseline)
                if first_round == FIRST_VISIT_ROUNDS + 1:
                    rows[point.label] |= split_by_return(outcome, shoppers)
                log.info("sweep %s %s: %s", catalogue, point.label, rows[point.label])
        results[catalogue] = rows
    return results


def split_by_return(outcome: SessionOutcome, shoppers: Sequence[Shopper]) -> dict[str, float]:
    """Returning shoppers' objective after the break, for those after the same thing and those
    after something new: a longer memory helps the first and hinders the second."""
    same = [s for s in shoppers if s.returns_with is not None and s.returns_with.label == s.intent.label]
    new = [s for s in shoppers if s.returns_with is not None and s.returns_with.label != s.intent.label]
    return {
        "objective_same_intent": mean_objective(outcome, same, FIRST_VISIT_ROUNDS + 1),
        "objective_new_intent": mean_objective(outcome, new, FIRST_VISIT_ROUNDS + 1),
    }


def pooled(diffs: Sequence[Mapping[str, float]]) -> tuple[float, float]:
    """The mean over catalogues of paired differences, and its standard error."""
    return float(np.mean([d["mean"] for d in diffs])), float(np.sqrt(sum(d["se"] ** 2 for d in diffs)) / len(diffs))


def recommend_defaults(sweep: Mapping[str, Mapping[str, Any]], grid: Mapping[str, tuple[float, ...]]) -> list[dict]:
    """Per parameter, the value with the largest gain over the default (the mean over catalogues
    of the paired gains) among those that do not make typed switch queries measurably worse (the
    default itself when none gains), and whether the measurement supports the change: a gain of
    more than CHANGE_THRESHOLD_SE standard errors, no catalogue worse by more than two of its own,
    and switch queries no worse by more than two. The best value ignoring switch queries is kept
    too."""
    default = RankingConfig()
    advice = []
    for parameter, values in grid.items():
        candidates: list[dict[str, Any]] = []
        for value in values:
            point = SweepPoint(parameter, value)
            if point.config(default) == default:
                continue
            diffs = [rows[point.label]["vs_default"] for rows in sweep.values()]
            gain, se = pooled(diffs)
            switches = [
                rows[point.label]["switch_vs_default"]
                for rows in sweep.values()
                if "switch_vs_default" in rows[point.label]
            ]
            switch_gain, switch_se = pooled(switches) if switches else (0.0, 0.0)
            switch_ok = switch_gain >= -2 * switch_se
            candidates.append({
                "value": value, "gain": round(gain, 4), "se": round(se, 4), "per_catalogue": diffs,
                "switch_gain": round(switch_gain, 4), "switch_se": round(switch_se, 4), "switch_ok": switch_ok,
            })  # fmt: skip
        if not candidates:
            continue
        keep: dict[str, Any] = {
            "value": getattr(default, parameter), "gain": 0.0, "se": 0.0, "switch_gain": 0.0, "switch_se": 0.0,
        }  # fmt: skip
        best_any = max([keep, *candidates], key=lambda c: c["gain"])
        better = [c for c in candidates if c["switch_ok"] and c["gain"] > 0]
        best = max(better, key=lambda c: c["gain"]) if better else None
        supported = (
            best is not None
            and best["gain"] > CHANGE_THRESHOLD_SE * best["se"]
            and all(d["mean"] > -2 * d["se"] for d in best["per_catalogue"])
        )
        if best is None:  # nothing beats the default without costing typed queries
            best = keep
        advice.append(
            {
                "parameter": parameter,
                "default": getattr(default, parameter),
                "best": best["value"],
                "gain_over_default": best["gain"],
                "pooled_se": best["se"],
                "standard_errors": round(best["gain"] / best["se"], 1) if best["se"] else 0.0,
                "switch_change": best["switch_gain"],
                "switch_se": best["switch_se"],
                "best_ignoring_switch_queries": {
                    "value": best_any["value"], "gain": best_any["gain"], "se": best_any["se"],
                    "switch_change": best_any["switch_gain"], "switch_se": best_any["switch_se"],
                },
                "change_supported": bool(supported),
            }
        )  # fmt: skip
    return advice


def check_combined(
    client: Any, catalogues: Mapping[str, tuple[Sequence[Shopper], Mapping[str, np.ndarray]]], changes: Mapping[str, float],
    first_round: int,
) -> dict[str, Any]:  # fmt: skip
    """The supported changes together against the defaults: the before/after numbers."""
    default = RankingConfig()
    combined = default
    for parameter, value in changes.items():
        combined = SweepPoint(parameter, value).config(combined)
    report: dict[str, Any] = {"changes": dict(changes)}
    for catalogue, (shoppers, vectors) in catalogues.items():
        before = simulate(client, catalogue, FULL_STACK, default, shoppers, vectors, "combined-before")
        after = simulate(client, catalogue, FULL_STACK, combined, shoppers, vectors, "combined-after")
        report[catalogue] = {
            "before": mean_objective(before, shoppers, first_round),
            "after": mean_objective(after, shoppers, first_round),
            "after_vs_before": paired_difference(after, before, shoppers, first_round),
            "switch_before": before.switch_mean(),
            "switch_after": after.switch_mean(),
            "rounds_before": before.rounds,
            "rounds_after": after.rounds,
        }
    return report


def print_sessions(catalogue: str, outcomes: Mapping[str, SessionOutcome]) -> None:
    print(f"\nSimulated sessions, {catalogue}: NDCG@10 / hit rate of what the shopper has not clicked yet")
    print(f"{'round':>5} " + "".join(f"{name:>20}" for name in outcomes))
    for round_no in range(ROUNDS + 1):
        cells = []
        for outcome in outcomes.values():
            row = outcome.rounds[round_no]
            cells.append(
                f"{row['ndcg@10']:.3f} / {row['hit_rate@10']:.2f}".rjust(20) if row["shoppers"] else "-".rjust(20)
            )
        print(f"{round_no:5} " + "".join(cells))
    baseline = next(iter(outcomes.values())).switch_mean()
    rows = {
        "then a typed query for something else, NDCG@10": [o.switch_mean() for o in outcomes.values()],
        "  as a ratio to the first configuration's": [_ratio(o.switch_mean(), baseline) for o in outcomes.values()],
        "  the same shopper, session and rerank off": [
            o.switch_breakdown()["unpersonalised_ndcg@10"] for o in outcomes.values()
        ],
        "  relevant products dismissed per shopper": [
            o.switch_breakdown()["relevant_products_dismissed_per_shopper"] for o in outcomes.values()
        ],
        **{
            f"  ratio on the queries taken as {kind}": [
                switch_by_kind(o, next(iter(outcomes.values())))[kind]["ratio_to_baseline"] for o in outcomes.values()
            ]
            for kind in ("specific", "vague")
        },
    }
    for title, values in rows.items():
        print(title)
        print(f"{'':5} " + "".join(f"{v:.3f}".rjust(20) if v is not None else "-".rjust(20) for v in values))


def print_sweep(title: str, sweep: Mapping[str, Mapping[str, Any]]) -> None:
    print(f"\n{title}: mean NDCG@10 per shopper, and the paired gain over the defaults (± standard error)")
    catalogues = list(sweep)
    print(f"{'setting':28}" + "".join(f"{c:>44}" for c in catalogues))
    for label in sweep[catalogues[0]]:
        cells = []
        for catalogue in catalogues:
            row = sweep[catalogue][label]
            diff = row.get("vs_default")
            text = f"{row['objective']:.3f}" + (f" ({diff['mean']:+.3f} ± {diff['se']:.3f})" if diff else "")
            if "switch_ndcg" in row:
                text += f" | switch {row['switch_ndcg']:.3f}"
            cells.append(text.rjust(44))
        print(f"{label:28}" + "".join(cells))


def draw_session_plots(sessions: Mapping[str, Any], path: Path) -> None:
    """NDCG@10 lift over "no session" and hit rate, against round, per catalogue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(sessions), figsize=(6 * len(sessions), 8), squeeze=False)
    for column, (catalogue, report) in enumerate(sessions.items()):
        baseline = report["configs"]["no session"]["rounds"]
        for name, result in report["configs"].items():
            rounds = [r for r in result["rounds"] if r["shoppers"]]
            base = {r["round"]: r.get("ndcg@10") for r in baseline if r["shoppers"]}
            xs = [r["round"] for r in rounds if r["round"] in base]
            axes[0][column].plot(xs, [r["ndcg@10"] - base[r["round"]] for r in rounds if r["round"] in base],
                                 marker="o", label=name)  # fmt: skip
            axes[1][column].plot(
                [r["round"] for r in rounds], [r["hit_rate@10"] for r in rounds], marker="o", label=name
            )
        axes[0][column].set_title(f"{catalogue}: NDCG@10 lift over no session")
        axes[1][column].set_title(f"{catalogue}: hit rate@10 (something new that fits)")
        for row in (0, 1):
            axes[row][column].set_xlabel("round (clicks so far)")
            axes[row][column].grid(alpha=0.3)
        axes[0][column].axhline(0, color="grey", linewidth=0.8)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_sweep_plots(sweeps: Mapping[str, Mapping[str, Mapping[str, Any]]], path: Path) -> None:
    """The objective against each swept value, one panel per parameter, a line per catalogue;
    dashed, the NDCG@10 of the typed query after the session (the cost of a stronger session)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(title, parameter) for title, sweep in sweeps.items() for parameter in _swept_parameters(sweep)]
    columns = 4
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.4 * rows), squeeze=False)
    default = RankingConfig()
    colours = dict(zip(next(iter(sweeps.values())), ("tab:blue", "tab:orange"), strict=False))
    for axis, (title, parameter) in zip(axes.flat, panels, strict=False):
        for catalogue, by_label in sweeps[title].items():
            labels = [label for label in by_label if label.startswith(f"{parameter}=")]
            points = sorted([(float(label.split("=", 1)[1]), by_label[label]) for label in labels]
                            + [(float(getattr(default, parameter)), by_label["default"])])  # fmt: skip
            xs = [x for x, _ in points]
            axis.plot(xs, [row["objective"] for _, row in points], marker="o", color=colours.get(catalogue),
                      label=f"{catalogue}: session rounds")  # fmt: skip
            if all("switch_ndcg" in row for _, row in points):
                axis.plot(xs, [row["switch_ndcg"] for _, row in points], marker="x", linestyle="--",
                          color=colours.get(catalogue), label=f"{catalogue}: typed query after")  # fmt: skip
        axis.axvline(float(getattr(default, parameter)), color="grey", linestyle=":", linewidth=1)
        if parameter.endswith("half_life_s"):
            axis.set_xscale("log")
            axis.minorticks_off()
            axis.set_xticks(xs, [_duration(x) for x in xs])
        axis.set_title(f"{parameter} ({title})", fontsize=9)
        axis.set_ylabel("mean NDCG@10", fontsize=8)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _swept_parameters(sweep: Mapping[str, Mapping[str, Any]]) -> list[str]:
    labels = next(iter(sweep.values()))
    return list(dict.fromkeys(label.split("=", 1)[0] for label in labels if "=" in label))


# --- the run --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer queries, shoppers and sweep points: a smoke run")
    parser.add_argument("--products", type=int, default=catalog_gen.DEFAULT_PRODUCTS, help="generated catalogue size")
    parser.add_argument("--generated-queries", type=int, default=None, help="derived queries (default 240, quick 90)")
    parser.add_argument(
        "--shoppers", type=int, default=None, help="simulated shoppers per catalogue (default 200, quick 40)"
    )
    parser.add_argument("--seed", type=int, default=catalog_gen.DEFAULT_SEED, help="generator and shopper seed")
    parser.add_argument("--queries", type=Path, default=QUERIES_PATH, help="judged queries for the bundled catalogue")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="the JSON; the plots go next to it")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plots from the JSON, measure nothing")
    args = parser.parse_args(argv)
    if not 100 <= args.products <= 20_000:
        parser.error("--products must be between 100 and 20000")
    if args.generated_queries is None:
        args.generated_queries = 90 if args.quick else catalog_gen.DEFAULT_QUERIES
    if args.generated_queries < len(catalog_gen.QUERY_TEMPLATES):
        parser.error(f"--generated-queries must be at least {len(catalog_gen.QUERY_TEMPLATES)} (one per template)")
    if args.shoppers is None:
        args.shoppers = 40 if args.quick else 200
    if args.shoppers < 10:
        parser.error("--shoppers must be at least 10")
    return args


@dataclass(frozen=True)
class SessionCatalogue:
    """What the simulation needs of a catalogue: intents, the queries shoppers may type (vague
    ones and the judged switch queries) and their vectors by text."""

    intents: list[Intent]
    switches: list[JudgedQuery]
    vectors: dict[str, np.ndarray]
    products: tuple[Sequence[dict[str, Any]], np.ndarray]


def run_sessions(client: Any, catalogues: Mapping[str, SessionCatalogue], args: argparse.Namespace) -> dict[str, Any]:
    """Part 3: the configurations round by round, the weight sweep, the half-life sweep."""
    single: dict[str, tuple[Sequence[Shopper], Mapping[str, np.ndarray]]] = {}
    returning: dict[str, tuple[Sequence[Shopper], Mapping[str, np.ndarray]]] = {}
    for offset, (catalogue, found) in enumerate(catalogues.items()):
        single[catalogue] = (
            make_shoppers(found.intents, args.shoppers, args.seed + 100 + offset, False, found.switches),
            found.vectors,
        )
        returning[catalogue] = (
            make_shoppers(found.intents, args.shoppers, args.seed + 200 + offset, True),
            found.vectors,
        )
    report: dict[str, Any] = {
        "rounds": ROUNDS,
        "shoppers_per_catalogue": args.shoppers,
        "think_time_s": list(THINK_TIME_S),
        "configs": [asdict(config) for config in SESSION_CONFIGS],
        "by_catalogue": {},
    }
    for catalogue, (shoppers, vectors) in single.items():
        outcomes = {}
        for config in SESSION_CONFIGS:
            started = time.perf_counter()
            outcomes[config.name] = simulate(
                client,
                catalogue,
                config,
                RankingConfig(),
                shoppers,
                vectors,
                config.name,
                catalogues[catalogue].products,
            )
            log.info("sessions %s %s: %.1f s", catalogue, config.name, time.perf_counter() - started)
        print_sessions(catalogue, outcomes)
        baseline = outcomes["no session"]
        report["by_catalogue"][catalogue] = {
            "intents": len(catalogues[catalogue].intents),
            "configs": {
                name: {
                    "rounds": outcome.rounds,
                    "mean_ndcg_rounds_1_10": mean_objective(outcome, shoppers, 1),
                    "vs_no_session": paired_difference(outcome, baseline, shoppers, 1),
                    "switch_query_ndcg@10": outcome.switch_mean(),
                    "switch_vs_no_session": paired_switch_difference(outcome, baseline),
                    "switch_ratio_to_no_session": _ratio(outcome.switch_mean(), baseline.switch_mean()),
                    "switch_breakdown": outcome.switch_breakdown(),
                    "switch_by_kind": switch_by_kind(outcome, baseline),
                }
                for name, outcome in outcomes.items()
            },
        }
    report["load_average_1min_after_configs"] = round(os.getloadavg()[0], 2)
    grid, half_life_grid = (QUICK_SWEEP, QUICK_HALF_LIFE_SWEEP) if args.quick else (SWEEP, HALF_LIFE_SWEEP)
    report["sweep"] = run_sweep(client, single, grid, first_round=1)
    report["load_average_1min_after_sweep"] = round(os.getloadavg()[0], 2)
    print_sweep("Weights (full stack, rounds 1-10)", report["sweep"])
    report["half_life_sweep"] = run_sweep(client, returning, half_life_grid, first_round=FIRST_VISIT_ROUNDS + 1)
    print_sweep(f"Half-lives (returning shoppers, rounds {FIRST_VISIT_ROUNDS + 1}-{ROUNDS})", report["half_life_sweep"])
    advice = recommend_defaults(report["sweep"], grid) + recommend_defaults(report["half_life_sweep"], half_life_grid)
    report["advice"] = advice
    supported = {a["parameter"]: a["best"] for a in advice if a["change_supported"]}
    weights = {name: value for name, value in supported.items() if not name.endswith("half_life_s")}
    if weights:
        report["combined_weights"] = check_combined(client, single, weights, first_round=1)
    half_lives = {name: value for name, value in supported.items() if name.endswith("half_life_s")}
    if half_lives:
        report["combined_half_lives"] = check_combined(
            client, returning, half_lives, first_round=FIRST_VISIT_ROUNDS + 1
        )
    print_advice(report)
    return report


def _ratio(value: float | None, baseline: float | None) -> float | None:
    return round(value / baseline, 4) if value is not None and baseline else None


def print_advice(report: Mapping[str, Any]) -> None:
    print(
        "\nDefaults: best value per parameter (paired gain in mean NDCG@10 over the default, pooled ± SE; "
        f"a change needs {CHANGE_THRESHOLD_SE:g} SE)"
    )
    for row in report["advice"]:
        verdict = "change supported" if row["change_supported"] else "keep the default"
        ignoring = row["best_ignoring_switch_queries"]
        print(
            f"  {row['parameter']:22} default {row['default']:<8g} best {row['best']:<8g} "
            f"{row['gain_over_default']:+.4f} ± {row['pooled_se']:.4f} (switch queries {row['switch_change']:+.4f} "
            f"± {row['switch_se']:.4f}): {verdict}"
            + (
                f"; best ignoring switch queries {ignoring['value']:g} ({ignoring['gain']:+.4f}, switch queries "
                f"{ignoring['switch_change']:+.4f})"
                if ignoring["value"] != row["best"]
                else ""
            )
        )
    for key in ("combined_weights", "combined_half_lives"):
        if key in report:
            combined = report[key]
            print(f"  together {combined['changes']}:")
            for catalogue, result in combined.items():
                if catalogue != "changes":
                    switch = (
                        f"; switch queries {result['switch_before']:.4f} -> {result['switch_after']:.4f}"
                        if result["switch_before"] is not None
                        else ""
                    )
                    print(f"    {catalogue}: {result['before']:.4f} -> {result['after']:.4f}{switch}")


def draw_plots(report: Mapping[str, Any], directory: Path) -> None:
    sessions = report["sessions"]
    draw_session_plots(sessions["by_catalogue"], directory / "quality_sessions.png")
    draw_sweep_plots(
        {"weights": sessions["sweep"], "half-lives": sessions["half_life_sweep"]}, directory / "quality_sweep.png"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.plot_only:
        try:
            draw_plots(json.loads(args.output.read_text()), args.output.parent)
        except (OSError, ValueError, KeyError) as exc:
            raise SystemExit(f"error: cannot redraw from {args.output}: {exc}; run the benchmark first") from None
        return
    started = time.perf_counter()
    catalog = read_catalog(CATALOG_PATH)
    bundled = catalog["products"]
    try:
        judged = load_judged_queries(args.queries, {p["id"] for p in bundled})
    except EvalDataError as exc:
        raise SystemExit(f"error: {exc}") from None
    generated = catalog_gen.generate_catalog(args.products, args.seed)
    generated_checksum = catalog_gen.catalog_checksum(generated)
    derived = generated_as_judged(catalog_gen.derive_queries(generated, args.generated_queries, args.seed))

    embedder = LocalEmbedder(backend="onnx")
    generated_vectors = embed_cached(embedder, generated, generated_checksum)
    intents = {"bundled": bundled_intents(bundled), "generated": generated_intents(generated)}
    vague_texts = sorted(
        {*catalog_gen.GENERIC_VAGUE_QUERIES}
        | {f"looking for {noun}" for nouns in catalog_gen.CATEGORY_QUERY_NOUNS.values() for noun in nouns}
        | {f"something for {words}" for use in catalog_gen.USES.values() for words in use.query}
    )
    query_texts = sorted({*vague_texts, *(q.text for q in judged), *(q.text for q in derived)})
    query_vectors = dict(zip(query_texts, embedder.encode_many(query_texts), strict=True))
    with LocalRedis() as server:
        client = connect(server.url)
        report: dict[str, Any] = {
            "benchmark": "bench/quality.py",
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python -m bench.quality" + (" --quick" if args.quick else ""),
            "machine": machine(client),
            "packages": package_versions(PACKAGES),
            "model": {
                "name": embedder.model_name,
                "query_backend": embedder.backend,
                "catalog_json_model": catalog["model"],
            },
            "catalogues": {
                "bundled": {
                    "products": len(bundled),
                    "catalog_json_sha256": file_sha256(CATALOG_PATH),
                    "products_jsonl_sha256": file_sha256(PRODUCTS_PATH),
                    "queries_jsonl_sha256": file_sha256(args.queries),
                },
                "generated": {
                    "products": len(generated),
                    "seed": args.seed,
                    "sha256": generated_checksum,
                    "queries": len(derived),
                },
            },
            "parameters": {
                "k": K,
                "quick": args.quick,
                "metrics": list(METRICS),
                "ranking_config_defaults": asdict(RankingConfig()),
                "change_threshold_se": CHANGE_THRESHOLD_SE,
            },
        }
        bundled_rec = make_recommender(client, "bundled")
        bundled_vectors = catalog_vectors(catalog)
        load_index(bundled_rec, bundled, bundled_vectors)
        judged_vectors = np.stack([query_vectors[q.text] for q in judged])
        report["bundled_queries"] = run_query_configs(bundled_rec, judged, judged_vectors, QUERY_CONFIGS)
        print_query_report("Bundled catalogue, judged queries", report["bundled_queries"])

        generated_rec = make_recommender(client, "generated")
        load_index(generated_rec, generated, generated_vectors)
        derived_vectors = np.stack([query_vectors[q.text] for q in derived])
        report["generated_queries"] = run_query_configs(generated_rec, derived, derived_vectors, QUERY_CONFIGS)
        print_query_report("Generated catalogue, derived queries", report["generated_queries"])
        report["load_average_1min_after_queries"] = round(os.getloadavg()[0], 2)

        session_catalogues = {
            "bundled": SessionCatalogue(intents["bundled"], judged, query_vectors, (bundled, bundled_vectors)),
            "generated": SessionCatalogue(intents["generated"], derived, query_vectors, (generated, generated_vectors)),
        }
        report["sessions"] = run_sessions(client, session_catalogues, args)
        client.close()
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    write_result(args.output, report)
    draw_plots(report, args.output.parent)
    print(f"{report['seconds']:.0f} s; load average {report['machine']['load_average_1min_at_start']} at the start, "
          f"{report['load_average_1min_at_end']} at the end")  # fmt: skip


if __name__ == "__main__":
    main()
