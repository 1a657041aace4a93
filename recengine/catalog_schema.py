"""What a product of a real catalogue may hold, beyond id, name and price: the optional fields
and their defaults, category paths, and the extra filter fields a shop declares.

Pure rules, shared by the file reader (recengine/catalog_input.py), the library's writers and
the admin API, so that a product means the same wherever it comes in.

- Optional fields: a catalogue without brands, ratings, stock levels or even categories loads;
  what is missing takes the default in OPTIONAL_DEFAULTS. An empty category or brand matches no
  filter on them; a rating of 0 means "unrated" (a min_rating filter leaves it out); a product
  without a stock column is sellable.
- Category paths: "Home > Kitchen > Mugs" (spacing normalised) is stored in the `category` TAG
  field as its every level, "Home,Home > Kitchen,Home > Kitchen > Mugs", so a filter on "Home"
  finds the mugs with the filter clause every port writes (`@category:{Home}`); the product's
  own category is the last level (`stored_category`). A flat category is stored as it is.
- Extra fields: `--tag-field colour` or `--numeric-field weight_kg` make a column of the file a
  TAG or NUMERIC field of the index: stored in the product hash and filterable.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from recengine.validation import TAG_SEPARATOR

CATEGORY_PATH_SEPARATOR = ">"
# Between two levels: ">" with whitespace on both sides (so "=>" in a name is no separator).
PATH_SEPARATOR = re.compile(r"(?<=\s)>(?=\s)")
TEXT_DIGEST_FIELD = "text_sha256"
REQUIRED_FIELDS = ("id", "name", "price")
OPTIONAL_DEFAULTS: Mapping[str, Any] = {
    "description": "",
    "category": "",
    "brand": "",
    "rating": 0.0,
    "in_stock": True,
}
# Field names the schema already uses (or that name the vector, the digest, the levels):
# an extra field may not take one.
RESERVED_FIELDS = frozenset({*REQUIRED_FIELDS, *OPTIONAL_DEFAULTS, "embedding", "embedding_b64", TEXT_DIGEST_FIELD})
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
FieldKind = Literal["tag", "numeric"]


def product_text(name: str, description: str) -> str:
    """What gets embedded: the name leads, as it is the densest description of the item. The
    reference, Go and Node ports build the same "<name>. <description>", so their catalogs'
    vectors can be checked against ours."""
    return f"{name}. {description}"


def text_digest(embedded_text: str) -> str:
    """The digest kept beside a product's vector (TEXT_DIGEST_FIELD): the vector is current
    while the digest of the product's text matches it."""
    return hashlib.sha256(embedded_text.encode("utf-8")).hexdigest()


def normalize_category(path: str) -> str:
    """A category as stored: a path's levels trimmed and joined by " > ", so that
    "Home >  Kitchen" and "Home > Kitchen" are one category. Only a ">" with spaces on both sides
    separates levels: "Home>Kitchen" or "x)=>[y" are flat categories, matched as written.
    ValueError for an empty level ("Home > > Mugs") and for the tag separator, which would split
    the category in the index."""
    if TAG_SEPARATOR in path:
        raise ValueError(f"category must not contain {TAG_SEPARATOR!r} (the tag separator), got {path!r}")
    levels = PATH_SEPARATOR.split(f" {path.strip()} ")
    if len(levels) == 1:
        return path.strip()
    levels = [level.strip() for level in levels]
    if not all(levels):
        raise ValueError(f"category path {path!r} has an empty level (write it as 'A > B > C')")
    return f" {CATEGORY_PATH_SEPARATOR} ".join(levels)


def category_levels(path: str) -> tuple[str, ...]:
    """Every level of a (normalised) category path, from the top: what a filter may name.
    An empty category has none."""
    category = normalize_category(path)
    if not category:
        return ()
    levels = category.split(f" {CATEGORY_PATH_SEPARATOR} ")
    return tuple(f" {CATEGORY_PATH_SEPARATOR} ".join(levels[: depth + 1]) for depth in range(len(levels)))


def category_levels_value(path: str) -> str:
    """The `category` field as stored: the levels joined by the tag separator."""
    return TAG_SEPARATOR.join(category_levels(path))


def stored_category(value: str) -> str:
    """A product's own category from the stored `category` field: its last level."""
    return value.rsplit(TAG_SEPARATOR, 1)[-1]


def split_levels(value: str) -> list[str]:
    """Every level a stored `category` field holds (what a filter may name)."""
    return [level for level in value.split(TAG_SEPARATOR) if level]


@dataclass(frozen=True)
class ExtraField:
    """A column a shop filters on: TAG (exact values, comma-free) or NUMERIC (ranges)."""

    name: str
    kind: FieldKind

    def __post_init__(self) -> None:
        if not FIELD_NAME.fullmatch(self.name):
            raise ValueError(
                f"extra field name {self.name!r} must be a letter or _ followed by letters, digits or _ (at most 64)"
            )
        if self.name in RESERVED_FIELDS:
            raise ValueError(f"{self.name!r} is a field of the schema already; an extra field needs another name")

    def schema(self) -> list[str]:
        """The field's FT.CREATE SCHEMA arguments."""
        return [self.name, "TAG"] if self.kind == "tag" else [self.name, "NUMERIC"]
