"""Product hashes as listpacks or hash tables: memory, and what reading them costs Redis (issue 25).

Redis stores a small hash as a listpack (one allocation, fields side by side, read by a linear
scan) while every value fits hash-max-listpack-value (64 bytes by default) and the hash has at
most hash-max-listpack-entries fields; otherwise as a hash table (an allocation per field and
value, read by lookup). A product hash holds its vector (768 bytes as FLOAT16, 1,536 as FLOAT32),
so by default every product is a hash table.

One Redis, two copies of the same products under two prefixes, each with an index of its own
(FLOAT16, M 16): the first written with the default limit (hash tables), the second after
raising it (listpacks). It measures MEMORY USAGE of the hashes of both, and, interleaved in
blocks of 100 on the same queries, Redis' own µs per call (INFO commandstats) of HMGET of a
product's displayed fields and of a KNN FT.SEARCH returning them, unfiltered and with a filter.

Run: .venv/bin/python -m bench.listpack    (about 1 minute on 2 cores)
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import redis

from bench import million
from bench.harness import RESULTS_DIR, machine, write_result
from local_redis import LocalRedis, connect
from recengine.layout import PRODUCT_FIELDS, product_to_hash
from recommender import RedisRecommender

log = logging.getLogger("bench.listpack")

ENCODINGS = {"hashtable": 64, "listpack": 2048}  # hash-max-listpack-value each copy is written under
BLOCK = 100


def recommender(url: str, encoding: str) -> RedisRecommender:
    return RedisRecommender(
        connect(url, timeout_s=300),
        f"bench:listpack:{encoding}:idx",
        f"bench:listpack:{encoding}:p:",
        f"bench:listpack:{encoding}:u:",
        hnsw_m=16,
        hnsw_ef_construction=200,
        ef_runtime=100,
        vector_type="FLOAT16",
    )


def write(rec: RedisRecommender, catalog: million.ScaleCatalog) -> None:
    rec.create_index()
    for chunk in range(catalog.chunks):
        products = list(catalog.products(chunk))
        keys = rec.product_keys(p["id"] for p in products)
        batch = [(key, product_to_hash(p, million.DIM, (), "FLOAT16")) for key, p in zip(keys, products, strict=True)]
        for start in range(0, len(batch), million.BATCH):
            rec._write_batch(batch[start : start + million.BATCH])
    million.wait_indexed(rec, catalog.n)


def read_fields(rec: RedisRecommender, keys: list[str]) -> None:
    """HMGET of every displayed field of these products, pipelined."""
    pipe = rec.redis.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, list(PRODUCT_FIELDS))
    pipe.execute()


def search_all(rec: RedisRecommender, catalog: million.ScaleCatalog, queries: million.Queries, case: str) -> None:
    search = million.searcher(rec)
    for i, vector in enumerate(queries.vectors):
        search(vector, million.filter_kwargs(catalog, case, int(queries.category[i]), int(queries.brand[i])))


def usec_per_call(client: redis.Redis, command: str, work: Callable[[], None]) -> float:
    client.config_resetstat()
    work()
    return float(client.info("commandstats")[f"cmdstat_{command}"]["usec_per_call"])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved blocks of 100 calls per encoding")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "listpack.json")
    args = parser.parse_args(argv)
    catalog = million.ScaleCatalog(args.products, seed=25)
    queries = million.make_queries(catalog, BLOCK, seed=25)
    rng = np.random.default_rng(9)
    with LocalRedis() as server:
        recs = {encoding: recommender(server.url, encoding) for encoding in ENCODINGS}
        client = connect(server.url, timeout_s=300)
        memory: dict[str, Any] = {}
        for encoding, limit in ENCODINGS.items():
            client.config_set("hash-max-listpack-value", limit)
            before = int(client.info("memory")["used_memory"])
            write(recs[encoding], catalog)
            sample = recs[encoding].product_keys(str(i) for i in rng.integers(0, catalog.n, 200))
            memory[encoding] = {
                "hash_max_listpack_value": limit,
                "used_memory_per_product": round((int(client.info("memory")["used_memory"]) - before) / catalog.n, 1),
                "hash_bytes_mean": float(np.mean([client.memory_usage(key, samples=0) for key in sample])),
                "encodings": sorted({bytes(client.object("encoding", key)).decode() for key in sample}),
            }
            log.info("%s: %s", encoding, memory[encoding])
        timings: dict[str, dict[str, list[float]]] = {e: {"HMGET": [], "none": [], "medium": []} for e in ENCODINGS}
        for _ in range(args.rounds):
            ids = rng.integers(0, catalog.n, BLOCK)
            for encoding, rec in recs.items():
                keys = rec.product_keys(str(i) for i in ids)  # before the count: only product HMGETs
                timings[encoding]["HMGET"].append(usec_per_call(client, "hmget", partial(read_fields, rec, keys)))
                for case in ("none", "medium"):
                    work = partial(search_all, rec, catalog, queries, case)
                    timings[encoding][case].append(usec_per_call(client, "FT.SEARCH", work))
        result: dict[str, Any] = {
            "machine": machine(client),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "products": catalog.n,
            "memory": memory,
            "usec_per_call_median": {
                encoding: {what: round(float(np.median(values)), 2) for what, values in rows.items()}
                for encoding, rows in timings.items()
            },
            "usec_per_call_blocks": timings,
        }
    print(f"{catalog.n:,} FLOAT16 products, load {result['machine']['load_average_1min_at_start']}")
    print(
        "| hashes | B/product (used_memory) | hash B | HMGET µs | FT.SEARCH µs unfiltered | FT.SEARCH µs medium filter |"
    )
    print("|---|---|---|---|---|---|")
    for encoding in ENCODINGS:
        m, t = memory[encoding], result["usec_per_call_median"][encoding]
        print(
            f"| {'/'.join(m['encodings'])} (hash-max-listpack-value {m['hash_max_listpack_value']}) "
            f"| {m['used_memory_per_product']:,.0f} | {m['hash_bytes_mean']:,.0f} | {t['HMGET']} | {t['none']} | {t['medium']} |"
        )
    write_result(args.output, result)
    return result


if __name__ == "__main__":
    main()
