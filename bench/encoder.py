"""Query encoder benchmark: which ONNX graph and session settings embed a shopper's query fastest,
and what each costs in ranking quality.

Every variant is the same all-MiniLM-L6-v2 run by onnxruntime in this process, with the project's
tokenizer and pooling:

- graph optimisation: the plain export at ORT_ENABLE_BASIC / EXTENDED / ALL (ALL is what a
  session does by default), the export optimised by onnxruntime and saved offline (loaded with
  optimisations off), and the fused graph the project ships (onnxruntime's transformer optimizer);
- dynamic int8 quantisation (`quantize_dynamic`): per-channel or per-tensor weight scales, QInt8
  or QUInt8 weights, of the fused graph, and per-channel QInt8 of the plain export;
- threads: 1 or 2 intra-op threads, and spinning (10 µs as shipped, onnxruntime's default, off).

Latency: single short queries (batch 1, what a fresh /search waits for) p50/p99, and ms per query
for batches of 16; variants take turns round by round, so load from other processes falls on all
of them alike. The cost of each step of a query (tokenizer, session run, pooling) is timed apart.
Quality, per graph: cosine with the plain export's vectors over the judged queries, overlap@10 of
plain KNN results with the export's, and NDCG@10 on the judged set (bench/quality.py's
run_query_configs against catalog.json in a bundled Redis) for plain KNN, KNN with the
filters each query states, and the query text alone as /search takes it (facets understood,
BM25 fused with the KNN). Product vectors are catalog.json's (the float model) throughout.

The export and the shipped fused and int8 graphs come from the ONNX cache (made there if missing,
as the server would); the other variants are made in a temporary directory.

Run: .venv/bin/python -m bench.encoder   (about 2 minutes on 2 cores)
     .venv/bin/python -m bench.encoder --workers 2   (only: the shipped graphs with 1 and 2
        intra-op threads, each in N sessions embedding at the same time, as N server workers do)
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import ROOT, machine, percentiles, write_result
from bench.quality import (
    CATALOG_PATH,
    QUERIES_PATH,
    JudgedQuery,
    knn_filters,
    load_index,
    load_judged_queries,
    make_recommender,
    plain_knn,
    run_query_configs,
    text_only,
)
from embeddings import (
    Features,
    LocalEmbedder,
    mean_pool,
    normalize_rows,
    quantize_int8,
    tokenize,
)
from recengine.catalog_file import catalog_vectors, read_catalog

RESULTS_DIR = ROOT / "bench" / "results"
QUERIES = tuple((ROOT / "data" / "sample_queries.txt").read_text().splitlines())
BATCH = 16
WARM_UP_CALLS = 10
K = 10
# "text only" is what /search does with what a shopper types (no filters set by hand): the words'
# facets understood, BM25 fused with the KNN.
NDCG_CONFIGS = {"knn": plain_knn, "knn+filters": knn_filters, "text only": text_only(True)}
REFERENCE = "export"  # the graph every other one is compared with


@dataclass(frozen=True)
class Variant:
    """A graph and the session settings to run it with."""

    name: str
    graph: str
    threads: int = 2
    level: str = "ORT_ENABLE_ALL"
    spin: str = "10us"  # "10us" as shipped, "default" (onnxruntime's own), or "off"
    shipped: bool = False


VARIANTS = (
    Variant("export (before)", "export"),
    Variant("export, BASIC", "export", level="ORT_ENABLE_BASIC"),
    Variant("export, EXTENDED", "export", level="ORT_ENABLE_EXTENDED"),
    Variant("export, offline-optimised", "export-offline", level="ORT_DISABLE_ALL"),
    Variant("fused (float default)", "fused", shipped=True),
    Variant("fused, 1 thread", "fused", threads=1),
    Variant("fused, spin default", "fused", spin="default"),
    Variant("fused, spin off", "fused", spin="off"),
    Variant("int8 export pc QInt8", "int8-export-pc-s8"),
    Variant("int8 fused pc QInt8 (int8)", "int8", shipped=True),
    Variant("int8 fused pc QUInt8", "int8-pc-u8"),
    Variant("int8 fused pt QInt8", "int8-pt-s8"),
    Variant("int8 fused pt QUInt8", "int8-pt-u8"),
    Variant("int8 fused, FFN-out float", "int8-ffn-out-float"),
    Variant("int8, 1 thread", "int8", threads=1),
    Variant("int8, spin off", "int8", spin="off"),
    Variant("int8, BASIC", "int8", level="ORT_ENABLE_BASIC"),
    Variant("int8, 1 thread, spin off", "int8", threads=1, spin="off"),
)


# --- the graphs ------------------------------------------------------------------------------


def shipped_graphs() -> dict[str, Path]:
    """The export and the graphs the project derives from it, from the ONNX cache."""
    shipped = LocalEmbedder(backend="onnx", query_encoder="int8").model
    return {"export": shipped.path, "fused": shipped.fused_path, "int8": shipped.query_path}


def make_graphs(scratch: Path) -> dict[str, Path]:
    """The shipped graphs from the ONNX cache, the others made in `scratch`."""
    import onnxruntime

    graphs = shipped_graphs()
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(scratch / "export-offline.onnx")
    onnxruntime.InferenceSession(str(graphs["export"]), options, providers=["CPUExecutionProvider"])
    graphs["export-offline"] = scratch / "export-offline.onnx"
    recipes: dict[str, tuple[Path, dict[str, Any]]] = {
        "int8-export-pc-s8": (graphs["export"], {}),
        "int8-pc-u8": (graphs["fused"], {"signed": False}),
        "int8-pt-s8": (graphs["fused"], {"per_channel": False}),
        "int8-pt-u8": (graphs["fused"], {"per_channel": False, "signed": False}),
        "int8-ffn-out-float": (graphs["fused"], {"exclude": ffn_output_matmuls(graphs["fused"])}),
    }
    for name, (source, options) in recipes.items():
        quantize_int8(source, scratch / f"{name}.onnx", **options)
        graphs[name] = scratch / f"{name}.onnx"
    return graphs


def ffn_output_matmuls(graph: Path) -> list[str]:
    """The feed-forward output projections (after GELU, whose activations have the widest range):
    the usual suspects when int8 costs accuracy, kept float in one variant."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    return [
        node.name
        for node in model.graph.node
        if node.name.endswith("/output/dense/MatMul") and "attention" not in node.name
    ]


