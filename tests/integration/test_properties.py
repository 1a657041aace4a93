"""Property-based tests: no user string can break or widen a query.

Hypothesis generates arbitrary Unicode (query syntax characters, whitespace, control
characters, look-alike case variants); the real RediSearch module must never see a syntax
error, and a filter must never let through a document whose field is a different value.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from conftest import make_products, unit_vectors
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from local_redis import LocalRedis, connect
from recommender import RedisRecommender, build_filter_clause, field_problem

SYNTAX = "{}|@-*\"\\:;/?()[]<>~!$%^&=+,.' \t"
hostile_text = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(SYNTAX), max_size=24)
VOCABULARY = ["waterproof", "wool", "cotton", "leather", "hiking", "winter", "red", "blue"]
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def rec() -> Iterator[RedisRecommender]:
    with LocalRedis() as server:
        recommender = RedisRecommender(connect(server.url), index_name="prop:idx", key_prefix="prop:")
        recommender.create_index()
        yield recommender


def tag_key(value: str) -> str:
    """How RediSearch compares TAG values: trimmed, and case-insensitive at most."""
    return value.strip().lower()


def refused(value: str) -> bool:
    """Values the library rejects with ValueError before Redis sees them. (A blank value is not
    refused: like the reference, it means "any".)"""
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in value)


@PROPERTY_SETTINGS
@given(literal=hostile_text, decoys=st.lists(hostile_text, max_size=4), field=st.sampled_from(["category", "brand"]))
def test_tag_filter_matches_only_its_literal(
    rec: RedisRecommender, literal: str, decoys: list[str], field: str
) -> None:
    stored = [v for v in [literal, *decoys, literal.upper(), literal + "x", "x" + literal] if v.strip()]
    stored = [v for v in stored if not refused(v) and field_problem(field, v) is None]
    products = make_products(len(stored), seed=len(literal))
    for i, (product, value) in enumerate(zip(products, stored, strict=True)):
        product.update({"id": f"d{i}", field: value})
    rec.index_products(products)
    try:
        if not literal.strip() and not refused(literal):
            return  # "any": nothing to match against
        filters: dict[str, Any] = {field: literal}
        if refused(literal):
            with pytest.raises(ValueError):
                rec.candidate_retrieve(unit_vectors(1)[0], k=50, **filters)
            return
        results = rec.candidate_retrieve(unit_vectors(1)[0], k=50, **filters)
        assert all(tag_key(getattr(c, field)) == tag_key(literal) for c in results), (literal, results)
        if "," not in literal and literal.isascii():
            assert any(getattr(c, field) == literal.strip() or getattr(c, field) == literal for c in results)
    finally:
        if products:
            rec.redis.delete(*[rec.product_key(p["id"]) for p in products])


@PROPERTY_SETTINGS
@given(
    words=st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=2),
    junk=st.lists(st.sampled_from(SYNTAX), max_size=4),
    where=st.integers(min_value=0, max_value=3),
)
def test_text_match_is_one_literal_phrase(rec: RedisRecommender, words: list[str], junk: list[str], where: int) -> None:
    """Syntax characters around the words ("-wool", "wool|red", "*") must not turn the phrase
    into negation, alternatives or wildcards: every result contains every word."""
    phrase = " ".join(words)
    text = {0: "".join(junk) + phrase, 1: phrase + "".join(junk), 2: "".join(junk).join(words), 3: "".join(junk)}[where]
    assume(not any(ord(ch) < 32 for ch in text))
    products = make_products(len(VOCABULARY) * 2, seed=1)
    for i, product in enumerate(products):
        product.update(id=f"t{i}", description=f"{VOCABULARY[i % 8]} {VOCABULARY[(i * 3 + 1) % 8]} item")
    rec.index_products(products)
    try:
        results = rec.candidate_retrieve(unit_vectors(1)[0], k=50, text_match=text)
        expected_words = [w for w in VOCABULARY if w in text.lower()]
        for candidate in results:
            assert all(w in candidate.description for w in expected_words), (text, candidate.description)
    finally:
        rec.redis.delete(*[rec.product_key(p["id"]) for p in products])


@PROPERTY_SETTINGS
@given(category=hostile_text, brand=hostile_text, text=hostile_text, low=st.floats(), high=st.floats())
# A lone underscore was a RediSearch syntax error until escape_tag_value escaped `_` too.
@example(category="", brand="_", text="", low=0.0, high=1.0)
def test_any_filter_combination_is_a_valid_query_or_a_clear_value_error(
    rec: RedisRecommender, category: str, brand: str, text: str, low: float, high: float
) -> None:
    try:
        build_filter_clause(category=category, brand=brand, text_match=text, min_price=low, max_price=high)
    except ValueError:
        return
    rec.candidate_retrieve(
        np.asarray(unit_vectors(1)[0]),
        k=5,
        category=category,
        brand=brand,
        text_match=text,
        min_price=low,
        max_price=high,
    )


# Product ids that are prefixes, suffixes and look-alikes of each other, with the characters a
# line-based list could trip on (but never a line break, which no id may hold).
TRICKY_IDS = ["p", "p1", "p10", "1p", "p 1", "p|1", "P1", "%p", "p1\\", "[p]"]
SEEN_KEPT = 5


@pytest.fixture(scope="module")
def lists_rec() -> Iterator[RedisRecommender]:
    """A recommender whose products have TRICKY_IDS, and a short seen list (so it fills)."""
    with LocalRedis() as server:
        recommender = RedisRecommender(
            connect(server.url), index_name="lists:idx", key_prefix="lists:", seen_kept=SEEN_KEPT
        )
        recommender.create_index()
        products = make_products(len(TRICKY_IDS))
        for product, product_id in zip(products, TRICKY_IDS, strict=True):
            product["id"] = product_id
        recommender.index_products(products)
        yield recommender


@PROPERTY_SETTINGS
@given(events=st.lists(st.tuples(st.sampled_from(["click", "dismiss"]), st.sampled_from(TRICKY_IDS)), max_size=25))
def test_a_users_lists_follow_their_events_whatever_the_ids(
    lists_rec: RedisRecommender, events: list[tuple[str, str]]
) -> None:
    """The user's script keeps its id lists as strings (one id a line) and edits them in place;
    whatever the ids, they read back as a model of the rules says: recent clicks newest first
    with repeats (RECENT_CLICKS_KEPT), seen newest first without repeats (seen_kept), dismissed
    as a set."""
    from recengine.layout import RECENT_CLICKS_KEPT

    user = "lists-user"
    lists_rec.reset_user(user)
    recent: list[str] = []
    seen: list[str] = []
    dismissed: set[str] = set()
    for kind, product_id in events:
        if kind == "click":
            lists_rec.record_click(user, product_id)
            recent = [product_id, *recent][:RECENT_CLICKS_KEPT]
        else:
            lists_rec.dismiss(user, product_id)
            dismissed.add(product_id)
        seen = [product_id, *(p for p in seen if p != product_id)][:SEEN_KEPT]
    assert lists_rec.recent_clicks(user) == recent
    assert lists_rec.seen(user) == seen
    assert lists_rec.dismissed(user) == sorted(dismissed)
