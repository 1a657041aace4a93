"""Embedding benchmark: how fast is each LocalEmbedder backend, and does it give torch's vectors?

For each backend (torch, the reference; onnx; and onnx-int8, a dynamically quantised copy of the
onnx export, measured only to show why it is not offered), a fresh Python process measures:

- process start to first vector (interpreter start, imports, model load, one encode_one),
  and VmRSS once the model is loaded;
- query latency: p50/p95/p99 of single-query encode_one calls, after a warm-up;
- batch throughput (texts/s) over the 96 catalog texts and over them repeated to 1000;
- agreement with torch: min/mean cosine over 200 texts, and the mean top-10 overlap over
  catalog.json's vectors for 50 queries (as a server would search them).

The ONNX export is made into a temporary cache each run, which times it too; the user's cache is
left alone. Run: .venv/bin/python -m bench.embed   (about 1 minute on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import ROOT, machine, percentiles, rss_mb, write_result
from build_catalog import DEFAULT_INPUT
from embeddings import ONNX_CACHE_ENV
from recengine.catalog_file import catalog_vectors, product_text, read_catalog
from recengine.catalog_input import load_products

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "embed.json"
BACKENDS = ("torch", "onnx", "onnx-int8")
PACKAGES = ("torch", "sentence-transformers", "transformers", "onnxruntime", "onnx", "tokenizers", "numpy")
WARM_UP_CALLS = 20
AGREEMENT_TEXTS = 200
K = 10

# Shopper-style queries, shared with tests/integration/test_embeddings.py.
QUERIES = tuple((ROOT / "data" / "sample_queries.txt").read_text().splitlines())
EXTRA_TEXTS = (
    "",
    "naïve café crème brûlée",
    "東京で買える暖かいジャケット",
    "🧥❄️🥾 winter kit",
    "Waterproof leather hiking boots with a grippy rubber sole. " * 30,
    "word " * 1000,
)


# --- what one backend's process measures ------------------------------------------------------


def catalog_texts() -> list[str]:
    return [product_text(product) for product in load_products(DEFAULT_INPUT)]


def agreement_texts() -> list[str]:
    """Queries, product texts, edge cases (empty, unicode, over 256 tokens), then product names."""
    names = [product["name"] for product in load_products(DEFAULT_INPUT)]
    return [*QUERIES, *catalog_texts(), *EXTRA_TEXTS, *names][:AGREEMENT_TEXTS]


def throughput(embedder: Any, texts: list[str], repeats: int) -> float:
    """Texts per second, the best of `repeats` runs: the least disturbed by other processes."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        embedder.encode_many(texts)
        best = min(best, time.perf_counter() - started)
    return round(len(texts) / best, 1)


