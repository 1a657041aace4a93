"""Typed events and the crowd's signal through the library, on a real Redis: record_event,
similar(signal=...) and for_you(signal=...)."""

from __future__ import annotations

import math
import random

import pytest
import redis
from conftest import FIXED_NOW, make_products

from recengine.co_occurrence import CoOccurrence
from recengine.co_occurrence_rules import WindowEntry, window_after
from recengine.layout import WINDOW_FIELD
from recommender import (
    EVENT_TYPES,
    CoOccurrenceConfig,
    EventWeights,
    ProductNotFoundError,
    RedisRecommender,
    SearchFilters,
)

PRODUCTS = make_products(40)


@pytest.fixture
def rec(recommender: RedisRecommender) -> RedisRecommender:
    recommender.index_products(PRODUCTS)
    return recommender


def ids(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [c.id for c in result.candidates]


def bought_together(rec: RedisRecommender, user: str, session: str, *products: str) -> None:
    for product in products:
        rec.record_event(user, product, "purchase", session_id=session)


def test_a_products_counts_show_in_the_very_next_similar(rec: RedisRecommender) -> None:
    assert ids(rec.similar("t0001", signal="co_occurrence")) == []
    bought_together(rec, "u1", "basket-1", "t0001", "t0007")
    result = rec.similar("t0001", signal="co_occurrence")
    assert ids(result) == ["t0007"]
    why = result.candidates[0].why
    assert why.co_count == 1.0 and why.together_with == "t0001" and why.signal == "co_occurrence"
    assert why.reason == "bought together with t0001 (1 time)"
    assert result.signal == "co_occurrence"


def test_the_blend_puts_counted_products_first_and_fills_with_look_alikes(rec: RedisRecommender) -> None:
    content = ids(rec.similar("t0001", k=5, signal="content"))
    for session in range(3):
        bought_together(rec, f"u{session}", f"basket-{session}", "t0001", "t0030")
    blended = rec.similar("t0001", k=5)
    assert blended.signal == "blend" and ids(blended)[0] == "t0030"
    assert set(ids(blended)[1:]) <= set(content)
    reasons = {c.id: c.why.reason or "" for c in blended.candidates}
    assert reasons["t0030"].startswith("bought together with t0001 (3 times)")
    assert all(reasons[pid] == "looks like t0001" for pid in ids(blended)[1:] if pid != "t0030")


def test_a_product_without_counts_gets_the_content_answer(rec: RedisRecommender) -> None:
    assert ids(rec.similar("t0002")) == ids(rec.similar("t0002", signal="content"))
    assert all(c.why.signal == "content" for c in rec.similar("t0002").candidates)


def test_counted_products_pass_the_same_filters_and_exclusions(rec: RedisRecommender) -> None:
    bought_together(rec, "u1", "b1", "t0001", "t0002", "t0003", "t0005")  # t0005 is out of stock
    assert set(ids(rec.similar("t0001", signal="co_occurrence"))) == {"t0002", "t0003", "t0005"}
    in_stock = rec.similar("t0001", signal="co_occurrence", filters=SearchFilters(in_stock_only=True))
    assert set(ids(in_stock)) == {"t0002", "t0003"}
    rec.dismiss("u2", "t0002")
    assert set(ids(rec.similar("t0001", signal="co_occurrence", user_id="u2"))) == {"t0003", "t0005"}


def test_sessions_and_windows_decide_what_goes_together(rec: RedisRecommender) -> None:
    rec.record_event("u1", "t0001", "view", session_id="s1")
    rec.record_event("u1", "t0002", "view", session_id="s2")
    assert ids(rec.similar("t0001", signal="co_occurrence")) == []
    rec.record_click("u3", "t0010")
    rec.record_click("u3", "t0011")  # no session id: the same user, minutes apart
    assert ids(rec.similar("t0010", signal="co_occurrence")) == ["t0011"]
    assert rec.similar("t0010", signal="co_occurrence").candidates[0].why.co_count == pytest.approx(0.25)


def test_a_purchase_weighs_more_than_a_view_and_popularity_counts_shoppers(rec: RedisRecommender) -> None:
    view = rec.record_event("u1", "t0001", "view")
    purchase = rec.record_event("u2", "t0001", "purchase")
    rec.record_event("u2", "t0001", "cart")
    assert view.affinity == pytest.approx(0.5) and purchase.affinity == pytest.approx(4.0)
    assert dict(rec.popularity(1)) == {"t0001": pytest.approx(2.0)}  # two shoppers, once each
    assert rec.recent_clicks("u1") == ["t0001"] and rec.seen("u2") == ["t0001"]


def test_the_feed_blends_what_was_bought_with_recent_products(rec: RedisRecommender) -> None:
    bought_together(rec, "crowd", "b1", "t0001", "t0020")
    rec.record_event("shopper", "t0001", "purchase", session_id="mine")
    feed = rec.for_you("shopper")
    assert "t0020" in ids(feed) and "t0001" not in ids(feed)
    item = next(c for c in feed.candidates if c.id == "t0020")
    assert (item.why.reason or "").startswith("bought together with t0001") and item.why.together_with == "t0001"
    assert "t0020" not in ids(rec.for_you("shopper", signal="content"))


def test_the_feed_without_a_live_session_leads_with_counts_then_popular(redis_client: redis.Redis) -> None:
    clock = [FIXED_NOW]
    rec = RedisRecommender(redis_client, clock=lambda: clock[0])
    rec.create_index()
    rec.index_products(PRODUCTS)
    bought_together(rec, "crowd", "b1", "t0001", "t0020")
    rec.record_event("shopper", "t0001", "purchase", session_id="mine")
    clock[0] += 86400.0  # a day later the session has faded; what was bought together has not
    feed = rec.for_you("shopper", k=3)
    assert feed.source == "co_occurrence" and ids(feed)[0] == "t0020" and len(ids(feed)) == 3
    assert all(c.why.co_count is None for c in feed.candidates[1:])  # filled by popular, then top rated
    assert rec.for_you("shopper", k=3, signal="content").source == "popular"


def test_past_events_fade_and_a_late_clock_sees_them_faded(redis_client: redis.Redis) -> None:
    day = 86400.0
    clock = [FIXED_NOW]
    rec = RedisRecommender(redis_client, clock=lambda: clock[0], co_occurrence=CoOccurrenceConfig(half_life_s=day))
    rec.create_index()
    rec.index_products(PRODUCTS)
    rec.record_event("u1", "t0001", "purchase", at=FIXED_NOW - day, session_id="s")
    rec.record_event("u1", "t0002", "purchase", at=FIXED_NOW - day, session_id="s")
    assert rec.similar("t0001", signal="co_occurrence").candidates[0].why.co_count == pytest.approx(0.5)
    clock[0] += day
    assert rec.similar("t0001", signal="co_occurrence").candidates[0].why.co_count == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("event", "at", "session", "message"),
    [
        ("buy", None, None, "view, click, cart, purchase"),
        ("click", FIXED_NOW + 3600, None, "in the future"),
        ("click", -1.0, None, "before 1970"),
        ("click", math.nan, None, "not a finite time"),
        ("click", "yesterday", None, "seconds since 1970"),
        ("click", None, "a b", "session_id"),
    ],
)
def test_bad_events_are_value_errors_and_write_nothing(
    rec: RedisRecommender, redis_client: redis.Redis, event: str, at: object, session: str | None, message: str
) -> None:
    before = redis_client.dbsize()
    with pytest.raises(ValueError, match=message):
        rec.record_event("u1", "t0001", event, at=at, session_id=session)  # type: ignore[arg-type]
    assert redis_client.dbsize() == before


