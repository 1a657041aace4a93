"""Turn the UCI Online Retail file into this project's two input formats: a catalogue that
build_catalog.py accepts and a purchase-event file for bench/crowd.py (and, later, for
import_events.py).

The source is 541,909 invoice lines of a UK online gift shop (2010-12 to 2011-12, CC BY 4.0;
data/online-retail/README.md has the attribution). What it becomes:

- products.jsonl.gz: one product per StockCode that names a product (see `is_product_code`)
  and has at least one kept line. The name is its most frequent description on those lines;
  the description repeats it (the source has no other text). The source has no category,
  brand, rating or stock level, which build_catalog.py requires today, so they are fixed
  placeholders (PLACEHOLDER_FIELDS): one category for all keeps similar()'s same-category
  boost neutral. The price is the median unit price of the kept lines.
- events.csv.gz: user_id, product_id, event, timestamp, session_id; one `purchase` per
  distinct product of an invoice. session_id is the InvoiceNo; user_id the CustomerID, or
  `guest-<InvoiceNo>` when the line has none; timestamp the InvoiceDate in ISO 8601. The source
  gives the shop's clock without a zone; it is written as UTC.

A line is kept when its invoice is not a cancellation (InvoiceNo starting with C), its
quantity and unit price are above 0, its description is not empty and its StockCode names a
product. That gives 3,905 products; the issue's 3,921 is what is left when only C2 is dropped
(see data/online-retail/README.md).

Run:  .venv/bin/python -m bench.online_retail --input /path/online_retail.csv.gz --out-dir data/online-retail
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import re
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

SOURCE_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID")
EVENT_COLUMNS = ("user_id", "product_id", "event", "timestamp", "session_id")
PRODUCTS_FILE = "products.jsonl.gz"
EVENTS_FILE = "events.csv.gz"
SOURCE_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
# What build_catalog.py requires and the source does not have.
PLACEHOLDER_FIELDS: dict[str, Any] = {"category": "gifts", "brand": "unknown", "rating": 0.0, "in_stock": True}
# Codes with digits that are still not goods: C2 is carriage, gift_0001_* are gift vouchers.
NON_PRODUCT_CODES = frozenset({"C2"})
NON_PRODUCT_PREFIXES = ("gift_",)
HAS_DIGIT = re.compile(r"\d")


class SourceError(ValueError):
    """A file the converter cannot read; the message names the line and what is wrong."""


def is_product_code(code: str) -> bool:
    """Whether a StockCode names goods. Every code without a digit is a fee, postage or a
    manual adjustment (POST, DOT, M, D, S, B, PADS, CRUK, BANK CHARGES, AMAZONFEE,
    DCGSSBOY, ...); of the codes with digits, only carriage (C2) and the gift vouchers are not
    goods."""
    return bool(HAS_DIGIT.search(code)) and code not in NON_PRODUCT_CODES and not code.startswith(NON_PRODUCT_PREFIXES)


@dataclass(frozen=True)
class InvoiceLine:
    invoice: str
    code: str
    description: str
    quantity: int
    at: datetime
    unit_price: float
    customer: str


@dataclass
class Conversion:
    """The converter's output and its counts, for the report and the README."""

    products: list[dict[str, Any]]
    events: list[dict[str, str]]
    counts: Counter[str] = field(default_factory=Counter)


def read_lines(stream: IO[str]) -> Iterator[InvoiceLine]:
    """The source's rows as typed lines. Raises SourceError naming the line of a missing column
    or a value that is not a number or a date."""
    reader = csv.DictReader(stream)
    missing = [name for name in SOURCE_COLUMNS if name not in (reader.fieldnames or ())]
    if missing:
        raise SourceError(
            f"line 1: the header has no {', '.join(missing)} column (expected {', '.join(SOURCE_COLUMNS)})"
        )
    for row in reader:
        line_no = reader.line_num
        try:
            yield InvoiceLine(
                invoice=row["InvoiceNo"].strip(),
                code=row["StockCode"].strip(),
                description=" ".join((row["Description"] or "").split()),
                quantity=int(row["Quantity"]),
                at=datetime.strptime(row["InvoiceDate"].strip(), SOURCE_DATE_FORMAT),
                unit_price=float(row["UnitPrice"]),
                customer=customer_id(row["CustomerID"] or ""),
            )
        except (TypeError, ValueError) as exc:
            raise SourceError(f"line {line_no}: {exc}") from None


