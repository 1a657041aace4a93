"""build_catalog.py against real files, the real model and the real local Redis with Search:
input checking (every rule names its line and field), the catalog format, atomic writes,
--load, and the exit status and messages of the command line."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from build_catalog import DEFAULT_INPUT, main
from local_redis import LocalRedis, free_port, redis_server_binary
from recengine.catalog_file import DEFAULT_BATCH_SIZE, catalog_vectors, embed_products, read_catalog, write_catalog
from recengine.catalog_input import RECORD_FIELDS, CatalogError, load_products
from recommender import RedisRecommender

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_JSONL = REPO / "examples" / "products.jsonl"
EXAMPLE_CSV = REPO / "examples" / "products.csv"
DIM = 384

GOOD = {
    "id": "x1",
    "name": "Enamel camp mug",
    "description": "A chip-resistant enamel mug for coffee at camp.",
    "category": "gear",
    "brand": "Acme",
    "price": 12.5,
    "rating": 4.2,
    "in_stock": True,
}
CSV_GOOD = {name: str(value).lower() if isinstance(value, bool) else str(value) for name, value in GOOD.items()}
CSV_HEADER = ",".join(RECORD_FIELDS)
DROP = object()


def jsonl_line(**changes: object) -> str:
    fields = {**GOOD, **changes}
    return json.dumps({name: value for name, value in fields.items() if value is not DROP})


def csv_row(**changes: object) -> str:
    fields = {**CSV_GOOD, **changes}
    return ",".join(str(value) for value in fields.values() if value is not DROP)


def write(directory: Path, name: str, lines: list[str]) -> Path:
    path = directory / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        load_products(path)
    return caught.value.problems


def decoded(product: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(product["embedding_b64"]), dtype="<f4")


# --- reading and checking the input ---------------------------------------------------------


def test_examples_csv_and_jsonl_give_the_same_products() -> None:
    from_csv, from_jsonl = load_products(EXAMPLE_CSV), load_products(EXAMPLE_JSONL)
    assert from_csv == from_jsonl
    assert [p["id"] for p in from_jsonl] == [f"k{i:02d}" for i in range(1, 11)]
    assert all(list(p) == list(RECORD_FIELDS) for p in from_csv)
    assert all(isinstance(p["price"], float) and isinstance(p["in_stock"], bool) for p in from_csv)
    assert next(p for p in from_csv if p["id"] == "k06")["in_stock"] is False


@pytest.mark.parametrize("field", ["id", "name"])
def test_missing_or_empty_required_text_fields(tmp_path: Path, field: str) -> None:
    jsonl = write(tmp_path, "p.jsonl", [jsonl_line(id="a"), jsonl_line(**{"id": "b", field: DROP})])
    csv_file = write(tmp_path, "p.csv", [CSV_HEADER, csv_row(id="a"), csv_row(**{"id": "b", field: "  "})])
    assert problems_of(jsonl) == [f"line 2: {field} is missing or empty"]
    assert problems_of(csv_file) == [f"line 3: {field} is missing or empty"]


@pytest.mark.parametrize(
    ("field", "default"),
    [("description", ""), ("category", ""), ("brand", ""), ("rating", 0.0), ("in_stock", True)],
)
def test_an_absent_optional_field_takes_its_documented_default(tmp_path: Path, field: str, default: object) -> None:
    jsonl = write(tmp_path, "p.jsonl", [jsonl_line(**{field: DROP}), jsonl_line(id="x2", **{field: None})])
    csv_file = write(tmp_path, "p.csv", [CSV_HEADER, csv_row(**{field: ""})])
    assert [p[field] for p in load_products(jsonl)] == [default, default]
    assert load_products(csv_file)[0][field] == default


def test_a_csv_with_only_id_name_and_price_loads(tmp_path: Path) -> None:
    """What issue 21's user had: their own columns, no brand, no rating, no stock level."""
    path = write(
        tmp_path,
        "p.csv",
        ["id,name,description,price", "BANK CHARGES,Bank charges,,15", "22423,Cake stand,Regency,12.75"],
    )
    products = load_products(path)
    assert [p["id"] for p in products] == ["BANK CHARGES", "22423"]
    assert products[0] == {
        "id": "BANK CHARGES", "name": "Bank charges", "description": "", "category": "", "brand": "",
        "price": 15.0, "rating": 0.0, "in_stock": True,
    }  # fmt: skip
    assert list(products[1]) == list(RECORD_FIELDS)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            [jsonl_line(id="a"), jsonl_line(id="b"), jsonl_line(id="a")],
            "line 3: duplicate id 'a', already used on line 1",
        ),
        ([jsonl_line(price=-1)], "line 1: price must be a non-negative number, got -1"),
        ([jsonl_line(price="12")], "line 1: price must be a non-negative number, got '12'"),
        ([jsonl_line(price=DROP)], "line 1: price is missing"),
        ([jsonl_line(rating=5.5)], "line 1: rating must be a number from 0 to 5, got 5.5"),
        ([jsonl_line(in_stock="yes")], "line 1: in_stock must be true or false, got 'yes'"),
        ([jsonl_line(in_stock=1)], "line 1: in_stock must be true or false, got 1"),
        ([jsonl_line(id=7)], "line 1: id must be a string, got 7"),
        ([jsonl_line(), '{"id": "x2",'], "line 2: invalid JSON"),
        (["[1, 2]"], "line 1: expected a JSON object, got list"),
        ([jsonl_line(category="tops,bags")], "line 1: category must not contain ',' (the tag separator)"),
        ([jsonl_line(brand="A, B")], "line 1: brand must not contain ','"),
        ([jsonl_line(id="p" * 257)], "line 1: id is 257 characters long, over the limit of 256"),
        ([jsonl_line(id="p\u00071")], "line 1: id contains a control character (U+0007) at character 2"),
        ([jsonl_line(category="Home > > Mugs")], "line 1: category path 'Home > > Mugs' has an empty level"),
    ],
)
def test_jsonl_rules(tmp_path: Path, lines: list[str], expected: str) -> None:
    problems = problems_of(write(tmp_path, "p.jsonl", lines))
    assert len(problems) == 1
    assert problems[0].startswith(expected)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (csv_row(price="abc"), "line 2: price must be a non-negative number, got 'abc'"),
        (csv_row(price="-0.5"), "line 2: price must be a non-negative number, got '-0.5'"),
        (csv_row(price="nan"), "line 2: price must be a non-negative number, got 'nan'"),
        (csv_row(rating="five"), "line 2: rating must be a number from 0 to 5, got 'five'"),
        (csv_row(rating="-1"), "line 2: rating must be a number from 0 to 5, got '-1'"),
        (csv_row(in_stock="maybe"), "line 2: in_stock must be one of true/false/yes/no/1/0, got 'maybe'"),
        (csv_row() + ",extra", "line 2: 9 values but the header has 8 columns"),
    ],
)
def test_csv_rules(tmp_path: Path, row: str, expected: str) -> None:
    assert problems_of(write(tmp_path, "p.csv", [CSV_HEADER, row])) == [expected]


