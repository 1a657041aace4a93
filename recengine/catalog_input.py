"""Reading and checking a catalogue's input file (JSONL or CSV, gzipped or not): text in,
products or problems out.

Every rule a product must meet is checked here, once, for the builder's input, for catalogs of
other ports (catalog_file.read_catalog) and for the admin API's writes; every problem is kept
with its line so that a bad file is reported completely, in file order, in one go.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recengine.catalog_schema import (
    OPTIONAL_DEFAULTS,
    REQUIRED_FIELDS,
    ExtraField,
    FieldKind,
    normalize_category,
)
from recengine.layout import PRODUCT_FIELDS
from recengine.validation import MAX_PRODUCT_ID_CHARS, TAG_SEPARATOR, field_problem

# Named after the builder, whose checks these were: its warnings keep one logger name.
log = logging.getLogger("build_catalog")

# A catalog record: the product's id, then the fields its hash stores, in that order.
RECORD_FIELDS = ("id", *PRODUCT_FIELDS)
TEXT_FIELDS = ("id", "name", "description", "category", "brand")
CSV_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
# One size limit for both input formats and for catalogs: a text field (a description is a
# paragraph, not a document) and a line (a JSONL line, a CSV row), which bounds what is parsed
# before any field is looked at. A JSON line can spell a character as a 6-character escape.
MAX_FIELD_CHARS = 10_000
MAX_LINE_CHARS = 100_000
MAX_REPORTED_LINES = 20
MAX_GZIP_BYTES = 1 << 30

# (line number, message) and (line number, raw fields): line numbers travel with the data
# so that problems found at different stages can still be reported in file order.
Problem = tuple[int, str]
Record = tuple[int, dict[str, Any]]


class CatalogError(Exception):
    """A file the builder cannot use (bad input, unwritable output, broken catalog). The
    message is written for the user: main prints it as it is, without a traceback, and
    `problems` keeps the individual findings of a bad input for callers and tests."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


# --- reading and checking the input: text in, products or problems out ---------------------


