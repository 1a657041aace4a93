"""Micro-batching benchmark: fresh query embeddings per second at 1, 8 and 16 concurrent clients,
through encode_one under one lock (what the server did before query_encoder.py) and through
QueryEncoder, which embeds queries that arrive together in one model call.

Every client thread embeds distinct texts back to back (no cache hits: the cache is off and no
text repeats), on the ONNX backend, for a fixed time per cell. The cells run in interleaved
rounds and each keeps its best round, the one least disturbed by other processes. At one client
every query is a lone query, so the p50 difference between the two is what the batcher adds to a
lone query (its thread hand-offs and its window). The run also checks that batching changes no
vector: 200 varied texts embedded alone and in shuffled mixed-length batches.

Run: .venv/bin/python -m bench.batching   (about 1.5 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.embed import QUERIES, agreement_texts
from bench.harness import ROOT, machine, percentiles, write_result
from embeddings import LocalEmbedder
from query_encoder import DEFAULT_MAX_BATCH, DEFAULT_WINDOW_S, QueryEncoder

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "batching.json"
CLIENT_COUNTS = (1, 8, 16)
COLOURS = ("black", "navy", "olive", "grey", "red", "sand", "white", "forest green", "plum", "rust", "teal", "ivory")
AGREEMENT_BATCH_SIZES = (8, 16)

log = logging.getLogger("bench.batching")


def fresh_text(number: int) -> str:
    """The number-th distinct shopper query: a sample query with a colour and a size, so that
    texts keep a query's length and never repeat within a run."""
    query = QUERIES[number % len(QUERIES)]
    rest = number // len(QUERIES)
    return f"{query} in {COLOURS[rest % len(COLOURS)]}, size {rest // len(COLOURS)}"