def test_csv_header_without_a_required_column_is_one_problem(tmp_path: Path) -> None:
    header = CSV_HEADER.replace(",price", "")
    rows = [csv_row(id=f"r{i}", price=DROP) for i in range(3)]
    assert problems_of(write(tmp_path, "p.csv", [header, *rows])) == [
        "line 1: the header has no 'price' column: name the column that holds it with --map price=<column>"
    ]


def test_csv_header_with_a_column_twice(tmp_path: Path) -> None:
    path = write(tmp_path, "p.csv", [CSV_HEADER + ",price", csv_row() + ",13"])
    assert problems_of(path) == ["line 1: the header has more than one 'price' column"]


def test_csv_accepts_the_documented_booleans(tmp_path: Path) -> None:
    spellings = {"TRUE": True, "Yes": True, "1": True, "false": False, "NO": False, "0": False}
    rows = [csv_row(id=f"b{i}", in_stock=text) for i, text in enumerate(spellings)]
    products = load_products(write(tmp_path, "p.csv", [CSV_HEADER, *rows]))
    assert [p["in_stock"] for p in products] == list(spellings.values())


def test_every_problem_is_reported_at_once_in_line_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "products.csv",
        [CSV_HEADER, csv_row(id="a"), csv_row(id="b", price="abc"), csv_row(id="a", rating="9", in_stock="?")],
    )
    with pytest.raises(CatalogError) as caught:
        load_products(path)
    assert str(caught.value).startswith(f"{path}: 4 problems:\n  line 3: price must be a non-negative number")
    assert [problem.split(":")[0] for problem in caught.value.problems] == ["line 3", "line 4", "line 4", "line 4"]
    assert "line 4: duplicate id 'a', already used on line 2" in caught.value.problems


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("empty.jsonl", "", "the file holds no products"),
        ("blank.jsonl", "\n  \n", "the file holds no products"),
        ("empty.csv", "", "the file holds no products"),
        ("header-only.csv", CSV_HEADER + "\n", "the file holds no products"),
        ("products.txt", "{}", r"unsupported input type '.txt': use a .jsonl or .csv \(or either gzipped, .gz\) file"),
    ],
)
def test_unusable_files(tmp_path: Path, name: str, text: str, expected: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError, match=expected):
        load_products(tmp_path / name)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no such file"):
        load_products(tmp_path / "absent.jsonl")


