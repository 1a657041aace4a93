"""How much do bench/million.py's generated vectors look like real product embeddings (issue 25)?

HNSW's cost depends on the geometry of the data: in a cloud of high intrinsic dimension every
point is nearly as far from a query as its true neighbours, so the graph search must visit most
of the cloud to get the exact top 10. This script measures that geometry for real
all-MiniLM-L6-v2 vectors and for the generator, with three standard statistics:

- local intrinsic dimensionality by the Levina-Bickel maximum-likelihood estimator (Levina and
  Bickel, "Maximum likelihood estimation of intrinsic dimension", NIPS 2004) at k = 10 and 20:
  per point, (k - 1) / sum_j log(T_k / T_j) over its k nearest distances T_1..T_k, averaged over
  points (and the median);
- the TwoNN estimator (Facco, d'Errico, Rodriguez and Laio, Scientific Reports 7, 2017): the
  maximum-likelihood d from the ratios mu = T_2 / T_1, d = N / sum log mu;
- contrast: T_10 over the median distance to the whole set (1 is no contrast at all), and the
  relative contrast of He, Kumar and Chang (ICML 2012), mean distance over T_1.

Distances are Euclidean between unit vectors. Each statistic is taken over up to `--sample`
points of a set against the whole set, the point itself left out; exact duplicates (distance 0,
e.g. two stock codes with one name) are left out of a point's neighbours and counted.

The sets: the 3,905 UCI Online Retail products (names embedded here with the bundled model on
the onnx backend: the file holds no vectors), the bundled catalog.json's 96 (its stored vectors),
and bench/million.py's generators at the Online Retail size and at `--sizes` (100,000 products by
default; 100000,1000000 adds the 1M run's catalogue, about 3 more minutes).

Run: .venv/bin/python -m bench.vector_realism        (about 1 minute on 2 cores)
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np

from bench.harness import RESULTS_DIR, ROOT, machine, write_result
from bench.million import Generator, ScaleCatalog

log = logging.getLogger("bench.vector_realism")

RETAIL = ROOT / "data" / "online-retail" / "products.jsonl.gz"
CATALOG = ROOT / "catalog.json"
KS = (10, 20)
DUPLICATE = 1e-3  # Euclidean distance under which two unit vectors count as the same text (float32
# rounding leaves identical vectors up to about 3e-4 apart; distinct texts are far farther)


@dataclass(frozen=True)
class Geometry:
    """The statistics of one set of vectors (see the module docstring)."""

    name: str
    size: int
    sampled: int
    lid_mle_k10_mean: float
    lid_mle_k10_median: float
    lid_mle_k20_mean: float
    lid_mle_k20_median: float
    two_nn: float
    t10_over_median: float
    relative_contrast: float
    cosine_to_nn_median: float
    duplicate_share: float


def neighbour_distances(
    points: np.ndarray, data: np.ndarray, k: int, self_index: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each point's k nearest non-duplicate distances in data (itself left out), its median and
    mean distance to data, and its number of exact duplicates."""
    nearest = np.empty((len(points), k))
    medians, means, duplicates = np.empty(len(points)), np.empty(len(points)), np.zeros(len(points), int)
    for start in range(0, len(points), 256):
        block = slice(start, start + 256)
        distances = np.sqrt(np.maximum(2.0 - 2.0 * (points[block] @ data.T), 0.0))
        distances[np.arange(distances.shape[0]), self_index[block]] = np.inf
        duplicates[block] = (distances < DUPLICATE).sum(axis=1)
        finite = np.where(distances == np.inf, np.nan, distances)
        medians[block] = np.nanmedian(finite, axis=1)
        means[block] = np.nanmean(finite, axis=1)
        distances[distances < DUPLICATE] = np.inf
        part = np.partition(distances, k - 1, axis=1)[:, :k]
        nearest[block] = np.sort(part, axis=1)
    return nearest, medians, means, duplicates


def lid_mle(nearest: np.ndarray, k: int) -> np.ndarray:
    """Levina-Bickel per point from the k nearest distances (sorted ascending)."""
    logs = np.log(nearest[:, k - 1 : k] / nearest[:, : k - 1])
    return (k - 1) / logs.sum(axis=1)


