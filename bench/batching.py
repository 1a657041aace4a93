"""Micro-batching benchmark: fresh query embeddings per second at 1, 8 and 16 concurrent clients,
through encode_one under one lock (what the server did before query_encoder.py) and through
QueryEncoder, which embeds the queries that arrive together in one model call.

Every client thread embeds distinct texts (no cache hits: the cache is off and no text repeats)
on the ONNX backend for a fixed time per cell, either back to back or with a random pause
between calls standing in for the rest of a request (HTTP, Redis), which is when the batcher's
window matters: back to back, the next queries always arrive while the model is busy. Cells run
in interleaved rounds and each keeps its best round, the one least disturbed by other processes.

It also measures what the batcher adds to a lone query (one call at a time, a pause between,
paired with encode_one in random order on the same machine), and checks that batching changes no vector:
200 varied texts embedded alone and in shuffled mixed-length batches of 8 and 16.

Run: .venv/bin/python -m bench.batching   (about 3 minutes on 2 cores)
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
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
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
LONE_PAUSE_S = 0.005

log = logging.getLogger("bench.batching")


def fresh_text(number: int) -> str:
    """The number-th distinct shopper query: a sample query with a colour and a size, so that
    texts keep a query's length and never repeat within a run."""
    query = QUERIES[number % len(QUERIES)]
    rest = number // len(QUERIES)
    return f"{query} in {COLOURS[rest % len(COLOURS)]}, size {rest // len(COLOURS)}"