@pytest.mark.parametrize(
    ("name", "lines", "line_no"),
    [
        ("p.csv", [CSV_HEADER + ",color", csv_row() + ",red"], 2),
        ("p.jsonl", [jsonl_line(), jsonl_line(id="x2", color="red")], 2),
    ],
)
def test_unknown_field_is_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, lines: list[str], line_no: int
) -> None:
    with caplog.at_level(logging.WARNING, logger="build_catalog"):
        products = load_products(write(tmp_path, name, lines))
    assert all(list(p) == list(RECORD_FIELDS) for p in products)
    assert f"ignoring unknown field 'color' (first on line {line_no})" in caplog.text


# --- hostile input: every problem named by its line, never a traceback or a silent loss ------


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "build_catalog.py"), *argv], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # The quote closes at a literal quote in a later row's same column: csv reads a valid row and
        # drops line 3 without a word (before: exit 0, one product short).
        (
            [csv_row(id="a", description='"Holds 12 oz'), csv_row(id="b", description='Skillet 12"'), csv_row(id="c")],
            "line 2: a quoted value opened on this line is never closed, so line 3 was read into it",
        ),
        (
            [
                csv_row(id="a", description='"Holds 12 oz'),
                csv_row(id="b"),
                csv_row(id="c", description='Pan 9"'),
                csv_row(id="d"),
            ],
            "line 2: a quoted value opened on this line is never closed, so lines 3-4 were read into it",
        ),
        # The quote closes at the opening quote of a later value: csv stops on the next character.
        (
            [csv_row(id="a", description='"Holds 12 oz'), csv_row(id="b", description='"Cast iron"'), csv_row(id="c")],
            "line 2: a quoted value opened on this line is never closed, so line 3 was read into it",
        ),
        ([csv_row(id="a"), csv_row(id="b", in_stock='"true')], "line 3: the file ends inside a quoted value"),
    ],
)
def test_csv_unclosed_quote_is_found_and_named(tmp_path: Path, rows: list[str], expected: str) -> None:
    output = tmp_path / "catalog.json"
    result = cli("--input", str(write(tmp_path, "p.csv", [CSV_HEADER, *rows])), "--output", str(output))
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists()


def test_csv_quoted_values_may_still_span_lines(tmp_path: Path) -> None:
    """Not every multi-line value is a missing quote: a description written on two lines loads,
    and the row after it keeps the number of the line it starts on."""
    rows = [csv_row(id="a", description='"Line one, with a comma\nline two"'), csv_row(id="b", price="abc")]
    path = write(tmp_path, "p.csv", [CSV_HEADER, *rows])
    assert problems_of(path) == ["line 4: price must be a non-negative number, got 'abc'"]
    path = write(tmp_path, "p.csv", [CSV_HEADER, rows[0], csv_row(id="b")])
    assert load_products(path)[0]["description"] == "Line one, with a comma\nline two"


def test_csv_stray_quote_inside_a_quoted_value_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "p.csv", [CSV_HEADER, csv_row(description='"A "12 inch" pan"')])
    (problem,) = problems_of(path)
    assert problem.startswith("line 2: malformed CSV:") and 'written twice: ""' in problem


