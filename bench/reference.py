"""Our demo server against the reference's, on the same catalogue, interleaved in one run (issue 25).

The reference is the redis-py port of Redis' recommendation-engine tutorial (github.com/redis/docs,
`content/develop/use-cases/recommendation-engine/redis-py`). Nothing of it is in this repository:
pass a checkout of that folder with `--reference-dir`. This script starts two bundled Redis
servers with Search (one each, so neither sees the other's keys), our `demo_server.py` and the
reference's `demo_server.py` (run unchanged; its embedder is pointed at the locally installed
all-MiniLM-L6-v2, since this machine is offline), both seeded from our `catalog.json`, and sends
both the same requests as form posts, over keep-alive connections (the reference's server speaks
HTTP/1.0, so its client reconnects for every request, as a browser would). Both servers log
to files (in a temporary folder the run prints), so neither waits on a pipe this script drains:

- `/click` at one client, a product of the catalogue each time, and for a product that does not
  exist (a 404: the HTTP handling and one round trip, without a click's work);
- `/search` with a fresh query each time (the model runs) at one client and at 8 clients;
- `/search` with a repeated query at one client (our server answers from its query-vector cache).

Each phase runs in rounds of `--per-round` requests, alternating which server goes first, so
load from other work on the machine falls on both alike; p50/p99 are over all rounds.

Run: .venv/bin/python -m bench.reference --reference-dir /path/to/redis-py   (about 3 minutes)
     ... --phase /click --output bench/results/reference_click.json   (one phase, a minute)
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench.harness import RESULTS_DIR, ROOT, machine, percentiles, start_demo_server, wait_for_line, write_result
from embeddings import resolve_model_dir
from local_redis import LocalRedis, free_port

log = logging.getLogger("bench.reference")

REPEATED = "insulated down jacket for cold weather"
WORDS = ["warm", "light", "waterproof", "durable", "soft", "jacket", "boots", "pack", "gloves", "tent"]
# The reference's embedder takes a model name; this points it at the installed model instead.
REFERENCE_LAUNCHER = """
import runpy, sys
reference_dir, model_dir = sys.argv[1], sys.argv[2]
sys.path.insert(0, reference_dir)
import embeddings
embeddings.LocalEmbedder.__init__.__defaults__ = (model_dir,)
sys.argv = [reference_dir + "/demo_server.py", *sys.argv[3:]]
runpy.run_path(reference_dir + "/demo_server.py", run_name="__main__")
"""


class FormClient:
    """One connection, re-opened when the server closes it: (status, ms) per form post."""

    def __init__(self, port: int) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path: str, fields: dict[str, str]) -> tuple[int, float]:
        body = urlencode(fields).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        started = time.perf_counter()
        try:
            self._conn.request("POST", path, body=body, headers=headers)
            response = self._conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            self._conn.close()
            status = 0
        return status, (time.perf_counter() - started) * 1000

    def close(self) -> None:
        self._conn.close()


def start_reference(
    reference_dir: Path, redis_port: int, catalog: Path, log_path: Path
) -> tuple[subprocess.Popen, int]:
    """The reference's server, logging to a file (as ours does here)."""
    port = free_port()
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-u", "-c", REFERENCE_LAUNCHER, str(reference_dir), str(resolve_model_dir(None)),
             "--port", str(port), "--redis-host", "127.0.0.1", "--redis-port", str(redis_port), "--catalog", str(catalog)],
            cwd=reference_dir, stdout=log_file, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ""},
        )  # fmt: skip
    wait_for_line(process, log_path, "listening on")
    return process, port


def fresh_query(n: int) -> str:
    return f"{WORDS[n % 10]} {WORDS[(n // 10) % 10]} item number {n}"


