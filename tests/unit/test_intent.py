"""Query understanding (recengine/intent.py) and the typed query's ranking math (ranking.py):
pure, no Redis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ranking import Candidate, RankingConfig, fuse_text_scores, personalise_within_tiers
from recengine import query
from recengine.intent import (
    Vocabulary,
    _find_value,
    _name_variants,
    _typo_limit,
    edit_distance,
    names_a_product,
    normalize,
    understand,
    words_of,
)
from recengine.query import SearchFilters
from recengine.replies import hybrid_rows
from recengine.retrieval import kept_rows

BRANDS = ("Northpeak", "Tidewater", "Urban Loom", "Cobalt Trail", "Ridgeline Co", "Summit & Sage", "Driftstone")
CATEGORIES = ("outerwear", "footwear", "tops", "bags", "accessories", "gear")
VOCABULARY = Vocabulary(BRANDS, CATEGORIES, 49.0)


@pytest.mark.parametrize(
    ("typed", "facets", "terms"),
    [
        ("northpeak rain jacket under 200", {"brand": "Northpeak", "max_price": 200.0}, ["rain", "jacket"]),
        ("below $50 tote", {"max_price": 50.0}, ["tote"]),
        ("boots 100-200", {"min_price": 100.0, "max_price": 200.0}, ["boots"]),
        ("boots between 100 and 200 dollars", {"min_price": 100.0, "max_price": 200.0}, ["boots"]),
        ("cheap hat", {"max_price": 49.0}, ["hat"]),
        ("tent in stock", {"in_stock_only": True}, ["tent"]),
        ("4 stars and up boots", {"min_rating": 4.0}, ["boots"]),
        ("rated 4.5+ jacket", {"min_rating": 4.5}, ["jacket"]),
        ("top rated shoes", {}, ["shoes"]),
        ("NORTHPEAK", {"brand": "Northpeak"}, []),
        ("nortpeak", {"brand": "Northpeak"}, []),
        ("cobalt-trail", {"brand": "Cobalt Trail"}, []),
        ("cobalttrail", {"brand": "Cobalt Trail"}, []),
        ("summit and sage", {"brand": "Summit & Sage"}, []),
        ("ridgeline", {"brand": "Ridgeline Co"}, []),
        ("bag", {"category": "bags"}, []),
        ("accessory", {"category": "accessories"}, []),
        ("Outerwear", {"category": "outerwear"}, []),
    ],
)
def test_facets_named_in_a_query_are_understood(typed: str, facets: dict[str, object], terms: list[str]) -> None:
    understood = understand(typed, VOCABULARY)
    assert understood.facets() == facets
    assert list(understood.terms) == terms


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("boots 300-100", "above the upper one"),
        ("boots under 1e309", "not a finite price"),
        ("boots over 300 under 100", "above the upper one"),
        ("7 stars", "from 0 to 5"),
        ("the and of", "too common"),
        ("!!! ???", "no words"),
        ("cheap boots under 80", "already stated"),
    ],
)
def test_what_cannot_be_used_is_said_to_be_ignored(typed: str, reason: str) -> None:
    understood = understand(typed, VOCABULARY)
    assert any(reason in ignored.reason for ignored in understood.ignored), understood
    SearchFilters(**{k: v for k, v in understood.facets().items() if k != "category"})  # a valid filter


def test_cheap_without_known_prices_is_ignored() -> None:
    understood = understand("cheap boots", Vocabulary(BRANDS, CATEGORIES, None))
    assert understood.max_price is None and understood.ignored


def test_a_short_word_is_never_taken_for_a_misspelled_brand() -> None:
    assert understand("tote", Vocabulary(("Tate",), ())).brand is None


@given(st.text(max_size=80))
def test_any_text_is_understood_into_valid_filters_and_safe_terms(typed: str) -> None:
    understood = understand(typed, VOCABULARY)
    facets = understood.facets()
    facets.pop("category", None)
    SearchFilters(**facets).clause()
    if understood.terms:
        query.text_terms_query("*", understood.terms)
    assert understood.brand in (None, *BRANDS)
    assert understood.category in (None, *CATEGORIES)


@given(st.text(max_size=60))
def test_words_without_understanding_are_safe_terms(typed: str) -> None:
    terms = words_of(typed)
    if terms:
        query.text_terms_query("@brand:{x}", terms)


@given(st.text(alphabet="abcdef", max_size=8), st.text(alphabet="abcdef", max_size=8))
def test_edit_distance_is_symmetric_and_zero_only_for_equal_words(a: str, b: str) -> None:
    assert edit_distance(a, b, 20) == edit_distance(b, a, 20)
    assert (edit_distance(a, b, 20) == 0) == (a == b)


def test_the_last_word_of_a_matching_name_makes_the_query_specific() -> None:
    assert names_a_product(("hiking", "boots"), ["Summit hiking boot"])
    assert not names_a_product(("gift",), ["Summit hiking boot"])
    # a word that only describes the product does not: the query stays vague
    assert not names_a_product(("nice", "weekend"), ["Weekend stretch chinos"])
    assert not names_a_product(("hiking",), ["", "Summit hiking boot"])


# --- ranking a typed query ---------------------------------------------------------------------


def candidate(pid: str, distance: float, category: str = "c") -> Candidate:
    return Candidate(pid, pid, "", category, "b", 1.0, 4.0, True, distance, distance)


def test_the_text_bonus_is_the_weighted_share_of_the_best_match() -> None:
    a, b, c = candidate("a", 0.5), candidate("b", 0.4), candidate("c", 0.3)
    fuse_text_scores([a, b, c], {"a": 10.0, "b": 5.0}, 0.3)
    assert a.score == pytest.approx(0.2) and b.score == pytest.approx(0.25) and c.score == pytest.approx(0.3)
    assert a.why.text_bonus == 0.3 and b.why.text_bonus == 0.15 and c.why.text_bonus is None


def test_personalisation_moves_results_only_within_their_tier() -> None:
    ranked = [candidate("a", 0.1, "shoes"), candidate("b", 0.2, "coats"), candidate("c", 0.3, "coats")]
    changed = personalise_within_tiers(ranked, {"shoes": -3.0, "coats": 5.0}, 0.15, 1)
    assert changed and [c.id for c in ranked] == ["a", "b", "c"]
    assert ranked[0].why.affinity_penalty and ranked[1].why.affinity_bonus
    ranked = [candidate("a", 0.1, "shoes"), candidate("b", 0.2, "coats"), candidate("c", 0.3, "coats")]
    personalise_within_tiers(ranked, {"shoes": -3.0, "coats": 5.0}, 0.15, 2)
    assert [c.id for c in ranked] == ["b", "a", "c"]
    ranked = [candidate("a", 0.1, "shoes"), candidate("b", 0.2, "coats"), candidate("c", 0.3, "coats")]
    personalise_within_tiers(ranked, {"shoes": -3.0, "coats": 5.0}, 0.15, None)
    assert [c.id for c in ranked] == ["b", "c", "a"]


def test_the_typed_query_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="typed_query_tier"):
        RankingConfig(typed_query_tier=0)
    with pytest.raises(ValueError, match="text_weight"):
        RankingConfig(text_weight=-1)


# --- the commands --------------------------------------------------------------------------------


def test_the_bm25_search_matches_any_word_in_name_or_description_within_the_filter() -> None:
    command = query.bm25_search_command("idx", "@brand:{Northpeak}", ["rain", "jacket"], 30, ["name"])
    assert command == [
        "FT.SEARCH", "idx", "(@brand:{Northpeak}) @name|description:(rain|jacket)",
        "SCORER", "BM25", "WITHSCORES", "RETURN", "1", "name", "LIMIT", "0", "30", "DIALECT", "2",
    ]  # fmt: skip


def test_text_terms_must_be_plain_words() -> None:
    with pytest.raises(ValueError):
        query.text_terms_query("*", ["a|b"])
    with pytest.raises(ValueError):
        query.text_terms_query("*", [])


def test_the_ft_hybrid_command_fuses_linearly_with_the_text_weight() -> None:
    """Only the argument list can be checked here: the bundled Redis 8.2 has no FT.HYBRID (8.4+)."""
    command = query.ft_hybrid_command("idx", "@brand:{x}", ["boots"], b"\x00", 30, ["name"], 0.25, 100)
    assert command == [
        "FT.HYBRID", "idx", "SEARCH", "(@brand:{x}) @name|description:(boots)", "SCORER", "BM25",
        "YIELD_SCORE_AS", "text_score",
        "VSIM", "@embedding", "$vec", "KNN", "4", "K", "30", "EF_RUNTIME", "100", "FILTER", "@brand:{x}",
        "COMBINE", "LINEAR", "6", "ALPHA", "0.75", "BETA", "0.25", "WINDOW", "30",
        "LOAD", "1", "@name", "LIMIT", "0", "60", "PARAMS", "2", "vec", b"\x00",
    ]  # fmt: skip
    unfiltered = query.ft_hybrid_command("idx", "*", ["boots"], b"\x00", 10, ["name"], 0.1)
    assert "FILTER" not in unfiltered and unfiltered[unfiltered.index("KNN") : unfiltered.index("KNN") + 4] == [
        "KNN", "2", "K", "10",
    ]  # fmt: skip


# FT.HYBRID's reply as its documentation describes it (RESP3: a map with total_results,
# execution_time, warnings and results, each result a map of the row's fields; RESP2: the same
# as flat name/value lists), with the loaded fields, the yielded text score and the row's key.
HYBRID_RESP3 = {
    b"total_results": 2,
    b"execution_time": 0.4,
    b"warnings": [],
    b"results": [
        {b"__key": b"product:p1", b"__score": b"0.8", b"name": b"Summit boot", b"text_score": b"2.5"},
        {b"__key": b"product:p2", b"__score": b"0.3", b"name": b"Trail runner"},
        {b"__score": b"0.1", b"name": b"a row without a key"},
    ],
}
HYBRID_RESP2 = [
    b"total_results", 2,
    b"results", [
        [b"__key", b"product:p1", b"__score", b"0.8", b"name", b"Summit boot", b"text_score", b"2.5"],
        [b"__key", b"product:p2", b"__score", b"0.3", b"name", b"Trail runner"],
    ],
    b"warnings", [],
    b"execution_time", b"0.4",
]  # fmt: skip


@pytest.mark.parametrize("reply", [HYBRID_RESP3, HYBRID_RESP2], ids=["resp3", "resp2"])
def test_an_ft_hybrid_reply_gives_each_rows_key_and_fields(reply: object) -> None:
    rows = list(hybrid_rows(reply))
    assert [key for key, _ in rows] == ["product:p1", "product:p2"]
    assert rows[0][1] == {"__score": b"0.8", "name": b"Summit boot", "text_score": b"2.5"}
    assert "text_score" not in rows[1][1]


def test_command_info_says_whether_the_server_knows_a_command() -> None:
    assert query.hybrid_command_info() == ["COMMAND INFO", "FT.HYBRID"]
    assert not query.knows_command([None])  # what Redis 8.2 answers for FT.HYBRID
    assert query.knows_command([[b"FT.HYBRID", -1, [b"readonly", b"module"], 1, 1, 1]])
    assert not query.knows_command(None) and not query.knows_command([])


# --- dismissed products in a typed query -------------------------------------------------------


def test_a_dismissed_product_is_marked_down_within_its_tier() -> None:
    ranked = [candidate("a", 0.1), candidate("b", 0.2), candidate("c", 0.3), candidate("d", 0.4)]
    personalise_within_tiers(ranked, {}, 0.15, 3, {"a"}, 1.0)
    assert [c.id for c in ranked] == ["b", "c", "a", "d"]
    assert ranked[2].why.dismissed_penalty == 1.0 and ranked[2].score == pytest.approx(1.1)
    assert ranked[2].why.relevance_rank == 0 and ranked[0].why.dismissed_penalty is None


def test_a_vague_query_lets_a_dismissed_product_sink_below_the_rest() -> None:
    ranked = [candidate("a", 0.1), candidate("b", 0.2), candidate("c", 0.3), candidate("d", 0.4)]
    personalise_within_tiers(ranked, {}, 0.15, None, {"a"}, 1.0)
    assert [c.id for c in ranked] == ["b", "c", "d", "a"]


def test_dismissed_rows_are_kept_beside_the_wanted_number_of_others() -> None:
    rows: list[tuple[str, dict[str, object]]] = [(pid, {}) for pid in ("a", "b", "c", "d", "e")]
    assert [pid for pid, _ in kept_rows(rows, frozenset({"b"}), frozenset({"c"}), 2)] == ["a", "c", "d"]
    assert [pid for pid, _ in kept_rows(rows, frozenset(), frozenset(), 2)] == ["a", "b"]


def names_the_value_naively(window: list[str], values: tuple[str, ...], fuzzy: bool) -> str | None:
    """The rule _find_value's index must keep, written the slow way: the first value in the
    vocabulary's order that the window names exactly, or (fuzzy) within its typo limit."""
    typed = " ".join(window)
    for value in values:
        if typed in _name_variants(value) or "".join(window) in _name_variants(value):
            return value
        target = normalize(value)
        limit = _typo_limit(len(target))
        if fuzzy and limit and edit_distance(typed, target, limit) <= limit:
            return value
    return None


word = st.text(alphabet="abcdeilnorst", min_size=1, max_size=9)


@given(
    values=st.lists(st.builds(" ".join, st.lists(word, min_size=1, max_size=2)), min_size=1, max_size=12, unique=True),
    window=st.lists(word, min_size=1, max_size=3),
    fuzzy=st.booleans(),
)
def test_the_value_index_finds_what_a_scan_of_every_value_finds(
    values: list[str], window: list[str], fuzzy: bool
) -> None:
    found = _find_value(window, tuple(values), fuzzy)
    expected = names_the_value_naively(window, tuple(values), fuzzy)
    # _find_value also tries the window's shorter runs; the whole window is its first try.
    if expected is not None:
        assert found == (expected, 0, len(window))
    else:
        assert found is None or found[2] - found[1] < len(window)
