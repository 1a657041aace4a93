"""What the feedback features cost and do, on the bundled catalogue with the real model:

1. Exclusions: p50/p99 of a personalised search (k=10, over-fetch 3) for a user with 0, 50 and
   200 products to leave out, on a 10,000-product synthetic catalogue (bench/synthetic_catalog),
   the excluded products being the nearest to each query (the worst case: every one of them
   would otherwise have been fetched).
2. Diversity: intra-list similarity (mean pairwise cosine of the top 10, lower = more varied)
   and distinct categories in the top 10 at λ = 0, 0.3, 0.7, over the 50 sample queries.
3. "More like this": the share of same-category products among the 10 neighbours of every
   catalogue product, and their mean cosine to it, against same_category_boost.

Run from the repository root:  .venv/bin/python -m bench.feedback   (about a minute on 2 cores)
It prints tables and writes bench/results/feedback.json and bench/results/feedback.png.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from bench.harness import RESULTS_DIR, machine, percentiles, write_result
from bench.synthetic_catalog import make_catalog, make_queries, product_dict
from embeddings import LocalEmbedder
from local_redis import LocalRedis
from ranking import intra_list_similarity
from recengine.catalog_file import catalog_vectors, read_catalog
from recommender import RankingConfig, RedisRecommender

ROOT = Path(__file__).resolve().parent.parent
EXCLUSION_COUNTS = (0, 50, 200)
DIVERSITIES = (0.0, 0.3, 0.7)
SYNTHETIC_SIZE = 10_000
BOOSTS = (0.0, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3)


def exclusion_cost(
    rec: RedisRecommender, vectors: np.ndarray, queries: np.ndarray, repeats: int
) -> list[dict[str, Any]]:
    """Search latency for a user with n products to leave out: the worst case, where they are
    the n nearest products to the query, so every one of them is fetched and dropped."""
    rows = []
    for count in EXCLUSION_COUNTS:
        user = f"bench-excl-{count}"
        seen_key = rec._user_keys(user)[2]
        timings, kept, excluded = [], [], []
        for query in queries:
            rec.reset_user(user)
            nearest = np.argsort(-(vectors @ query))[:count]
            if count:
                rec.redis.zadd(seen_key, {str(i): rank for rank, i in enumerate(nearest)})
            for _ in range(repeats):
                started = time.perf_counter()
                result = rec.recommend(query, user_id=user, k=10, exclude_clicked=True)
                timings.append((time.perf_counter() - started) * 1000)
                kept.append(len(result.candidates))
                excluded.append(result.excluded_count)
        rec.reset_user(user)
        rows.append(
            {
                "exclusions": count,
                **percentiles(timings),
                "mean_kept": float(np.mean(kept)),
                "mean_excluded": float(np.mean(excluded)),
            }
        )
    return rows


def diversity_effect(rec: RedisRecommender, queries: np.ndarray, by_id: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    rows = []
    for diversity in DIVERSITIES:
        similarity, categories, distance = [], [], []
        for query in queries:
            result = rec.recommend(query, k=10, diversity=diversity)
            similarity.append(intra_list_similarity([by_id[c.id] for c in result.candidates]))
            categories.append(len({c.category for c in result.candidates}))
            distance.append(np.mean([c.vector_distance for c in result.candidates]))
        rows.append(
            {
                "diversity": diversity,
                "intra_list_similarity": float(np.mean(similarity)),
                "distinct_categories": float(np.mean(categories)),
                "mean_distance": float(np.mean(distance)),
            }
        )
    return rows


def boost_effect(vectors: np.ndarray, categories: np.ndarray) -> list[dict[str, Any]]:
    """Computed exactly with numpy over the whole catalogue: the same ranking similar() makes
    (distance minus the boost for the product's own category), without HNSW approximation."""
    distances = 1 - vectors @ vectors.T
    rows = []
    for boost in BOOSTS:
        share, closeness = [], []
        for i in range(len(vectors)):
            scores = distances[i] - boost * (categories == categories[i])
            scores[i] = np.inf
            top = np.argsort(scores, kind="stable")[:10]
            share.append(np.mean(categories[top] == categories[i]))
            closeness.append(np.mean(1 - distances[i][top]))
        rows.append(
            {"boost": boost, "same_category_share": float(np.mean(share)), "mean_cosine": float(np.mean(closeness))}
        )
    return rows


def plot(result: dict[str, Any], path: Path) -> None:
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 4))
    excl = result["exclusions"]
    left.bar([str(r["exclusions"]) for r in excl], [r["p50_ms"] for r in excl])
    left.set(title="search p50 vs exclusions", xlabel="excluded products", ylabel="ms")
    div = result["diversity"]
    middle.plot(
        [r["diversity"] for r in div], [r["intra_list_similarity"] for r in div], "o-", label="intra-list similarity"
    )
    middle.plot(
        [r["diversity"] for r in div],
        [r["distinct_categories"] / 10 for r in div],
        "s-",
        label="distinct categories / 10",
    )
    middle.set(title="diversity λ", xlabel="λ")
    middle.legend()
    boost = result["similar_boost"]
    right.plot(
        [r["boost"] for r in boost], [r["same_category_share"] for r in boost], "o-", label="same-category share"
    )
    right.plot([r["boost"] for r in boost], [r["mean_cosine"] for r in boost], "s-", label="mean cosine to product")
    right.axvline(RankingConfig().same_category_boost, color="grey", linestyle=":")
    right.set(title="similar(): same_category_boost", xlabel="boost")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="searches per query for the latency figures")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "feedback.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    catalog = read_catalog(ROOT / "catalog.json")
    vectors = catalog_vectors(catalog)
    ids = [p["id"] for p in catalog["products"]]
    categories = np.array([p["category"] for p in catalog["products"]])
    texts = [line.strip() for line in (ROOT / "data" / "sample_queries.txt").read_text().splitlines() if line.strip()]
    queries = LocalEmbedder(backend="onnx").encode_many(texts)

    synthetic = make_catalog(SYNTHETIC_SIZE, seed=7)
    synthetic_queries = make_queries(synthetic, 40, seed=7).vectors
    with LocalRedis() as server:
        client = server.client()
        big = RedisRecommender(client, index_name="bench:excl", key_prefix="bench:excl:", user_key_prefix="bench:u:")
        big.drop_index(delete_documents=True)
        big.create_index()
        big.index_products(product_dict(synthetic, i) for i in range(synthetic.size))
        rec = RedisRecommender(client, index_name="bench:feedback", key_prefix="bench:feedback:")
        rec.drop_index(delete_documents=True)
        rec.create_index()
        rec.index_products(catalog["products"])
        result: dict[str, Any] = {
            "machine": machine(client),
            "catalog_products": len(ids),
            "exclusion_catalog_products": synthetic.size,
            "exclusions": exclusion_cost(big, synthetic.vectors, synthetic_queries, args.repeats),
            "diversity": diversity_effect(rec, queries, dict(zip(ids, vectors, strict=True))),
            "similar_boost": boost_effect(vectors, categories),
        }
        result["machine"]["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
        big.drop_index(delete_documents=True)
        rec.drop_index(delete_documents=True)

    print(f"load average {result['machine']['load_average_1min_at_start']} at start\n")
    print("| exclusions | p50 ms | p99 ms | results kept | excluded per search |\n|---|---|---|---|---|")
    base = result["exclusions"][0]["p50_ms"]
    for r in result["exclusions"]:
        print(
            f"| {r['exclusions']} | {r['p50_ms']:.2f} ({r['p50_ms'] / base:.2f}×) | {r['p99_ms']:.2f} | {r['mean_kept']:.1f} | {r['mean_excluded']:.1f} |"
        )
    print("\n| diversity λ | intra-list similarity | distinct categories | mean distance |\n|---|---|---|---|")
    for r in result["diversity"]:
        print(
            f"| {r['diversity']} | {r['intra_list_similarity']:.3f} | {r['distinct_categories']:.2f} | {r['mean_distance']:.3f} |"
        )
    print("\n| same_category_boost | same-category share | mean cosine |\n|---|---|---|")
    for r in result["similar_boost"]:
        print(f"| {r['boost']} | {r['same_category_share']:.3f} | {r['mean_cosine']:.4f} |")
    write_result(args.output, result)
    plot(result, args.output.with_suffix(".png"))
    print(f"\nwrote {args.output} and {args.output.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
