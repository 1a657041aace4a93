"""What the retrieval benchmark's figures say: the targets met or missed, the recommended
EF_RUNTIME and HYBRID_POLICY, the tables printed per catalog size, and the plots.

Pure functions of the result dicts that bench/retrieval.py measures (and writes to
bench/results/retrieval.json), so `python -m bench.retrieval --plot-only` can redraw the plots
from the JSON without measuring anything.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bench.contention import CONTENDED_CORES
from bench.harness import RESULTS_DIR
from bench.synthetic_catalog import DIM

log = logging.getLogger("bench.retrieval")

RECALL_TARGET = 0.98
FILTERED_P50_TARGET_MS = 2.0

# --- verdicts -------------------------------------------------------------------------------


def fastest_at_target(rows: dict[str, Any]) -> str | None:
    """The policy with the lowest p50 among those whose recall@10 reaches the target."""
    good = {label: row for label, row in rows.items() if (row["recall_at_10"] or 0) >= RECALL_TARGET}
    return min(good, key=lambda label: good[label]["p50_ms"]) if good else None


def smallest_good_ef(sweep: dict[str, Any]) -> int | None:
    """The smallest swept EF_RUNTIME whose recall@10 reaches the target in every filter case."""
    for ef, cases in sweep.items():
        recalls = [c["recall_at_10"] for c in cases.values() if c["recall_at_10"] is not None]
        if recalls and min(recalls) >= RECALL_TARGET:
            return int(ef)
    return None


def at_ef(result: dict[str, Any], ef: int | None) -> dict[str, Any]:
    """Per-case figures at one EF_RUNTIME: the headline run for the library default (None)."""
    if ef is None:
        return result["headline"]["cases"]
    return result["ef_sweep"][str(ef)]


def check_targets(results: list[dict[str, Any]], ef: int | None) -> dict[str, Any]:
    """The issue's targets against what was measured, at one EF_RUNTIME. Reported, not asserted."""
    smallest, largest = results[0], results[-1]
    small, large = at_ef(smallest, ef), at_ef(largest, ef)
    headline = largest["headline"]["cases"]
    filtered = [name for name in large if name != "none"]
    recalls = [c["recall_at_10"] for r in results for c in at_ef(r, ef).values() if c["recall_at_10"] is not None]
    checks = {
        f"p50 at {smallest['items']:,} items <= 0.7 ms (slowest case)": (max(c["p50_ms"] for c in small.values()), 0.7),
        f"unfiltered p50 at {largest['items']:,} <= 1.0 ms": (large["none"]["p50_ms"], 1.0),
        f"filtered p50 at {largest['items']:,} <= 2.0 ms (slowest case)": (
            max(large[n]["p50_ms"] for n in filtered),
            FILTERED_P50_TARGET_MS,
        ),
        "recall@10 >= 0.98 (worst case, all sizes)": (min(recalls), RECALL_TARGET),
        "ingest >= 2,000 items/s (slowest size)": (min(r["ingest"]["items_per_s"] for r in results), 2000),
    }
    out = {}
    for label, (value, target) in checks.items():
        higher_is_better = label.startswith(("recall", "ingest"))
        out[label] = {"measured": value, "met": value >= target if higher_is_better else value <= target}
    # numpy's time is per case; compare it with Redis' p50 at this ef.
    for name in large:
        ratio = headline[name]["numpy_exact"]["p50_ms"] / large[name]["p50_ms"]
        one_thread = headline[name]["numpy_exact_1_thread"]["p50_ms"] / large[name]["p50_ms"]
        out[f"numpy exact / Redis p50 at {largest['items']:,} >= 10x ({name})"] = {
            "measured": round(ratio, 2),
            "met": ratio >= 10,
            "numpy_1_thread_ratio": round(one_thread, 2),
        }
    return out


def recommendation(results: list[dict[str, Any]]) -> dict[str, Any]:
    """EF_RUNTIME: the smallest swept value that reaches the recall target in every case at the
    largest size; HYBRID_POLICY: the fastest policy at the target recall, per filter."""
    largest = results[-1]
    ef = largest["smallest_ef_reaching_target"]
    return {
        "items": largest["items"],
        "ef_runtime": ef,
        "at_that_ef": at_ef(largest, ef) if ef else None,
        "fastest_hybrid_policy": {
            name: block["fastest_at_target"] for name, block in largest.get("hybrid_policy", {}).items()
        },
    }


