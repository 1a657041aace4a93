"""`build_catalog.py --load --sync` after 1 % of the products changed: does it embed only those,
and finish in under 10 % of a full build's time (issue 21's target)?

One run, on a bundled Redis of its own: a catalogue of N products with the synthetic catalogue's
texts (bench/synthetic_catalog.py) is built and loaded in full (`--load`: every product
embedded, the index filled), then 1 % of the products get a new description, 1 % a new price,
and the sync runs (`--load --sync`: plan, embed what has new text, write what changed); then the
same sync again (nothing to do). Each is timed end to end as a user runs it, model load
included, and the sync's own report says how many it embedded.

    .venv/bin/python -m bench.catalog_sync                 # 5,000 products
    .venv/bin/python -m bench.catalog_sync --products 1000

Writes bench/results/catalog_sync.json and .png.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import RESULTS_DIR, machine, write_result
from bench.synthetic_catalog import BRANDS, CATEGORIES, make_catalog
from build_catalog import main as build_catalog
from local_redis import LocalRedis, connect

TARGET_SHARE = 0.10


def products(n: int, seed: int) -> list[dict[str, Any]]:
    catalog = make_catalog(n, seed)
    return [
        {
            "id": f"b{i:05d}",
            "name": catalog.names[i],
            "description": catalog.descriptions[i],
            "category": CATEGORIES[catalog.category[i]][0],
            "brand": BRANDS[catalog.brand[i]],
            "price": float(catalog.price[i]),
            "rating": float(catalog.rating[i]),
            "in_stock": bool(catalog.in_stock[i]),
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def timed_run(argv: list[str]) -> tuple[float, str]:
    """One build_catalog run in this process, its seconds and what it printed."""
    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        status = build_catalog(argv)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"build_catalog {' '.join(argv)} failed with status {status}")
    return seconds, out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "catalog_sync.json")
    args = parser.parse_args(argv)
    rows = products(args.products, args.seed)
    changed = max(1, args.products // 100)
    with LocalRedis() as server, tempfile.TemporaryDirectory(prefix="catalog-sync-") as folder:
        path = Path(folder) / "shop.jsonl"
        write_jsonl(path, rows)
        common = ["--input", str(path), "--redis-url", server.url, "--embedding-backend", "onnx", "--load"]
        load_start = round(os.getloadavg()[0], 2)
        full_s, _ = timed_run([*common, "--output", str(Path(folder) / "catalog.json")])
        for i in range(changed):
            rows[i * 7 % len(rows)]["description"] += " Now in a new colour."
            rows[(i * 7 + 3) % len(rows)]["price"] += 1.0
        write_jsonl(path, rows)
        sync_s, sync_out = timed_run([*common, "--sync"])
        again_s, again_out = timed_run([*common, "--sync"])
        info = machine(connect(server.url))
    embedded = int(re.search(r"\((\d+) embedded\)", sync_out).group(1))  # type: ignore[union-attr]
    result = {
        "benchmark": "catalog_sync",
        "command": "python -m bench.catalog_sync" + (f" --products {args.products}" if args.products != 5000 else ""),
        "machine": info,
        "products": args.products,
        "changed_text": changed,
        "changed_price": changed,
        "full_build_s": round(full_s, 2),
        "sync_s": round(sync_s, 2),
        "sync_share_of_full": round(sync_s / full_s, 4),
        "sync_embedded": embedded,
        "sync_report": sync_out.strip().splitlines(),
        "second_sync_s": round(again_s, 2),
        "second_sync_report": again_out.strip().splitlines(),
        "target_met": sync_s / full_s < TARGET_SHARE and embedded == changed,
        "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
    }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    write_result(args.output, result)
    plot(result, args.output.with_suffix(".png"))
    return 0


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = ["full build (--load)", f"--sync, 1 % changed ({result['sync_embedded']} embedded)", "--sync again"]
    values = [result["full_build_s"], result["sync_s"], result["second_sync_s"]]
    ax.barh(labels, values, color=["grey", "C0", "C2"])
    ax.invert_yaxis()
    ax.set_xlabel("seconds, end to end (model load included)")
    ax.set_title(f"{result['products']:,} products: sync = {result['sync_share_of_full']:.1%} of a full build")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
