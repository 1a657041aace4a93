"""Build catalog.json: every product of a JSONL or CSV file with its all-MiniLM-L6-v2 vector.

The catalog is the hand-off between ports of this demo, so its format is fixed:
{"model", "dim", "products": [{id, name, description, category, brand, price, rating,
in_stock, embedding_b64}]}, embedding_b64 being the base64 of little-endian float32 bytes.
Embedding once here means the demo server and the other ports start without a model.

The input is checked completely before the model is even loaded, and every problem is
reported at once with its line, so a bad file costs one round trip, not one per mistake.

    python build_catalog.py                      # data/products.jsonl -> catalog.json
    python build_catalog.py --input my.csv --output /tmp/catalog.json --load
"""

from __future__ import annotations

import argparse
import base64
import csv
import gzip
import hashlib
import io
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis
from tqdm import tqdm

from atomic_file import refuse_unless_regular, write_text_atomic
from embeddings import BACKENDS, LocalEmbedder, ModelNotFoundError, normalize_rows, same_model
from local_redis import LocalRedisError, SearchUnavailableError, open_redis, redact
from recengine.catalog_schema import (
    OPTIONAL_DEFAULTS,
    REQUIRED_FIELDS,
    ExtraField,
    FieldKind,
    normalize_category,
)
from recengine.catalog_schema import (
    product_text as embedded_text,
)
from recengine.catalog_sync import DEFAULT_MAX_REMOVAL_SHARE, SyncRefusedError, check_removals, plan_sync
from recengine.cli_types import column_mapping, positive_int
from recengine.layout import product_fields
from recengine.validation import MAX_PRODUCT_ID_CHARS, TAG_SEPARATOR
from recommender import (
    DEFAULT_VECTOR_TYPE,
    PRODUCT_FIELDS,
    VECTOR_TYPES,
    RedisRecommender,
    field_problem,
    product_embedding_bytes,
    vector_to_bytes,
)

# Named, not __name__: run as a script this module is __main__, and its warnings should carry
# the same logger name either way.
log = logging.getLogger("build_catalog")

REPO_DIR = Path(__file__).resolve().parent
DEFAULT_INPUT = REPO_DIR / "data" / "products.jsonl"
DEFAULT_OUTPUT = REPO_DIR / "catalog.json"
REDIS_DATA_DIR = REPO_DIR / ".redis-data"
DEFAULT_BATCH_SIZE = 32
LOAD_BATCH_SIZE = 100

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
# check_catalog_vectors: below this mean cosine a catalog was made by another model; from this
# minimum up, by the same model on an equivalent runtime.
DIFFERENT_MODEL_MEAN_COSINE = 0.98
EXACT_MIN_COSINE = 0.995

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


def line_too_long(length: int) -> str:
    return too_long("the line", length, MAX_LINE_CHARS) + f" (a text field may hold {MAX_FIELD_CHARS:,})"


def parse_jsonl(text: str, schema: InputSchema = DEFAULT_SCHEMA) -> tuple[list[Record], list[Problem]]:
    """One JSON object per line; blank lines are allowed (editors add them at the end). A line
    over the limit is refused before it is parsed, so a huge or deeply nested one costs nothing."""
    records: list[Record] = []
    problems: list[Problem] = []
    for line_no, line in enumerate(text.split("\n"), start=1):
        if len(line) > MAX_LINE_CHARS:
            problems.append((line_no, line_too_long(len(line))))
            continue
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((line_no, f"invalid JSON: {exc.msg} at column {exc.colno}"))
            continue
        except RecursionError:
            problems.append(
                (line_no, "invalid JSON: arrays or objects nested too deeply (a product is one flat object)")
            )
            continue
        except ValueError as exc:
            problems.append((line_no, f"invalid JSON: {exc}"))
            continue
        if not isinstance(value, dict):
            problems.append((line_no, f"expected a JSON object, got {type(value).__name__}"))
            continue
        records.append((line_no, value))
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


# --- embedding and the catalog file ---------------------------------------------------------


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def product_text(product: dict[str, Any]) -> str:
    """What gets embedded (catalog_schema.product_text: the same recipe as the other ports', so
    their catalogs' vectors can be checked against ours by check_catalog_vectors)."""
    return embedded_text(product["name"], product["description"])


