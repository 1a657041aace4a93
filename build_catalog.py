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
import io
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import redis
from tqdm import tqdm

from embeddings import BACKENDS, LocalEmbedder, ModelNotFoundError
from local_redis import LocalRedisError, SearchUnavailableError, open_redis, redact
from recommender import RedisRecommender, field_problem, product_embedding_bytes, vector_to_bytes

# Named, not __name__: run as a script this module is __main__, and its warnings should carry
# the same logger name either way.
log = logging.getLogger("build_catalog")

REPO_DIR = Path(__file__).resolve().parent
DEFAULT_INPUT = REPO_DIR / "data" / "products.jsonl"
DEFAULT_OUTPUT = REPO_DIR / "catalog.json"
REDIS_DATA_DIR = REPO_DIR / ".redis-data"
DEFAULT_BATCH_SIZE = 32
LOAD_BATCH_SIZE = 100

TEXT_FIELDS = ("id", "name", "description", "category", "brand")
PRODUCT_FIELDS = (*TEXT_FIELDS, "price", "rating", "in_stock")
CSV_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}

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


def parse_jsonl(text: str) -> tuple[list[Record], list[Problem]]:
    """One JSON object per line; blank lines are allowed (editors add them at the end)."""
    records: list[Record] = []
    problems: list[Problem] = []
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((line_no, f"invalid JSON: {exc.msg} at column {exc.colno}"))
            continue
        except ValueError as exc:
            problems.append((line_no, f"invalid JSON: {exc}"))
            continue
        if not isinstance(value, dict):
            problems.append((line_no, f"expected a JSON object, got {type(value).__name__}"))
            continue
        records.append((line_no, value))
    return records, problems


def parse_csv(text: str) -> tuple[list[Record], list[Problem]]:
    """A header row, then one product per row. Rows are numbered like a spreadsheet does,
    the header being line 1, which is also the file's line as long as no quoted value
    spans lines. A header without a required column is one problem, not one per row."""
    rows = csv.reader(io.StringIO(text, newline=""))
    records: list[Record] = []
    problems: list[Problem] = []
    try:
        header = [name.strip() for name in next(rows, [])]
        if not header:
            return [], []
        missing = [name for name in PRODUCT_FIELDS if name not in header]
        duplicated = [name for name in PRODUCT_FIELDS if header.count(name) > 1]
        if missing or duplicated:
            return [], [(1, message) for message in header_problems(missing, duplicated)]
        for line_no, row in enumerate(rows, start=2):
            if not any(value.strip() for value in row):
                continue
            if len(row) > len(header):
                problems.append((line_no, f"{len(row)} values but the header has {len(header)} columns"))
                continue
            records.append((line_no, dict(zip(header, row, strict=False))))
    except csv.Error as exc:
        problems.append((rows.line_num, f"malformed CSV: {exc}"))
    return records, problems


def header_problems(missing: list[str], duplicated: list[str]) -> list[str]:
    return [f"the header has no {name!r} column" for name in missing] + [
        f"the header has more than one {name!r} column" for name in duplicated
    ]


def shown(value: Any) -> str:
    """A value as the user wrote it: quoted if it was text, JSON spelling otherwise."""
    return repr(value) if isinstance(value, str) else json.dumps(value)


def check_text(name: str, value: Any) -> tuple[str, str | None]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return "", f"{name} is missing or empty"
    if not isinstance(value, str):
        return "", f"{name} must be a string, got {shown(value)}"
    return value.strip(), field_problem(name, value.strip())


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


def check_record(fields: dict[str, Any], from_text: bool) -> tuple[dict[str, Any], list[str]]:
    """One product in the catalog's field order and types, and what is wrong with it."""
    product: dict[str, Any] = {}
    problems: list[str] = []
    for name in TEXT_FIELDS:
        product[name], problem = check_text(name, fields.get(name))
        problems += [problem] if problem else []
    for name, high in (("price", None), ("rating", 5.0)):
        product[name], problem = check_number(name, fields.get(name), high, from_text)
        problems += [problem] if problem else []
    product["in_stock"], problem = check_in_stock(fields.get("in_stock"), from_text)
    problems += [problem] if problem else []
    return product, problems


def check_records(records: list[Record], from_text: bool) -> tuple[list[dict[str, Any]], list[Problem]]:
    products: list[dict[str, Any]] = []
    problems: list[Problem] = []
    first_line_of: dict[str, int] = {}
    for line_no, fields in records:
        product, record_problems = check_record(fields, from_text)
        problems += [(line_no, message) for message in record_problems]
        product_id = product["id"]
        if product_id and product_id in first_line_of:
            problems.append((line_no, f"duplicate id {product_id!r}, already used on line {first_line_of[product_id]}"))
        elif product_id:
            first_line_of[product_id] = line_no
        products.append(product)
    return products, problems


def unknown_fields(records: list[Record]) -> dict[str, int]:
    """Fields the catalog does not carry, each with the first line that has it."""
    first_line_of: dict[str, int] = {}
    for line_no, fields in records:
        for name in fields:
            if name not in PRODUCT_FIELDS:
                first_line_of.setdefault(name, line_no)
    return first_line_of


