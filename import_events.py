"""Import past shopper events (views, clicks, carts, purchases) into Redis, as if each had been
recorded when it happened: co-occurrence counts, popularity and each user's recent products.

    python import_events.py --input events.csv          # or .jsonl, either optionally .gz
    python import_events.py --input events.jsonl --redis-url redis://localhost:6379

A CSV file has a header row; a JSON Lines file one object per line. Each event has user_id,
product_id, event (view, click, cart or purchase), timestamp (ISO 8601, or seconds since 1970)
and optionally session_id (events of one session count as bought together; without one, events
of a user at most 30 minutes apart do).

The whole file is checked first, streaming, and every bad line is reported with its line and
field; if there is any, nothing is written (exit status 2). Re-importing a file that was
imported before does nothing (it is known by its SHA-256), so counts never double; an import
that was interrupted resumes after its last applied batch.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from recengine.co_occurrence_rules import check_session_id
from recengine.event_types import EventType, check_event_time, check_event_type
from recommender import check_product_id, check_user_id

REQUIRED_COLUMNS = ("user_id", "product_id", "event", "timestamp")
OPTIONAL_COLUMNS = ("session_id",)
FORMATS = (".csv", ".jsonl")
MAX_LINE_CHARS = 100_000
MAX_REPORTED_LINES = 20

Problem = tuple[int, str]


class EventFileError(Exception):
    """A file the importer cannot use. The message is written for the user (main prints it
    without a traceback); `problems` keeps each finding, "line N: field: what", for tests."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


@dataclass(frozen=True)
class EventLine:
    """One checked event of the file, with the line it starts on."""

    line_no: int
    user_id: str
    product_id: str
    event: EventType
    at: float
    session_id: str


# --- one field at a time: a value in, (value, None) or (None, problem) out -----------------


def parse_timestamp(value: Any, now: float) -> float:
    """Seconds since 1970 from ISO 8601 text (no zone means UTC) or a number of seconds, checked
    as the library checks an event's time (check_event_time). ValueError says why."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected ISO 8601 text or seconds since 1970, got {json.dumps(value)}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                raise ValueError(
                    f"{text!r} is neither ISO 8601 (2011-10-01T09:30:00Z) nor seconds since 1970"
                ) from None
            seconds = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    try:
        return check_event_time(seconds, now)
    except ValueError as exc:  # said of the value as the file spells it
        raise ValueError(str(exc).replace(repr(seconds), repr(value), 1)) from None


def _identifier(value: Any) -> str:
    """Ids may be written as JSON integers (customer numbers); any other non-text is refused."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {json.dumps(value)}")
    return value.strip()


def check_fields(fields: dict[str, Any], line_no: int, now: float) -> tuple[EventLine | None, list[str]]:
    """One event from its raw fields, or every problem of the line, each naming its field."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    checks = {
        "user_id": lambda v: check_user_id(_identifier(v)),
        "product_id": lambda v: check_product_id(_identifier(v)),
        "event": lambda v: check_event_type(v.strip() if isinstance(v, str) else v),
        "timestamp": lambda v: parse_timestamp(v, now),
    }
    for name, check in checks.items():
        try:
            values[name] = check(fields.get(name))
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    session = fields.get("session_id")
    values["session_id"] = ""
    if session is not None and session != "":
        try:
            values["session_id"] = check_session_id(_identifier(session))
        except ValueError as exc:
            problems.append(f"session_id: {exc}")
    if problems:
        return None, problems
    return EventLine(
        line_no, values["user_id"], values["product_id"], values["event"], values["timestamp"], values["session_id"]
    ), []


# --- whole files, streamed ---------------------------------------------------------------------


def file_format(path: Path) -> str:
    """.csv or .jsonl, looking through a trailing .gz; EventFileError for anything else."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    if kind not in FORMATS:
        raise EventFileError(
            f"{path}: unsupported input type {kind or '(no extension)'!r}: use a .csv or .jsonl file (or .csv.gz, .jsonl.gz)"
        )
    return kind