@pytest.mark.parametrize("depth", [100_000, 5_000])
def test_jsonl_deep_nesting_is_one_problem_on_its_line(tmp_path: Path, depth: int) -> None:
    """100k levels is refused by the line limit before parsing; 5k levels fits in a line and
    would overflow the parser's recursion (before: a RecursionError traceback)."""
    path = write(tmp_path, "p.jsonl", [jsonl_line(id="a"), "[" * depth + "]" * depth, jsonl_line(id="c")])
    result = cli("--input", str(path), "--output", str(tmp_path / "c.json"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "1 problem:\n  line 2: " in result.stderr
    assert ("over the limit of 100,000" if depth == 100_000 else "nested too deeply") in result.stderr


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            jsonl_line(description="fine\u0000then"),
            "line 1: description contains a NUL character (U+0000) at character 5",
        ),
        (jsonl_line(name="cup \ud800"), "line 1: name contains a lone surrogate (U+D800"),
        (jsonl_line(brand="Ac\x07me"), "line 1: brand contains a control character (U+0007) at character 3"),
    ],
)
def test_jsonl_nul_surrogate_and_control_characters_are_refused(tmp_path: Path, line: str, expected: str) -> None:
    """json.dumps writes these as \\u escapes, as any JSON writer may; before, they passed the
    checks and the build crashed later (a lone surrogate cannot be encoded to UTF-8)."""
    (problem,) = problems_of(write(tmp_path, "p.jsonl", [line]))
    assert problem.startswith(expected)


def test_csv_nul_byte_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "p.csv", [CSV_HEADER, csv_row(id="a"), csv_row(id="b", name="mu\x00g")])
    assert problems_of(path) == ["line 3: name contains a NUL character (U+0000) at character 3: remove it"]


@pytest.mark.parametrize("size", [10 * 1024 * 1024, 20_000])
def test_one_size_limit_for_jsonl_and_csv(tmp_path: Path, size: int) -> None:
    """The same limits in both formats, named in the message: a line (a CSV row) over 100,000
    characters, a text field over 10,000 (before: a 10 MB description was embedded from JSONL,
    for seconds and gigabytes, and refused from CSV by csv's own 131,072 limit)."""
    big_json, big_csv = jsonl_line(id="b", description="x" * size), csv_row(id="b", description="x" * size)
    jsonl = write(tmp_path, "p.jsonl", [jsonl_line(id="a"), big_json])
    csv_file = write(tmp_path, "p.csv", [CSV_HEADER, csv_row(id="a"), big_csv])
    if size > 100_000:
        limit = ", over the limit of 100,000 (a text field may hold 10,000)"
        assert problems_of(jsonl) == [f"line 2: the line is {len(big_json):,} characters long{limit}"]
        assert problems_of(csv_file) == [f"line 3: the line is {len(big_csv):,} characters long{limit}"]
    else:
        field = f"description is {size:,} characters long, over the limit of 10,000"
        assert problems_of(jsonl) == [f"line 2: {field}"]
        assert problems_of(csv_file) == [f"line 3: {field}"]


def test_csv_row_over_the_limit_across_lines(tmp_path: Path) -> None:
    """A quoted value spanning lines can make a row too long with no line too long."""
    value = '"' + "\n".join(["y" * 80_000] * 2) + '"'
    path = write(tmp_path, "p.csv", [CSV_HEADER, csv_row(id="a", description=value), csv_row(id="b")])
    (problem,) = problems_of(path)
    assert problem.startswith("line 2: the row is over the limit of 100,000 characters")


