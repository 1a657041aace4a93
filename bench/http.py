"""End-to-end latency of the demo server, each phase beside its floor measured in the same run.

Phases: /search with repeated queries (the query-vector cache answers) and fresh ones (the model
runs), /click, /recommend and /similar, at 1, 8 and 16 concurrent clients over keep-alive
connections; plus the server's cold start and memory.

Floors, each the least its phase could cost on this machine, timed at one client:
- an HTTP round trip through Python's stdlib server that echoes the same request bytes (an echo
  server on another port, in a process of its own, like the demo server);
- the Redis work a phase cannot do without, sent by redis-py with hiredis: HGETALL of the
  user's features and the FT.SEARCH the server sends (KNN 30, 8 fields, SORTBY) for /search and
  /recommend; HGET of the product's vector and the same FT.SEARCH for /similar; one EVALSHA of a
  trivial script for /click; and for fresh queries the model's own time as the server reports it.
Each phase's 1-client p50 is then divided by its floor's.

It also times that FT.SEARCH with redis-py's hiredis parser and its pure-Python one, on RESP2
and RESP3, with and without the library's row parsing (recommender.search_rows), to choose the
protocol the server should speak.

    .venv/bin/python -m bench.http
    .venv/bin/python -m bench.http --quick
    .venv/bin/python -m bench.http --server-arg=--embedding-backend=torch
    .venv/bin/python -m bench.http --ab-metrics   (only: /search with metrics and impressions
        against a second server started --no-metrics --no-impressions, requests interleaved)
    .venv/bin/python -m bench.http --baseline REF  (only: /search, cached and fresh queries sent
        as the page sends them, against the demo server of git ref REF, requests interleaved)

It starts its own Redis with Search and demo server on loopback. Results: tables on stdout and
bench/results/http.json.
"""

from __future__ import annotations

import argparse
import functools
import gc
import itertools
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import redis
from redis._parsers import _HiredisParser, _RESP2Parser, _RESP3Parser

from bench.harness import (
    RESULTS_DIR,
    ROOT,
    JsonClient,
    export_tree,
    machine,
    percentiles,
    start_checkout_server,
    start_demo_server,
    start_echo_server,
    write_result,
)
from local_redis import LocalRedis, connect
from recommender import PRODUCT_FIELDS, SCORE_FIELD, RedisRecommender, build_filter_clause, knn_query, search_rows

log = logging.getLogger("bench.http")

INDEX_NAME = "bench:idx"  # what harness.start_demo_server passes
KEY_PREFIX = "bench:product:"
USERS = 8
REPEATED_QUERIES = [
    "insulated down jacket for cold weather",
    "comfortable shoes for trail running",
    "waterproof hiking boots",
    "warm wool hat",
    "lightweight daypack",
]
FRESH_WORDS = ["warm", "light", "waterproof", "durable", "soft", "jacket", "boots", "pack", "gloves", "tent"]
# The server asks for k x overfetch candidates (10 x 3) and these fields.
SERVER_KNN = 30
RETURNED = (*PRODUCT_FIELDS, SCORE_FIELD)
EF_RUNTIME = 100
TRIVIAL_SCRIPT = "return 1"

Request = tuple[str, str, dict[str, Any]]


def search_body(kind: str, n: int) -> dict[str, Any]:
    """Repeated queries hit the cache after the warm-up; fresh ones are unique texts."""
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
        "user_id": f"bench-{n % USERS}",
    }


def product_id(n: int) -> str:
    return f"p{n % 96 + 1:03d}"


def phase_requests(products: list[str]) -> dict[str, Callable[[int], Request]]:
    """Each phase's n-th request. Fresh-query numbers never repeat within a run (a shared
    counter), so the model always runs."""
    return {
        "/search repeated": lambda n: ("POST", "/search", search_body("repeated", n)),
        "/search fresh": lambda n: ("POST", "/search", search_body("fresh", n)),
        "/click": lambda n: ("POST", "/click", {"product_id": products[n % len(products)], "user_id": "bench-clicker"}),
        "/recommend": lambda n: ("POST", "/recommend", {"k": 10, "user_id": f"bench-{n % USERS}"}),
        "/similar": lambda n: (
            "POST",
            "/similar",
            {"product_id": products[n % len(products)], "k": 10, "user_id": f"bench-{n % USERS}"},
        ),
    }


