"""import_events.py against a real Redis: what it writes, that a second run writes nothing, that
an interrupted run resumes, and that a bad file writes nothing and names its lines."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import redis
from conftest import FIXED_NOW, make_products

import import_events
from local_redis import LocalRedis
from recommender import PastEvent, ProductNotFoundError, RedisRecommender

PRODUCTS = make_products(30)
DAY = 86400.0
# Three baskets: t0001 goes with t0002 twice, with t0003 once; u3 views without a session.
EVENTS = [
    ("u1", "t0001", "purchase", FIXED_NOW - 3 * DAY, "b1"),
    ("u1", "t0002", "purchase", FIXED_NOW - 3 * DAY, "b1"),
    ("u2", "t0001", "purchase", FIXED_NOW - 2 * DAY, "b2"),
    ("u2", "t0002", "purchase", FIXED_NOW - 2 * DAY, "b2"),
    ("u2", "t0003", "cart", FIXED_NOW - 2 * DAY, "b2"),
    ("u3", "t0004", "view", FIXED_NOW - DAY, ""),
    ("u3", "t0005", "view", FIXED_NOW - DAY + 60, ""),
]


def write_csv(path: Path, rows: list[tuple], header: str = "user_id,product_id,event,timestamp,session_id") -> Path:
    path.write_text(header + "\n" + "".join(",".join(str(v) for v in row) + "\n" for row in rows))
    return path


def recommender(client: redis.Redis, index: str = "recommend:idx") -> RedisRecommender:
    # the CLI's defaults for the first; keys of their own for the others, users' included
    default = index == "recommend:idx"
    rec = RedisRecommender(
        client,
        index_name=index,
        key_prefix="product:" if default else f"{index}:product:",
        user_key_prefix="user:" if default else f"{index}:user:",
        clock=lambda: FIXED_NOW,
    )
    rec.create_index()
    rec.index_products(PRODUCTS)
    return rec


def counts(rec: RedisRecommender, product: str) -> dict[str, float]:
    return {c.id: round(c.why.co_count or 0.0, 6) for c in rec.similar(product, signal="co_occurrence").candidates}


def run_cli(local_redis: LocalRedis, *args: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(import_events.time, "time", lambda: FIXED_NOW)
    return import_events.main([*args, "--redis-url", local_redis.url])


def test_an_import_counts_as_the_live_events_would_and_only_once(
    local_redis: LocalRedis,
    redis_client: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    imported = recommender(redis_client)
    live = recommender(redis_client, "live:idx")
    for user, product, event, at, session in EVENTS:
        live.record_event(user, product, event, at=at, session_id=session or None)  # type: ignore[arg-type]
    path = write_csv(tmp_path / "events.csv", EVENTS)
    assert run_cli(local_redis, "--input", str(path), monkeypatch=monkeypatch) == 0
    assert "imported 7 events" in capsys.readouterr().out
    for product in ("t0001", "t0002", "t0003", "t0004"):
        assert counts(imported, product) == pytest.approx(counts(live, product))
    # two co-purchases 3 and 2 days ago, a cart (half a purchase) 2 days ago; half-life 90 days
    expected = {"t0002": 2 ** (-3 / 90) + 2 ** (-2 / 90), "t0003": 0.5 * 2 ** (-2 / 90)}
    assert counts(imported, "t0001") == pytest.approx(expected, abs=1e-4)
    assert imported.recent_clicks("u2") == ["t0003", "t0002", "t0001"]
    assert "t0003" in imported.seen("u2")
    before = {key: redis_client.dump(key) for key in redis_client.scan_iter("{recommend:idx:co:*")}
    assert run_cli(local_redis, "--input", str(path), monkeypatch=monkeypatch) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert {key: redis_client.dump(key) for key in redis_client.scan_iter("{recommend:idx:co:*")} == before


def test_an_interrupted_import_resumes_after_its_last_batch(redis_client: redis.Redis) -> None:
    whole = recommender(redis_client, "whole:idx")
    whole.import_events([PastEvent(*row) for row in EVENTS], "file-1", batch_size=2)  # type: ignore[arg-type]
    resumed = recommender(redis_client)

    def breaks_after_four() -> object:
        for i, row in enumerate(EVENTS):
            if i == 4:
                raise ConnectionError("the importer died")
            yield PastEvent(*row)  # type: ignore[arg-type]

    with pytest.raises(ConnectionError):
        resumed.import_events(breaks_after_four(), "file-1", batch_size=2)  # type: ignore[arg-type]
    assert resumed.import_progress("file-1") == (4, False)
    report = resumed.import_events([PastEvent(*row) for row in EVENTS], "file-1", batch_size=2)  # type: ignore[arg-type]
    assert (report.applied, report.skipped, report.already_done) == (3, 4, False)
    assert resumed.import_progress("file-1") == (7, True)
    for product in ("t0001", "t0002", "t0004"):
        assert counts(resumed, product) == pytest.approx(counts(whole, product))


def test_an_unknown_product_in_a_batch_writes_none_of_it(redis_client: redis.Redis) -> None:
    rec = recommender(redis_client)
    before = redis_client.dbsize()
    with pytest.raises(ProductNotFoundError):
        rec.import_events(
            [PastEvent("u1", "t0001", "view", FIXED_NOW), PastEvent("u1", "nope", "view", FIXED_NOW)], "x"
        )
    assert redis_client.dbsize() == before


@pytest.mark.parametrize(
    ("rows", "header", "expected"),
    [
        (
            [("u1", "t0001", "buy", FIXED_NOW, "s")],
            None,
            "line 2: event: event must be one of view, click, cart, purchase",
        ),
        ([("u1", "t0001", "view", FIXED_NOW + DAY, "s")], None, "line 2: timestamp:"),
        ([("u1", "t0001", "view", "1969-01-01T00:00:00Z", "s")], None, "before 1970"),
        ([("u1", "t0001", "view", "nan", "s")], None, "line 2: timestamp:"),
        ([("u1", "t0001", "view")], "user_id,product_id,event", "line 1: the header has no 'timestamp' column"),
        (
            [("u1", "nope", "view", FIXED_NOW, "s"), ("u2", "nope", "view", FIXED_NOW, "s")],
            None,
            "line 2: product_id: no product 'nope'",
        ),
    ],
)
def test_a_bad_file_writes_nothing_and_names_its_lines(
    local_redis: LocalRedis,
    redis_client: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    rows: list[tuple],
    header: str | None,
    expected: str,
) -> None:
    recommender(redis_client)
    good = [("u9", "t0001", "view", FIXED_NOW - 10, "s"), ("u9", "t0002", "view", FIXED_NOW - 10, "s")]
    path = write_csv(tmp_path / "events.csv", [*rows, *good] if header is None else rows, *([header] if header else []))
    before = redis_client.dbsize()
    assert run_cli(local_redis, "--input", str(path), monkeypatch=monkeypatch) == 2
    assert expected in capsys.readouterr().err
    assert redis_client.dbsize() == before


def test_jsonl_gz_files_are_read(
    local_redis: LocalRedis, redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = recommender(redis_client)
    path = tmp_path / "events.jsonl.gz"
    lines = [{"user_id": u, "product_id": p, "event": e, "timestamp": t, "session_id": s} for u, p, e, t, s in EVENTS]
    path.write_bytes(gzip.compress("".join(json.dumps(line) + "\n" for line in lines).encode()))
    assert run_cli(local_redis, "--input", str(path), monkeypatch=monkeypatch) == 0
    assert set(counts(rec, "t0001")) == {"t0002", "t0003"}
