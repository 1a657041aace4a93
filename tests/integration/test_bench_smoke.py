"""The benchmark scripts still run end to end, at toy sizes, and what they report holds.

They are scripts, not tests, but a refactor of the library they call (index_products,
record_click, search_rows, the demo's endpoints) must not leave them broken until the next time
someone needs a figure. Each run here starts its own Redis with Search on a free port and takes
seconds; nothing asserts a timing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import contention, popularity, retrieval
from bench import http as http_bench
from bench.synthetic_catalog import FILTER_CASES, make_catalog, make_queries, specs_for


def test_synthetic_catalog_is_seeded_and_its_vectors_are_unit() -> None:
    first, second = make_catalog(400, seed=3), make_catalog(400, seed=3)
    assert np.array_equal(first.vectors, second.vectors)
    assert first.names == second.names
    assert np.allclose(np.linalg.norm(first.vectors, axis=1), 1.0, atol=1e-5)
    assert not np.array_equal(first.vectors, make_catalog(400, seed=4).vectors)


def test_filter_masks_select_what_the_filters_say() -> None:
    catalog = make_catalog(600, seed=5)
    queries = make_queries(catalog, 20, seed=5)
    spec = specs_for(FILTER_CASES["cat+stock+price+text"], queries)[0]
    mask = spec.mask(catalog)
    assert mask is not None and mask.any()
    assert set(catalog.category[mask]) == {spec.category}
    assert catalog.in_stock[mask].all() and catalog.waterproof[mask].all()
    assert specs_for(FILTER_CASES["none"], queries)[0].mask(catalog) is None


def test_retrieval_bench_writes_every_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The load check judges each timed run over at least half a second of /proc/stat ticks;
    # at toy sizes that wait would be nearly all of the test.
    monkeypatch.setattr(contention, "MIN_LOAD_WINDOW_S", 0.0)
    output = tmp_path / "retrieval.json"
    sizes = ["--items", "300", "--queries", "12", "--warmup", "2", "--ef", "10,100"]
    retrieval.main([*sizes, "--wait-quiet", "0", "--no-plot", "--output", str(output)])
    report = json.loads(output.read_text())
    size = report["sizes"][0]
    assert size["ingest"]["num_docs"] == 300 and size["ingest"]["indexing_failures"] == 0
    assert set(size["headline"]["cases"]) == set(FILTER_CASES)
    for case in size["headline"]["cases"].values():
        assert case["recall_at_10"] is None or 0.0 <= case["recall_at_10"] <= 1.0
    assert set(size["ef_sweep"]) == {"10", "100"}
    assert "hybrid_policy" in size and "targets_at_library_defaults" in report


def test_popularity_bench_sees_the_product_hash_reindexed(tmp_path: Path) -> None:
    output = tmp_path / "popularity.json"
    sizes = ["--items", "200", "--clicks", "400", "--samples", "8", "--queries", "10", "--batch", "100"]
    popularity.main([*sizes, "--designs", "hash,zset", "--output", str(output)])
    designs = {d["key"]: d for d in json.loads(output.read_text())["designs"]}
    # A write to any field of an indexed hash re-indexes the document (a new doc id each time);
    # a sorted set beside the index leaves the documents alone.
    assert designs["hash"]["index"]["after"]["max_doc_id"] > 200
    assert designs["zset"]["index"]["after"]["max_doc_id"] == 200
    assert designs["zset"]["recall_at_10"]["after"] == designs["zset"]["recall_at_10"]["before"]
    assert designs["zset"]["top_10_read"] is not None and designs["hash"]["top_10_read"] is None
    assert output.with_suffix(".png").stat().st_size > 0


def test_http_bench_measures_phases_floors_and_parsers(tmp_path: Path) -> None:
    output = tmp_path / "http.json"
    status = http_bench.main(["--requests", "4", "--samples", "10", "--concurrency", "1,2", "--output", str(output)])
    report = json.loads(output.read_text())
    assert status == 0
    phases = {row["endpoint"] for row in report["rows"]}
    assert {"/search repeated", "/search fresh", "/click"} <= phases
    assert all(row["errors"] == 0 for row in report["rows"])
    assert set(report["floors_by_phase"]) == phases
    used = {name: row["parser_class"] for name, row in report["parsers"]["table"].items()}
    assert used == {
        "hiredis RESP2": "_HiredisParser",
        "hiredis RESP3": "_HiredisParser",
        "python RESP2": "_RESP2Parser",
        "python RESP3": "_RESP3Parser",
    }


def test_http_bench_against_a_baseline_ref_interleaves_both_servers(tmp_path: Path) -> None:
    output = tmp_path / "http_baseline.json"
    status = http_bench.main(["--baseline", "HEAD", "--requests", "3", "--output", str(output)])
    report = json.loads(output.read_text())
    assert status == 0 and output.with_suffix(".png").exists()
    assert len(report["baseline"]["commit"]) == 40
    for server in ("ours", "baseline"):
        assert set(report["latency"][server]) == {"repeated", "fresh"}
        assert report["p50_ratio_fresh_over_cached"][server] > 0
    assert set(report["p50_ratio_ours_over_baseline"]) == {"repeated", "fresh"}
