"""import_events.py's reading and checking of event files, line by line (no Redis)."""

from __future__ import annotations

import gzip
import hashlib
import io
import math
from pathlib import Path

import pytest

from import_events import (
    DigestingReader,
    EventFileError,
    EventLine,
    file_format,
    open_text,
    parse_timestamp,
    problems_error,
    read_events,
)

NOW = 1_790_000_000.0
HEADER = "user_id,product_id,event,timestamp,session_id\n"


def read(name: str, text: str) -> list[tuple[EventLine | None, list[str]]]:
    return list(read_events(Path(name), io.StringIO(text, newline=""), NOW))


def problems(name: str, text: str) -> list[str]:
    return [p for _, found in read(name, text) for p in found]


def test_a_good_csv_gives_its_events_with_their_lines() -> None:
    text = HEADER + "u1,p1,purchase,2011-10-01T09:30:00Z,inv1\n\nu2,p2,view,1317461400,\n"
    events = [event for event, _ in read("e.csv", text)]
    assert events == [
        EventLine(2, "u1", "p1", "purchase", 1317461400.0, "inv1"),
        EventLine(4, "u2", "p2", "view", 1317461400.0, ""),
    ]


def test_a_good_jsonl_takes_numbers_for_ids_and_times() -> None:
    text = '{"user_id": 17850, "product_id": "85123A", "event": "cart", "timestamp": 1317461400.5}\n'
    [(event, found)] = read("e.jsonl", text)
    assert found == [] and event == EventLine(1, "17850", "85123A", "cart", 1317461400.5, "")


def test_every_bad_field_of_a_line_is_named() -> None:
    text = HEADER + "u 1,p1,buy,yesterday,inv1\n"
    found = problems("e.csv", text)
    assert [p.split(":")[1].strip() for p in found] == ["user_id", "event", "timestamp"]
    assert all(p.startswith("line 2:") for p in found)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1969-12-31T23:59:59Z", "before 1970"),
        ("-5", "before 1970"),
        (str(NOW + 3600), "in the future"),
        (str(NOW * 1000), "milliseconds"),
        ("nan", "not a finite time"),
        ("inf", "not a finite time"),
        ("2011-13-01", "neither ISO 8601"),
    ],
)
def test_times_out_of_range_are_refused(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_timestamp(value, NOW)


def test_a_time_without_a_zone_is_utc_and_a_small_clock_skew_is_accepted() -> None:
    assert parse_timestamp("2011-10-01T09:30:00", NOW) == 1317461400.0
    assert parse_timestamp(NOW + 60, NOW) == NOW + 60


def test_a_missing_column_is_one_problem_on_the_header() -> None:
    found = problems("e.csv", "user_id,product_id,event\nu1,p1,click\n")
    assert found == ["line 1: the header has no 'timestamp' column"]


def test_a_jsonl_line_without_a_field_says_which() -> None:
    found = problems("e.jsonl", '{"user_id": "u", "product_id": "p", "event": "click"}\n')
    assert found == ["line 1: missing timestamp"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "expected a JSON object"),
        ("{nope", "invalid JSON"),
        ('{"user_id": "u", "product_id": "p", "event": "click", "timestamp": true}', "timestamp"),
        ('{"user_id": 1.5, "product_id": "p", "event": "click", "timestamp": 5}', "user_id"),
        ('{"user_id": "u", "product_id": "p", "event": "click", "timestamp": 5, "session_id": "a b"}', "session_id"),
    ],
)
def test_bad_jsonl_lines_are_reported(line: str, message: str) -> None:
    [found] = problems("e.jsonl", line + "\n")
    assert found.startswith("line 1:") and message in found


def test_a_csv_row_of_the_wrong_width_and_a_broken_quote_are_reported_with_their_line() -> None:
    found = problems("e.csv", HEADER + "u1,p1,click,5,s,extra\n" + 'u2,"p2,click,5,s\n')
    assert found[0] == "line 2: 6 values but the header has 5 columns"
    assert found[1].startswith("line 3:")


@pytest.mark.parametrize("name", ["e.txt", "e", "e.csv.zip"])
def test_an_unknown_format_is_refused(name: str) -> None:
    with pytest.raises(EventFileError, match=r"use a \.csv or \.jsonl"):
        file_format(Path(name))


def test_gzipped_files_are_read_and_hashed_as_stored(tmp_path: Path) -> None:
    path = tmp_path / "e.csv.gz"
    data = gzip.compress((HEADER + "u1,p1,click,5,s\n").encode())
    path.write_bytes(data)
    assert file_format(path) == ".csv"
    with path.open("rb") as raw:
        digesting = DigestingReader(raw)
        events = list(read_events(path, open_text(path, io.BufferedReader(digesting)), NOW))
    assert [e.product_id for e, _ in events if e] == ["p1"]
    assert digesting.sha256.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_report_spells_out_the_first_twenty_problems() -> None:
    error = problems_error(Path("e.csv"), [f"line {i}: bad" for i in range(1, 31)])
    assert "30 problems, nothing imported" in str(error)
    assert "line 20: bad" in str(error) and "line 21: bad" not in str(error) and "and 10 more" in str(error)
    assert len(error.problems) == 30


def test_nan_is_no_time() -> None:
    with pytest.raises(ValueError):
        parse_timestamp(math.nan, NOW)
