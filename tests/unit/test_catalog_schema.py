"""Category paths and extra filter fields: the pure rules of a real catalogue's schema."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recengine.catalog_schema import (
    ExtraField,
    category_levels,
    category_levels_value,
    normalize_category,
)


def test_every_level_of_a_path_is_indexed_from_the_top() -> None:
    assert category_levels("Home > Kitchen > Mugs") == ("Home", "Home > Kitchen", "Home > Kitchen > Mugs")
    assert category_levels_value("Home > Kitchen") == "Home,Home > Kitchen"


def test_a_flat_category_is_its_only_level_and_an_empty_one_has_none() -> None:
    assert category_levels("outerwear") == ("outerwear",)
    assert category_levels("") == ()


@pytest.mark.parametrize("spelling", ["Home >  Kitchen", " Home > Kitchen ", "Home\t>\tKitchen"])
def test_spacing_around_the_separator_does_not_make_another_category(spelling: str) -> None:
    assert normalize_category(spelling) == "Home > Kitchen"


@pytest.mark.parametrize("flat", ["Home>Kitchen", "(x)=>[KNN 1 @embedding $vec]", "a >b", "a> b"])
def test_only_a_spaced_separator_splits_a_category(flat: str) -> None:
    assert category_levels(flat) == (flat,)


@pytest.mark.parametrize("path", ["Home > > Mugs", "> Mugs", "Home >"])
def test_an_empty_level_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match="empty level"):
        normalize_category(path)


def test_the_tag_separator_is_refused() -> None:
    with pytest.raises(ValueError, match="tag separator"):
        normalize_category("Home, Garden")


# Levels as written after normalising: no separator, no tag separator, no spaces around them.
level = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FFF, blacklist_characters=">,", blacklist_categories=("Z", "C")),
    min_size=1,
    max_size=6,
)


@given(st.lists(level, min_size=1, max_size=5))
def test_levels_are_prefixes_ending_in_the_path(parts: list[str]) -> None:
    path = " > ".join(parts)
    levels = category_levels(path)
    assert len(levels) == len(parts) and levels[-1] == path
    assert all(path.startswith(upper) for upper in levels)


def test_extra_fields_need_a_plain_unused_name() -> None:
    assert ExtraField("colour", "tag").schema() == ["colour", "TAG"]
    assert ExtraField("weight_kg", "numeric").schema() == ["weight_kg", "NUMERIC"]
    for bad in ("price", "embedding", "my colour", "1st", ""):
        with pytest.raises(ValueError):
            ExtraField(bad, "tag")