def print_targets(title: str, checks: dict[str, Any]) -> None:
    print(f"\ntargets, {title}:")
    for label, row in checks.items():
        print(f"  {'met   ' if row['met'] else 'MISSED'} {label}: {row['measured']}")


# --- reporting ------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def contended(row: dict[str, Any]) -> str:
    """A mark for figures measured while other processes competed for the cores."""
    return "!" if row.get("other_load_cores", 0) >= CONTENDED_CORES else " "


def print_size(result: dict[str, Any]) -> None:
    ingest_ = result["ingest"]
    print(
        f"\n=== {result['items']:,} items: ingest {ingest_['items_per_s']:,.0f} items/s{contended(ingest_)}"
        f"(Redis main thread {ingest_['server_main_thread_busy']:.0%} busy, "
        f"{ingest_['items_per_server_cpu_s']:,.0f} items per Redis CPU second; client packing "
        f"{ingest_['client_packing_items_per_s']:,.0f}/s), "
        f"{ingest_['memory_bytes_per_item']:,.0f} B/item used_memory, "
        f"{ingest_['vector_index_bytes_per_item']:,.0f} B/item vector index"
    )
    if "headline" in result:
        print(f"library defaults (ef_runtime={result['headline']['ef_runtime']}):")
        print(
            f"{'case':22s} {'select.':>8s} {'p50':>7s} {'p95':>7s} {'p99':>7s} {'recall':>7s} {'srv cpu':>7s} "
            f"{'numpy':>7s} {'x':>6s} {'np 1thr':>7s} {'x':>6s}"
        )
        for name, c in result["headline"]["cases"].items():
            print(
                f"{name:22s} {c['selectivity_mean']:8.4f} {c['p50_ms']:7.3f} {c['p95_ms']:7.3f} {c['p99_ms']:7.3f} "
                f"{fmt(c['recall_at_10'])!s:>7s} {c['server_cpu_ms_per_query']:7.3f} {c['numpy_exact']['p50_ms']:7.3f} "
                f"{c['numpy_over_redis_p50']:6.1f} {c['numpy_exact_1_thread']['p50_ms']:7.3f} "
                f"{c['numpy_1_thread_over_redis_p50']:6.1f}{contended(c)}"
            )
    cases = list(next(iter(result["ef_sweep"].values())))
    print("EF_RUNTIME sweep, recall@10 / p50 ms:")
    print(f"{'ef':>5s} " + " ".join(f"{name:>22s}" for name in cases))
    for ef, row in result["ef_sweep"].items():
        cells = [f"{fmt(row[n]['recall_at_10'])} / {row[n]['p50_ms']:.3f}{contended(row[n])}" for n in cases]
        print(f"{ef:>5s} " + " ".join(f"{cell:>22s}" for cell in cells))
    if "hybrid_policy" in result:
        print("HYBRID_POLICY, recall@10 / p50 / p99 ms (* fastest at recall target):")
    for name, block in result.get("hybrid_policy", {}).items():
        print(f"  {name} (selectivity {block['selectivity_mean']:.4f}, median {block['matching_items_median']} items)")
        for label, row in block["policies"].items():
            mark = "*" if label == block["fastest_at_target"] else " "
            print(
                f"   {mark}{label:14s} {fmt(row['recall_at_10'])} / {row['p50_ms']:6.3f} / {row['p99_ms']:6.3f}"
                f"{contended(row)}"
            )
    print(f"(! = measured while other processes used >= {CONTENDED_CORES} cores)")


