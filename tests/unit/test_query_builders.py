"""What the library asks RediSearch, read as text: the filter clause, its escaping, and the whole
argument list of every FT.* command. No Redis: tests/integration/test_properties.py sends
hostile filters to the real module."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recengine import query
from recengine.query import SearchFilters, build_filter_clause, escape_tag_value, escape_text_phrase, knn_query
from recommender import PRODUCT_FIELDS, RedisRecommender

FIELDS = list(PRODUCT_FIELDS)


# --- escaping -------------------------------------------------------------------------------------


@given(st.text())
def test_no_ascii_punctuation_or_whitespace_survives_tag_escaping_unescaped(value: str) -> None:
    escaped = escape_tag_value(value)
    i = 0
    while i < len(escaped):
        ch = escaped[i]
        if ch == "\\":
            i += 2
            continue
        assert not ch.isspace() and not (ch.isascii() and not (ch.isalnum() or ch == "_")), (value, escaped)
        i += 1


@given(st.text())
def test_removing_the_escapes_gives_back_the_tag_value(value: str) -> None:
    escaped = escape_tag_value(value)
    unescaped, i = [], 0
    while i < len(escaped):
        if escaped[i] == "\\":
            i += 1
        unescaped.append(escaped[i])
        i += 1
    assert "".join(unescaped) == value


def test_unicode_letters_are_left_as_they_are() -> None:
    assert escape_tag_value("café straße") == "café\\ straße"


def test_a_text_phrase_is_one_quoted_string() -> None:
    assert escape_text_phrase('say "hi" \\ bye') == '"say \\"hi\\" \\\\ bye"'


# --- the filter clause ----------------------------------------------------------------------------


def test_no_filter_is_a_star() -> None:
    assert SearchFilters().clause() == "*"
    assert build_filter_clause(category="", brand="  ", text_match=None) == "*"


def test_every_filter_in_its_place_with_hostile_values_escaped() -> None:
    """(tests/integration/test_recommender.py checks the description phrase; here, the name.)"""
    tags = SearchFilters(category="Outer wear", brand="x} | @brand:{y", in_stock_only=True)
    ranges = SearchFilters(min_price=10, max_price=99.5, min_rating=4, text_match="warm -wool", text_field="name")
    assert tags.clause() == "@category:{Outer\\ wear} @brand:{x\\}\\ \\|\\ \\@brand\\:\\{y} @in_stock:{true}"
    assert ranges.clause() == '@price:[10.0 99.5] @rating:[4.0 +inf] @name:"warm -wool"'


def test_open_price_ranges_use_infinities() -> None:
    assert build_filter_clause(min_price=5) == "@price:[5.0 +inf]"
    assert build_filter_clause(max_price=5) == "@price:[-inf 5.0]"


def test_values_are_trimmed() -> None:
    assert SearchFilters(category="  bags ").category == "bags"


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"category": "a\x00b"}, "control characters"),
        ({"brand": 3}, "must be a string"),
        ({"text_match": "\ud800"}, "lone surrogate"),
        ({"min_price": math.nan}, "finite"),
        ({"min_price": "cheap"}, "must be a number"),
        ({"min_price": 5, "max_price": 1}, "greater than max_price"),
        ({"in_stock_only": "yes"}, "boolean"),
        ({"text_field": "brand"}, "text_field"),
    ],
)
def test_bad_filters_are_value_errors(filters: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SearchFilters(**filters)


def test_build_filter_clause_takes_only_filter_keywords() -> None:
    with pytest.raises(TypeError):
        build_filter_clause(colour="red")  # type: ignore[call-arg]


def test_the_references_spelling_wraps_the_clause_in_parentheses() -> None:
    assert RedisRecommender._build_filter_clause(category="bags") == "(@category:{bags})"
    assert RedisRecommender._build_filter_clause() == "(*)"
    assert RedisRecommender.build_filter_clause(category="bags") == "@category:{bags}"


# --- the KNN query --------------------------------------------------------------------------------


def test_knn_without_filter_walks_the_graph_with_ef_runtime() -> None:
    assert knn_query("*", 10, 100, "BATCHES") == (
        "(*)=>[KNN 10 @embedding $vec EF_RUNTIME $ef AS vector_score]",
        {"ef": "100"},
    )


def test_a_hybrid_policy_needs_a_filter_and_adhoc_bf_takes_no_ef_runtime() -> None:
    assert knn_query("@category:{a}", 5, 100, "BATCHES")[0] == (
        "(@category:{a})=>[KNN 5 @embedding $vec HYBRID_POLICY BATCHES EF_RUNTIME $ef AS vector_score]"
    )
    assert knn_query("@category:{a}", 5, 100, "ADHOC_BF") == (
        "(@category:{a})=>[KNN 5 @embedding $vec HYBRID_POLICY ADHOC_BF AS vector_score]",
        {},
    )
    assert knn_query("*", 5, None, None) == ("(*)=>[KNN 5 @embedding $vec AS vector_score]", {})


# --- every command, whole -------------------------------------------------------------------------


def test_create_index_command() -> None:
    assert query.create_index_command("idx", "product:", ["name", "TEXT"]) == [
        "FT.CREATE", "idx", "ON", "HASH", "PREFIX", "1", "product:", "STOPWORDS", "0", "SCHEMA", "name", "TEXT",
    ]  # fmt: skip


def test_drop_index_command() -> None:
    assert query.drop_index_command("idx", False) == ["FT.DROPINDEX", "idx"]
    assert query.drop_index_command("idx", True) == ["FT.DROPINDEX", "idx", "DD"]


def test_knn_search_command() -> None:
    command = query.knn_search_command("idx", "@brand:{b}", b"\x00" * 8, 7, ("name", "price"), 50, None)
    assert command == [
        "FT.SEARCH", "idx", "(@brand:{b})=>[KNN 7 @embedding $vec EF_RUNTIME $ef AS vector_score]",
        "PARAMS", "4", "ef", "50", "vec", b"\x00" * 8,
        "RETURN", "3", "name", "price", "vector_score",
        "SORTBY", "vector_score",
        "LIMIT", "0", "7",
        "DIALECT", "2",
    ]  # fmt: skip


def test_knn_search_command_without_params_but_the_vector() -> None:
    command = query.knn_search_command("idx", "*", b"v", 3, (), None, None)
    assert command[3:9] == ["PARAMS", "2", "vec", b"v", "RETURN", "1"]


def test_in_keys_search_command_returns_the_vector_only_for_mmr() -> None:
    assert query.in_keys_search_command("idx", "*", ["product:a", "product:b"], False) == [
        "FT.SEARCH", "idx", "*",
        "INKEYS", "2", "product:a", "product:b",
        "RETURN", str(len(FIELDS)), *FIELDS,
        "LIMIT", "0", "2",
        "DIALECT", "2",
    ]  # fmt: skip
    with_vectors = query.in_keys_search_command("idx", "*", ["product:a"], True)
    assert with_vectors[6:8] == ["RETURN", str(len(FIELDS) + 1)] and with_vectors[8 + len(FIELDS)] == "embedding"


def test_top_rated_search_command() -> None:
    assert query.top_rated_search_command("idx", "@in_stock:{true}", 12, True) == [
        "FT.SEARCH", "idx", "@in_stock:{true}",
        "RETURN", str(len(FIELDS) + 1), *FIELDS, "embedding",
        "SORTBY", "rating", "DESC",
        "LIMIT", "0", "12",
        "DIALECT", "2",
    ]  # fmt: skip


def test_by_price_search_command() -> None:
    assert query.by_price_search_command("idx", 1000) == [
        "FT.SEARCH", "idx", "*",
        "RETURN", str(len(FIELDS)), *FIELDS,
        "SORTBY", "price", "ASC",
        "LIMIT", "0", "1000",
        "DIALECT", "2",
    ]  # fmt: skip


def test_distinct_values_and_info_commands() -> None:
    assert query.distinct_values_command("idx", "brand") == ["FT.AGGREGATE", "idx", "*", "GROUPBY", "1", "@brand"]
    assert query.info_command("idx") == ["FT.INFO", "idx"]
