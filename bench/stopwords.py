"""What indexing every word costs: the index with RediSearch's default stop-word list against
the one RedisRecommender creates (STOPWORDS 0), on the bundled catalogue plus a synthetic one.

With the default list, a TEXT filter phrase that holds a stop word ("down for bitter", "and")
matches nothing. This measures the price of fixing that: inverted-index size, records, and the
latency of TEXT-filtered KNN searches, interleaved in one run so that machine load hits both.

Run from the repository root:  .venv/bin/python -m bench.stopwords   (about a minute on 2 cores)
It prints a table and writes bench/results/stopwords.json.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import RESULTS_DIR, machine, percentiles, write_result
from bench.synthetic_catalog import make_catalog, product_dict
from local_redis import LocalRedis
from recengine.catalog_file import read_catalog
from recommender import RedisRecommender, info_dict

ROOT = Path(__file__).resolve().parent.parent
PHRASES = ("down for bitter", "and", "waterproof", "down")
VARIANTS = {"default stop words": [], "STOPWORDS 0 (ours)": ["STOPWORDS", "0"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic", type=int, default=20_000, help="synthetic products added to the 96")
    parser.add_argument("--repeats", type=int, default=300, help="searches per phrase and index")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "stopwords.json")
    args = parser.parse_args(argv)

    catalog = read_catalog(ROOT / "catalog.json")
    synthetic = make_catalog(args.synthetic, seed=3)
    query = np.ones(384, dtype=np.float32)
    with LocalRedis() as server:
        client = server.client()
        indexes: dict[str, RedisRecommender] = {}
        rows: dict[str, dict[str, Any]] = {}
        for slot, (name, options) in enumerate(VARIANTS.items()):
            rec = RedisRecommender(client, index_name=f"bench:sw{slot}", key_prefix=f"bench:sw{slot}:")
            client.execute_command(
                "FT.CREATE", rec.index_name, "ON", "HASH", "PREFIX", "1", rec.key_prefix, *options,
                "SCHEMA", *rec.index_schema(),
            )  # fmt: skip
            rec.index_products(catalog["products"])
            rec.index_products({**product_dict(synthetic, i), "id": f"s{i}"} for i in range(synthetic.size))
            info = info_dict(client.execute_command("FT.INFO", rec.index_name))
            indexes[name] = rec
            rows[name] = {
                "documents": int(info["num_docs"]),
                "inverted_index_mb": round(float(info["inverted_sz_mb"]), 3),
                "records": int(info["num_records"]),
                "matches": {phrase: len(rec.candidate_retrieve(query, text_match=phrase, k=100)) for phrase in PHRASES},
            }
        timings: dict[str, dict[str, list[float]]] = {name: {p: [] for p in PHRASES} for name in indexes}
        for _ in range(args.repeats):
            for phrase in PHRASES:
                for name, rec in indexes.items():
                    started = time.perf_counter()
                    rec.candidate_retrieve(query, text_match=phrase, k=10)
                    timings[name][phrase].append((time.perf_counter() - started) * 1000)
        for name in indexes:
            rows[name]["search_ms"] = {phrase: percentiles(values) for phrase, values in timings[name].items()}
        result: dict[str, Any] = {
            "machine": machine(client),
            "variants": rows,
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        }
        for rec in indexes.values():
            rec.drop_index(delete_documents=True)

    print(f"load average {result['machine']['load_average_1min_at_start']} at start\n")
    print("| index | inverted index MB | records | " + " | ".join(f"'{p}' matches / p50 ms" for p in PHRASES) + " |")
    print("|---|---|---|" + "---|" * len(PHRASES))
    for name, row in rows.items():
        cells = [f"{row['matches'][p]} / {row['search_ms'][p]['p50_ms']:.2f}" for p in PHRASES]
        print(f"| {name} | {row['inverted_index_mb']} | {row['records']} | " + " | ".join(cells) + " |")
    write_result(args.output, result)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