def run_clients(
    embed: Callable[[str], object], clients: int, seconds: float, think_ms: float, numbers: Iterator[int]
) -> dict[str, Any]:
    """`clients` threads calling embed() on fresh texts for `seconds`, each pausing a random
    0 to 2 x think_ms between calls (the rest of a request: HTTP, Redis) or none at all."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    deadline = 0.0

    def client(index: int) -> None:
        pauses = random.Random(index)
        start.wait()
        while time.perf_counter() < deadline:
            text = fresh_text(next(numbers))
            began = time.perf_counter()
            embed(text)
            latencies[index].append(time.perf_counter() - began)
            if think_ms:
                time.sleep(pauses.uniform(0, 2 * think_ms) / 1000)

    threads = [threading.Thread(target=client, args=(index,), daemon=True) for index in range(clients)]
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


def batcher_mode(window_ms: float) -> str:
    return f"batcher {window_ms:g} ms"


def measure(
    embedder: LocalEmbedder,
    windows_ms: list[float],
    think_ms: float,
    seconds: float,
    rounds: int,
    numbers: Iterator[int],
) -> dict[str, dict[int, dict[str, Any]]]:
    """Best round per (mode, clients): texts/s, latency percentiles, and for the batcher the mean
    texts per model call; with the 1-minute load average when each cell ran."""
    model_lock = threading.Lock()

    def locked(text: str) -> object:
        with model_lock:
            return embedder.encode_one(text)

    def lock_cell(clients: int) -> dict[str, Any]:
        return run_clients(locked, clients, seconds, think_ms, numbers)

    def batcher_cell(clients: int, window_ms: float) -> dict[str, Any]:
        with QueryEncoder(embedder, window_s=window_ms / 1000, cache_size=0) as encoder:
            row = run_clients(encoder.encode, clients, seconds, think_ms, numbers)
            stats = encoder.stats()
        row["model_calls"] = stats.model_calls
        row["mean_batch"] = round(stats.texts_embedded / max(1, stats.model_calls), 2)
        row["largest_batch"] = stats.largest_batch
        return row

    best: dict[str, dict[int, dict[str, Any]]] = {"lock": {}, **{batcher_mode(w): {} for w in windows_ms}}
    for round_number in range(rounds):
        log.info("think %g ms: round %d of %d", think_ms, round_number + 1, rounds)
        for clients in CLIENT_COUNTS:
            cells: list[tuple[str, Callable[[], dict[str, Any]]]] = [("lock", partial(lock_cell, clients))]
            cells += [(batcher_mode(window), partial(batcher_cell, clients, window)) for window in windows_ms]
            for mode, run in cells:
                row = {**run(), "load_average_1min": round(os.getloadavg()[0], 2)}
                if row["texts_per_s"] > best[mode].get(clients, {}).get("texts_per_s", 0):
                    best[mode][clients] = row
    return best


def lone_queries(embedder: LocalEmbedder, windows_ms: list[float], calls: int, numbers: Iterator[int]) -> dict:
    """A lone user's query: one call at a time with a pause between (so the model's threads are
    as idle as between a real user's searches), encode_one and the batcher in pairs, in random
    order, so that both see the same machine; the median of the pairs' differences is what the
    batcher adds."""
    order = random.Random(0)
    result: dict[str, Any] = {}
    for window in windows_ms:
        direct: list[float] = []
        batched: list[float] = []
        with QueryEncoder(embedder, window_s=window / 1000, cache_size=0) as encoder:
            for _ in range(calls):
                pair = [(direct, embedder.encode_one), (batched, encoder.encode)]
                order.shuffle(pair)
                for timed, embed in pair:
                    text = fresh_text(next(numbers))
                    began = time.perf_counter()
                    embed(text)
                    timed.append((time.perf_counter() - began) * 1000)
                    time.sleep(LONE_PAUSE_S)
        result[batcher_mode(window)] = {
            "encode_one_p50_ms": round(float(np.median(direct)), 3),
            "batcher_p50_ms": round(float(np.median(batched)), 3),
            "added_ms_median_of_pairs": round(float(np.median(np.subtract(batched, direct))), 3),
            "load_average_1min": round(os.getloadavg()[0], 2),
        }
    return result


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


def print_table(think_ms: float, best: dict[str, dict[int, dict[str, Any]]]) -> None:
    print(f"\nclients back to back{f' with a 0-{2 * think_ms:g} ms pause between calls' if think_ms else ''}:")
    header = ("mode", "clients", "texts/s", "vs lock", "p50 ms", "p95 ms", "per call", "load avg")
    print("{:<18}{:>8}{:>10}{:>9}{:>9}{:>9}{:>10}{:>10}".format(*header))
    for mode, rows in best.items():
        for clients, row in sorted(rows.items()):
            gain = row["texts_per_s"] / best["lock"][clients]["texts_per_s"]
            cells = (mode, clients, row["texts_per_s"], f"{gain:.2f}x", row["p50_ms"], row["p95_ms"],
                     row.get("mean_batch", 1), row["load_average_1min"])  # fmt: skip
            print("{:<18}{:>8}{:>10}{:>9}{:>9}{:>9}{:>10}{:>10}".format(*cells))


def gains(best: dict[str, dict[int, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Each mode's texts/s over the lock's at the same number of clients, and its 8- and
    16-client rate over its own 1-client rate (the issue's "gain")."""
    lock = best["lock"]
    return {
        mode: {
            **{f"vs_lock_{n}_clients": round(rows[n]["texts_per_s"] / lock[n]["texts_per_s"], 2) for n in rows},
            **{f"{n}_over_1_client": round(rows[n]["texts_per_s"] / rows[1]["texts_per_s"], 2) for n in rows if n > 1},
        }
        for mode, rows in best.items()
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--windows-ms",
        type=float,
        nargs="+",
        default=[0.0, 1.0, 2.0],
        help="batching windows to compare, in milliseconds (default: %(default)s)",
    )
    parser.add_argument(
        "--think-ms",
        type=float,
        nargs="+",
        default=[0.0, 2.0],
        help="mean pause of each client between calls, one table each: 0 is back to back (default: %(default)s)",
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="time per cell (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best kept (default: %(default)s)")
    parser.add_argument("--lone-calls", type=int, default=200, help="lone queries per window (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file (default: %(default)s)")
    args = parser.parse_args(argv)
    if any(not 0 <= window <= 1000 for window in args.windows_ms):
        parser.error("--windows-ms: each window must be from 0 to 1000 ms")
    if any(not 0 <= think <= 1000 for think in args.think_ms):
        parser.error("--think-ms: each pause must be from 0 to 1000 ms")
    if args.seconds <= 0 or args.rounds < 1 or args.lone_calls < 1:
        parser.error("--seconds must be positive, --rounds and --lone-calls at least 1")
    args.windows_ms = sorted(set(args.windows_ms))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    host = machine()
    embedder = LocalEmbedder(backend="onnx")
    for size in range(1, DEFAULT_MAX_BATCH + 1):  # onnxruntime's first run at each shape allocates
        embedder.encode_many([f"warm-up query {number}" for number in range(size)], batch_size=size)
    numbers = itertools.count()  # one stream of fresh texts for the whole run: none repeats
    log.info("checking batched vectors against single calls ...")
    agreement = batch_agreement(embedder)
    log.info("lone queries ...")
    lone = lone_queries(embedder, args.windows_ms, args.lone_calls, numbers)
    regimes = {}
    for think in args.think_ms:
        log.info(
            "%s clients, %.0f s per cell, %d rounds, think %g ms ...", CLIENT_COUNTS, args.seconds, args.rounds, think
        )
        regimes[think] = measure(embedder, args.windows_ms, think, args.seconds, args.rounds, numbers)

    for think, best in regimes.items():
        print_table(think, best)
    print("\na lone query (one at a time, 5 ms apart): p50, and the median added over pairs of calls")
    for mode, row in lone.items():
        print(f"  {mode}: {row['batcher_p50_ms']} ms vs encode_one {row['encode_one_p50_ms']} ms: ", end="")
        print(f"{row['added_ms_median_of_pairs']:+} ms (load average {row['load_average_1min']})")
    print(
        f"batched vs single vectors: {agreement['rows_bit_identical']}/{agreement['rows_compared']} rows "
        f"bit-identical, max abs diff {agreement['max_abs_diff']:.2g}, min cosine {agreement['min_cosine']}"
    )
    end_load = round(os.getloadavg()[0], 2)
    print(f"{host['cpu_model']}, {host['nproc']} CPUs; load average {host['load_average_1min_at_start']} at the start,")
    print(f"{end_load} at the end: other processes on the same cores lower every figure, ratios less so")
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
                "think_ms": args.think_ms,
                "default_window_ms": DEFAULT_WINDOW_S * 1000,
                "max_batch": DEFAULT_MAX_BATCH,
                "clients": list(CLIENT_COUNTS),
            },
            "gains": {f"think_{think:g}_ms": gains(best) for think, best in regimes.items()},
            "lone_query": lone,
            "results": {
                f"think_{think:g}_ms": {mode: {str(n): row for n, row in rows.items()} for mode, rows in best.items()}
                for think, best in regimes.items()
            },
            "batch_agreement": agreement,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