def encode_vector(vector: Any, dim: int) -> str:
    return base64.b64encode(vector_to_bytes(vector, dim)).decode("ascii")


def embed_products(
    products: Sequence[dict[str, Any]], embedder: LocalEmbedder, batch_size: int = DEFAULT_BATCH_SIZE
) -> list[dict[str, Any]]:
    """The products with `embedding_b64` added. Batches are fixed by position, so the same
    input and batch size always group the same texts and give the same bytes."""
    vectors: list[np.ndarray] = []
    with tqdm(total=len(products), desc="embedding", unit="text") as bar:
        for batch in chunks(products, batch_size):
            vectors.extend(embedder.encode_many([product_text(p) for p in batch], batch_size=batch_size))
            bar.update(len(batch))
    return [
        {**product, "embedding_b64": encode_vector(vector, embedder.dim)}
        for product, vector in zip(products, vectors, strict=True)
    ]


def catalog_text(
    model_name: str, dim: int, products: Sequence[dict[str, Any]], extra_fields: Sequence[ExtraField] = ()
) -> str:
    """Strict JSON (no NaN) with one product per line: readable, and a changed product is a
    one-line diff. Key order is the caller's, so the same products give the same bytes. Extra
    filter fields, when there are any, are declared in "extra_fields" (other ports ignore it)."""
    rows = ",\n".join(f"    {json.dumps(product, ensure_ascii=False, allow_nan=False)}" for product in products)
    extras = [{"name": extra.name, "kind": extra.kind} for extra in extra_fields]
    declared = f'  "extra_fields": {json.dumps(extras)},\n' if extras else ""
    return (
        f'{{\n  "model": {json.dumps(model_name)},\n  "dim": {int(dim)},\n{declared}  "products": [\n{rows}\n  ]\n}}\n'
    )


def check_output(path: Path) -> None:
    """Refuse an output the build could not replace, before minutes of embedding, not after:
    a symlink, a device or a directory (atomic_file replaces only regular files), or a folder
    that does not exist."""
    try:
        refuse_unless_regular(path)
    except OSError as exc:
        raise CatalogError(f"{path}: cannot write it: {exc}") from None
    if not path.parent.is_dir():
        raise CatalogError(f"{path}: cannot write it: the folder {path.parent} does not exist")


def write_catalog(
    path: Path | str,
    model_name: str,
    dim: int,
    products: Sequence[dict[str, Any]],
    extra_fields: Sequence[ExtraField] = (),
) -> None:
    """Replace `path` atomically (atomic_file): a reader, or a crash, never sees a half-written
    catalog, and a symlink or device at `path` is refused (OSError), never written through."""
    write_text_atomic(path, catalog_text(model_name, dim, products, extra_fields))


def catalog_vectors(catalog: dict[str, Any]) -> np.ndarray:
    """(n, dim) float32 matrix of the catalog's vectors, in product order."""
    dim = int(catalog["dim"])
    blobs = [product_embedding_bytes(product, dim) for product in catalog["products"]]
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim)


