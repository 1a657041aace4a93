"""Reading a real shop's file: its own column names (--map), optional fields, category paths,
extra filter fields, gzipped input. No Redis, no model."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from build_catalog import build_parser
from recengine.catalog_file import catalog_text
from recengine.catalog_input import CatalogError, InputSchema, input_schema, load_products


def write(directory: Path, name: str, lines: list[str]) -> Path:
    path = directory / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def schema_of(*argv: str) -> InputSchema:
    args = build_parser().parse_args(list(argv))
    return input_schema(args.maps, args.tag_field, args.numeric_field)


def problems(path: Path, schema: InputSchema) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        load_products(path, schema)
    return caught.value.problems


def test_columns_are_read_under_the_names_map_gives_them(tmp_path: Path) -> None:
    path = write(tmp_path, "shop.csv", ["StockCode,Description,UnitPrice,name", "85123A,HEART HOLDER,2.55,ignored"])
    schema = schema_of("--map", "id=StockCode", "--map", "name=Description", "--map", "price=UnitPrice")
    (product,) = load_products(path, schema)
    assert (product["id"], product["name"], product["price"]) == ("85123A", "HEART HOLDER", 2.55)


def test_a_mapped_column_missing_from_the_header_is_named_with_its_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "shop.csv", ["id,Description,price", "a,Mug,1"])
    assert problems(path, schema_of("--map", "name=Title")) == [
        "line 1: the header has no 'Title' column (--map name=Title)"
    ]


def test_map_also_renames_jsonl_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "shop.jsonl", [json.dumps({"sku": "a/b c", "title": "Mug", "cost": 3})])
    (product,) = load_products(path, schema_of("--map", "id=sku", "--map", "name=title", "--map", "price=cost"))
    assert product["id"] == "a/b c" and product["price"] == 3.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--map", "colour=Colour"], "'colour' is no product field"),
        (["--map", "id=A", "--map", "id=B"], "given twice"),
        (["--tag-field", "price"], "'price' is a field of the schema already"),
        (["--tag-field", "my colour"], "must be a letter"),
        (["--tag-field", "colour", "--numeric-field", "colour"], "declared twice"),
    ],
)
def test_bad_mappings_and_extra_fields_are_refused_before_reading(argv: list[str], message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        schema_of(*argv)


def test_map_needs_field_equals_column(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--map", "StockCode"])
    assert "expected FIELD=COLUMN" in capsys.readouterr().err


def test_extra_fields_are_kept_typed_and_declared_in_the_catalog(tmp_path: Path) -> None:
    path = write(tmp_path, "p.csv", ["id,name,price,Colour,weight", "a,Mug,1,deep blue,0.4", "b,Cup,2,,"])
    schema = schema_of("--tag-field", "colour", "--map", "colour=Colour", "--numeric-field", "weight")
    first, second = load_products(path, schema)
    assert (first["colour"], first["weight"]) == ("deep blue", 0.4)
    assert "colour" not in second and "weight" not in second
    text = catalog_text("m", 2, [], schema.extra_fields)
    assert json.loads(text)["extra_fields"] == [
        {"name": "colour", "kind": "tag"},
        {"name": "weight", "kind": "numeric"},
    ]
    assert "extra_fields" not in catalog_text("m", 2, [])


def test_extra_field_values_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "p.csv", ["id,name,price,colour,weight", 'a,Mug,1,"red,blue",heavy'])
    assert problems(path, schema_of("--tag-field", "colour", "--numeric-field", "weight")) == [
        "line 2: colour must not contain ',' (the tag separator), got 'red,blue'",
        "line 2: weight must be a number, got 'heavy'",
    ]


def test_category_paths_are_stored_with_one_spelling(tmp_path: Path) -> None:
    path = write(tmp_path, "p.csv", ["id,name,price,category", "a,Mug,1,Home  > Kitchen >  Mugs"])
    assert load_products(path, InputSchema())[0]["category"] == "Home > Kitchen > Mugs"


@pytest.mark.parametrize(
    "hostile_id", ["BANK CHARGES", "a/b", 'x"} | @brand:{y', "*", "{slot}", "ünï cødé", "-1", "a\\b", "$vec"]
)
def test_ids_may_hold_any_printable_characters(tmp_path: Path, hostile_id: str) -> None:
    path = write(tmp_path, "p.jsonl", [json.dumps({"id": hostile_id, "name": "Mug", "price": 1})])
    assert load_products(path, InputSchema())[0]["id"] == hostile_id


def test_a_gzipped_file_is_read_like_the_plain_one(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl.gz"
    path.write_bytes(gzip.compress(json.dumps({"id": "a", "name": "Mug", "price": 1}).encode() + b"\n"))
    assert load_products(path, InputSchema())[0]["id"] == "a"
    (tmp_path / "broken.csv.gz").write_bytes(b"not gzip")
    with pytest.raises(CatalogError, match="cannot read it"):
        load_products(tmp_path / "broken.csv.gz", InputSchema())


def test_the_shipped_online_retail_catalogue_loads_as_it_is() -> None:
    """data/online-retail/products.jsonl.gz (bench/online_retail.py's output) is build_catalog's
    input without unpacking or editing: `python build_catalog.py --input <it> --load`."""
    path = Path(__file__).resolve().parents[2] / "data" / "online-retail" / "products.jsonl.gz"
    products = load_products(path, InputSchema())
    assert len(products) == len({p["id"] for p in products}) > 3900