def print_build_sweep(sweep: list[dict[str, Any]]) -> None:
    print("\n=== HNSW build sweep")
    for row in sweep:
        build = row["build"]
        print(
            f"M {build['hnsw_m']} EF_CONSTRUCTION {build['hnsw_ef_construction']}: "
            f"ingest {row['ingest']['items_per_s']:,.0f} items/s{contended(row['ingest'])}"
            f"({row['ingest']['items_per_server_cpu_s']:,.0f} per Redis CPU second), "
            f"{row['ingest']['memory_bytes_per_item']:,.0f} B/item, smallest good ef {row['smallest_ef_reaching_target']}"
        )
        for ef, cases in row["ef_sweep"].items():
            cells = ", ".join(
                f"{n} {fmt(c['recall_at_10'])}/{c['p50_ms']:.2f}ms{contended(c).strip()}" for n, c in cases.items()
            )
            print(f"  ef {ef:>4s}: {cells}")


def plot_latency(results: list[dict[str, Any]], path: Path) -> None:
    """Left: Redis p50 and p99 per filter case. Right: Redis p50 against numpy exact p50, on a
    log scale because numpy grows linearly with the catalog and Redis barely does."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["items"] for r in results]
    cases = list(results[0]["headline"]["cases"])
    colors = dict(zip(cases, ("tab:blue", "tab:orange", "tab:green", "tab:red"), strict=False))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    for name in cases:
        rows = [r["headline"]["cases"][name] for r in results]
        left.plot(sizes, [c["p50_ms"] for c in rows], "o-", color=colors[name], label=f"{name} p50")
        left.plot(sizes, [c["p99_ms"] for c in rows], "s--", color=colors[name], alpha=0.7, label=f"{name} p99")
        right.plot(sizes, [c["p50_ms"] for c in rows], "o-", color=colors[name], label=f"Redis {name}")
        right.plot(
            sizes, [c["numpy_exact"]["p50_ms"] for c in rows], "^:", color=colors[name], label=f"numpy exact {name}"
        )
    left.axhline(2.0, color="grey", lw=0.8, ls="-.")
    left.text(sizes[0], 2.03, "2 ms filtered target", color="grey", fontsize=8, va="bottom")
    ef = results[0]["headline"]["ef_runtime"]
    left.set_title(f"Redis candidate_retrieve(k=10) latency (EF_RUNTIME {ef or '10, default'})")
    right.set_title("p50: Redis HNSW vs numpy exact search (same filter)")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("catalog size (items)")
        ax.set_ylabel("latency per query (ms)")
        ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper left")
    left.set_ylim(bottom=0)
    right.set_yscale("log")
    fig.suptitle(f"Filtered KNN retrieval, {DIM}-d vectors, 2-core machine", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ef_tradeoff(result: dict[str, Any], path: Path) -> None:
    """Recall against p50 along the EF_RUNTIME sweep at one size: where the knee is."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    sweep = result["ef_sweep"]
    for i, name in enumerate(next(iter(sweep.values()))):
        points = [(row[name]["p50_ms"], row[name]["recall_at_10"], ef) for ef, row in sweep.items()]
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=name)
        # Filtered cases bunch up (their recall barely moves with EF_RUNTIME): label their ends
        # only, alternately below and above the curve so that neighbours do not collide.
        labelled = points if name == "none" else [points[0], points[-1]]
        for x, y, ef in labelled:
            offset = (4, -11) if i % 2 == 0 else (-8, 7)
            ax.annotate(f"ef {ef}", (x, y), textcoords="offset points", xytext=offset, fontsize=7)
    ax.axhline(RECALL_TARGET, color="grey", lw=0.8, ls="-.")
    ax.axvline(FILTERED_P50_TARGET_MS, color="grey", lw=0.8, ls=":")
    ax.text(ax.get_xlim()[0], RECALL_TARGET, f" recall {RECALL_TARGET}", color="grey", fontsize=7, va="bottom")
    ax.set_xlabel("p50 latency (ms)")
    ax.set_ylabel("recall@10")
    build = result["build"]
    m, efc = build["hnsw_m"] or "16 (default)", build["hnsw_ef_construction"] or "200 (default)"
    ax.set_title(f"EF_RUNTIME sweep at {result['items']:,} items, M {m}, EF_CONSTRUCTION {efc}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_plots(results: list[dict[str, Any]]) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    plot_latency(results, RESULTS_DIR / "latency_vs_size.png")
    plot_ef_tradeoff(results[-1], RESULTS_DIR / "ef_runtime_tradeoff.png")
    log.info("plots in %s", RESULTS_DIR)