@dataclass(frozen=True)
class InputSchema:
    """How a file's columns become product fields: `renames` maps a field to the column that
    holds it (--map id=StockCode), `extra_fields` are further columns kept as TAG or NUMERIC
    filter fields (--tag-field colour). The default reads our own column names and nothing else."""

    renames: Mapping[str, str] = field(default_factory=dict)
    extra_fields: tuple[ExtraField, ...] = ()

    def column(self, name: str) -> str:
        return self.renames.get(name, name)

    def known_fields(self) -> tuple[str, ...]:
        return (*RECORD_FIELDS, *(extra.name for extra in self.extra_fields))

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record under our field names: mapped columns renamed, a column that a mapping
        replaces dropped, every other column kept as it is (an unknown one is warned about)."""
        sources = set(self.renames.values())
        fields = {name: value for name, value in record.items() if name not in sources and name not in self.renames}
        fields.update({name: record[column] for name, column in self.renames.items() if column in record})
        return fields

    def header_problems(self, header: list[str]) -> list[str]:
        """What keeps a CSV header from being read: a required column (or a mapped or extra one)
        absent, or a column we read given twice."""
        problems = []
        wanted = [*REQUIRED_FIELDS, *self.renames, *(extra.name for extra in self.extra_fields)]
        for name in dict.fromkeys(wanted):
            column = self.column(name)
            if column in header:
                continue
            if name in self.renames:
                problems.append(f"the header has no {column!r} column (--map {name}={column})")
            elif name in REQUIRED_FIELDS:
                problems.append(
                    f"the header has no {name!r} column: name the column that holds it with --map {name}=<column>"
                )
            else:
                problems.append(f"the header has no {name!r} column (declared by --tag-field or --numeric-field)")
        read = {self.column(name) for name in self.known_fields()}
        problems += [
            f"the header has more than one {column!r} column" for column in sorted(read) if header.count(column) > 1
        ]
        return problems


DEFAULT_SCHEMA = InputSchema()


def input_schema(
    maps: Sequence[tuple[str, str]], tag_fields: Sequence[str], numeric_fields: Sequence[str]
) -> InputSchema:
    """The InputSchema of the command line's --map, --tag-field and --numeric-field; CatalogError
    for a field mapped twice, an unknown field, or an extra field name the schema has."""
    declared: list[tuple[str, FieldKind]] = [(name, "tag") for name in tag_fields]
    declared += [(name, "numeric") for name in numeric_fields]
    try:
        extras = tuple(ExtraField(name, kind) for name, kind in declared)
    except ValueError as exc:
        raise CatalogError(str(exc)) from None
    names = [extra.name for extra in extras]
    if len(set(names)) < len(names):
        raise CatalogError(f"an extra field is declared twice: {sorted(n for n in names if names.count(n) > 1)[0]!r}")
    schema = InputSchema(dict(maps), extras)
    for name, _ in maps:
        if [mapped for mapped, _ in maps].count(name) > 1:
            raise CatalogError(f"--map {name}=... is given twice")
        if name not in schema.known_fields():
            raise CatalogError(
                f"--map {name}=...: {name!r} is no product field (fields: {', '.join(RECORD_FIELDS)}; "
                "declare another column with --tag-field or --numeric-field first)"
            )
    return schema


def too_long(what: str, length: int, limit: int) -> str:
    return f"{what} is {length:,} characters long, over the limit of {limit:,}"


# What a catalogue's long-line message adds: the limit a shopper's text usually meets first.
PRODUCT_LINE_NOTE = f" (a text field may hold {MAX_FIELD_CHARS:,})"


def line_too_long(length: int) -> str:
    return too_long("the line", length, MAX_LINE_CHARS) + PRODUCT_LINE_NOTE


def jsonl_objects(
    lines: Iterable[str], holds: str, long_line_note: str = ""
) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Each non-blank line of a JSONL text as (line number, its object or what is wrong with it).
    A line over MAX_LINE_CHARS is refused before it is parsed, so a huge or deeply nested one costs
    nothing. Shared by catalogues and event files (import_events.py): `holds` says what one line
    is ("a product"), `long_line_note` what else the long-line message should say."""
    for line_no, line in enumerate(lines, start=1):
        if len(line) > MAX_LINE_CHARS:
            yield line_no, too_long("the line", len(line), MAX_LINE_CHARS) + long_line_note
            continue
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield line_no, f"invalid JSON: {exc.msg} at column {exc.colno}"
            continue
        except RecursionError:
            yield line_no, f"invalid JSON: arrays or objects nested too deeply ({holds} is one flat object)"
            continue
        except ValueError as exc:  # e.g. an integer of more digits than Python converts
            yield line_no, f"invalid JSON: {exc}"
            continue
        yield line_no, value if isinstance(value, dict) else f"expected a JSON object, got {type(value).__name__}"


def parse_jsonl(text: str, schema: InputSchema = DEFAULT_SCHEMA) -> tuple[list[Record], list[Problem]]:
    """One JSON object per line; blank lines are allowed (editors add them at the end)."""
    records: list[Record] = []
    problems: list[Problem] = []
    for line_no, parsed in jsonl_objects(text.split("\n"), "a product", PRODUCT_LINE_NOTE):
        if isinstance(parsed, str):
            problems.append((line_no, parsed))
        else:
            records.append((line_no, parsed))
    return records, problems


def csv_values(line: str, plain_quotes: bool = False) -> list[str]:
    """One physical line read on its own as CSV, leniently: it is only evidence. With
    plain_quotes, a quote is an ordinary character and every comma separates."""
    text = [line.rstrip("\r\n")]
    return next(csv.reader(text, quoting=csv.QUOTE_NONE) if plain_quotes else csv.reader(text), [])


def unclosed_quote(lines: Sequence[str], start: int, width: int) -> bool:
    """Whether a record that spans lines from `start` (1-based) is really a quote left open.

    A quoted value may hold line breaks. But when the record's first line holds a whole row
    once its quotes are taken as plain characters, and the next line is a whole row on its own,
    the file reads as one row per line but for one quote: the rows after it were swallowed into
    the value. A value that really spans lines fails one of the two tests: its first line is
    not a whole row, or the line after it is the rest of the value, not a row."""
    if start >= len(lines):
        return False
    first = csv_values(lines[start - 1], plain_quotes=True)
    return len(first) >= width and len(csv_values(lines[start])) >= width


def unclosed_quote_problem(start: int, end: int) -> str:
    swallowed = f"line {start + 1} was" if end == start + 1 else f"lines {start + 1}-{end} were"
    return f'a quoted value opened on this line is never closed, so {swallowed} read into it: add the missing "'