def test_latin1_input_reports_lines_not_byte_offsets(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    lines = [CSV_HEADER, csv_row(id="a"), csv_row(id="b", name="Café mug"), csv_row(id="c", brand="Müller")]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    result = cli("--input", str(path), "--output", str(tmp_path / "c.json"))
    assert result.returncode == 2
    assert "2 lines not UTF-8:\n" in result.stderr
    assert "line 3: not UTF-8 text (byte 0xE9 at column 6)" in result.stderr
    assert "line 4: not UTF-8 text (byte 0xFC at column " in result.stderr
    assert "save the file as UTF-8" in result.stderr


def test_utf8_bom_is_still_accepted(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"{CSV_HEADER}\n{csv_row()}\n".encode())
    assert load_products(path)[0]["id"] == "x1"


# --- --output: only a regular file is ever replaced -------------------------------------------


def special_outputs(tmp_path: Path) -> list[tuple[Path, str]]:
    """A symlink (to a file that must stay untouched), a directory, a FIFO and, where this user
    may make one, a character device (a /dev/null twin in tmp_path: replacing the real one would
    break the machine, which is what the builder did before)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "link.json").symlink_to(victim)
    (tmp_path / "folder.json").mkdir()
    os.mkfifo(tmp_path / "fifo.json")
    outputs = [
        (tmp_path / "link.json", "a symbolic link"),
        (tmp_path / "folder.json", "a directory"),
        (tmp_path / "fifo.json", "a named pipe"),
    ]
    try:
        os.mknod(tmp_path / "null.json", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        outputs.append((tmp_path / "null.json", "a character device"))
    except PermissionError:
        pass
    return outputs


def test_main_refuses_an_output_that_is_not_a_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for output, kind in special_outputs(tmp_path):
        before = output.lstat()
        assert main(["--input", str(EXAMPLE_JSONL), "--output", str(output)]) == 2
        err = capsys.readouterr().err
        assert f"{output}: cannot write it: {output} is {kind}; only a regular file is ever replaced" in err
        after = output.lstat()
        assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert (tmp_path / "victim.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".*.tmp"))


def test_write_catalog_refuses_a_symlink_even_without_main(tmp_path: Path) -> None:
    """The check lives in the one atomic writer, so every caller has it."""
    (tmp_path / "real.json").write_text("keep me")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    with pytest.raises(OSError, match="is a symbolic link"):
        write_catalog(tmp_path / "link.json", "m", DIM, [])
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "real.json").read_text() == "keep me"


def test_main_reports_a_missing_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "absent" / "catalog.json"
    assert main(["--input", str(EXAMPLE_JSONL), "--output", str(output)]) == 2
    assert f"the folder {output.parent} does not exist" in capsys.readouterr().err


# --- read_catalog: the builder's rules, applied to a catalog -----------------------------------


def catalog_file(tmp_path: Path, products: list, **top: object) -> Path:
    vector = base64.b64encode((np.ones(DIM, dtype="<f4") / np.float32(np.sqrt(DIM))).tobytes()).decode()
    rows = [{**product, "embedding_b64": vector} if isinstance(product, dict) else product for product in products]
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"model": "all-MiniLM-L6-v2", "dim": DIM, "products": rows, **top}))
    return path


def catalog_problems_of(path: Path) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        read_catalog(path)
    return caught.value.problems


def test_read_catalog_names_an_entry_that_is_not_a_product(tmp_path: Path) -> None:
    """Before: AttributeError ('str' object has no attribute 'get')."""
    path = catalog_file(tmp_path, [GOOD, "p002", [1, 2]])
    assert catalog_problems_of(path) == [
        "products[1]: expected a product object, got a string",
        "products[2]: expected a product object, got an array",
    ]


def test_read_catalog_names_a_product_without_a_vector(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"model": "m", "dim": DIM, "products": [GOOD]}))
    assert catalog_problems_of(path) == ["products[0] (id 'x1'): no vector (embedding_b64 is missing)"]


def test_read_catalog_refuses_duplicate_ids(tmp_path: Path) -> None:
    """Before: "96 products" loaded when 95 keys were indexed, the second overwriting the first."""
    path = catalog_file(tmp_path, [GOOD, {**GOOD, "id": "x2"}, GOOD])
    assert catalog_problems_of(path) == ["products[2] (id 'x1'): duplicate id 'x1', already used by products[0]"]


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"price": -1}, "price must be a non-negative number, got -1"),
        ({"rating": 99}, "rating must be a number from 0 to 5, got 99"),
        ({"in_stock": "yes"}, "in_stock must be true or false, got 'yes'"),
        ({"category": "a,b"}, "category must not contain ','"),
        ({"description": "x" * 10_001}, "description is 10,001 characters long, over the limit of 10,000"),
        ({"name": DROP}, "name is missing or empty"),
    ],
)
def test_builder_and_loader_apply_one_rule(tmp_path: Path, changes: dict, problem: str) -> None:
    """The same product gets the same verdict, in the same words, from build_catalog.py's input
    check and from read_catalog (before: the loader took a negative price or a rating of 99)."""
    product = {name: value for name, value in {**GOOD, **changes}.items() if value is not DROP}
    (from_builder,) = problems_of(write(tmp_path, "p.jsonl", [json.dumps(product)]))
    (from_loader,) = catalog_problems_of(catalog_file(tmp_path, [product]))
    assert from_builder.startswith(f"line 1: {problem}")
    assert from_loader.startswith(f"products[0] (id 'x1'): {problem}") or from_loader.startswith(
        f"products[0]: {problem}"
    )
    assert from_builder.removeprefix("line 1: ") == from_loader.split(": ", 1)[1]


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        ({"dim": "384"}, "dim must be a positive integer, got '384'"),
        ({"model": ""}, "model must name the embedding model"),
        ({"model": None}, "model must name the embedding model, got null"),
    ],
)
def test_read_catalog_checks_the_header(tmp_path: Path, top: dict, expected: str) -> None:
    with pytest.raises(CatalogError, match=expected):
        read_catalog(catalog_file(tmp_path, [GOOD], **top))


def test_read_catalog_refuses_an_empty_or_deeply_nested_catalog(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="holds no products"):
        read_catalog(catalog_file(tmp_path, []))
    path = tmp_path / "deep.json"
    path.write_text('{"model": "m", "dim": 384, "products": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CatalogError, match="nested too deeply"):
        read_catalog(path)


def test_read_catalog_returns_the_builders_form(tmp_path: Path) -> None:
    """Integer prices (Go's and Node's JSON) become floats; the fields come in the builder's order."""
    path = catalog_file(tmp_path, [{**GOOD, "price": 12, "rating": 4}])
    (product,) = read_catalog(path)["products"]
    assert list(product) == [*RECORD_FIELDS, "embedding_b64"]
    assert (product["price"], product["rating"]) == (12.0, 4.0) and isinstance(product["price"], float)


# --- the catalog file -----------------------------------------------------------------------


def test_write_catalog_failure_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_bytes(b"previous catalog")
    with pytest.raises(ValueError):
        write_catalog(path, "m", DIM, [{**GOOD, "price": float("nan")}])
    assert path.read_bytes() == b"previous catalog"
    assert [p.name for p in tmp_path.iterdir()] == ["catalog.json"]


def test_read_catalog_rejects_a_broken_catalog(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"model": "m", "dim": DIM, "products": [{**GOOD, "embedding_b64": "AAAA"}]}))
    with pytest.raises(CatalogError, match="embedding_b64 holds 3 bytes"):
        read_catalog(path)