def json_type(value: Any) -> str:
    """A JSON value's type in JSON's words, for messages about a file written in JSON."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def catalog_problems(
    raw_products: list[Any], dim: int, extra_fields: Sequence[ExtraField] = ()
) -> tuple[list[dict[str, Any]], list[str]]:
    """The catalog's products as the builder would have written them, checked by the builder's
    own rules (check_record), and what is wrong with each entry, named by its index and id."""
    products: list[dict[str, Any]] = []
    problems: list[str] = []
    first_index_of: dict[str, int] = {}
    for index, entry in enumerate(raw_products):
        where = f"products[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a product object, got {json_type(entry)}")
            continue
        product, record_problems = check_record(entry, False, extra_fields)
        product_id = product["id"]
        label = f"{where} (id {product_id!r})" if product_id else where
        problems += [f"{label}: {message}" for message in record_problems]
        if product_id in first_index_of:
            problems.append(
                f"{label}: duplicate id {product_id!r}, already used by products[{first_index_of[product_id]}]"
            )
        elif product_id:
            first_index_of[product_id] = index
        if "embedding_b64" not in entry and "embedding" not in entry:
            problems.append(f"{label}: no vector (embedding_b64 is missing)")
            continue
        try:
            blob = product_embedding_bytes(entry, dim)
        except (TypeError, ValueError) as exc:  # binascii.Error (bad base64) is a ValueError
            problems.append(f"{label}: {str(exc).removeprefix(f'product {product_id!r}: ')}")
            continue
        stored = entry.get("embedding_b64")
        products.append({**product, "embedding_b64": stored if isinstance(stored, str) else encode_vector(blob, dim)})
    return products, problems


def read_catalog(path: Path | str) -> dict[str, Any]:
    """A catalog written by this builder or by another port of the demo (the redis-py
    reference, Go, Node: same format, other key order, integer prices), checked by the rules
    the builder applies to its input, so that a consumer never meets a broken product halfway
    through indexing. Products come back in the builder's form: its fields, in its order,
    prices and ratings as floats, the vector as embedding_b64."""
    path = Path(path)
    try:
        text = decode_utf8(path, path.read_bytes())
    except FileNotFoundError:
        raise CatalogError(f"{path}: no such file: build it with `python build_catalog.py`") from None
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    try:
        catalog = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(
            f"{path}: not a readable catalog: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise CatalogError(f"{path}: not a readable catalog: arrays or objects nested too deeply") from None
    except ValueError as exc:
        raise CatalogError(f"{path}: not a readable catalog: {exc}") from None
    if not isinstance(catalog, dict) or not isinstance(catalog.get("products"), list):
        raise CatalogError(f"{path}: not a catalog: expected an object with model, dim and products")
    model, dim = catalog.get("model"), catalog.get("dim")
    if not isinstance(model, str) or not model.strip():
        raise CatalogError(f"{path}: not a catalog: model must name the embedding model, got {shown(model)}")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise CatalogError(f"{path}: not a catalog: dim must be a positive integer, got {shown(dim)}")
    extra_fields = declared_extra_fields(path, catalog.get("extra_fields", []))
    products, problems = catalog_problems(catalog["products"], dim, extra_fields)
    if problems:
        raise problems_error(path, problems)
    if not products:
        raise CatalogError(f"{path}: the catalog holds no products: build it with `python build_catalog.py`")
    return {"model": model, "dim": dim, "products": products, "extra_fields": extra_fields}


def declared_extra_fields(path: Path, declared: Any) -> tuple[ExtraField, ...]:
    """A catalog's "extra_fields": [{"name", "kind": "tag" | "numeric"}], as catalog_text writes it."""
    if not isinstance(declared, list):
        raise CatalogError(f"{path}: not a catalog: extra_fields must be a list, got {json_type(declared)}")
    extras = []
    for entry in declared:
        if not isinstance(entry, dict) or entry.get("kind") not in ("tag", "numeric"):
            raise CatalogError(f'{path}: not a catalog: an extra field is {{"name", "kind": "tag" or "numeric"}}')
        try:
            extras.append(ExtraField(str(entry.get("name")), entry["kind"]))
        except ValueError as exc:
            raise CatalogError(f"{path}: not a catalog: {exc}") from None
    return tuple(extras)


# --- is this catalog's model the embedder's? --------------------------------------------------


@dataclass(frozen=True)
class VectorAgreement:
    """How the catalog's stored vectors compare with the embedder's own for the same texts."""

    sampled: int
    mean_cosine: float
    min_cosine: float
    worst_id: str

    @property
    def exact(self) -> bool:
        """Same model on an equivalent runtime (torch, our ONNX export): equal up to float noise."""
        return self.min_cosine >= EXACT_MIN_COSINE


def sample_products(products: Sequence[dict[str, Any]], sample: int) -> list[dict[str, Any]]:
    """`sample` products picked by the hash of their ids: the same ones on every run and
    whatever the catalog's order, spread over its categories rather than the first few."""
    return sorted(products, key=lambda product: hashlib.sha256(product["id"].encode()).digest())[:sample]