def open_variant(variant: Variant, graphs: dict[str, Path]) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = variant.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, variant.level)
    if variant.spin == "10us":
        options.add_session_config_entry("session.intra_op.spin_duration_us", "10")
    elif variant.spin == "off":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(graphs[variant.graph]), options, providers=["CPUExecutionProvider"])


# --- latency ---------------------------------------------------------------------------------


class Runner:
    """One session with the project's tokenizer and pooling: what OnnxEncoder does per call."""

    def __init__(self, session: Any, tokenizer: Any) -> None:
        self.session, self.tokenizer = session, tokenizer
        self.inputs = [node.name for node in session.get_inputs()]

    def run(self, features: Features) -> np.ndarray:
        (tokens,) = self.session.run(["token_embeddings"], {name: features[name] for name in self.inputs})
        return tokens

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        features = tokenize(self.tokenizer, texts)
        return normalize_rows(mean_pool(self.run(features), features["attention_mask"]))

    def embed_each(self, texts: Sequence[str]) -> np.ndarray:
        """Each text alone, as a fresh query is embedded (and as the int8 encoder always does)."""
        return np.concatenate([self.embed([text]) for text in texts])


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def measure_latency(runners: dict[str, Runner], rounds: int) -> dict[str, dict[str, Any]]:
    """Round robin: each round, every variant embeds every query alone, then the queries in
    batches of BATCH."""
    single: dict[str, list[float]] = {name: [] for name in runners}
    batched: dict[str, list[float]] = {name: [] for name in runners}
    batches = [QUERIES[start : start + BATCH] for start in range(0, len(QUERIES) - BATCH + 1, BATCH)]
    for runner in runners.values():
        for query in QUERIES[:WARM_UP_CALLS]:
            runner.embed([query])
    for _ in range(rounds):
        for name, runner in runners.items():
            single[name].extend(timed(functools.partial(runner.embed, [query])) for query in QUERIES)
            batched[name].extend(timed(functools.partial(runner.embed, list(batch))) / BATCH for batch in batches)
    return {
        name: {"batch1": percentiles(single[name]), "batch16_ms_per_query": round(float(np.median(batched[name])), 3)}
        for name in runners
    }