def csv_error_problem(exc: csv.Error, lines: Sequence[str], start: int, line_no: int, width: int) -> Problem:
    """csv's own error, told as what to fix and where the fix is (the record's first line)."""
    message = str(exc)
    if "field larger than field limit" in message:  # a quoted value spanning lines: csv's own limit
        return (
            start,
            f"the row is over the limit of {MAX_LINE_CHARS:,} characters (a text field may hold {MAX_FIELD_CHARS:,})",
        )
    if "unexpected end of data" in message:
        return start, 'the file ends inside a quoted value opened on this line: add its closing "'
    if line_no > start and unclosed_quote(lines, start, width):
        return start, unclosed_quote_problem(start, line_no)
    return line_no, f'malformed CSV: {message} (a " inside a quoted value is written twice: "")'


def parse_csv(text: str, schema: InputSchema = DEFAULT_SCHEMA) -> tuple[list[Record], list[Problem]]:
    """A header row, then one product per row. Each row is numbered by the file line it starts
    on. A header without a required column is one problem, not one per row; optional columns
    may be absent (their fields take OPTIONAL_DEFAULTS).

    csv runs strict, so a stray quote is an error rather than a silently mangled value, and a
    quote left open is found (unclosed_quote) instead of swallowing the rows after it."""
    lines = io.StringIO(text, newline="").readlines()
    lengths = [len(line.rstrip("\r\n")) for line in lines]
    problems: list[Problem] = [
        (line_no, line_too_long(length)) for line_no, length in enumerate(lengths, start=1) if length > MAX_LINE_CHARS
    ]
    # An over-long line is read as a blank one: csv never holds it, and later lines keep their numbers.
    rows = csv.reader(
        ["\n" if length > MAX_LINE_CHARS else line for line, length in zip(lines, lengths, strict=True)], strict=True
    )
    records: list[Record] = []
    start = 1
    try:
        header = [name.strip() for name in next(rows, [])]
        if not header:
            return [], problems
        header_messages = schema.header_problems(header)
        if header_messages:
            return [], [(1, message) for message in header_messages]
        while True:
            start = rows.line_num + 1
            row = next(rows, None)
            if row is None:
                break
            if not any(value.strip() for value in row):
                continue
            if rows.line_num > start and unclosed_quote(lines, start, len(header)):
                problems.append((start, unclosed_quote_problem(start, rows.line_num)))
            elif len(row) > len(header):
                problems.append((start, f"{len(row)} values but the header has {len(header)} columns"))
            else:
                records.append((start, dict(zip(header, row, strict=False))))
    except csv.Error as exc:
        problems.append(csv_error_problem(exc, lines, start, rows.line_num, len(header)))
    return records, problems


def shown(value: Any) -> str:
    """A value as the user wrote it: quoted if it was text, JSON spelling otherwise."""
    return repr(value) if isinstance(value, str) else json.dumps(value)


# NUL and the other control characters but tab and line breaks, and the surrogate range: in a
# str, a code point from it is always a lone surrogate (a pair would have been decoded).
FORBIDDEN_CHARACTER = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def forbidden_character(value: str) -> tuple[int, str] | None:
    """The first character no product text may hold, and what it is: NUL and the other control
    characters (tab and line breaks aside), which Redis, the page and terminals all treat
    differently, and lone surrogates (a broken \\uD800 escape), which are not Unicode text at all
    and make any UTF-8 encoder fail."""
    found = FORBIDDEN_CHARACTER.search(value)
    if found is None:
        return None
    code = ord(found.group())
    if code == 0:
        return found.start(), "a NUL character (U+0000)"
    if 0xD800 <= code <= 0xDFFF:
        return found.start(), f"a lone surrogate (U+{code:04X}: not valid Unicode, a broken \\u escape?)"
    return found.start(), f"a control character (U+{code:04X})"