PARSERS = {".jsonl": parse_jsonl, ".csv": parse_csv}


def read_input_text(path: Path) -> str:
    """The file's text with line endings untouched (CSV values may hold newlines);
    utf-8-sig because spreadsheets like to start their CSV exports with a BOM."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            return file.read()
    except FileNotFoundError:
        raise CatalogError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read it: {exc.strerror}") from None


def load_products(path: Path | str) -> list[dict[str, Any]]:
    """The products of a .jsonl or .csv file, in file order, with the catalog's fields and
    types. Raises CatalogError listing every problem found, each with its line."""
    path = Path(path)
    parse = PARSERS.get(path.suffix.lower())
    if parse is None:
        supported = " or ".join(PARSERS)
        raise CatalogError(
            f"{path}: unsupported input type {path.suffix or '(no extension)'!r}: use a {supported} file"
        )
    records, problems = parse(read_input_text(path))
    if not records and not problems:
        raise CatalogError(f"{path}: the file holds no products")
    products, record_problems = check_records(records, from_text=parse is parse_csv)
    for name, line_no in unknown_fields(records).items():
        log.warning("%s: ignoring unknown field %r (first on line %d)", path, name, line_no)
    problems = sorted(problems + record_problems, key=lambda problem: problem[0])
    if problems:
        messages = [f"line {line_no}: {message}" for line_no, message in problems]
        count = f"{len(messages)} problem{'s' if len(messages) > 1 else ''}"
        raise CatalogError(f"{path}: {count}:\n  " + "\n  ".join(messages), messages)
    return products


# --- embedding and the catalog file ---------------------------------------------------------


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def product_text(product: dict[str, Any]) -> str:
    """What gets embedded: the name leads, as it is the densest description of the item."""
    return f"{product['name']}. {product['description']}"


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


def catalog_text(model_name: str, dim: int, products: Sequence[dict[str, Any]]) -> str:
    """Strict JSON (no NaN) with one product per line: readable, and a changed product is a
    one-line diff. Key order is the caller's, so the same products give the same bytes."""
    rows = ",\n".join(f"    {json.dumps(product, ensure_ascii=False, allow_nan=False)}" for product in products)
    return f'{{\n  "model": {json.dumps(model_name)},\n  "dim": {int(dim)},\n  "products": [\n{rows}\n  ]\n}}\n'


def write_catalog(path: Path | str, model_name: str, dim: int, products: Sequence[dict[str, Any]]) -> None:
    """Write through a temporary file in the same directory and os.replace it over the
    target, so a reader (or a crash) never sees a half-written catalog."""
    path = Path(path)
    text = catalog_text(model_name, dim, products)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp makes the file private (0600); a catalog is meant to be shared.
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def catalog_vectors(catalog: dict[str, Any]) -> np.ndarray:
    """(n, dim) float32 matrix of the catalog's vectors, in product order."""
    dim = int(catalog["dim"])
    blobs = [product_embedding_bytes(product, dim) for product in catalog["products"]]
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim)


def read_catalog(path: Path | str) -> dict[str, Any]:
    """A catalog written by write_catalog, checked enough (keys, every vector's size) that
    a consumer can index it without meeting a broken product halfway through."""
    path = Path(path)
    try:
        catalog = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"{path}: no such file: build it with `python build_catalog.py`") from None
    except (OSError, ValueError) as exc:
        raise CatalogError(f"{path}: not a readable catalog: {exc}") from None
    if (
        not isinstance(catalog, dict)
        or not {"model", "dim"} <= catalog.keys()
        or not isinstance(catalog.get("products"), list)
    ):
        raise CatalogError(f"{path}: not a catalog: expected an object with model, dim and products")
    try:
        catalog_vectors(catalog)
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogError(f"{path}: malformed catalog: {exc}") from None
    return catalog


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


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


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
        "Every product needs id, name, description, category, brand, price (>= 0), rating (0-5) and "
        "in_stock (JSON true/false; in CSV true/false/yes/no/1/0); other fields are ignored with a "
        "warning (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="catalog file to write, replaced atomically (default: %(default)s)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="sentence-transformers model: a local directory or a name in the Hugging Face cache "
        "(nothing is downloaded); default: the bundled all-MiniLM-L6-v2",
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
    products = load_products(args.input)
    with redis_target(args.redis_url) if args.load else nullcontext() as client:
        started = time.perf_counter()
        embedder = LocalEmbedder(args.model, backend=args.embedding_backend)
        log.info("loaded the model %s in %.1f s", embedder.model_name, time.perf_counter() - started)
        started = time.perf_counter()
        embedded = embed_products(products, embedder, args.batch_size)
        seconds = time.perf_counter() - started
        try:
            write_catalog(args.output, embedder.model_name, embedder.dim, embedded)
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
                client, index_name=args.index_name, key_prefix=args.key_prefix, vector_dim=embedder.dim
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