def pooled(tokens: np.ndarray, features: Features) -> np.ndarray:
    return normalize_rows(mean_pool(tokens, features["attention_mask"]))


WORKER_VARIANTS = (
    Variant("int8, 2 threads (shipped)", "int8"),
    Variant("int8, 1 thread", "int8", threads=1),
    Variant("fused, 2 threads (shipped)", "fused"),
    Variant("fused, 1 thread", "fused", threads=1),
)


def measure_workers(workers: int, rounds: int) -> dict[str, dict[str, float]]:
    """Each of WORKER_VARIANTS in `workers` sessions of its own, each embedding the single
    queries on a thread of its own at the same time: what `demo_server.py --workers N` does when
    every worker has a fresh query (each process holds one session; onnxruntime releases the GIL,
    so threads stand in for the processes here, sharing only the tokenizer and pooling's GIL
    time, about 0.15 ms a query). Variants take turns round by round. Per variant: p50/p99 of a
    query and queries per second over all sessions."""
    from embeddings import default_model_path, load_tokenizer, transformer_dir

    tokenizer = load_tokenizer(transformer_dir(default_model_path()))
    graphs = shipped_graphs()
    groups = {
        variant.name: [Runner(open_variant(variant, graphs), tokenizer) for _ in range(workers)]
        for variant in WORKER_VARIANTS
    }
    latencies: dict[str, list[float]] = {name: [] for name in groups}
    seconds = dict.fromkeys(groups, 0.0)
    for group in groups.values():
        for runner in group:
            for query in QUERIES[:WARM_UP_CALLS]:
                runner.embed([query])
    for round_number in range(rounds):
        names = list(groups)[round_number % len(groups) :] + list(groups)[: round_number % len(groups)]
        for name in names:
            shares: list[list[float]] = [[] for _ in groups[name]]

            def work(runner: Runner, share: list[float]) -> None:
                share.extend(timed(functools.partial(runner.embed, [query])) for query in QUERIES)

            threads = [
                threading.Thread(target=work, args=(runner, share))
                for runner, share in zip(groups[name], shares, strict=True)
            ]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds[name] += time.perf_counter() - started
            latencies[name] += [ms for share in shares for ms in share]
    return {
        name: {**percentiles(values), "queries_per_s": round(len(values) / seconds[name], 1)}
        for name, values in latencies.items()
    }


def measure_steps(runner: Runner, rounds: int) -> dict[str, float]:
    """Median µs of each step of a single-query call: tokenizer, session run, pooling."""
    steps: dict[str, list[float]] = {"tokenize_us": [], "session_run_us": [], "pool_normalise_us": []}
    for _ in range(rounds):
        for query in QUERIES:
            features = tokenize(runner.tokenizer, [query])
            steps["tokenize_us"].append(timed(functools.partial(tokenize, runner.tokenizer, [query])) * 1000)
            tokens = runner.run(features)
            steps["session_run_us"].append(timed(functools.partial(runner.run, features)) * 1000)
            pool = functools.partial(pooled, tokens, features)
            steps["pool_normalise_us"].append(timed(pool) * 1000)
    return {step: round(float(np.median(values)), 1) for step, values in steps.items()}


# --- quality ---------------------------------------------------------------------------------