def check_text(name: str, value: Any) -> tuple[str, str | None]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return "", f"{name} is missing or empty"
    if not isinstance(value, str):
        return "", f"{name} must be a string, got {shown(value)}"
    text = value.strip()
    if len(text) > MAX_FIELD_CHARS:
        return "", too_long(name, len(text), MAX_FIELD_CHARS)
    forbidden = forbidden_character(text)
    if forbidden:
        index, what = forbidden
        return "", f"{name} contains {what} at character {index + 1}: remove it"
    if name == "id":
        # Any printable text: the writers escape ids wherever Redis syntax could read them.
        return text, too_long("id", len(text), MAX_PRODUCT_ID_CHARS) if len(text) > MAX_PRODUCT_ID_CHARS else None
    if name == "category":
        try:
            return normalize_category(text), None
        except ValueError as exc:
            return "", str(exc)
    return text, field_problem(name, text)


def absent(value: Any) -> bool:
    """No value at all: a missing key, JSON null, or an empty (or blank) CSV cell."""
    return value is None or (isinstance(value, str) and not value.strip())


def as_number(value: Any, from_text: bool) -> float | None:
    """CSV holds only text, so there numbers are parsed; JSON has numbers of its own, and a
    quoted one there is a sign of an upstream mistake rather than something to guess at."""
    if from_text and isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def check_number(name: str, value: Any, high: float | None, from_text: bool) -> tuple[float, str | None]:
    if value is None or value == "":
        return 0.0, f"{name} is missing"
    number = as_number(value, from_text)
    if number is not None and number >= 0.0 and (high is None or number <= high):
        return number, None
    expected = "a non-negative number" if high is None else f"a number from 0 to {high:g}"
    hint = " (a JSON string: write the number without quotes)" if isinstance(value, str) and not from_text else ""
    return 0.0, f"{name} must be {expected}, got {shown(value)}{hint}"


def check_in_stock(value: Any, from_text: bool) -> tuple[bool, str | None]:
    if value is None or value == "":
        return False, "in_stock is missing"
    if isinstance(value, bool):
        return value, None
    if from_text and isinstance(value, str) and value.strip().lower() in CSV_BOOLEANS:
        return CSV_BOOLEANS[value.strip().lower()], None
    expected = "one of true/false/yes/no/1/0" if from_text else "true or false"
    return False, f"in_stock must be {expected}, got {shown(value)}"


def check_record(
    fields: dict[str, Any], from_text: bool, extra_fields: Sequence[ExtraField] = ()
) -> tuple[dict[str, Any], list[str]]:
    """One product in the catalog's field order and types, and what is wrong with it. An
    optional field that is absent takes its default (OPTIONAL_DEFAULTS); an extra field that is
    absent is left out of the product."""
    product: dict[str, Any] = {}
    problems: list[str] = []
    for name in RECORD_FIELDS:
        value = fields.get(name)
        if name in OPTIONAL_DEFAULTS and absent(value):
            product[name] = OPTIONAL_DEFAULTS[name]
            continue
        if name in TEXT_FIELDS:
            product[name], problem = check_text(name, value)
        elif name == "in_stock":
            product[name], problem = check_in_stock(value, from_text)
        else:
            product[name], problem = check_number(name, value, 5.0 if name == "rating" else None, from_text)
        problems += [problem] if problem else []
    for extra in extra_fields:
        value = fields.get(extra.name)
        if absent(value):
            continue
        product[extra.name], problem = check_extra(extra, value, from_text)
        problems += [problem] if problem else []
    return product, problems


def check_extra(extra: ExtraField, value: Any, from_text: bool) -> tuple[Any, str | None]:
    """A declared extra field's value: a TAG value is text without the tag separator, a NUMERIC
    one any finite number."""
    if extra.kind == "numeric":
        number = as_number(value, from_text)
        if number is None:
            return 0.0, f"{extra.name} must be a number, got {shown(value)}"
        return number, None
    text, problem = check_text(extra.name, value)
    if problem is None and TAG_SEPARATOR in text:
        problem = f"{extra.name} must not contain {TAG_SEPARATOR!r} (the tag separator), got {text!r}"
    return text, problem


def check_records(
    records: list[Record], from_text: bool, extra_fields: Sequence[ExtraField] = ()
) -> tuple[list[dict[str, Any]], list[Problem]]:
    products: list[dict[str, Any]] = []
    problems: list[Problem] = []
    first_line_of: dict[str, int] = {}
    for line_no, fields in records:
        product, record_problems = check_record(fields, from_text, extra_fields)
        problems += [(line_no, message) for message in record_problems]
        product_id = product["id"]
        if product_id and product_id in first_line_of:
            problems.append((line_no, f"duplicate id {product_id!r}, already used on line {first_line_of[product_id]}"))
        elif product_id:
            first_line_of[product_id] = line_no
        products.append(product)
    return products, problems


