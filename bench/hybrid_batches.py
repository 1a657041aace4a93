"""Filtered KNN: Redis' hybrid policy against forced BATCHES of several sizes (issue 25).

A filter keeping 1-2 % of a large catalogue (bench/million.py's "medium": a category, in stock,
a price band) is the slow case: Redis picks ad-hoc brute force, which walks every product of the
category through the price range's numeric iterators. With HYBRID_POLICY BATCHES Redis instead
walks the HNSW graph in batches of BATCH_SIZE nearest products and filters them, which is fast
when the query's neighbours pass the filter (a shopper's query filtered to its own category) and
slow when they do not (each further batch searches deeper).

For each filter case, on one kept catalogue, it runs the same queries under each variant and
reports Redis' own µs per FT.SEARCH (INFO commandstats), the slowest call, and the share of the
top 10 that equals Redis' own choice's (ad-hoc brute force is exact over the filtered set):

- medium, the query's own category (queries near a catalogue item or a centre of that category);
- medium, another category (the query's vector unrelated to the filter: BATCHES' worst case);
- narrow (medium + one of the 20 commonest brands).

Run: .venv/bin/python -m bench.million --products 100000 --vector-type FLOAT16 --data-dir DIR
     .venv/bin/python -m bench.hybrid_batches --reuse DIR        (about 3 minutes at 100k)
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import local_redis
from bench import million
from bench.harness import RESULTS_DIR, machine, write_result
from local_redis import LocalRedis, connect
from recengine import query
from recengine.layout import EMBEDDING_FIELD, SCORE_FIELD

log = logging.getLogger("bench.hybrid_batches")

# The KNN clause's attributes of each variant ("" leaves the policy to Redis).
VARIANTS = {
    "Redis' choice": "",
    "ADHOC_BF": "HYBRID_POLICY ADHOC_BF",
    "BATCHES": "HYBRID_POLICY BATCHES",
    "BATCHES, BATCH_SIZE 50": "HYBRID_POLICY BATCHES BATCH_SIZE 50",
    "BATCHES, BATCH_SIZE 100": "HYBRID_POLICY BATCHES BATCH_SIZE 100",
    "BATCHES, BATCH_SIZE 200": "HYBRID_POLICY BATCHES BATCH_SIZE 200",
}
CASES = ("medium, own category", "medium, another category", "narrow")


def search_command(clause: str, attributes: str, ef_runtime: int, vector: np.ndarray) -> list[Any]:
    """One KNN FT.SEARCH as the library sends it (ids and distances only), with these attributes."""
    ef = "" if "ADHOC_BF" in attributes else f" EF_RUNTIME {ef_runtime}"
    knn = f"({clause})=>[KNN {million.K} @{EMBEDDING_FIELD} $vec {attributes}{ef} AS {SCORE_FIELD}]"
    return [
        "FT.SEARCH", million.INDEX_NAME, knn, "PARAMS", "2", "vec", np.asarray(vector, np.float16).tobytes(),
        "RETURN", "1", SCORE_FIELD, "SORTBY", SCORE_FIELD, "LIMIT", "0", str(million.K), "DIALECT", "2",
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--reuse", type=Path, required=True, help="a FLOAT16 catalogue kept by bench.million --data-dir"
    )
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--ef-runtime", type=int, default=100)
    parser.add_argument("--output", type=Path, default=None, help="default bench/results/hybrid_batches-N.json")
    args = parser.parse_args(argv)
    kept = million.read_manifest(args.reuse)
    catalog = million.ScaleCatalog(kept["products"], kept["seed"], kept["settings"].get("generator", "isotropic"))
    queries = million.make_queries(catalog, args.queries, kept["seed"])
    shifts = np.random.default_rng(4).integers(1, million.CATEGORIES, len(queries.category))
    categories = {
        "medium, own category": queries.category,
        "medium, another category": (queries.category + shifts) % million.CATEGORIES,
        "narrow": queries.category,
    }
    local_redis.STARTUP_TIMEOUT_S = max(local_redis.STARTUP_TIMEOUT_S, 3600.0)
    with LocalRedis(args.reuse) as server:
        setup = million.Setup(
            server.url, "FLOAT16", kept["settings"]["hnsw_m"], kept["settings"]["hnsw_ef_construction"], args.ef_runtime
        )
        client = connect(server.url, timeout_s=300)
        million.wait_indexed(setup.recommender(), catalog.n)
        rows: dict[str, dict[str, Any]] = {}
        for case in CASES:
            filter_name = case.split(",")[0]
            clauses = [
                query.SearchFilters(
                    **million.filter_kwargs(catalog, filter_name, int(categories[case][i]), int(queries.brand[i]))
                ).clause()
                for i in range(len(queries.vectors))
            ]
            found: dict[str, list[set[bytes]]] = {}
            rows[case] = {}
            for variant, attributes in VARIANTS.items():
                client.config_resetstat()
                found[variant], slowest = [], 0.0
                for clause, vector in zip(clauses, queries.vectors, strict=True):
                    started = time.perf_counter()
                    reply = client.execute_command(*search_command(clause, attributes, args.ef_runtime, vector))
                    slowest = max(slowest, time.perf_counter() - started)
                    found[variant].append(set(reply[1::2]))
                stats = client.info("commandstats")["cmdstat_FT.SEARCH"]
                same = [
                    len(a & b) / len(b) if b else float(not a)  # no product passes: nothing is the same answer
                    for a, b in zip(found[variant], found["Redis' choice"], strict=True)
                ]
                rows[case][variant] = {
                    "redis_us_per_search": round(float(stats["usec_per_call"])),
                    "slowest_ms": round(slowest * 1000, 1),
                    "same_top10_as_redis_choice": round(float(np.mean(same)), 4),
                }
                log.info("%s, %s: %s", case, variant, rows[case][variant])
        result = {
            "machine": machine(client),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "products": catalog.n,
            "settings": kept["settings"] | {"ef_runtime": args.ef_runtime, "queries": len(queries.vectors)},
            "cases": rows,
        }
    print(f"\n{catalog.n:,} products, {kept['settings'].get('generator', 'isotropic')} vectors, FLOAT16, load "
          f"{result['machine']['load_average_1min_at_start']}")  # fmt: skip
    print("| variant | " + " | ".join(f"{case}: Redis µs / slowest ms / same top 10" for case in CASES) + " |")
    print("|---" * (1 + len(CASES)) + "|")
    for variant in VARIANTS:
        cells = [rows[case][variant] for case in CASES]
        print(
            f"| {variant} | "
            + " | ".join(
                f"{c['redis_us_per_search']:,} / {c['slowest_ms']} / {c['same_top10_as_redis_choice']}" for c in cells
            )
            + " |"
        )
    output = args.output or RESULTS_DIR / f"hybrid_batches-{catalog.n}.json"
    write_result(output, result)
    return result


if __name__ == "__main__":
    main()
