"""import_events.py on the whole Online Retail event file, as a user runs it: its rate, and what
the import leaves in Redis (memory, keys, and what caps them).

A fresh bundled Redis gets the 3,905 products of data/online-retail/products.jsonl.gz (with
random vectors: the import reads no vector), then the command line imports
data/online-retail/events.csv.gz (517,265 purchases): the checking pass and the import, timed
apart. A second run of the same command must find the file imported and write nothing.

    .venv/bin/python -m bench.import_rate

Results: a table on stdout and bench/results/import_rate.json.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import time
from typing import Any

import numpy as np

import import_events
from bench.harness import RESULTS_DIR, ROOT, machine, write_result
from local_redis import LocalRedis
from recommender import RedisRecommender

DATA = ROOT / "data" / "online-retail"


def memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def key_memory(client: Any, pattern: str) -> tuple[int, int]:
    """(keys, bytes) of the keys matching `pattern`, by MEMORY USAGE of each."""
    count = total = 0
    for key in client.scan_iter(match=pattern, count=1000):
        count += 1
        total += int(client.memory_usage(key, samples=0) or 0)
    return count, total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=None, help="import_events.py's --batch-size")
    options = parser.parse_args(argv)
    events_path = DATA / "events.csv.gz"
    with gzip.open(DATA / "products.jsonl.gz", "rt", encoding="utf-8") as stream:
        products = [json.loads(line) for line in stream if line.strip()]
    with gzip.open(events_path, "rt", encoding="utf-8") as stream:
        events = sum(1 for _ in stream) - 1  # the header
    rng = np.random.default_rng(0)
    report: dict[str, Any] = {"command": "python -m bench.import_rate", "file": str(events_path.relative_to(ROOT))}
    with LocalRedis() as server:
        client = server.client()
        report["machine"] = machine(client)
        rec = RedisRecommender(client)
        rec.create_index()
        rec.index_products({**p, "embedding": rng.normal(size=rec.vector_dim)} for p in products)
        before = memory(client)
        args = ["--input", str(events_path), "--redis-url", server.url]
        if options.batch_size:
            args += ["--batch-size", str(options.batch_size)]
            report["command"] += f" --batch-size {options.batch_size}"
        output = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(output):
            status = import_events.main(args)
        seconds = time.perf_counter() - started
        if status != 0:
            raise SystemExit(f"import_events.py exited with {status}")
        after = memory(client)
        co_keys, co_bytes = key_memory(client, "{recommend:idx:co:*")
        user_keys, user_bytes = key_memory(client, "user:*")
        again = io.StringIO()
        with contextlib.redirect_stdout(again):
            import_events.main(args)
        report |= {
            "events": events,
            "seconds_whole_command": round(seconds, 1),
            "cli_said": output.getvalue().strip(),
            "second_run_said": again.getvalue().strip(),
            "redis_memory_added_mb": round((after - before) / 2**20, 1),
            "co_occurrence_keys": co_keys,
            "co_occurrence_mb": round(co_bytes / 2**20, 1),
            "user_keys": user_keys,
            "user_mb": round(user_bytes / 2**20, 1),
            "caps": "neighbours_kept x products (100 x 3,905) for the counts; per user (one hash, expiring "
            "with the user) window_kept (32) events, 6 recent and seen_kept (200) seen products",
        }
        report["events_per_s_whole_command"] = round(report["events"] / seconds)
        client.close()
    report["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    for name in ("cli_said", "seconds_whole_command", "events_per_s_whole_command", "redis_memory_added_mb",
                 "co_occurrence_keys", "co_occurrence_mb", "user_keys", "user_mb", "second_run_said"):  # fmt: skip
        print(f"{name:28} {report[name]}")
    write_result(RESULTS_DIR / "import_rate.json", report)


if __name__ == "__main__":
    main()