def check_catalog_vectors(
    catalog: dict[str, Any], embedder: LocalEmbedder, sample: int = 16, *, source: Path | str | None = None
) -> VectorAgreement:
    """Whether `embedder` made (or could have made) the catalog's vectors, judged on the vectors
    rather than on the model's name: a sample of products is embedded again from the text the
    builder embeds, and compared with the stored vectors by cosine.

    - mean cosine below 0.98: another model; CatalogError, as queries would be compared with
      vectors in another space and every ranking would be noise;
    - all at least 0.995: the same model; silent;
    - in between: the same weights on another runtime (the Node port's quantized ONNX
      all-MiniLM-L6-v2 is within a minimum cosine of about 0.986 of ours); one warning line.

    Names that denote the same weights differently (embeddings.same_model) are not a problem;
    a name of other weights whose vectors match anyway gets a log line, not an error."""
    if sample < 1:
        raise ValueError(f"sample must be at least 1, got {sample}")
    where = f"{source}" if source is not None else "the catalog"
    dim, name = int(catalog["dim"]), str(catalog["model"])
    if dim != embedder.dim:
        raise CatalogError(
            f"{where} holds {dim}-dimensional vectors from {name}, but {embedder.model_name} makes "
            f"{embedder.dim}-dimensional ones: rebuild it with `python build_catalog.py --model {embedder.model_name}` "
            f"or load the model it was built with (--model {name})"
        )
    chosen = sample_products(catalog["products"], sample)
    if not chosen:
        raise CatalogError(f"{where} holds no products to check")
    stored = normalize_rows(np.stack([np.frombuffer(product_embedding_bytes(p, dim), dtype="<f4") for p in chosen]))
    fresh = embedder.encode_many([product_text(product) for product in chosen])
    cosines = np.sum(stored * fresh, axis=1)
    worst = int(np.argmin(cosines))
    agreement = VectorAgreement(len(chosen), float(cosines.mean()), float(cosines[worst]), chosen[worst]["id"])
    if agreement.mean_cosine < DIFFERENT_MODEL_MEAN_COSINE:
        raise CatalogError(
            f"{where} was not embedded with {embedder.model_name} (it says {name}): re-embedding {agreement.sampled} "
            f"of its products gives a mean cosine of {agreement.mean_cosine:.3f} with the stored vectors, where the "
            f"same model gives at least {DIFFERENT_MODEL_MEAN_COSINE}: rebuild it with `python build_catalog.py` "
            "or load the model it was built with (--model)"
        )
    if not agreement.exact:
        log.warning(
            "%s: its vectors (%s) agree with %s only roughly: cosine mean %.4f, min %.4f (%s) over %d products; "
            "the same weights on another runtime, so it is used as it is",
            where,
            name,
            embedder.model_name,
            agreement.mean_cosine,
            agreement.min_cosine,
            agreement.worst_id,
            agreement.sampled,
        )
    if not same_model(name, embedder.model_name):
        log.info("%s says model %s, and its vectors match %s's: using it", where, name, embedder.model_name)
    return agreement


# --- Redis ----------------------------------------------------------------------------------


def push_to_redis(recommender: RedisRecommender, products: Sequence[dict[str, Any]]) -> int:
    """Create the index if needed and upsert every product; returns how many were written."""
    recommender.create_index()
    written = 0
    with tqdm(total=len(products), desc="loading", unit="product") as bar:
        for batch in chunks(products, LOAD_BATCH_SIZE):
            written += recommender.index_products(batch)
            bar.update(len(batch))
    return written


@contextmanager
def redis_target(url: str | None) -> Iterator[redis.Redis]:
    """A client on the Redis to load into, in open_redis's order (URL, REDIS_URL,
    localhost:6379, the bundled server). A bundled server we started is stopped on the way
    out rather than at interpreter exit, so main() can be called more than once."""
    client, local = open_redis(url, data_dir=REDIS_DATA_DIR)
    try:
        yield client
    finally:
        client.close()
        if local is not None:
            local.stop()