def worker(backend: str, calls: int, large: int, vectors_path: Path) -> dict[str, Any]:
    """Everything from the import on happens here, in a process of its own, so that start-up
    time and memory are those of a server that uses only this backend."""
    from embeddings import LocalEmbedder

    embedder = LocalEmbedder(backend="torch" if backend == "torch" else "onnx")
    embedder.encode_one("first vector")
    first_vector_at = time.time()
    rss = rss_mb()

    for query in QUERIES[:WARM_UP_CALLS]:
        embedder.encode_one(query)
    latencies = []
    for call in range(calls):
        started = time.perf_counter()
        embedder.encode_one(QUERIES[call % len(QUERIES)])
        latencies.append(time.perf_counter() - started)

    texts = catalog_texts()
    repeated = (texts * (large // len(texts) + 1))[:large]
    embedder.encode_many(texts)  # warm-up at batch shapes
    result = {
        "first_vector_at": first_vector_at,
        "rss_mb_after_load": round(rss, 1),
        "query_latency_ms": percentiles([seconds * 1000 for seconds in latencies]),
        "throughput_texts_per_s": {
            f"catalog_{len(texts)}": throughput(embedder, texts, repeats=3),
            f"repeated_{large}": throughput(embedder, repeated, repeats=2),
        },
    }
    np.savez(vectors_path, texts=embedder.encode_many(agreement_texts()), queries=embedder.encode_many(list(QUERIES)))
    return result


# --- the parent: exports, spawns, compares ----------------------------------------------------


def export_onnx(cache: Path) -> tuple[Path, float]:
    """Export into `cache` with embeddings.py's own command, timed from the process start."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(ROOT / "embeddings.py"), "--export-onnx"],
        env={**os.environ, ONNX_CACHE_ENV: str(cache), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"the ONNX export failed:\n{result.stderr}")
    return Path(result.stdout.strip()), time.perf_counter() - started


def quantised_cache(fp32_model: Path, fp32_cache: Path, int8_cache: Path) -> None:
    """A cache that holds an int8 copy at the fp32 model's place, so that the unchanged onnx
    backend loads it when pointed there. Per-channel weights: per-tensor ones agree far worse
    (mean cosine 0.95 instead of 0.99)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = int8_cache / fp32_model.relative_to(fp32_cache)
    target.parent.mkdir(parents=True)
    quantize_dynamic(fp32_model, target, per_channel=True, weight_type=QuantType.QInt8)


def run_worker(backend: str, cache: Path, args: argparse.Namespace, vectors_path: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.embed", "--worker", backend, "--vectors", str(vectors_path)]
    command += ["--queries", str(args.queries), "--large", str(args.large)]
    env = {**os.environ, ONNX_CACHE_ENV: str(cache), "HF_HUB_OFFLINE": "1"}
    started = time.time()
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"the {backend} run failed:\n{result.stderr}")
    measured = json.loads(result.stdout.splitlines()[-1])
    measured["start_to_first_vector_s"] = round(measured.pop("first_vector_at") - started, 3)
    return measured


def top_k(queries: np.ndarray, catalog: np.ndarray) -> np.ndarray:
    return np.argsort(-(queries @ catalog.T), axis=1, kind="stable")[:, :K]


def agreement(vectors: Any, reference: Any, catalog: np.ndarray) -> dict[str, float]:
    cosines = np.sum(vectors["texts"] * reference["texts"], axis=1)
    ours, theirs = top_k(vectors["queries"], catalog), top_k(reference["queries"], catalog)
    overlap = [len(set(a) & set(b)) / K for a, b in zip(ours, theirs, strict=True)]
    return {
        "min_cosine": round(float(cosines.min()), 7),
        "mean_cosine": round(float(cosines.mean()), 7),
        "mean_top10_overlap": round(float(np.mean(overlap)), 3),
        "identical_top10_lists": int(sum((a == b).all() for a, b in zip(ours, theirs, strict=True))),
    }


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def print_table(backends: dict[str, dict[str, Any]]) -> None:
    sizes = [name.rsplit("_", 1)[-1] for name in backends["torch"]["throughput_texts_per_s"]]
    header: tuple[str, ...] = (
        "backend",
        "start s",
        "RSS MB",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        *(f"{n} t/s" for n in sizes),
    )
    header += ("min cos", "top10")
    print(("{:<10}" + "{:>10}" * (len(header) - 1)).format(*header))
    for name, row in backends.items():
        latency, rates = row["query_latency_ms"], list(row["throughput_texts_per_s"].values())
        agree = row["agreement_with_torch"]
        cells: tuple[Any, ...] = (
            row["start_to_first_vector_s"],
            row["rss_mb_after_load"],
            latency["p50_ms"],
            latency["p95_ms"],
        )
        cells += (latency["p99_ms"], rates[0], rates[1], f"{agree['min_cosine']:.5f}", agree["mean_top10_overlap"])
        print(("{:<10}" + "{:>10}" * len(cells)).format(name, *cells))


def bench(args: argparse.Namespace) -> dict[str, Any]:
    host = machine()
    backends: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as scratch:
        fp32_cache, int8_cache = Path(scratch) / "fp32", Path(scratch) / "int8"
        fp32_model, export_seconds = export_onnx(fp32_cache)
        caches = {"torch": fp32_cache, "onnx": fp32_cache, "onnx-int8": int8_cache}
        if "onnx-int8" in args.backends:
            quantised_cache(fp32_model, fp32_cache, int8_cache)
        vectors = {}
        for backend in ("torch", *(name for name in args.backends if name != "torch")):
            print(f"measuring {backend} ...", file=sys.stderr)
            path = Path(scratch) / f"{backend}.npz"
            backends[backend] = run_worker(backend, caches[backend], args, path)
            vectors[backend] = np.load(path)
        catalog = catalog_vectors(read_catalog(ROOT / "catalog.json"))
        for backend, row in backends.items():
            row["agreement_with_torch"] = agreement(vectors[backend], vectors["torch"], catalog)
            row["p50_speedup_vs_torch"] = round(
                backends["torch"]["query_latency_ms"]["p50_ms"] / row["query_latency_ms"]["p50_ms"], 2
            )
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.embed", *sys.argv[1:]]),
        "machine": host,
        "versions": {name: package_version(name) for name in PACKAGES},
        "onnx_export_seconds": round(export_seconds, 2),
        "settings": {"query_calls": args.queries, "warm_up_calls": WARM_UP_CALLS, "large_batch": args.large},
        "backends": backends,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=BACKENDS,
        default=list(BACKENDS),
        help="what to measure; torch always runs, as the reference (default: all)",
    )
    parser.add_argument("--queries", type=int, default=200, help="single-query calls timed (default: %(default)s)")
    parser.add_argument("--large", type=int, default=1000, help="size of the large batch (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file (default: %(default)s)")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.queries, args.large, args.vectors)))
        return 0
    result = bench(args)
    print_table(result["backends"])
    host = result["machine"]
    print(f"ONNX export: {result['onnx_export_seconds']} s; {host['cpu_model']}, {host['nproc']} CPUs, ", end="")
    print(f"load average {host['load_average_1min_at_start']} at the start")
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
