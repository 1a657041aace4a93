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

import argparse
import csv
import gzip
import hashlib
import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import redis
from tqdm import tqdm

from build_catalog import describe_redis, redis_target
from local_redis import LocalRedisError, SearchUnavailableError
from recengine.catalog_input import MAX_LINE_CHARS, jsonl_objects
from recengine.cli_types import positive_int
from recengine.co_occurrence_rules import check_session_id
from recengine.event_import import DEFAULT_BATCH, PastEvent
from recengine.event_types import EventType, check_event_time, check_event_type
from recommender import RedisRecommender, check_product_id, check_user_id

REQUIRED_COLUMNS = ("user_id", "product_id", "event", "timestamp")
OPTIONAL_COLUMNS = ("session_id",)
FORMATS = (".csv", ".jsonl")
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
    for line_no, parsed in jsonl_objects(stream, "an event"):
        if isinstance(parsed, str):
            yield line_no, None, parsed
            continue
        missing = [name for name in REQUIRED_COLUMNS if name not in parsed]
        if missing:
            yield line_no, None, "missing " + ", ".join(missing)
            continue
        yield line_no, parsed, None


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


# --- the two passes: check the whole file, then import it ------------------------------------


@dataclass
class CheckedFile:
    """What the checking pass found: the events' count, the file's SHA-256, the first line of
    each product named, and every problem."""

    events: int
    sha256: str
    first_line_of: dict[str, int]
    problems: list[str]


def check_file(path: Path, now: float) -> CheckedFile:
    """Every line of the file checked, streaming, with a progress bar over its bytes."""
    file_format(path)
    first_line_of: dict[str, int] = {}
    problems: list[str] = []
    count = 0
    try:
        raw = path.open("rb")
    except FileNotFoundError:
        raise EventFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise EventFileError(f"{path}: cannot read it: {exc.strerror}") from None
    with raw, tqdm(total=path.stat().st_size, desc="checking", unit="B", unit_scale=True) as bar:
        digesting = DigestingReader(raw)
        stream = open_text(path, io.BufferedReader(digesting, buffer_size=1 << 20))
        for event, found in read_events(path, stream, now):
            problems += found
            if event is not None:
                count += 1
                first_line_of.setdefault(event.product_id, event.line_no)
            if count % 10_000 == 0:
                bar.update(digesting.bytes_read - bar.n)
        bar.update(digesting.bytes_read - bar.n)
    if count == 0 and not problems:
        problems.append("the file holds no events")
    return CheckedFile(count, digesting.sha256.hexdigest(), first_line_of, problems)


def unknown_products(recommender: RedisRecommender, first_line_of: dict[str, int]) -> list[str]:
    """A problem for each product the index does not hold, at the first line naming it."""
    known = recommender.get_products(sorted(first_line_of))
    missing = sorted((line, pid) for pid, line in first_line_of.items() if pid not in known)
    return [
        f"line {line}: product_id: no product {pid!r} in {recommender.index_name} (load the catalogue first)"
        for line, pid in missing
    ]


def past_events(path: Path, now: float) -> Iterator[PastEvent]:
    """The file's events again, for the import (the checking pass found them all good)."""
    with path.open("rb") as raw:
        for event, _ in read_events(path, open_text(path, raw), now):
            if event is not None:
                yield PastEvent(event.user_id, event.product_id, event.event, event.at, event.session_id)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Import past events (view, click, cart, purchase) into Redis: co-occurrence, popularity and each "
            "user's recent products, as if each had been recorded when it happened. The whole file is checked "
            "first and every bad line reported with its line and field; if there is any, nothing is imported "
            "(exit status 2). Re-importing a file does nothing (it is known by its SHA-256); an interrupted "
            "import resumes."
        ),
    )
    parser.add_argument(
        "--input",
        type=Path,
        required=True,
        help="events as CSV (.csv, with a header row) or JSON Lines (.jsonl), optionally gzipped (.gz): user_id, "
        "product_id, event (view, click, cart or purchase), timestamp (ISO 8601, UTC when it names no zone, or "
        "seconds since 1970) and optionally session_id (events of one session count as bought together; "
        "without one, events of a user at most 30 minutes apart do)",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="Redis with Search holding the catalogue, e.g. redis://localhost:6379; default: $REDIS_URL, else "
        "localhost:6379 if it has Search, else the bundled local Redis (data in .redis-data/)",
    )
    parser.add_argument("--index-name", default="recommend:idx", help="the catalogue's index (default: %(default)s)")
    parser.add_argument(
        "--key-prefix", default="product:", help="prefix of the product hash keys (default: %(default)s)"
    )
    parser.add_argument("--user-key-prefix", default="user:", help="prefix of the user keys (default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=DEFAULT_BATCH, help="events per transaction (default: %(default)s)"
    )
    return parser


def run(args: argparse.Namespace) -> str:
    """Check, connect, check the products, import: what to print at the end."""
    now = time.time()
    checked = check_file(args.input, now)
    if checked.problems:
        raise problems_error(args.input, checked.problems)
    with redis_target(args.redis_url) as client:
        recommender = RedisRecommender(
            client, index_name=args.index_name, key_prefix=args.key_prefix, user_key_prefix=args.user_key_prefix
        )
        if not recommender.index_exists():
            raise EventFileError(
                f"{describe_redis(args.redis_url)} has no index {args.index_name!r}: load the catalogue first "
                "(build_catalog.py --load)"
            )
        missing = unknown_products(recommender, checked.first_line_of)
        if missing:
            raise problems_error(args.input, missing)
        applied, done = recommender.import_progress(checked.sha256)
        if done:
            return f"{args.input} was imported before (SHA-256 {checked.sha256[:16]}…): nothing to do"
        started = time.perf_counter()
        with tqdm(total=checked.events, initial=applied, desc="importing", unit="event") as bar:
            report = recommender.import_events(
                past_events(args.input, now), checked.sha256, batch_size=args.batch_size, on_batch=bar.update
            )
        seconds = time.perf_counter() - started
    resumed = f" (resumed after {report.skipped:,} applied before)" if report.skipped else ""
    return (
        f"imported {report.applied:,} events from {args.input} in {seconds:.1f} s "
        f"({report.applied / max(seconds, 1e-9):,.0f} events/s){resumed}"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        print(run(args))
    except (EventFileError, LocalRedisError, SearchUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"error: cannot use {describe_redis(args.redis_url)}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