def unknown_fields(records: list[Record], known: Sequence[str] = RECORD_FIELDS) -> dict[str, int]:
    """Fields the catalog does not carry, each with the first line that has it."""
    first_line_of: dict[str, int] = {}
    for line_no, fields in records:
        for name in fields:
            if name not in known:
                first_line_of.setdefault(name, line_no)
    return first_line_of


PARSERS = {".jsonl": parse_jsonl, ".csv": parse_csv}


def not_utf8_problems(data: bytes) -> list[str]:
    """Each line that is not UTF-8, with the first offending byte and its column: what an
    editor shows, where a byte offset into the whole file would mean nothing to the user."""
    problems = []
    for line_no, line in enumerate(data.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(
                f"line {line_no}: not UTF-8 text (byte 0x{line[exc.start]:02X} at column {exc.start + 1}): "
                "save the file as UTF-8 (it looks like Latin-1 or Windows-1252)"
            )
    return problems


def decode_utf8(path: Path, data: bytes) -> str:
    """The bytes as text; utf-8-sig because spreadsheets like to start their CSV exports with a BOM."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        problems = not_utf8_problems(data.removeprefix(b"\xef\xbb\xbf"))
        shown_problems = problems[:MAX_REPORTED_LINES] + (
            [f"... and {len(problems) - MAX_REPORTED_LINES} more lines"] if len(problems) > MAX_REPORTED_LINES else []
        )
        count = f"{len(problems)} line{'s' if len(problems) > 1 else ''} not UTF-8"
        raise CatalogError(f"{path}: {count}:\n  " + "\n  ".join(shown_problems), problems) from None


def read_input_text(path: Path) -> str:
    """The file's text with line endings untouched (CSV values may hold newlines); a .gz file
    is decompressed first, up to MAX_GZIP_BYTES (a small file must not unpack to gigabytes)."""
    try:
        if path.suffix.lower() != ".gz":
            data = path.read_bytes()
        else:
            with gzip.open(path, "rb") as stream:
                data = stream.read(MAX_GZIP_BYTES + 1)
            if len(data) > MAX_GZIP_BYTES:
                raise CatalogError(f"{path}: unpacks to more than {MAX_GZIP_BYTES:,} bytes")
    except FileNotFoundError:
        raise CatalogError(f"{path}: no such file") from None
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError; a truncated one, EOFError
        raise CatalogError(f"{path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    return decode_utf8(path, data)


def input_type(path: Path) -> str:
    """.jsonl or .csv, also under a .gz."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    return suffixes[-2] if len(suffixes) > 1 and suffixes[-1] == ".gz" else path.suffix.lower()


def problems_error(path: Path, messages: list[str]) -> CatalogError:
    count = f"{len(messages)} problem{'s' if len(messages) > 1 else ''}"
    return CatalogError(f"{path}: {count}:\n  " + "\n  ".join(messages), messages)


def load_products(path: Path | str, schema: InputSchema = DEFAULT_SCHEMA) -> list[dict[str, Any]]:
    """The products of a .jsonl or .csv file, in file order, with the catalog's fields and
    types, columns read as `schema` says. Raises CatalogError listing every problem found, each
    with its line."""
    path = Path(path)
    parse = PARSERS.get(input_type(path))
    if parse is None:
        supported = " or ".join(PARSERS) + " (or either gzipped, .gz)"
        raise CatalogError(
            f"{path}: unsupported input type {path.suffix or '(no extension)'!r}: use a {supported} file"
        )
    raw_records, problems = parse(read_input_text(path), schema)
    if not raw_records and not problems:
        raise CatalogError(f"{path}: the file holds no products")
    records = [(line_no, schema.apply(fields)) for line_no, fields in raw_records]
    products, record_problems = check_records(records, parse is parse_csv, schema.extra_fields)
    for name, line_no in unknown_fields(records, schema.known_fields()).items():
        log.warning("%s: ignoring unknown field %r (first on line %d)", path, name, line_no)
    problems = sorted(problems + record_problems, key=lambda problem: problem[0])
    if problems:
        raise problems_error(path, [f"line {line_no}: {message}" for line_no, message in problems])
    return products
