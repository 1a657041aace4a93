"""Which HNSW settings, by measurement: M, EF_CONSTRUCTION and the hash encoding (issue 25).

For each setting (M, EF_CONSTRUCTION, and optionally Redis' hash-max-listpack-value) it runs
bench/million.py on a fresh Redis with FLOAT16 vectors from the catalogue generator, and
collects into one table:

- bytes per product: INFO used_memory over the empty server's, FT.INFO's vector index, and
  MEMORY USAGE of the product hashes (with their encoding);
- recall@10 unfiltered at each EF_RUNTIME of `--ef-sweep` (1,000 queries against exact search);
- at the smallest EF_RUNTIME reaching 0.95: Redis' own µs per FT.SEARCH (INFO commandstats) and
  p50/p99 at 8 concurrent clients, unfiltered and with the medium filter, and µs per HMGET of a
  product's fields (what a listpack's linear scan could cost).

Each setting is one row keyed by its name, and rows accumulate in the output file across runs
of the same size (so a setting can be added, or measured again, later).

A setting without a listpack value runs under the bundled Redis' own (2048 since
local_redis.py sets it; the rows of bench/results/hnsw_settings-100000.json without one were
measured before, under Redis' default of 64: their hashes are hash tables, as the row says).

Run: .venv/bin/python -m bench.hnsw_settings --settings 8:200:64,12:200:64,16:200:64,24:200:64,32:200:64
     .venv/bin/python -m bench.hnsw_settings --settings 16:100:64,16:200:2048
(about 2 minutes per setting at 100,000 products on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import million
from bench.harness import RESULTS_DIR

log = logging.getLogger("bench.hnsw_settings")


@dataclass(frozen=True)
class Setting:
    m: int
    ef_construction: int
    hash_max_listpack_value: int | None = None

    @property
    def name(self) -> str:
        listpack = "" if self.hash_max_listpack_value is None else f" listpack {self.hash_max_listpack_value}"
        return f"M {self.m} EFC {self.ef_construction}{listpack}"


def parse_setting(text: str) -> Setting:
    """M:EF_CONSTRUCTION[:hash-max-listpack-value]"""
    parts = [int(part) for part in text.split(":")]
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"{text!r}: write M:EF_CONSTRUCTION or M:EF_CONSTRUCTION:LISTPACK_VALUE")
    return Setting(*parts)


def measure(setting: Setting, args: argparse.Namespace, raw: Path) -> dict[str, Any]:
    """One million.py run at this setting; its figures that choose a setting."""
    argv = [
        "--products", str(args.products), "--vector-type", "FLOAT16",
        "--hnsw-m", str(setting.m), "--hnsw-ef-construction", str(setting.ef_construction),
        "--ef-sweep", ",".join(str(ef) for ef in args.ef_sweep), "--target-recall", str(args.target_recall),
        "--clients", "8", "--cases", "none,medium", "--users", "0",
        "--queries", str(args.queries), "--latency-queries", str(args.latency_queries), "--output", str(raw),
    ]  # fmt: skip
    if setting.hash_max_listpack_value is not None:
        argv += ["--hash-max-listpack-value", str(setting.hash_max_listpack_value)]
    result = million.main(argv)
    memory, latency = result["memory"], result["latency"]
    return {
        "setting": setting.name,
        "m": setting.m,
        "ef_construction": setting.ef_construction,
        "hash_max_listpack_value": memory["hash_max_listpack_value"],
        "bytes_per_product": memory["used_memory_per_product"],
        "vector_index_bytes_per_product": memory["ft_info_bytes_per_product"]["vector_index_sz_mb"],
        "product_hash_bytes": memory["product_hash_bytes_mean"],
        "product_hash_encodings": memory["product_hash_encodings"],
        "hmget_us": memory["hmget_us_per_call"],
        "recall_unfiltered": {ef: row["none"]["recall_at_10"] for ef, row in result["ef_runtime_sweep"].items()},
        "ef_runtime": result["settings"]["ef_runtime"],
        "at_ef_runtime": {
            case: {
                "recall_at_10": result["recall"][case]["recall_at_10"],
                "redis_us_per_search": round(latency[case]["8"]["redis_ms_per_search"] * 1000),
                "p50_ms_8_clients": latency[case]["8"]["p50_ms"],
                "p99_ms_8_clients": latency[case]["8"]["p99_ms"],
                "load_average": latency[case]["8"]["load_average"],
            }
            for case in ("none", "medium")
        },
        "fully_indexed_after_s": result["ingest"]["fully_indexed_after_s"],
        "load_average_at_start": result["machine"]["load_average_1min_at_start"],
        "raw": str(raw),
    }


def print_table(rows: Sequence[dict[str, Any]], ef_values: Sequence[int]) -> None:
    print(
        "| setting | B/product | vector index B | hash B (encoding) | HMGET µs | "
        + " | ".join(f"recall EF {ef}" for ef in ef_values)
        + " | EF for 0.95 | Redis µs/search none / medium | p99 ms 8 clients none / medium | indexed after s | load |"
    )
    print("|---" * (9 + len(ef_values)) + "|")
    for r in rows:
        at = r["at_ef_runtime"]
        encodings = "/".join(sorted(r["product_hash_encodings"]))
        print(
            f"| {r['setting']} | {r['bytes_per_product']:,.0f} | {r['vector_index_bytes_per_product']:,.0f} "
            f"| {r['product_hash_bytes']:,.0f} ({encodings}) | {r['hmget_us']} | "
            + " | ".join(str(r["recall_unfiltered"].get(str(ef), "")) for ef in ef_values)
            + f" | {r['ef_runtime']} | {at['none']['redis_us_per_search']} / {at['medium']['redis_us_per_search']} "
            f"| {at['none']['p99_ms_8_clients']} / {at['medium']['p99_ms_8_clients']} | {r['fully_indexed_after_s']} "
            f"| {at['none']['load_average']} |"
        )


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--settings",
        type=lambda s: [parse_setting(x) for x in s.split(",")],
        default=[Setting(m, 200) for m in (8, 12, 16, 24, 32)],
        help="M:EF_CONSTRUCTION[:LISTPACK_VALUE],... (default M 8,12,16,24,32 at EF_CONSTRUCTION 200)",
    )
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--ef-sweep", type=lambda s: [int(x) for x in s.split(",")], default=[50, 100, 200, 400])
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--latency-queries", type=int, default=1000)
    parser.add_argument("--output", type=Path, default=None, help="default bench/results/hnsw_settings-N.json")
    args = parser.parse_args(argv)
    output = args.output or RESULTS_DIR / f"hnsw_settings-{args.products}.json"
    kept = json.loads(output.read_text()) if output.exists() else {"products": args.products, "rows": {}}
    for setting in args.settings:
        raw = output.parent / output.stem / f"{setting.name.replace(' ', '-').lower()}.json"
        raw.parent.mkdir(parents=True, exist_ok=True)
        kept["rows"][setting.name] = measure(setting, args, raw)
        output.write_text(json.dumps(kept, indent=2) + "\n")
        log.info("%s: %s", setting.name, kept["rows"][setting.name])
    rows = sorted(kept["rows"].values(), key=lambda r: (r["m"], r["ef_construction"], r["hash_max_listpack_value"]))
    print_table(rows, args.ef_sweep)
    print(f"wrote {output}")
    return rows


if __name__ == "__main__":
    main()