def test_committed_catalog_is_what_the_builder_produces_now(embedder) -> None:
    committed = read_catalog(REPO / "catalog.json")
    fresh = embed_products(load_products(DEFAULT_INPUT), embedder, DEFAULT_BATCH_SIZE)
    assert (committed["model"], committed["dim"]) == (embedder.model_name, embedder.dim)
    strip = [{k: v for k, v in p.items() if k != "embedding_b64"} for p in fresh]
    assert [{k: v for k, v in p.items() if k != "embedding_b64"} for p in committed["products"]] == strip
    np.testing.assert_allclose(catalog_vectors(committed), np.stack([decoded(p) for p in fresh]), atol=1e-5)


# --- main() and the command line ------------------------------------------------------------


def test_main_on_bad_input_exits_2_and_leaves_the_output_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(tmp_path, "products.csv", [CSV_HEADER, csv_row(id="a"), csv_row(id="b", price="abc")])
    output = tmp_path / "catalog.json"
    output.write_bytes(b'{"untouched": true}')
    assert main(["--input", str(bad), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: 1 problem:\n  line 3: price must be a non-negative number, got 'abc'" in err
    assert output.read_bytes() == b'{"untouched": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.json", "products.csv"]


def test_main_writes_the_documented_format_deterministically(tmp_path: Path) -> None:
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    assert main(["--input", str(EXAMPLE_JSONL), "--output", str(first)]) == 0
    assert main(["--input", str(EXAMPLE_JSONL), "--output", str(second), "--batch-size", "3"]) == 0

    catalog = json.loads(first.read_text(encoding="utf-8"))
    assert list(catalog) == ["model", "dim", "products"]
    assert (catalog["model"], catalog["dim"]) == ("all-MiniLM-L6-v2", DIM)
    assert [{k: v for k, v in p.items() if k != "embedding_b64"} for p in catalog["products"]] == load_products(
        EXAMPLE_JSONL
    )
    for product in catalog["products"]:
        assert list(product) == [*RECORD_FIELDS, "embedding_b64"]
        vector = decoded(product)
        assert vector.shape == (DIM,)
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    np.testing.assert_allclose(catalog_vectors(catalog), catalog_vectors(read_catalog(second)), atol=1e-6)
    assert (first.stat().st_mode & 0o777) == 0o644


def test_main_load_pushes_the_products_into_redis(tmp_path: Path, local_redis: LocalRedis) -> None:
    tag = uuid.uuid4().hex[:8]
    index_name, key_prefix = f"build-{tag}:idx", f"build-{tag}:"
    argv = ["--input", str(EXAMPLE_CSV), "--output", str(tmp_path / "c.json"), "--load"]
    argv += ["--redis-url", local_redis.url, "--index-name", index_name, "--key-prefix", key_prefix]
    assert main(argv) == 0
    recommender = RedisRecommender(local_redis.client(), index_name=index_name, key_prefix=key_prefix)
    try:
        assert recommender.count_indexed() == 10
        assert recommender.get_products(["k06"])["k06"]["in_stock"] is False
    finally:
        recommender.drop_index(delete_documents=True)


def test_main_load_creates_a_float16_index_when_asked(tmp_path: Path, local_redis: LocalRedis) -> None:
    tag = uuid.uuid4().hex[:8]
    index_name, key_prefix = f"build-{tag}:idx", f"build-{tag}:"
    argv = ["--input", str(EXAMPLE_CSV), "--output", str(tmp_path / "c.json"), "--load", "--vector-type", "FLOAT16"]
    argv += ["--redis-url", local_redis.url, "--index-name", index_name, "--key-prefix", key_prefix]
    assert main(argv) == 0
    recommender = RedisRecommender(local_redis.client(), index_name=index_name, key_prefix=key_prefix)
    try:
        assert recommender.vector_type == "FLOAT16" and recommender.count_indexed() == 10
        stored = recommender.redis.hget(recommender.product_key("k06"), "embedding")
        assert isinstance(stored, bytes) and len(stored) == 2 * DIM
        written = read_catalog(tmp_path / "c.json")["products"]
        vector = decoded(next(p for p in written if p["id"] == "k06"))  # the file keeps float32
        assert recommender.candidate_retrieve(vector, k=1)[0].id == "k06"
    finally:
        recommender.drop_index(delete_documents=True)


def test_main_reports_a_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "c.json"
    argv = ["--input", str(EXAMPLE_JSONL), "--output", str(output), "--model", str(tmp_path / "no-such-model")]
    assert main(argv) == 2
    assert "cannot load the embedding model" in capsys.readouterr().err
    assert not output.exists()


@pytest.fixture
def redis_without_search(tmp_path: Path) -> Iterator[str]:
    """A plain redis-server, no Search module: what --load must refuse with a clear message."""
    port = free_port()
    command = [str(redis_server_binary()), "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    process = subprocess.Popen([*command, "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}"
    client.close()
    process.terminate()
    process.wait(timeout=10)


def test_main_load_refuses_redis_without_search(
    tmp_path: Path, redis_without_search: str, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "c.json"
    argv = ["--input", str(EXAMPLE_JSONL), "--output", str(output), "--load", "--redis-url", redis_without_search]
    assert main(argv) == 2
    assert "has no Search module" in capsys.readouterr().err
    assert not output.exists()


def test_main_load_reports_an_unreachable_redis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "c.json"
    url = f"redis://127.0.0.1:{free_port()}"
    assert main(["--input", str(EXAMPLE_JSONL), "--output", str(output), "--load", "--redis-url", url]) == 2
    assert f"cannot use the Redis at {url} for --load" in capsys.readouterr().err
    assert not output.exists()


def test_cli_bad_input_exits_2_without_a_traceback(tmp_path: Path) -> None:
    bad = write(
        tmp_path, "products.csv", [CSV_HEADER, csv_row(id="a", rating="9"), csv_row(id="b", in_stock="perhaps")]
    )
    output = tmp_path / "catalog.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "build_catalog.py"), "--input", str(bad), "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "2 problems:" in result.stderr
    assert "line 2: rating must be a number from 0 to 5, got '9'" in result.stderr
    assert "line 3: in_stock must be one of true/false/yes/no/1/0, got 'perhaps'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists()


def test_onnx_backend_builds_the_same_catalog(tmp_path: Path) -> None:
    """The faster backend is a drop-in for large catalogs: same products, same vectors."""
    torch_out, onnx_out = tmp_path / "torch.json", tmp_path / "onnx.json"
    assert main(["--input", str(EXAMPLE_JSONL), "--output", str(torch_out)]) == 0
    assert main(["--input", str(EXAMPLE_JSONL), "--output", str(onnx_out), "--embedding-backend", "onnx"]) == 0
    torch_catalog, onnx_catalog = read_catalog(torch_out), read_catalog(onnx_out)
    assert onnx_catalog["model"] == torch_catalog["model"]
    difference = np.abs(catalog_vectors(onnx_catalog) - catalog_vectors(torch_catalog)).max()
    assert difference < 1e-6, difference
