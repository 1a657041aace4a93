"""The index-choice benchmarks at a toy size (bench/hnsw_settings.py, bench/listpack.py,
bench/hybrid_batches.py): each runs end to end against a real bundled Redis and reports every
section. Nothing here asserts a timing."""

from __future__ import annotations

import json
from pathlib import Path

from bench import hnsw_settings, hybrid_batches, listpack, million


def test_hnsw_settings_collects_a_row_per_setting_across_runs(tmp_path: Path) -> None:
    output = tmp_path / "settings.json"
    common = ["--products", "3000", "--queries", "30", "--latency-queries", "30", "--ef-sweep", "50,100"]
    hnsw_settings.main([*common, "--settings", "8:100", "--output", str(output)])
    rows = hnsw_settings.main([*common, "--settings", "8:100:2048", "--output", str(output)])
    assert [row["setting"] for row in rows] == ["M 8 EFC 100", "M 8 EFC 100 listpack 2048"]
    bundled, raised = rows
    assert bundled["hash_max_listpack_value"] == 2048  # the bundled Redis' own setting
    assert raised["product_hash_encodings"] == {"listpack": 200}
    assert set(bundled["recall_unfiltered"]) == {"50", "100"}
    assert bundled["at_ef_runtime"]["medium"]["redis_us_per_search"] > 0
    assert json.loads(output.read_text())["rows"].keys() == {"M 8 EFC 100", "M 8 EFC 100 listpack 2048"}


def test_listpack_compares_both_encodings_of_the_same_products(tmp_path: Path) -> None:
    result = listpack.main(["--products", "1500", "--rounds", "1", "--output", str(tmp_path / "lp.json")])
    memory = result["memory"]
    assert memory["hashtable"]["encodings"] == ["hashtable"] and memory["listpack"]["encodings"] == ["listpack"]
    assert memory["listpack"]["hash_bytes_mean"] < memory["hashtable"]["hash_bytes_mean"]
    assert all(row["HMGET"] > 0 and row["medium"] > 0 for row in result["usec_per_call_median"].values())


def test_hybrid_batches_measures_every_variant_on_a_kept_catalogue(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    million.main(
        ["--products", "3000", "--vector-type", "FLOAT16", "--queries", "20", "--latency-queries", "20",
         "--clients", "1", "--cases", "none", "--users", "0", "--data-dir", str(kept),
         "--output", str(tmp_path / "million.json")]
    )  # fmt: skip
    result = hybrid_batches.main(["--reuse", str(kept), "--queries", "20", "--output", str(tmp_path / "hb.json")])
    for case in hybrid_batches.CASES:
        rows = result["cases"][case]
        assert rows.keys() == hybrid_batches.VARIANTS.keys()
        assert rows["Redis' choice"]["same_top10_as_redis_choice"] == 1.0
        assert rows["ADHOC_BF"]["same_top10_as_redis_choice"] >= 0.9  # both exact over the filtered set
