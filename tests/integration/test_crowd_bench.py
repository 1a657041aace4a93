"""The crowd benchmark's two scripts end to end: the Online Retail converter on a handmade
slice of the source (the full file is not in the repository), the shipped data it made, and
`bench.crowd --quick` against its own Redis (about 30-60 s: the 600 most bought products, 300
baskets, 100 customers). Nothing asserts a quality figure: those are measurements."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
from pathlib import Path

import pytest

from bench import crowd, online_retail
from bench.quality import evaluate_rankings
from recengine.catalog_input import load_products

ROOT = Path(__file__).resolve().parents[2]
HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
SLICE = HEADER + (
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850,United Kingdom\n"
    '536365,22752,"SET 7 BABUSHKA NESTING BOXES, BLUE",2,2010-12-01 08:26:00,7.65,17850,United Kingdom\n'
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,2,2010-12-01 08:26:00,2.95,17850,United Kingdom\n"
    "536365,POST,POSTAGE,1,2010-12-01 08:26:00,18.00,17850,United Kingdom\n"
    "536366,85049a,CHRISTMAS CRAFT LITTLE FRIENDS,3,2010-12-01 08:28:00,2.10,,United Kingdom\n"
    "536366,gift_0001_20,Dotcomgiftshop Gift Voucher £20.00,1,2010-12-01 08:28:00,17.02,,United Kingdom\n"
    "536366,C2,CARRIAGE,1,2010-12-01 08:28:00,50.00,,United Kingdom\n"
    "536366,BANK CHARGES,Bank Charges,1,2010-12-01 08:28:00,15.00,,United Kingdom\n"
    "536367,22752,,56,2010-12-01 08:34:00,0.00,,United Kingdom\n"
    "C536379,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-1,2010-12-01 09:41:00,2.55,14527,United Kingdom\n"
)


def test_the_converter_writes_a_catalogue_build_catalog_accepts_and_purchase_events(tmp_path: Path) -> None:
    source = tmp_path / "slice.csv.gz"
    source.write_bytes(gzip.compress(SLICE.encode()))
    assert online_retail.main(["--input", str(source), "--out-dir", str(tmp_path / "out")]) == 0
    products_jsonl = tmp_path / "products.jsonl"
    products_jsonl.write_bytes(gzip.decompress((tmp_path / "out" / "products.jsonl.gz").read_bytes()))
    products = load_products(products_jsonl)
    assert [(p["id"], p["name"], p["price"]) for p in products] == [
        ("85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 2.75),
        ("22752", "SET 7 BABUSHKA NESTING BOXES, BLUE", 7.65),
        ("85049a", "CHRISTMAS CRAFT LITTLE FRIENDS", 2.1),
    ]
    assert {(p["category"], p["brand"], p["rating"], p["in_stock"]) for p in products} == {
        ("gifts", "unknown", 0.0, True)
    }
    events_text = gzip.decompress((tmp_path / "out" / "events.csv.gz").read_bytes()).decode()
    assert list(csv.DictReader(io.StringIO(events_text))) == [
        {"user_id": "17850", "product_id": "85123A", "event": "purchase", "timestamp": "2010-12-01T08:26:00Z", "session_id": "536365"},
        {"user_id": "17850", "product_id": "22752", "event": "purchase", "timestamp": "2010-12-01T08:26:00Z", "session_id": "536365"},
        {"user_id": "guest-536366", "product_id": "85049a", "event": "purchase", "timestamp": "2010-12-01T08:28:00Z", "session_id": "536366"},
    ]  # fmt: skip


def test_the_converter_output_is_the_same_bytes_every_time(tmp_path: Path) -> None:
    source = tmp_path / "slice.csv"
    source.write_text(SLICE)
    for out in ("a", "b"):
        assert online_retail.main(["--input", str(source), "--out-dir", str(tmp_path / out)]) == 0
    for name in (online_retail.PRODUCTS_FILE, online_retail.EVENTS_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_a_file_that_is_not_the_source_gets_a_message_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "products.csv"
    source.write_text("id,name\np1,thing\n")
    assert online_retail.main(["--input", str(source), "--out-dir", str(tmp_path / "out")]) == 2
    assert "the header has no InvoiceNo" in capsys.readouterr().err
    source.write_text(HEADER + "536365,85123A,HOLDER,six,2010-12-01 08:26:00,2.55,17850,United Kingdom\n")
    assert online_retail.main(["--input", str(source), "--out-dir", str(tmp_path / "out")]) == 2
    assert "line 2:" in capsys.readouterr().err


def test_the_shipped_data_is_what_the_benchmark_reads() -> None:
    products = crowd.read_products(crowd.DATA_DIR / "products.jsonl.gz")
    assert len(products) == 3905 and len({p["id"] for p in products}) == 3905
    with gzip.open(crowd.DATA_DIR / "events.csv.gz", "rt") as events:
        assert events.readline().strip() == ",".join(online_retail.EVENT_COLUMNS)
    readme = (crowd.DATA_DIR / "README.md").read_text()
    assert "CC BY 4.0" in readme and "Daqing Chen" in readme


def test_the_metrics_agree_with_ranx() -> None:
    rng = random.Random(2)
    catalogue = [f"p{i}" for i in range(40)]
    relevant = {f"q{i}": frozenset(rng.sample(catalogue, rng.randint(1, 15))) for i in range(60)}
    rankings = {qid: rng.sample(catalogue, rng.randint(0, 12)) for qid in relevant}
    ours = crowd.method_result(rankings, relevant, 10, 0.0).metrics
    ranx, _ = evaluate_rankings(
        {qid: dict.fromkeys(r, 1) for qid, r in relevant.items()}, rankings, ("hit_rate@10", "recall@10", "mrr@10")
    )
    for metric, value in ranx.items():
        assert ours[metric] == pytest.approx(value, abs=1e-4)


def test_the_quick_benchmark_runs_every_task_through_redis(tmp_path: Path) -> None:
    output = tmp_path / "crowd.json"
    crowd.main(["--quick", "--output", str(output), "--cache-dir", str(tmp_path / "cache")])
    report = json.loads(output.read_text())
    assert report["data"]["products"] == crowd.QUICK_PRODUCTS and report["data"]["item_queries"] == 300
    expected = {
        "popularity", "content KNN (similar())", "co-occurrence (counts)", "co-occurrence (cosine)",
        "implicit BM25 item-item", f"implicit ALS ({crowd.ALS_FACTORS} factors)",
    }  # fmt: skip
    for section in report["item_task"].values():
        assert expected <= set(section["methods"])
        for method in section["methods"].values():
            assert all(0.0 <= value <= 1.0 for value in method["metrics"].values())
    assert {"for_you (today: session of replayed clicks)", "implicit ALS recommend", "popularity"} <= set(
        report["feed_task"]["methods"]
    )
    assert report["library_serves_crowd_signals"] == crowd.library_serves_crowd_signals()
    assert output.with_suffix(".png").stat().st_size > 0
