"""Quality benchmark: how good are the recommendations, and what does each layer add?

1. Graded query relevance on the bundled catalogue: the shopper queries of
   data/eval/queries.jsonl, judged by hand (data/eval/README.md), against catalog.json.
2. The same on a larger generated catalogue (bench/catalog_gen.py) whose queries and graded labels
   follow from the products' attributes.

For each, NDCG@10, recall@10 and MRR@10 (ranx) per configuration: plain KNN; KNN with the TEXT
filter on the query's must-have word; KNN with the filters the query states; both.

Every run starts its own bundled Redis with Search on a free port, under its own index names and
key prefixes, and writes bench/results/quality.json with the package versions, the model, the
catalogue checksums and the load average.

Run: .venv/bin/python -m bench.quality            (the full run)
     .venv/bin/python -m bench.quality --quick    (fewer generated queries)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from bench import catalog_gen
from bench.harness import ROOT, machine, write_result
from build_catalog import catalog_vectors, product_text, read_catalog
from embeddings import LocalEmbedder
from local_redis import LocalRedis, connect
from recommender import Candidate, RedisRecommender, build_filter_clause

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


QUERY_CONFIGS: dict[str, Retriever] = {
    "knn": plain_knn,
    "knn+text": knn_text,
    "knn+filters": knn_filters,
    "knn+filters+text": knn_filters_text,
}


def query_subsets(queries: Sequence[JudgedQuery]) -> dict[str, list[str]]:
    """The query groups reported apart: a configuration only changes the queries it applies to."""
    subsets: dict[str, list[str]] = {
        "all": [q.id for q in queries],
        "with stated filters": [q.id for q in queries if q.filters],
        "with a must-have word": [q.id for q in queries if q.must_have],
    }
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
    print(f"{'configuration':22} {'NDCG@10':>8} {'recall@10':>9} {'MRR@10':>7}")
    for name, result in report["configs"].items():
        mean = result["mean"]
        print(f"{name:22} {mean['ndcg@10']:8.3f} {mean['recall@10']:9.3f} {mean['mrr@10']:7.3f}")
    subsets = [s for s in report["subset_sizes"] if s != "all"]
    print(f"\nNDCG@10 by query group: {title}")
    print(f"{'group':26}" + "".join(f"{name:>18}" for name in report["configs"]))
    for subset in subsets:
        row = [report["configs"][name]["subsets"].get(subset, {}).get("ndcg@10") for name in report["configs"]]
        label = f"{subset} ({report['subset_sizes'][subset]})"
        print(f"{label:26}" + "".join(f"{value:18.3f}" if value is not None else f"{'-':>18}" for value in row))


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


def package_versions() -> dict[str, str]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


# --- the run --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer generated queries: a smoke run")
    parser.add_argument("--products", type=int, default=catalog_gen.DEFAULT_PRODUCTS, help="generated catalogue size")
    parser.add_argument("--generated-queries", type=int, default=None, help="derived queries (default 240, quick 90)")
    parser.add_argument("--seed", type=int, default=catalog_gen.DEFAULT_SEED, help="generator seed")
    parser.add_argument("--queries", type=Path, default=QUERIES_PATH, help="judged queries for the bundled catalogue")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    if not 100 <= args.products <= 20_000:
        parser.error("--products must be between 100 and 20000")
    if args.generated_queries is None:
        args.generated_queries = 90 if args.quick else catalog_gen.DEFAULT_QUERIES
    if args.generated_queries < 9:
        parser.error("--generated-queries must be at least 9 (one per query template)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
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
    with LocalRedis() as server:
        client = connect(server.url)
        report: dict[str, Any] = {
            "benchmark": "bench/quality.py",
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python -m bench.quality" + (" --quick" if args.quick else ""),
            "machine": machine(client),
            "packages": package_versions(),
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
            "parameters": {"k": K, "quick": args.quick, "metrics": list(METRICS)},
        }
        bundled_rec = make_recommender(client, "bundled")
        load_index(bundled_rec, bundled, catalog_vectors(catalog))
        judged_vectors = embedder.encode_many([q.text for q in judged])
        report["bundled_queries"] = run_query_configs(bundled_rec, judged, judged_vectors, QUERY_CONFIGS)
        print_query_report("Bundled catalogue, judged queries", report["bundled_queries"])

        generated_rec = make_recommender(client, "generated")
        load_index(generated_rec, generated, generated_vectors)
        derived_vectors = embedder.encode_many([q.text for q in derived])
        report["generated_queries"] = run_query_configs(generated_rec, derived, derived_vectors, QUERY_CONFIGS)
        print_query_report("Generated catalogue, derived queries", report["generated_queries"])
        client.close()
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    write_result(args.output, report)


if __name__ == "__main__":
    main()