# --- the command line -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Embed a product file and write catalog.json (model, dim, products with base64 float32 "
            "vectors). The input is fully checked first: every problem is listed with its line, and "
            "nothing is written (exit status 2) if there is any."
        ),
    )
    parser.add_argument(
        "--input",
        type=Path,
        default=DEFAULT_INPUT,
        help="products as JSON Lines (.jsonl, one object per line) or CSV (.csv, with a header row). "
        "Every product needs an id (any printable text), a name and a price (>= 0); description, "
        "category (a path 'A > B > C' is filterable at every level), brand, rating (0-5) and in_stock "
        "(JSON true/false; in CSV true/false/yes/no/1/0) are optional, with the defaults '', '', '', 0 "
        "(unrated) and true; other fields are ignored with a warning unless declared by --tag-field or "
        f"--numeric-field. A text field holds at most {MAX_FIELD_CHARS:,} characters and a line (a CSV row) "
        f"{MAX_LINE_CHARS:,}, in UTF-8 (default: %(default)s)",
    )
    parser.add_argument(
        "--map",
        dest="maps",
        metavar="FIELD=COLUMN",
        type=column_mapping,
        action="append",
        default=[],
        help="read the product's FIELD from the file's COLUMN (repeatable), e.g. --map id=StockCode "
        "--map name=Description; a column that a mapping replaces is ignored",
    )
    parser.add_argument(
        "--tag-field",
        metavar="NAME",
        action="append",
        default=[],
        help="keep the column NAME as a TAG filter field (exact values, no commas; repeatable)",
    )
    parser.add_argument(
        "--numeric-field",
        metavar="NAME",
        action="append",
        default=[],
        help="keep the column NAME as a NUMERIC filter field (ranges; repeatable)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="catalog file to write, replaced atomically; an existing symlink, device or directory is refused "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="sentence-transformers model: a local directory or a name in the Hugging Face cache "
        "(nothing is downloaded); default: the bundled all-MiniLM-L6-v2, which any of its names also loads "
        "(sentence-transformers/all-MiniLM-L6-v2, Xenova/all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--embedding-backend",
        choices=BACKENDS,
        default="torch",
        help="torch (default: sentence-transformers, the reference, so the committed catalog.json is "
        "reproducible byte for byte) or onnx (2-2.4x the texts/s, vectors equal to torch's within "
        "1e-6: use it for large catalogs)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        help="texts embedded per batch (default: %(default)s)",
    )
    parser.add_argument(
        "--load",
        action="store_true",
        help="also upsert the products into Redis and create the index if it is missing "
        "(products already there and absent from the input are left alone)",
    )
    parser.add_argument(
        "--sync",
        action="store_true",
        help="with --load: make Redis hold exactly the file's products: print a plan (added, changed, unchanged, "
        "removed), then write only the added and changed ones, embed only those whose text is new, and remove the "
        "products the file no longer has. Writes no catalog file",
    )
    parser.add_argument(
        "--vector-type",
        choices=VECTOR_TYPES,
        default=DEFAULT_VECTOR_TYPE,
        help="with --load: the "
        + "element type of the product vectors in a newly created index: FLOAT32 (default, what every port writes) "
        "or FLOAT16 (half the vectors' memory, slightly less recall: bench/million.py). An existing index keeps "
        "its own type, and products are written in it",
    )
    parser.add_argument("--dry-run", action="store_true", help="with --load --sync: print the plan, write nothing")
    parser.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="with --load --sync: allow removing more than --max-removal-share of the stored products",
    )
    parser.add_argument(
        "--max-removal-share",
        type=float,
        default=DEFAULT_MAX_REMOVAL_SHARE,
        help="with --load --sync: the largest share of the stored products a sync removes without "
        "--allow-mass-delete (default %(default)s)",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="Redis with Search for --load, e.g. redis://localhost:6379 or rediss://user:pass@host:port; "
        "default: $REDIS_URL, else localhost:6379 if it has Search, else the bundled local Redis "
        "(data in .redis-data/, stopped when this command ends)",
    )
    parser.add_argument("--index-name", default="recommend:idx", help="index to load into (default: %(default)s)")
    parser.add_argument(
        "--key-prefix", default="product:", help="prefix of the product hash keys (default: %(default)s)"
    )
    return parser