def test_an_unknown_product_writes_nothing(rec: RedisRecommender, redis_client: redis.Redis) -> None:
    before = redis_client.dbsize()
    with pytest.raises(ProductNotFoundError):
        rec.record_event("u1", "nope", "purchase", session_id="s")
    assert redis_client.dbsize() == before


def test_weights_that_are_nan_are_refused() -> None:
    with pytest.raises(ValueError, match="view weight"):
        EventWeights(view=math.nan)


def test_an_unknown_signal_is_a_value_error(rec: RedisRecommender) -> None:
    with pytest.raises(ValueError, match="content, co_occurrence, blend"):
        rec.similar("t0001", signal="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="content, co_occurrence, blend"):
        rec.for_you("u1", signal="both")  # type: ignore[arg-type]


def test_the_users_script_keeps_the_window_the_rules_say(rec: RedisRecommender, redis_client: redis.Redis) -> None:
    config = rec.co_occurrence_config
    expected: list[WindowEntry] = []
    rng = random.Random(3)
    for i in range(40):
        product, event = f"t{rng.randrange(10):04d}", rng.choice(EVENT_TYPES)
        session = rng.choice([None, "s"])
        rec.record_event("u1", product, event, at=FIXED_NOW - 100 + i, session_id=session)
        expected = window_after(
            expected, WindowEntry(product, rec.event_weights.of(event), FIXED_NOW - 100 + i, session or ""), config
        )
    stored = redis_client.hget(rec.features_key("u1"), WINDOW_FIELD)
    assert CoOccurrence.window_from(stored) == expected and len(expected) == config.window_kept


def test_an_event_applied_before_is_not_counted_again(rec: RedisRecommender) -> None:
    rec.record_event("u1", "t0001", "purchase", session_id="s", event_id="e1")
    first = rec.record_event("u1", "t0002", "purchase", session_id="s", event_id="e2")
    again = rec.record_event("u1", "t0002", "purchase", session_id="s", event_id="e2")
    assert (first.paired_with, again.paired_with, again.already_applied) == (1, 0, True)
    assert rec.similar("t0001", signal="co_occurrence").candidates[0].why.co_count == 1.0


def test_forgetting_a_user_forgets_their_window(rec: RedisRecommender, redis_client: redis.Redis) -> None:
    rec.record_event("u1", "t0001", "purchase", session_id="s")
    rec.reset_user("u1")
    rec.record_event("u1", "t0002", "purchase", session_id="s")
    assert ids(rec.similar("t0001", signal="co_occurrence")) == []