def measure_quality(runners: dict[str, Runner], judged: list[JudgedQuery]) -> dict[str, dict[str, float]]:
    """Per graph: cosine with the export's query vectors, overlap@10 of plain KNN results with
    the export's, and NDCG@10 on the judged set, from a bundled Redis holding catalog.json."""
    from local_redis import LocalRedis, connect

    catalog = read_catalog(CATALOG_PATH)
    texts = [query.text for query in judged]
    vectors = {graph: runner.embed_each(texts) for graph, runner in runners.items()}
    with LocalRedis() as server:
        client = connect(server.url)
        recommender = make_recommender(client, "encoder")
        load_index(recommender, catalog["products"], catalog_vectors(catalog))
        found = {
            graph: [
                [c.id for c in plain_knn(recommender, vector, query)]
                for query, vector in zip(judged, rows, strict=True)
            ]
            for graph, rows in vectors.items()
        }
        quality = {}
        for graph, rows in vectors.items():
            report = run_query_configs(recommender, judged, rows, NDCG_CONFIGS)
            overlaps = [
                len(set(ours) & set(theirs)) / max(len(theirs), 1)
                for ours, theirs in zip(found[graph], found[REFERENCE], strict=True)
            ]
            cosines = np.sum(rows * vectors[REFERENCE], axis=1)
            quality[graph] = {
                "min_cosine": round(float(cosines.min()), 5),
                "mean_cosine": round(float(cosines.mean()), 5),
                "overlap@10": round(float(np.mean(overlaps)), 3),
                **{
                    f"ndcg@10 {name}": round(result["mean"]["ndcg@10"], 4) for name, result in report["configs"].items()
                },
            }
        recommender.drop_index(delete_documents=True)
        client.close()
    return quality


# --- report ----------------------------------------------------------------------------------

COLUMNS = ("variant", "p50 ms", "p99 ms", "b16 ms/q", "min cos", "overlap@10", "NDCG knn", "NDCG filt", "NDCG text")


def table_rows(result: dict[str, Any]) -> list[tuple[Any, ...]]:
    rows = []
    for variant in result["variants"]:
        quality = result["quality"][variant["graph"]]
        latency = result["latency"][variant["name"]]
        rows.append(
            (
                variant["name"],
                f"{latency['batch1']['p50_ms']:.3f}",
                f"{latency['batch1']['p99_ms']:.3f}",
                f"{latency['batch16_ms_per_query']:.3f}",
                f"{quality['min_cosine']:.4f}",
                f"{quality['overlap@10']:.3f}",
                f"{quality['ndcg@10 knn']:.4f}",
                f"{quality['ndcg@10 knn+filters']:.4f}",
                f"{quality['ndcg@10 text only']:.4f}",
            )
        )
    return rows


def print_report(result: dict[str, Any]) -> None:
    print(f"{COLUMNS[0]:30}" + "".join(f"{column:>11}" for column in COLUMNS[1:]))
    for row in table_rows(result):
        print(f"{row[0]:30}" + "".join(f"{cell:>11}" for cell in row[1:]))
    for graph, steps in result["steps"].items():
        print(f"one query on {graph}: " + ", ".join(f"{step} {value}" for step, value in steps.items()))
    print(
        f"load average {result['machine']['load_average_1min_at_start']} at the start, {result['load_average_1min_at_end']} at the end"
    )