def run_clients(embed: Callable[[str], object], clients: int, seconds: float, numbers: itertools.count) -> dict:
    """`clients` threads calling embed() on fresh texts back to back for `seconds`."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    deadline = 0.0

    def client(mine: list[float]) -> None:
        start.wait()
        while time.perf_counter() < deadline:
            text = fresh_text(next(numbers))
            began = time.perf_counter()
            embed(text)
            mine.append(time.perf_counter() - began)

    threads = [threading.Thread(target=client, args=(mine,), daemon=True) for mine in latencies]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    every = [seconds * 1000 for mine in latencies for seconds in mine]
    return {"texts": len(every), "texts_per_s": round(len(every) / elapsed, 1), **percentiles(every)}


def measure(embedder: LocalEmbedder, windows_ms: list[float], seconds: float, rounds: int) -> dict[str, Any]:
    """Best round per (mode, clients): texts/s, latency percentiles, and for the batcher the mean
    batch size; with the 1-minute load average when each cell ran."""
    numbers = itertools.count()
    model_lock = threading.Lock()

    def locked(text: str) -> object:
        with model_lock:
            return embedder.encode_one(text)

    def batched(clients: int, window_ms: float) -> dict[str, Any]:
        with QueryEncoder(embedder, window_s=window_ms / 1000, cache_size=0) as encoder:
            row = run_clients(encoder.encode, clients, seconds, numbers)
            stats = encoder.stats()
        row["model_calls"] = stats.model_calls
        row["mean_batch"] = round(stats.texts_embedded / max(1, stats.model_calls), 2)
        row["largest_batch"] = stats.largest_batch
        return row

    modes = ["lock", *(f"batcher {window:g} ms" for window in windows_ms)]
    best: dict[str, dict[int, dict[str, Any]]] = {mode: {} for mode in modes}
    for round_number in range(rounds):
        log.info("round %d of %d", round_number + 1, rounds)
        for clients in CLIENT_COUNTS:
            cells: list[tuple[str, Callable[[], dict[str, Any]]]] = [
                ("lock", lambda clients=clients: run_clients(locked, clients, seconds, numbers))
            ]
            for mode, window in zip(modes[1:], windows_ms, strict=True):
                cells.append((mode, lambda clients=clients, window=window: batched(clients, window)))
            for mode, run in cells:
                row = {**run(), "load_average_1min": round(os.getloadavg()[0], 2)}
                if row["texts_per_s"] > best[mode].get(clients, {}).get("texts_per_s", 0):
                    best[mode][clients] = row

    return best


def batch_agreement(embedder: LocalEmbedder) -> dict[str, Any]:
    """Each of 200 varied texts (queries, product texts, empty, unicode, over 256 tokens) alone,
    then in shuffled batches, so short texts are padded to long ones: how far the rows move."""
    texts = agreement_texts()
    alone = np.stack([embedder.encode_one(text) for text in texts])
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    max_abs, min_cosine, identical = 0.0, 1.0, 0
    for size in AGREEMENT_BATCH_SIZES:
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            batched = embedder.encode_many([texts[index] for index in chunk], batch_size=size)
            max_abs = max(max_abs, float(np.abs(batched - alone[chunk]).max()))
            min_cosine = min(min_cosine, float(np.sum(batched * alone[chunk], axis=1).min()))
            identical += int(np.all(batched == alone[chunk], axis=1).sum())
    return {
        "texts": len(texts),
        "batch_sizes": list(AGREEMENT_BATCH_SIZES),
        "rows_compared": len(texts) * len(AGREEMENT_BATCH_SIZES),
        "rows_bit_identical": identical,
        "max_abs_diff": max_abs,
        "min_cosine": round(min_cosine, 8),
    }


def print_table(best: dict[str, dict[int, dict[str, Any]]]) -> None:
    header = ("mode", "clients", "texts/s", "vs lock", "p50 ms", "p95 ms", "mean batch", "load avg")
    print("{:<18}{:>8}{:>10}{:>9}{:>9}{:>9}{:>12}{:>10}".format(*header))
    for mode, rows in best.items():
        for clients, row in sorted(rows.items()):
            gain = row["texts_per_s"] / best["lock"][clients]["texts_per_s"]
            cells = (mode, clients, row["texts_per_s"], f"{gain:.2f}x", row["p50_ms"], row["p95_ms"])
            cells += (row.get("mean_batch", 1), row["load_average_1min"])
            print("{:<18}{:>8}{:>10}{:>9}{:>9}{:>9}{:>12}{:>10}".format(*cells))


def summary(best: dict[str, dict[int, dict[str, Any]]], default_mode: str) -> dict[str, Any]:
    """The figures the README quotes: each mode's gain over the lock, and a lone query's cost."""
    lock = best["lock"]
    return {
        "throughput_vs_lock": {
            mode: {
                str(clients): round(row["texts_per_s"] / lock[clients]["texts_per_s"], 2)
                for clients, row in rows.items()
            }
            for mode, rows in best.items()
            if mode != "lock"
        },
        "scaling_1_to_8_clients": {
            mode: round(rows[8]["texts_per_s"] / rows[1]["texts_per_s"], 2) for mode, rows in best.items()
        },
        "lone_query_added_p50_ms": {
            mode: round(rows[1]["p50_ms"] - lock[1]["p50_ms"], 3) for mode, rows in best.items() if mode != "lock"
        },
        "default_mode": default_mode,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--windows-ms",
        type=float,
        nargs="+",
        default=[0.0, DEFAULT_WINDOW_S * 1000, 2.0],
        help="batching windows to compare, in milliseconds (default: %(default)s)",
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="time per cell (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best kept (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file (default: %(default)s)")
    args = parser.parse_args(argv)
    if any(not 0 <= window <= 1000 for window in args.windows_ms):
        parser.error("--windows-ms: each window must be from 0 to 1000 ms")
    if args.seconds <= 0 or args.rounds < 1:
        parser.error("--seconds must be positive and --rounds at least 1")
    args.windows_ms = sorted(set(args.windows_ms))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    host = machine()
    embedder = LocalEmbedder(backend="onnx")
    for size in range(1, DEFAULT_MAX_BATCH + 1):  # onnxruntime's first run at each shape allocates
        embedder.encode_many([f"warm-up query {number}" for number in range(size)], batch_size=size)
    log.info("checking batched vectors against single calls ...")
    agreement = batch_agreement(embedder)
    log.info("measuring %s clients for %.0f s per cell, %d rounds ...", CLIENT_COUNTS, args.seconds, args.rounds)
    best = measure(embedder, args.windows_ms, args.seconds, args.rounds)
    default_mode = f"batcher {DEFAULT_WINDOW_S * 1000:g} ms"
    print_table(best)
    print(
        f"batched vs single vectors: {agreement['rows_bit_identical']}/{agreement['rows_compared']} rows bit-identical, "
        f"max abs diff {agreement['max_abs_diff']:.2g}, min cosine {agreement['min_cosine']}"
    )
    print(
        f"{host['cpu_model']}, {host['nproc']} CPUs; load average {host['load_average_1min_at_start']} at the start, "
    )
    print(f"{os.getloadavg()[0]:.2f} at the end (other people's work on the same cores lowers every figure)")
    write_result(
        args.output,
        {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(["python -m bench.batching", *sys.argv[1:]]),
            "machine": host,
            "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
            "settings": {
                "seconds_per_cell": args.seconds,
                "rounds": args.rounds,
                "windows_ms": args.windows_ms,
                "max_batch": DEFAULT_MAX_BATCH,
                "clients": list(CLIENT_COUNTS),
            },
            "summary": summary(best, default_mode),
            "results": {mode: {str(clients): row for clients, row in rows.items()} for mode, rows in best.items()},
            "batch_agreement": agreement,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
