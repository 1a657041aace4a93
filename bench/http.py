"""End-to-end latency of the demo server: /search at 1, 4 and 16 concurrent clients, split into
repeated queries (the query-vector cache answers) and fresh ones (the model runs), /click, and
the server's cold start and memory.

    .venv/bin/python -m bench.http
    .venv/bin/python -m bench.http --requests 200 --server-arg=--embedding-backend=torch

It starts its own Redis with Search and demo server on loopback. Results: a table on stdout
and bench/results/http.json.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from bench.harness import RESULTS_DIR, ROOT, JsonClient, machine, percentiles, start_demo_server, write_result
from local_redis import LocalRedis

REPEATED_QUERIES = [
    "insulated down jacket for cold weather",
    "comfortable shoes for trail running",
    "waterproof hiking boots",
    "warm wool hat",
    "lightweight daypack",
]
FRESH_WORDS = ["warm", "light", "waterproof", "durable", "soft", "jacket", "boots", "pack", "gloves", "tent"]


def search_body(kind: str, counter: itertools.count) -> dict:
    """Repeated queries hit the cache after the warm-up; fresh ones are unique texts."""
    n = next(counter)
    if kind == "repeated":
        query = REPEATED_QUERIES[n % len(REPEATED_QUERIES)]
    else:
        query = f"{FRESH_WORDS[n % 10]} {FRESH_WORDS[(n // 10) % 10]} item number {n}"
    return {
        "query": query,
        "k": 10,
        "category": "outerwear" if n % 2 else "",
        "use_session": True,
        "rerank": True,
        "user_id": f"bench-{n % 8}",
    }


def run_phase(url: str, clients: int, total: int, make_request) -> dict:
    """`total` requests spread over `clients` threads, each with its own keep-alive connection."""
    latencies: list[float] = []
    server_side: list[dict] = []
    errors = 0
    lock = threading.Lock()

    def worker(count: int) -> None:
        nonlocal errors
        client = JsonClient(url)
        for _ in range(count):
            method, path, body = make_request()
            status, data, ms = client.call(method, path, body)
            with lock:
                if status == 200:
                    latencies.append(ms)
                    server_side.append(data)
                else:
                    errors += 1
        client.close()

    shares = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    threads = [threading.Thread(target=worker, args=(share,)) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    row = {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / elapsed, 1),
        **percentiles(latencies),
    }
    for name in ("embed_ms", "search_ms", "rerank_ms"):
        values = [d[name] for d in server_side if name in d]
        if values:
            row[f"server_{name}_p50"] = round(float(np.median(values)), 3)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per phase (default 400)")
    parser.add_argument("--concurrency", default="1,4,16", help="client counts (default 1,4,16)")
    parser.add_argument("--server-arg", action="append", default=[], help="extra demo_server.py argument (repeatable)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "http.json")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",")]

    # The first start on a machine exports the ONNX model once (seconds, and torch in memory);
    # do that untimed, so the figures are those of every later start.
    subprocess.run([sys.executable, str(ROOT / "embeddings.py"), "--export-onnx"], check=True, capture_output=True)
    with LocalRedis() as redis_server:
        server = start_demo_server(redis_server.url, args.server_arg)
        try:
            warm = JsonClient(server.url)
            for query in REPEATED_QUERIES:  # fill the cache, and let every user have a session
                warm.call("POST", "/search", {"query": query})
            for n in range(8):
                warm.call("POST", "/click", {"product_id": "p001", "user_id": f"bench-{n}"})
            warm.close()
            counter = itertools.count()
            rows = []
            for kind in ("repeated", "fresh"):
                for clients in levels:
                    row = run_phase(
                        server.url,
                        clients,
                        args.requests,
                        lambda kind=kind: ("POST", "/search", search_body(kind, counter)),
                    )
                    rows.append({"endpoint": f"/search {kind}", **row})
            for clients in levels:
                clicks = itertools.count()
                row = run_phase(
                    server.url, clients, args.requests,
                    lambda clicks=clicks: ("POST", "/click", {"product_id": f"p{next(clicks) % 96 + 1:03d}", "user_id": "bench-clicker"}),
                )  # fmt: skip
                rows.append({"endpoint": "/click", **row})
            rss_mb = server.rss_mb()
        finally:
            server.stop()

    print(
        f"server start to listening: {server.seconds_to_listening:.2f} s ({server.startup_phases}); RSS after the run {rss_mb:.0f} MB"
    )
    print(
        f"{'endpoint':<18} {'clients':>7} {'ok':>6} {'err':>4} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'embed p50':>9}"
    )
    for r in rows:
        print(
            f"{r['endpoint']:<18} {r['clients']:>7} {r['requests']:>6} {r['errors']:>4} {r['rps']:>8} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['p99_ms']:>8} {r.get('server_embed_ms_p50', ''):>9}"
        )
    write_result(
        args.output,
        {
            "command": "python -m bench.http " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": machine(),
            "server_args": args.server_arg,
            "seconds_to_listening": round(server.seconds_to_listening, 2),
            "startup_phases_s": server.startup_phases,
            "server_rss_mb": round(rss_mb, 1),
            "rows": rows,
        },
    )
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