def run_round(
    port: int, clients: int, requests: list[tuple[str, dict[str, str]]], expected: int = 200
) -> tuple[list[float], float, int]:
    """The requests over `clients` threads: latencies of the answers with the `expected` status,
    wall seconds, failures (any other status)."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def worker(share: list[tuple[str, dict[str, str]]]) -> None:
        client = FormClient(port)
        for path, fields in share:
            status, ms = client.post(path, fields)
            with lock:
                if status == expected:
                    latencies.append(ms)
                else:
                    failures[0] += 1
        client.close()

    threads = [threading.Thread(target=worker, args=(requests[i::clients],)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started, failures[0]


# A phase: its name, its clients, the status its answers should have, its n-th request.
Phase = tuple[str, int, int, Callable[[int], tuple[str, dict[str, str]]]]


def phases(products: list[str]) -> list[Phase]:
    """What is measured. "/click unknown" is a click on a product that does not exist: each server
    reads the product, finds nothing and answers 404, which times the HTTP handling and one
    round trip, to tell them apart from the work of a real click."""
    search = {"k": "10"}
    return [
        ("/click", 1, 200, lambda n: ("/click", {"product_id": products[n % len(products)], "user_id": "bench-clicker"})),
        ("/click unknown", 1, 404, lambda n: ("/click", {"product_id": f"no-such-product-{n}", "user_id": "bench-clicker"})),
        ("/search fresh", 1, 200, lambda n: ("/search", {**search, "query": fresh_query(n)})),
        ("/search fresh", 8, 200, lambda n: ("/search", {**search, "query": fresh_query(n)})),
        ("/search repeated", 1, 200, lambda n: ("/search", {**search, "query": REPEATED})),
    ]  # fmt: skip


def measure(
    ports: dict[str, int], products: list[str], rounds: int, per_round: int, only: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Each phase (those named in `only`, or all) in rounds, the servers' order alternating."""
    counter = 0
    rows = []
    for name, clients, expected, make in phases(products):
        if only and name not in only:
            continue
        samples: dict[str, list[float]] = {server: [] for server in ports}
        seconds = dict.fromkeys(ports, 0.0)
        failures = dict.fromkeys(ports, 0)
        for port in ports.values():  # warm-up, not measured
            run_round(port, clients, [make(counter + i) for i in range(10)], expected)
        counter += 10
        for r in range(rounds):
            order = list(ports) if r % 2 == 0 else list(reversed(ports))
            requests = [make(counter + i) for i in range(per_round)]
            counter += per_round
            for server in order:  # the same requests to both: a fresh text is new to each server
                latencies, wall, failed = run_round(ports[server], clients, requests, expected)
                samples[server] += latencies
                seconds[server] += wall
                failures[server] += failed
        row: dict[str, Any] = {"phase": name, "clients": clients, "load_average": round(os.getloadavg()[0], 2)}
        for server in ports:
            row[server] = {**percentiles(samples[server]), "rps": round(len(samples[server]) / seconds[server], 1),
                           "failures": failures[server], "samples": len(samples[server])}  # fmt: skip
        row["p50_ratio_reference_over_ours"] = round(row["reference"]["p50_ms"] / row["ours"]["p50_ms"], 2)
        row["rps_ratio_ours_over_reference"] = round(row["ours"]["rps"] / row["reference"]["rps"], 2)
        log.info("%s, %d clients: %s", name, clients, json.dumps(row))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-dir", type=Path, required=True, help="the reference's redis-py folder")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=40)
    parser.add_argument("--server-arg", action="append", default=[], help="an extra argument for our demo_server.py")
    parser.add_argument(
        "--phase",
        action="append",
        default=[],
        choices=sorted({name for name, _, _, _ in phases([])}),
        help="only this phase (repeatable; default: all)",
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "reference.json", help="JSON file (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    catalog = ROOT / "catalog.json"
    products = [p["id"] for p in json.loads(catalog.read_text())["products"]]
    logs = Path(tempfile.mkdtemp(prefix="bench-reference-"))
    with LocalRedis() as ours_redis, LocalRedis() as reference_redis:
        ours = start_demo_server(ours_redis.url, ["--catalog", str(catalog), *args.server_arg], logs / "ours.log")
        assert reference_redis.port is not None  # a started LocalRedis has its port
        reference, reference_port = start_reference(
            args.reference_dir.resolve(), reference_redis.port, catalog, logs / "reference.log"
        )
        try:
            result: dict[str, Any] = {
                "machine": machine(ours_redis.client()),
                "reference_dir": str(args.reference_dir),
                "server_logs": str(logs),
                "rounds": args.rounds,
                "per_round": args.per_round,
                "phases": measure(
                    {"ours": int(ours.url.rsplit(":", 1)[1]), "reference": reference_port},
                    products,
                    args.rounds,
                    args.per_round,
                    args.phase,
                ),
            }
        finally:
            ours.stop()
            reference.terminate()
            reference.wait(timeout=15)
    result["machine"]["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(
        f"\nload average {result['machine']['load_average_1min_at_start']} -> {result['machine']['load_average_1min_at_end']}"
    )
    print(
        "| phase | clients | ours p50 / p99 ms | reference p50 / p99 ms | reference p50 ÷ ours | ours req/s | reference req/s | req/s ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in result["phases"]:
        o, r = row["ours"], row["reference"]
        print(f"| {row['phase']} | {row['clients']} | {o['p50_ms']} / {o['p99_ms']} | {r['p50_ms']} / {r['p99_ms']} | "
              f"{row['p50_ratio_reference_over_ours']}× | {o['rps']} | {r['rps']} | {row['rps_ratio_ours_over_reference']}× |")  # fmt: skip
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