def two_nn(nearest: np.ndarray) -> float:
    """TwoNN's maximum-likelihood dimension from the first two neighbour distances."""
    mu = nearest[:, 1] / nearest[:, 0]
    return float(len(mu) / np.log(mu).sum())


def geometry(name: str, data: np.ndarray, sample: int, seed: int = 0) -> Geometry:
    data = np.ascontiguousarray(data, dtype=np.float32)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(data), min(sample, len(data)), replace=False))
    nearest, medians, means, duplicates = neighbour_distances(data[chosen], data, max(KS), chosen)
    lid = {k: lid_mle(nearest, k) for k in KS}
    return Geometry(
        name=name,
        size=len(data),
        sampled=len(chosen),
        lid_mle_k10_mean=round(float(lid[10].mean()), 2),
        lid_mle_k10_median=round(float(np.median(lid[10])), 2),
        lid_mle_k20_mean=round(float(lid[20].mean()), 2),
        lid_mle_k20_median=round(float(np.median(lid[20])), 2),
        two_nn=round(two_nn(nearest), 2),
        t10_over_median=round(float(np.median(nearest[:, 9] / medians)), 3),
        relative_contrast=round(float(np.median(means / nearest[:, 0])), 3),
        cosine_to_nn_median=round(float(np.median(1.0 - nearest[:, 0] ** 2 / 2.0)), 3),
        duplicate_share=round(float((duplicates > 0).mean()), 3),
    )


def retail_vectors() -> np.ndarray:
    """The Online Retail products' names and descriptions, embedded as build_catalog would."""
    from embeddings import LocalEmbedder
    from recengine.catalog_file import product_text

    with gzip.open(RETAIL, "rt") as lines:
        products = [json.loads(line) for line in lines if line.strip()]
    started = time.perf_counter()
    vectors = LocalEmbedder(backend="onnx").encode_many(product_text(p) for p in products)
    log.info("embedded %d Online Retail products in %.1f s", len(products), time.perf_counter() - started)
    return vectors


def catalog_vectors_of_demo() -> np.ndarray:
    from recengine.catalog_file import catalog_vectors, read_catalog

    return catalog_vectors(read_catalog(CATALOG))


def generated(n: int, seed: int, generator: Generator) -> np.ndarray:
    catalog = ScaleCatalog(n, seed, generator)
    return np.concatenate([catalog.vectors(c) for c in range(catalog.chunks)])


def measure(sets: Sequence[tuple[str, Callable[[], np.ndarray]]], sample: int) -> list[Geometry]:
    rows = []
    for name, make in sets:
        started = time.perf_counter()
        rows.append(geometry(name, make(), sample))
        log.info("%s: %s (%.1f s)", name, rows[-1], time.perf_counter() - started)
    return rows


def print_table(rows: Sequence[Geometry]) -> None:
    print(
        "| set | n | sampled | LID MLE k=10 mean / median | k=20 mean / median | TwoNN | T10 / median dist "
        "| relative contrast | cos to 1st NN (median) | with an exact duplicate |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.name} | {r.size:,} | {r.sampled:,} | {r.lid_mle_k10_mean} / {r.lid_mle_k10_median} "
            f"| {r.lid_mle_k20_mean} / {r.lid_mle_k20_median} | {r.two_nn} | {r.t10_over_median} "
            f"| {r.relative_contrast} | {r.cosine_to_nn_median} | {r.duplicate_share:.1%} |"
        )


def main(argv: Sequence[str] | None = None) -> list[Geometry]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=2000, help="points measured per set (default 2000)")
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[100_000],
        help="the generators' sizes beside the Online Retail one (default 100000)",
    )
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "vector_realism.json")
    args = parser.parse_args(argv)
    retail = retail_vectors()
    n = len(retail)
    sets: list[tuple[str, Callable[[], np.ndarray]]] = [
        ("Online Retail (real, MiniLM)", lambda: retail),
        ("catalog.json (real, MiniLM)", catalog_vectors_of_demo),
    ]
    for generator in ("catalogue", "isotropic"):
        for size in (n, *args.sizes):
            sets.append((f"million.py {generator}", partial(generated, size, args.seed, generator)))
    rows = measure(sets, args.sample)
    print_table(rows)
    result = {
        "machine": machine(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "sample": args.sample,
        "sets": [asdict(r) for r in rows],
    }
    write_result(args.output, result)
    return rows


if __name__ == "__main__":
    main()