def open_text(path: Path, binary: IO[bytes]) -> IO[str]:
    """The file as UTF-8 text (a spreadsheet's BOM is skipped), un-gzipped when it is .gz."""
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.GzipFile(fileobj=binary), encoding="utf-8-sig", newline="")
    return io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")


def _jsonl_records(stream: IO[str]) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    for line_no, line in enumerate(stream, start=1):
        if len(line) > MAX_LINE_CHARS:
            yield line_no, None, f"the line is {len(line):,} characters long, over the limit of {MAX_LINE_CHARS:,}"
            continue
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield line_no, None, f"invalid JSON: {exc.msg} at column {exc.colno}"
            continue
        except (RecursionError, ValueError):
            yield line_no, None, "invalid JSON: nested too deeply or not a number (an event is one flat object)"
            continue
        if not isinstance(value, dict):
            yield line_no, None, f"expected a JSON object, got {type(value).__name__}"
            continue
        missing = [name for name in REQUIRED_COLUMNS if name not in value]
        if missing:
            yield line_no, None, "missing " + ", ".join(missing)
            continue
        yield line_no, value, None


def _csv_records(stream: IO[str]) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    csv.field_size_limit(MAX_LINE_CHARS)
    rows = csv.reader(stream, strict=True)
    try:
        header = [name.strip() for name in next(rows, [])]
    except csv.Error as exc:
        yield 1, None, f"malformed CSV header: {exc}"
        return
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    duplicated = sorted({name for name in header if name and header.count(name) > 1})
    if not header or missing or duplicated:
        problems = [f"the header has no {name!r} column" for name in missing]
        problems += [f"the header has more than one {name!r} column" for name in duplicated]
        yield 1, None, "; ".join(problems) or "the file is empty: the first line must be a header"
        return
    while True:
        start = rows.line_num + 1
        try:
            row = next(rows, None)
        except csv.Error as exc:
            yield start, None, f'malformed CSV: {exc} (a " inside a quoted value is written twice: "")'
            return
        if row is None:
            return
        if not any(value.strip() for value in row):
            continue
        if len(row) != len(header):
            yield start, None, f"{len(row)} values but the header has {len(header)} columns"
            continue
        yield start, dict(zip(header, row, strict=True)), None


def read_events(path: Path, stream: IO[str], now: float) -> Iterator[tuple[EventLine | None, list[str]]]:
    """Every event of the file in order, checked, as (event, []) or (None, ["line N: ..."]);
    streamed, so a file of any size costs one line of memory."""
    records = _csv_records(stream) if file_format(path) == ".csv" else _jsonl_records(stream)
    try:
        for line_no, fields, problem in records:
            if fields is None:
                yield None, [f"line {line_no}: {problem}"]
                continue
            event, problems = check_fields(fields, line_no, now)
            yield event, [f"line {line_no}: {message}" for message in problems]
    except UnicodeDecodeError as exc:
        yield None, [f"not UTF-8 text (byte 0x{exc.object[exc.start]:02X}): save the file as UTF-8"]
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        yield None, [f"cannot read the file to its end: {exc}"]


def problems_error(path: Path, problems: list[str]) -> EventFileError:
    """Every problem in one message, the first MAX_REPORTED_LINES of them spelled out."""
    shown = problems[:MAX_REPORTED_LINES]
    if len(problems) > MAX_REPORTED_LINES:
        shown.append(f"... and {len(problems) - MAX_REPORTED_LINES} more")
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    return EventFileError(f"{path}: {count}, nothing imported:\n  " + "\n  ".join(shown), problems)


class DigestingReader(io.RawIOBase):
    """A binary file that hashes what is read through it: the file's SHA-256 comes out of the
    checking pass, at no extra read."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        self.sha256.update(data)
        self.bytes_read += len(data)
        buffer[: len(data)] = data
        return len(data)