def draw(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [variant["name"] for variant in result["variants"]]
    p50 = [result["latency"][name]["batch1"]["p50_ms"] for name in names]
    p99 = [result["latency"][name]["batch1"]["p99_ms"] for name in names]
    b16 = [result["latency"][name]["batch16_ms_per_query"] for name in names]
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 6))
    y = np.arange(len(names))
    left.barh(y - 0.27, p50, 0.27, label="batch 1 p50")
    left.barh(y, b16, 0.27, label="batch 16, ms/query")
    left.barh(y + 0.27, p99, 0.27, label="batch 1 p99", alpha=0.5)
    left.set_yticks(y, names)
    left.invert_yaxis()
    left.set_xlabel("ms")
    left.legend()
    left.set_title(f"query latency (load {result['machine']['load_average_1min_at_start']})")
    for variant in result["variants"]:
        quality = result["quality"][variant["graph"]]
        latency = result["latency"][variant["name"]]["batch1"]["p50_ms"]
        right.scatter(latency, quality["ndcg@10 knn"], color="tab:red" if "int8" in variant["graph"] else "tab:blue")
        right.annotate(variant["name"], (latency, quality["ndcg@10 knn"]), fontsize=7)
    reference = result["quality"][REFERENCE]["ndcg@10 knn"]
    right.axhspan(reference - 0.005, reference + 0.005, color="grey", alpha=0.2, label="float ± 0.005")
    right.set_xlabel("batch 1 p50 ms")
    right.set_ylabel("NDCG@10, plain KNN, judged queries")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from embeddings import default_model_path, load_tokenizer, transformer_dir

    host = machine()
    catalog = read_catalog(CATALOG_PATH)
    judged = load_judged_queries(args.queries, {product["id"] for product in catalog["products"]})
    tokenizer = load_tokenizer(transformer_dir(default_model_path()))
    with tempfile.TemporaryDirectory(prefix="bench-encoder-") as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graphs = make_graphs(Path(scratch))
        runners = {variant.name: Runner(open_variant(variant, graphs), tokenizer) for variant in VARIANTS}
        latency = measure_latency(runners, args.rounds)
        by_graph = {
            variant.graph: runners[variant.name]
            for variant in VARIANTS
            if variant.threads == 2 and variant.spin == "10us"
        }
        steps = {graph: measure_steps(by_graph[graph], args.rounds) for graph in ("export", "fused", "int8")}
        load_after_latency = round(os.getloadavg()[0], 2)
        quality = measure_quality(by_graph, judged)
        sizes = {graph: path.stat().st_size for graph, path in graphs.items()}
    return {
        "benchmark": "bench/encoder.py",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.encoder", *sys.argv[1:]]),
        "machine": host,
        "versions": {name: version(name) for name in ("onnxruntime", "onnx", "tokenizers", "numpy")},
        "settings": {"rounds": args.rounds, "queries": len(QUERIES), "batch": BATCH, "judged_queries": len(judged)},
        "variants": [variant.__dict__ for variant in VARIANTS],
        "graph_bytes": sizes,
        "latency": latency,
        "steps": steps,
        "quality": quality,
        "load_average_1min_after_latency": load_after_latency,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=8, help="rounds of every variant over the 50 queries (default: %(default)s)"
    )
    parser.add_argument("--queries", type=Path, default=QUERIES_PATH, help="judged queries (default: %(default)s)")
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "encoder.json", help="JSON file (default: %(default)s)"
    )
    parser.add_argument("--workers", type=int, default=0, help="only the N-workers comparison (see above)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.workers < 0:
        parser.error("--rounds must be at least 1, --workers at least 0")
    if args.workers:
        command = " ".join(["python -m bench.encoder", *(argv if argv is not None else sys.argv[1:])])
        host = machine()
        rows = measure_workers(args.workers, args.rounds)
        report = {"command": command, "machine": host, "workers": args.workers, "rounds": args.rounds,
                  "variants": rows, "load_average_1min_at_end": round(os.getloadavg()[0], 2)}  # fmt: skip
        for name, row in rows.items():
            print(
                f"{name:28} p50 {row['p50_ms']:7.3f} ms  p99 {row['p99_ms']:7.3f} ms  {row['queries_per_s']:7.1f} queries/s"
            )
        write_result(RESULTS_DIR / f"encoder_workers{args.workers}.json", report)
        return 0
    result = bench(args)
    print_report(result)
    write_result(args.output, result)
    draw(result, args.output.with_suffix(".png"))
    print(f"wrote {args.output} and {args.output.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