def build(args: argparse.Namespace) -> None:
    """Check, connect, embed, write, load: cheapest failures first, so a bad file or an
    unreachable Redis is reported before minutes of embedding rather than after."""
    schema = input_schema(args.maps, args.tag_field, args.numeric_field)
    if (args.sync or args.dry_run or args.allow_mass_delete) and not (args.load and args.sync):
        raise CatalogError("--sync, --dry-run and --allow-mass-delete go with --load --sync")
    products = load_products(args.input, schema)
    if args.sync:
        with redis_target(args.redis_url) as client:
            sync(args, schema, products, client)
        return
    check_output(args.output)
    with redis_target(args.redis_url) if args.load else nullcontext() as client:
        started = time.perf_counter()
        embedder = LocalEmbedder(args.model, backend=args.embedding_backend)
        log.info("loaded the model %s in %.1f s", embedder.model_name, time.perf_counter() - started)
        started = time.perf_counter()
        embedded = embed_products(products, embedder, args.batch_size)
        seconds = time.perf_counter() - started
        try:
            write_catalog(args.output, embedder.model_name, embedder.dim, embedded, schema.extra_fields)
        except OSError as exc:
            raise CatalogError(f"{args.output}: cannot write it: {exc.strerror or exc}") from None
        log.info(
            "embedded %d products in %.2f s (%.1f texts/s) with %s; wrote %s",
            len(embedded),
            seconds,
            len(embedded) / seconds if seconds > 0 else float("inf"),
            embedder.model_name,
            args.output,
        )
        if client is not None:
            recommender = RedisRecommender(
                client,
                index_name=args.index_name,
                key_prefix=args.key_prefix,
                vector_dim=embedder.dim,
                vector_type=args.vector_type,
                extra_fields=schema.extra_fields,
            )
            started = time.perf_counter()
            written = push_to_redis(recommender, embedded)
            info = recommender.index_info()
            log.info(
                "loaded %d products into %s (keys %s*) in %.2f s: %d documents indexed, %d indexing failures",
                written,
                args.index_name,
                args.key_prefix,
                time.perf_counter() - started,
                info["num_docs"],
                info["indexing_failures"],
            )


def sync(args: argparse.Namespace, schema: InputSchema, products: list[dict[str, Any]], client: redis.Redis) -> None:
    """--load --sync: make Redis hold exactly the file's products. The plan comes first (added,
    changed, unchanged, removed, from the stored fields and text digests: recengine/catalog_sync),
    then, unless --dry-run, only the added and changed products are written and only those whose
    text is new are embedded (the model is not even loaded when none is); removals beyond
    --max-removal-share need --allow-mass-delete. No catalog file is written."""
    started = time.perf_counter()
    planner = RedisRecommender(
        client, index_name=args.index_name, key_prefix=args.key_prefix, extra_fields=schema.extra_fields
    )
    incoming = [(str(product["id"]), product_fields(product, schema.extra_fields)) for product in products]
    try:
        plan = plan_sync(incoming, planner.stored_products())
        print(f"sync plan for {args.index_name}: {plan.summary()}")
        check_removals(plan, max_share=args.max_removal_share, allowed=args.allow_mass_delete)
    except SyncRefusedError as exc:
        raise CatalogError(f"{args.input}: {exc}") from None
    if args.dry_run or plan.empty:
        print("dry run: nothing was written" if args.dry_run else "nothing was written")
        return
    embedder = LocalEmbedder(args.model, backend=args.embedding_backend) if plan.reembed else None
    recommender = RedisRecommender(
        client,
        index_name=args.index_name,
        key_prefix=args.key_prefix,
        vector_dim=embedder.dim if embedder is not None else planner.vector_dim,
        vector_type=args.vector_type,
        extra_fields=schema.extra_fields,
    )
    recommender.create_index()
    chosen = set(plan.added) | set(plan.changed)

    def embed(texts: list[str]) -> np.ndarray:
        assert embedder is not None
        return embedder.encode_many(texts, batch_size=args.batch_size)

    writes = recommender.upsert_products([p for p in products if p["id"] in chosen], embed=embed)
    removed = sum(recommender.delete_product(product_id) for product_id in plan.removed)
    print(
        f"synced in {time.perf_counter() - started:.2f} s: {sum(1 for w in writes if w.fields)} written "
        f"({sum(1 for w in writes if w.embedded)} embedded), {removed} removed"
    )


def describe_redis(url: str | None) -> str:
    url = url or os.environ.get("REDIS_URL")
    return f"the Redis at {redact(url)}" if url else "the local Redis"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        build(args)
    except (CatalogError, ModelNotFoundError, SearchUnavailableError, LocalRedisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"error: cannot use {describe_redis(args.redis_url)} for --load: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