def numbered(make: Callable[[int], Request], counter: Iterator[int]) -> Request:
    """The request `make` makes for the counter's next number."""
    return make(next(counter))


def run_phase(url: str, clients: int, total: int, make_request: Callable[[], Request]) -> dict[str, Any]:
    """`total` requests spread over `clients` threads, each with its own keep-alive connection."""
    latencies: list[float] = []
    server_side: list[dict] = []
    errors: dict[int, int] = {}
    lock = threading.Lock()

    def worker(count: int) -> None:
        client = JsonClient(url)
        for _ in range(count):
            method, path, body = make_request()
            status, data, ms = client.call(method, path, body)
            with lock:
                if status == 200:
                    latencies.append(ms)
                    server_side.append(data)
                else:
                    errors[status] = errors.get(status, 0) + 1
        client.close()

    shares = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    threads = [threading.Thread(target=worker, args=(share,)) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    row: dict[str, Any] = {
        "clients": clients,
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_statuses": {str(k): v for k, v in errors.items()},
        "rps": round(len(latencies) / elapsed, 1),
        **percentiles(latencies),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    for name in ("embed_ms", "search_ms", "rerank_ms", "timing_ms"):
        values = [d[name] for d in server_side if isinstance(d.get(name), (int, float))]
        if values:
            row[f"server_{name}_p50"] = round(float(np.median(values)), 3)
    return row


# --- floors ---------------------------------------------------------------------------------


def time_calls(call: Callable[[int], Any], samples: int, warmup: int = 20) -> list[float]:
    for n in range(warmup):
        call(n)
    gc.collect()
    times = []
    for n in range(samples):
        started = time.perf_counter()
        call(n)
        times.append((time.perf_counter() - started) * 1000)
    return times


def server_search_args(vector: bytes, filtered: bool) -> list[Any]:
    """The FT.SEARCH the server sends for a /search or /recommend of k 10: KNN 30 with
    EF_RUNTIME, the 7 product fields and the score, sorted by score; filtered, on a category
    as every other /search of the phases is."""
    clause = build_filter_clause(category="outerwear") if filtered else "*"
    query, params = knn_query(clause, SERVER_KNN, EF_RUNTIME, None)
    params["vec"] = vector
    return [
        "FT.SEARCH", INDEX_NAME, query,
        "PARAMS", str(2 * len(params)), *[item for pair in params.items() for item in pair],
        "RETURN", str(len(RETURNED)), *RETURNED,
        "SORTBY", SCORE_FIELD,
        "LIMIT", "0", str(SERVER_KNN),
        "DIALECT", "2",
    ]  # fmt: skip


def query_vectors(client: redis.Redis, products: list[str]) -> list[bytes]:
    rec = RedisRecommender(client, index_name=INDEX_NAME, key_prefix=KEY_PREFIX)
    stored = [client.hget(key, "embedding") for key in rec.product_keys(products[:16])]
    return [vector for vector in stored if isinstance(vector, bytes)]


def echo_call(echo: JsonClient, make: Callable[[int], Request], n: int) -> tuple[int, dict, float]:
    return echo.call(*make(n))


def measure_floors(
    redis_url: str, echo_url: str, requests: dict[str, Callable[[int], Request]], products: list[str], samples: int
) -> dict[str, Any]:
    """Each building block on its own, one client, redis-py with hiredis on RESP2 (the
    library's default connection)."""
    client = connect(redis_url)
    rec = RedisRecommender(client, index_name=INDEX_NAME, key_prefix=KEY_PREFIX)
    vectors = query_vectors(client, products)
    trivial = client.register_script(TRIVIAL_SCRIPT)
    echo = JsonClient(echo_url)
    blocks: dict[str, list[float]] = {}
    for phase, make in requests.items():
        blocks[f"echo {phase}"] = time_calls(functools.partial(echo_call, echo, make), samples)
    echo.close()
    blocks["HGETALL features"] = time_calls(lambda n: client.hgetall(rec.features_key(f"bench-{n % USERS}")), samples)
    blocks["FT.SEARCH KNN 30"] = time_calls(
        lambda n: client.execute_command(*server_search_args(vectors[n % len(vectors)], n % 2 == 1)), samples
    )
    keys = rec.product_keys(products)  # outside the timing: the floor is one HGET
    blocks["HGET embedding"] = time_calls(lambda n: client.hget(keys[n % len(keys)], "embedding"), samples)
    blocks["EVALSHA trivial"] = time_calls(lambda n: trivial(), samples)
    client.close()
    return {name: percentiles(times) for name, times in blocks.items()}


def floor_parts(phase: str) -> list[str]:
    redis_parts = {
        "/search repeated": ["HGETALL features", "FT.SEARCH KNN 30"],
        "/search fresh": ["HGETALL features", "FT.SEARCH KNN 30"],
        "/recommend": ["HGETALL features", "FT.SEARCH KNN 30"],
        "/similar": ["HGET embedding", "FT.SEARCH KNN 30"],
        "/click": ["EVALSHA trivial"],
    }
    return [f"echo {phase}", *redis_parts[phase]]


def phase_floor(phase: str, floors: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of the parts' p50s; a fresh query adds the model's time as the server reports it
    (its 1-client median embed_ms), the one cost that is not a round trip."""
    parts = {name: floors[name]["p50_ms"] for name in floor_parts(phase)}
    if phase == "/search fresh":
        single = next(r for r in rows if r["endpoint"] == phase and r["clients"] == 1)
        parts["model (server's embed_ms)"] = single.get("server_embed_ms_p50", 0.0)
    return {"parts_p50_ms": parts, "p50_ms": round(sum(parts.values()), 3)}


# --- parsers and protocols ------------------------------------------------------------------


PARSERS = {
    ("hiredis", 2): _HiredisParser,
    ("hiredis", 3): _HiredisParser,
    ("python", 2): _RESP2Parser,
    ("python", 3): _RESP3Parser,
}


def parser_client(url: str, parser: str, protocol: int) -> tuple[redis.Redis, str]:
    """A client forced onto one reply parser (redis-py's `parser_class` connection argument)
    and one protocol; returns it and the parser class its connection really uses."""
    client = redis.Redis.from_url(url, protocol=protocol, parser_class=PARSERS[(parser, protocol)])
    client.ping()
    connection = client.connection_pool.get_connection()
    used = type(connection._parser).__name__
    client.connection_pool.release(connection)
    return client, used


def compare_parsers(redis_url: str, products: list[str], samples: int) -> dict[str, Any]:
    """FT.SEARCH (KNN 30, 8 fields, unfiltered so that every reply holds 30 rows) through each
    parser and protocol, sample by sample in turn so that all see the same machine: the reply
    as redis-py returns it, and that reply turned into rows by the library's search_rows (what
    the server pays per search)."""
    vectors = query_vectors(connect(redis_url), products)
    clients = {f"{parser} RESP{protocol}": parser_client(redis_url, parser, protocol) for parser, protocol in PARSERS}
    names = list(clients)
    raw: dict[str, list[float]] = {name: [] for name in names}
    parsed: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    gc.disable()  # a collection would land on whichever client runs next
    try:
        for n in range(-20, samples):
            args = server_search_args(vectors[n % len(vectors)], filtered=False)
            # Each client goes first in turn: no position in the round is favoured.
            for name in names[n % len(names) :] + names[: n % len(names)]:
                started = time.perf_counter()
                reply = clients[name][0].execute_command(*args)
                replied = time.perf_counter()
                rows = search_rows(reply)
                done = time.perf_counter()
                if n >= 0:
                    raw[name].append((replied - started) * 1000)
                    parsed[name].append((done - started) * 1000)
                if len(rows) != SERVER_KNN:
                    raise RuntimeError(f"{name}: FT.SEARCH gave {len(rows)} rows, expected {SERVER_KNN}")
    finally:
        gc.enable()
    table: dict[str, dict[str, Any]] = {
        name: {
            "parser_class": clients[name][1],
            "reply": percentiles(raw[name]),
            "reply_and_search_rows": percentiles(parsed[name]),
        }
        for name in clients
    }
    for client, _ in clients.values():
        client.close()
    best = min(table, key=lambda name: table[name]["reply_and_search_rows"]["p50_ms"])
    return {
        "samples": samples,
        "rows_per_reply": SERVER_KNN,
        "table": table,
        "fastest": best,
        "protocol": choose_protocol(table),
    }


def choose_protocol(table: dict[str, Any]) -> dict[str, Any]:
    """The protocol the server should speak whichever parser the machine has (hiredis is not
    in requirements.txt): for each protocol, its worst slowdown against the other across the
    two parsers (p50 with search_rows); the smaller worst case wins, so a protocol that is a
    hair faster with one parser and much slower with the other does not."""

    def p50(parser: str, protocol: int) -> float:
        return table[f"{parser} RESP{protocol}"]["reply_and_search_rows"]["p50_ms"]

    worst = {
        protocol: max(
            max(0.0, p50(parser, protocol) / p50(parser, 5 - protocol) - 1) for parser in ("hiredis", "python")
        )
        for protocol in (2, 3)
    }
    chosen = min(worst, key=lambda protocol: (worst[protocol], protocol))
    return {
        "chosen": f"RESP{chosen}",
        "worst_slowdown": {f"RESP{protocol}": round(value, 3) for protocol, value in worst.items()},
        "hiredis_speedup_p50": {
            f"RESP{protocol}": round(p50("python", protocol) / p50("hiredis", protocol), 2) for protocol in (2, 3)
        },
    }


# --- main -----------------------------------------------------------------------------------


def probe(url: str, phase: str, make: Callable[[int], Request]) -> int:
    client = JsonClient(url)
    status, _, _ = client.call(*make(0))
    client.close()
    return status


def gains(rows: list[dict[str, Any]], phase: str) -> dict[str, float]:
    by_clients = {r["clients"]: r["rps"] for r in rows if r["endpoint"] == phase}
    base = by_clients.get(1)
    return {f"{c}_over_1": round(rps / base, 2) for c, rps in by_clients.items() if base and c != 1}


def print_report(result: dict[str, Any]) -> None:
    print(
        f"\nserver start to listening: {result['seconds_to_listening']:.2f} s ({result['startup_phases_s']}); "
        f"RSS after the run {result['server_rss_mb']:.0f} MB"
    )
    for note in result["skipped"]:
        print(note)
    print(
        f"{'phase':<18} {'clients':>7} {'ok':>5} {'err':>4} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
        f"{'floor':>6} {'x floor':>7} {'gain':>5}"
    )
    for r in result["rows"]:
        floor = result["floors_by_phase"].get(r["endpoint"], {})
        single = r["clients"] == 1
        gain = result["rps_gain"].get(r["endpoint"], {}).get(f"{r['clients']}_over_1")
        print(
            f"{r['endpoint']:<18} {r['clients']:>7} {r['requests']:>5} {r['errors']:>4} {r['rps']:>7.0f} "
            f"{r['p50_ms']:>7.2f} {r['p95_ms']:>7.2f} {r['p99_ms']:>7.2f} "
            f"{floor.get('p50_ms', 0) if single else '':>6} {r.get('over_floor_p50', '') if single else '':>7} "
            f"{gain if gain else '':>5}"
        )
    print(
        "floor: the phase's floor p50 in ms (1 client); x floor: the phase's 1-client p50 over it; gain: req/s over 1 client"
    )
    print("\nfloor parts (1 client):")
    for name, p in result["floor_parts"].items():
        print(f"  {name:<24} p50 {p['p50_ms']:.3f}  p95 {p['p95_ms']:.3f}  p99 {p['p99_ms']:.3f} ms")
    parsers = result["parsers"]
    print(f"\nFT.SEARCH KNN {parsers['rows_per_reply']}, 8 fields, {parsers['samples']} samples each (p50 / p99 ms):")
    print(f"  {'client':<16} {'parser class':<16} {'reply':>15} {'+ search_rows':>15}")
    for name, row in parsers["table"].items():
        reply, rows = row["reply"], row["reply_and_search_rows"]
        print(
            f"  {name:<16} {row['parser_class']:<16} {reply['p50_ms']:>7.3f} / {reply['p99_ms']:<5.3f} "
            f"{rows['p50_ms']:>7.3f} / {rows['p99_ms']:<5.3f}"
        )
    choice = parsers["protocol"]
    print(
        f"  fastest with the library's parsing: {parsers['fastest']}; worst slowdown against the other protocol "
        f"across parsers: {choice['worst_slowdown']}; hiredis over pure Python: {choice['hiredis_speedup_p50']}x"
    )
    print(f"  the server should speak {choice['chosen']}")


NO_MEASURING = ["--no-metrics", "--no-impressions"]


def ab_metrics_cost(requests: int) -> dict[str, Any]:
    """/search (cached queries, one client) on two servers over one Redis, one with metrics and
    impression logging and one --no-metrics --no-impressions, request by request in alternating
    order, so that the machine's other load falls on both alike. Every request of the first
    writes an impression (XADD) and counts its latency, cache lookup and impression."""
    with LocalRedis() as redis_server:
        measured = start_demo_server(redis_server.url)
        bare = start_demo_server(redis_server.url, [*NO_MEASURING, "--no-reset"])
        try:
            clients = {"measured": JsonClient(measured.url), "bare": JsonClient(bare.url)}
            for client in clients.values():
                for n in range(50):
                    client.call("POST", "/search", search_body("repeated", n))
            times: dict[str, list[float]] = {name: [] for name in clients}
            for n in range(requests):
                order = list(clients) if n % 2 else list(reversed(clients))
                for name in order:
                    status, _, ms = clients[name].call("POST", "/search", search_body("repeated", n))
                    if status != 200:
                        raise RuntimeError(f"{name} server answered {status}")
                    times[name].append(ms)
            impressions = redis.Redis.from_url(redis_server.url).xlen("{recimp}:shown")
        finally:
            measured.stop()
            bare.stop()
    p50 = {name: float(np.percentile(values, 50)) for name, values in times.items()}
    p90 = {name: float(np.percentile(values, 90)) for name, values in times.items()}
    return {
        "requests_each": requests,
        "p50_ms": {k: round(v, 3) for k, v in p50.items()},
        "p90_ms": {k: round(v, 3) for k, v in p90.items()},
        "p50_ratio": round(p50["measured"] / p50["bare"], 3),
        "p50_cost_ms": round(p50["measured"] - p50["bare"], 3),
        "impressions_logged": impressions,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }


def page_search_body(kind: str, n: int) -> dict[str, Any]:
    """A /search body as the page sends it (static/app.js, readSearchForm): the typed text, the
    filter widgets left empty, k, session and rerank on, and the tuning defaults."""
    return {
        "query": search_body(kind, n)["query"],
        **dict.fromkeys(("category", "brand", "min_price", "max_price", "min_rating", "text_match"), ""),
        "in_stock_only": False,
        "k": 10,
        "use_session": True,
        "rerank": True,
        "exclude_clicked": False,
        "diversity": 0,
        "user_id": f"bench-{n % USERS}",
    }


def ab_baseline(ref: str, requests: int, server_args: list[str], ours_args: list[str]) -> dict[str, Any]:
    """/search with cached and with fresh queries, sent as the page sends them, on this
    checkout's demo server and on git ref `ref`'s, each over a Redis of its own, with the same
    server arguments (and `ours_args` for this checkout's alone: what the baseline has no switch
    for, such as turning off what it lacks). Request by request, one client each: each round sends a cached query and
    a fresh one to both servers, the order alternating, so that the machine's other load falls
    on both alike. Both caches are warmed and every user has clicked, so that the session blend
    and rerank run as on the page."""
    times: dict[str, dict[str, list[float]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-http-baseline-") as tmp,
        LocalRedis() as ours_redis,
        LocalRedis() as base_redis,
    ):
        commit = export_tree(ref, Path(tmp))
        servers = {"ours": start_checkout_server(ROOT, ours_redis.url, [*server_args, *ours_args])}
        try:
            servers["baseline"] = start_checkout_server(Path(tmp), base_redis.url, server_args)
            clients = {name: JsonClient(server.url) for name, server in servers.items()}
            for client in clients.values():
                for n in range(USERS):
                    client.call("POST", "/click", {"product_id": product_id(n), "user_id": f"bench-{n}"})
                for n in range(50):
                    for kind in ("repeated", "fresh"):
                        status, answer, _ = client.call("POST", "/search", page_search_body(kind, -1 - n))
                        if status != 200:
                            raise RuntimeError(f"/search answered {status}: {answer}")
            times = {name: {"repeated": [], "fresh": []} for name in clients}
            for n in range(requests):
                order = list(clients) if n % 2 else list(reversed(clients))
                for kind in ("repeated", "fresh"):
                    body = page_search_body(kind, n)
                    for name in order:
                        status, answer, ms = clients[name].call("POST", "/search", body)
                        if status != 200:
                            raise RuntimeError(f"{name} /search answered {status}: {answer}")
                        times[name][kind].append(ms)
            for client in clients.values():
                client.close()
        finally:
            for server in servers.values():
                server.stop()
    latency = {name: {kind: percentiles(values) for kind, values in kinds.items()} for name, kinds in times.items()}
    return {
        "baseline": {"ref": ref, "commit": commit},
        "server_args": server_args,
        "ours_args": ours_args,
        "requests_each": requests,
        "latency": latency,
        "p50_ratio_ours_over_baseline": {
            kind: round(latency["ours"][kind]["p50_ms"] / latency["baseline"][kind]["p50_ms"], 3)
            for kind in ("repeated", "fresh")
        },
        "p50_ratio_fresh_over_cached": {
            name: round(rows["fresh"]["p50_ms"] / rows["repeated"]["p50_ms"], 3) for name, rows in latency.items()
        },
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }


def draw_ab_baseline(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = ("repeated", "fresh")
    figure, axis = plt.subplots(figsize=(7, 4))
    x = np.arange(len(kinds))
    for offset, name in ((-0.2, "ours"), (0.2, "baseline")):
        axis.bar(x + offset, [result["latency"][name][kind]["p50_ms"] for kind in kinds], 0.4, label=name)
    axis.set_xticks(x, ["cached query", "fresh query"])
    axis.set_ylabel("/search p50 ms")
    axis.set_title(f"ours against {result['baseline']['ref']} ({result['baseline']['commit'][:7]}), interleaved")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 requests per phase, 300 samples per floor part")
    parser.add_argument("--requests", type=int, default=None, help="requests per phase (default 400)")
    parser.add_argument("--concurrency", default="1,8,16", help="client counts (default 1,8,16)")
    parser.add_argument("--samples", type=int, default=None, help="samples per floor part and parser (default 2000)")
    parser.add_argument("--server-arg", action="append", default=[], help="extra demo_server.py argument (repeatable)")
    parser.add_argument(
        "--output", type=Path, default=None, help="JSON file (default bench/results/http.json, http_baseline.json)"
    )
    parser.add_argument(
        "--ab-metrics", action="store_true", help="only the cost of metrics and impressions (see above)"
    )
    parser.add_argument("--baseline", metavar="REF", help="only /search against git ref REF's server (see above)")
    parser.add_argument(
        "--ours-arg", action="append", default=[], help="with --baseline: an argument for this checkout's server only"
    )
    args = parser.parse_args(argv)
    if args.baseline:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        command = "python -m bench.http " + " ".join(argv if argv is not None else sys.argv[1:])
        ab = {
            "command": command,
            "machine": machine(),
            **ab_baseline(args.baseline, args.requests or 400, args.server_arg, args.ours_arg),
        }
        print(
            json.dumps(
                {
                    k: ab[k]
                    for k in ("baseline", "latency", "p50_ratio_ours_over_baseline", "p50_ratio_fresh_over_cached")
                },
                indent=2,
            )
        )
        output = args.output or RESULTS_DIR / "http_baseline.json"
        write_result(output, ab)
        draw_ab_baseline(ab, output.with_suffix(".png"))
        return 0
    if args.ab_metrics:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        cost = {"command": "python -m bench.http " + " ".join(argv if argv is not None else sys.argv[1:]),
                "machine": machine(), **ab_metrics_cost(args.requests or 2000)}  # fmt: skip
        print(json.dumps(cost, indent=2))
        write_result(RESULTS_DIR / "http_metrics_cost.json", cost)
        return 0
    requests_per_phase = args.requests or (100 if args.quick else 400)
    samples = args.samples or (300 if args.quick else 2000)
    try:
        levels = sorted({int(x) for x in args.concurrency.split(",")})
    except ValueError:
        parser.error("--concurrency takes comma-separated client counts, such as 1,8,16")
    if levels[0] < 1 or requests_per_phase < 1 or samples < 1:
        parser.error("client counts, --requests and --samples must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    # The first start on a machine exports the ONNX model once (seconds, and torch in memory);
    # do that untimed, so the figures are those of every later start.
    subprocess.run([sys.executable, str(ROOT / "embeddings.py"), "--export-onnx"], check=True, capture_output=True)
    about = machine()
    with LocalRedis() as redis_server:
        server = start_demo_server(redis_server.url, args.server_arg)
        echo = start_echo_server()
        try:
            rec = RedisRecommender(connect(redis_server.url), index_name=INDEX_NAME, key_prefix=KEY_PREFIX)
            products = sorted(p["id"] for p in rec.list_products(limit=1000))
            requests = phase_requests(products)
            warm = JsonClient(server.url)
            for query in REPEATED_QUERIES:  # fill the cache, and let every user have a session
                warm.call("POST", "/search", {"query": query})
            for n in range(USERS):
                warm.call("POST", "/click", {"product_id": products[n], "user_id": f"bench-{n}"})
            warm.close()
            skipped = []
            for phase in ("/recommend", "/similar"):
                status = probe(server.url, phase, requests[phase])
                if status != 200:
                    skipped.append(f"{phase} skipped: the server answered {status} (not there yet?)")
                    del requests[phase]
            counter = itertools.count()
            rows = []
            for phase, make in requests.items():
                for clients in levels:
                    log.info("%s at %d client(s)", phase, clients)
                    row = run_phase(server.url, clients, requests_per_phase, functools.partial(numbered, make, counter))
                    rows.append({"endpoint": phase, **row})
            log.info("floors")
            floors = measure_floors(redis_server.url, echo.url, requests, products, samples)
            log.info("parsers and protocols")
            parsers = compare_parsers(redis_server.url, products, samples)
            rss_mb = server.rss_mb()
        finally:
            server.stop()
            echo.stop()

    floors_by_phase = {phase: phase_floor(phase, floors, rows) for phase in requests}
    for row in rows:
        if row["clients"] == 1 and floors_by_phase[row["endpoint"]]["p50_ms"]:
            row["over_floor_p50"] = round(row["p50_ms"] / floors_by_phase[row["endpoint"]]["p50_ms"], 2)
    result = {
        "command": "python -m bench.http " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": about,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "server_args": args.server_arg,
        "seconds_to_listening": round(server.seconds_to_listening, 2),
        "startup_phases_s": server.startup_phases,
        "server_rss_mb": round(rss_mb, 1),
        "skipped": skipped,
        "rows": rows,
        "floor_parts": floors,
        "floors_by_phase": floors_by_phase,
        "rps_gain": {phase: gains(rows, phase) for phase in requests},
        "parsers": parsers,
    }
    print_report(result)
    write_result(args.output or RESULTS_DIR / "http.json", result)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