def customer_id(raw: str) -> str:
    """CustomerID as a whole number ("17850"), also when a copy of the data wrote it as a float."""
    raw = raw.strip()
    return str(int(float(raw))) if raw else ""


def keep_reason(line: InvoiceLine) -> str:
    """Why a line is dropped ("" when it is kept): the first rule it breaks."""
    if line.invoice.startswith("C"):
        return "cancellation"
    if not is_product_code(line.code):
        return "not a product code"
    if line.quantity <= 0:
        return "quantity not above 0"
    if line.unit_price <= 0:
        return "unit price not above 0"
    if not line.description:
        return "empty description"
    return ""


def convert(lines: Iterable[InvoiceLine]) -> Conversion:
    """Products and purchase events from the source lines, in the source's order."""
    counts: Counter[str] = Counter()
    descriptions: dict[str, Counter[str]] = defaultdict(Counter)
    prices: dict[str, list[float]] = defaultdict(list)
    events: list[dict[str, str]] = []
    in_invoice: set[tuple[str, str]] = set()
    invoices: set[str] = set()
    for line in lines:
        counts["lines"] += 1
        reason = keep_reason(line)
        if reason:
            counts[f"dropped: {reason}"] += 1
            continue
        descriptions[line.code][line.description] += 1
        prices[line.code].append(line.unit_price)
        if (line.invoice, line.code) in in_invoice:
            counts["repeated product in an invoice"] += 1
            continue
        in_invoice.add((line.invoice, line.code))
        invoices.add(line.invoice)
        events.append(
            {
                "user_id": line.customer or f"guest-{line.invoice}",
                "product_id": line.code,
                "event": "purchase",
                "timestamp": line.at.isoformat() + "Z",
                "session_id": line.invoice,
            }
        )
    products = [
        {
            "id": code,
            "name": names.most_common(1)[0][0],
            "description": names.most_common(1)[0][0],
            "price": round(statistics.median(prices[code]), 2),
            **PLACEHOLDER_FIELDS,
        }
        for code, names in descriptions.items()
    ]
    counts.update(products=len(products), events=len(events), invoices=len(invoices))
    counts["guest invoices"] = len({e["session_id"] for e in events if e["user_id"].startswith("guest-")})
    counts["customers"] = len({e["user_id"] for e in events if not e["user_id"].startswith("guest-")})
    return Conversion(products, events, counts)


def open_source(path: Path) -> IO[str]:
    """The source as text, gzip or not (by its first two bytes, not its name)."""
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    if gzipped:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def write_gzip_text(path: Path, text: str) -> None:
    """Deterministic gzip (no file name, time 0), so re-running the converter on the same
    input gives the same bytes and git sees no change."""
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(text.encode("utf-8"))


def write_outputs(conversion: Conversion, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    products_path, events_path = out_dir / PRODUCTS_FILE, out_dir / EVENTS_FILE
    write_gzip_text(
        products_path,
        "".join(json.dumps(p, ensure_ascii=False, separators=(",", ":")) + "\n" for p in conversion.products),
    )
    events_text = io.StringIO(newline="")
    writer = csv.DictWriter(events_text, fieldnames=EVENT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(conversion.events)
    write_gzip_text(events_path, events_text.getvalue())
    return products_path, events_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Convert the UCI Online Retail CSV (gzip or plain) into products.jsonl.gz (the catalogue "
        "input build_catalog.py reads, once un-gzipped) and events.csv.gz (purchase events)."
    )
    parser.add_argument("--input", type=Path, required=True, help="online_retail.csv or online_retail.csv.gz")
    parser.add_argument("--out-dir", type=Path, required=True, help="directory to write the two files to")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with open_source(args.input) as stream:
            conversion = convert(read_lines(stream))
    except OSError as exc:
        print(f"error: {args.input}: cannot read it: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except (SourceError, UnicodeDecodeError, gzip.BadGzipFile, csv.Error) as exc:
        print(f"error: {args.input}: {exc}", file=sys.stderr)
        return 2
    if not conversion.products:
        print(f"error: {args.input}: no line is a product purchase (is it the Online Retail file?)", file=sys.stderr)
        return 2
    try:
        written = write_outputs(conversion, args.out_dir)
    except OSError as exc:
        print(f"error: {args.out_dir}: cannot write to it: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for name, count in sorted(conversion.counts.items()):
        print(f"{name:34} {count:>9,}")
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
