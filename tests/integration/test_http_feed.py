"""The HTTP side of the feed and feedback endpoints (docs/API.md): POST /recommend, /similar and
/dismiss, the new /search fields, the `popular` list of /state, and their bad input, against
the real server, Redis and model."""

from __future__ import annotations

from typing import Any

import pytest
from test_http import CANDIDATE_KEYS, call, get_state, post

FEED_KEYS = {
    "source",
    "signal",
    "candidates",
    "filter_clause",
    "excluded_count",
    "exhausted",
    "session_weight",
    "timing_ms",
}
SIMILAR_KEYS = {"product_id", "signal", "candidates", "filter_clause", "excluded_count", "exhausted", "timing_ms"}
DISMISS_KEYS = {"category", "affinity", "product_id", "already_applied", "name", "user"}


def ids(result: dict[str, Any]) -> list[str]:
    return [c["id"] for c in result["candidates"]]


def test_recommend_needs_no_query_and_follows_clicks(demo_url: str, user_id: str, encoding: str, catalog: dict) -> None:
    fresh = post(demo_url, "/recommend", {"user_id": user_id, "k": 10}, encoding)
    assert set(fresh) == FEED_KEYS and fresh["source"] in ("popular", "rating")
    assert len(fresh["candidates"]) == 10 and all(set(c) == CANDIDATE_KEYS for c in fresh["candidates"])
    footwear = [p["id"] for p in catalog["products"] if p["category"] == "footwear"][:3]
    for pid in footwear:
        post(demo_url, "/click", {"user_id": user_id, "product_id": pid}, encoding)
    feed = post(demo_url, "/recommend", {"user_id": user_id, "k": 10}, encoding)
    assert feed["source"] == "session" and not set(ids(feed)) & set(footwear)
    assert sum(c["category"] == "footwear" for c in feed["candidates"]) >= 7
    assert all(c["why"]["excluded_count"] == feed["excluded_count"] >= 3 for c in feed["candidates"])
    with_clicked = post(demo_url, "/recommend", {"user_id": user_id, "k": 10, "exclude_clicked": False}, encoding)
    assert with_clicked["excluded_count"] == 0


def test_recommend_takes_the_search_filters(demo_url: str, user_id: str, encoding: str) -> None:
    feed = post(demo_url, "/recommend", {"user_id": user_id, "k": 5, "category": "bags", "max_price": 100}, encoding)
    assert feed["filter_clause"] == "@category:{bags} @price:[-inf 100.0]"
    assert all(c["category"] == "bags" and c["price"] <= 100 for c in feed["candidates"])


def test_similar_shows_neighbours_of_the_product(demo_url: str, user_id: str, encoding: str) -> None:
    """The content signal's same-category preference (other tests' clicks give the shared
    server co-occurrence counts, which the default blend would mix in)."""
    result = post(
        demo_url, "/similar", {"user_id": user_id, "product_id": "p001", "k": 10, "signal": "content"}, encoding
    )
    assert set(result) == SIMILAR_KEYS and result["product_id"] == "p001"
    assert "p001" not in ids(result) and len(ids(result)) == 10
    assert sum(c["category"] == "outerwear" for c in result["candidates"]) >= 6
    plain = post(
        demo_url,
        "/similar",
        {"product_id": "p001", "same_category_boost": 0, "user_id": user_id, "signal": "content"},
        encoding,
    )
    assert sum(c["category"] == "outerwear" for c in plain["candidates"]) < 6


def test_dismiss_hides_a_product_from_the_feeds_and_marks_it_down_in_a_search_until_reset(
    demo_url: str, user_id: str, encoding: str, catalog: dict
) -> None:
    search = {"user_id": user_id, "query": "warm down parka for winter", "k": 10}
    first = ids(post(demo_url, "/search", search, encoding))[0]
    reply = post(demo_url, "/dismiss", {"user_id": user_id, "product_id": first}, encoding)
    assert set(reply) == DISMISS_KEYS and reply["affinity"] == -1.0
    assert reply["user"]["dismissed"] == [{"id": first, "name": reply["name"]}]
    for path, fields in (
        ("/recommend", {"user_id": user_id, "k": 20}),
        ("/similar", {"user_id": user_id, "product_id": "p008" if first != "p008" else "p001", "k": 20}),
    ):
        assert first not in ids(post(demo_url, path, fields, encoding)), path
    # A typed query still finds it, below the results ranked near it, saying why.
    found = post(demo_url, "/search", search, encoding)["candidates"]
    marked = next(c for c in found if c["id"] == first)
    assert found.index(marked) > 0 and marked["why"]["dismissed_penalty"] > 0
    post(demo_url, "/reset-user", {"user_id": user_id}, encoding)
    again = post(demo_url, "/search", search, encoding)["candidates"]
    assert again[0]["id"] == first and "dismissed_penalty" not in again[0]["why"]


def test_search_can_leave_out_what_was_clicked_and_diversify(demo_url: str, user_id: str, encoding: str) -> None:
    search = {"user_id": user_id, "query": "hiking boots", "k": 5}
    top = ids(post(demo_url, "/search", search, encoding))[0]
    post(demo_url, "/click", {"user_id": user_id, "product_id": top}, encoding)
    assert top in ids(post(demo_url, "/search", search, encoding))  # off by default for /search
    excluded = post(demo_url, "/search", {**search, "exclude_clicked": True}, encoding)
    assert top not in ids(excluded) and len(ids(excluded)) == 5 and excluded["excluded_count"] == 1
    diverse = post(demo_url, "/search", {**search, "diversity": 0.7}, encoding)
    assert all("mmr_penalty" in c["why"] for c in diverse["candidates"])


def test_state_lists_the_most_popular(demo_url: str, demo_app, user_id: str, encoding: str) -> None:
    top = demo_app.recommender.popularity(5)
    # Enough users to put p042 among the five (one user's clicks on it count once).
    fans = [f"{user_id}-fan{n}" for n in range(int(top[-1][1]) + 1 if len(top) == 5 else 0)]
    for fan in (user_id, *fans):
        post(demo_url, "/click", {"user_id": fan, "product_id": "p042"}, encoding)
    for fan in fans:
        demo_app.recommender.reset_user(fan)
    popular = get_state(demo_url, user_id)["popular"]
    assert 1 <= len(popular) <= 5 and set(popular[0]) == {"id", "name", "popularity"}
    assert "p042" in [p["id"] for p in popular]
    assert [p["popularity"] for p in popular] == sorted((p["popularity"] for p in popular), reverse=True)
    assert get_state(demo_url, user_id)["user"]["session_fades_in_s"] > 0


@pytest.mark.parametrize(
    "path, fields, status, words",
    [
        ("/similar", {"product_id": "nope"}, 404, "no product"),
        ("/similar", {}, 400, "product_id"),
        ("/dismiss", {"product_id": "nope"}, 404, "no product"),
        ("/dismiss", {}, 400, "product_id"),
        ("/dismiss", {"product_id": "x" * 257}, 400, "at most 256"),
        ("/dismiss", {"product_id": "has space"}, 404, "no product"),  # any printable id is an id
        ("/recommend", {"k": 0}, 400, "k must"),
        ("/recommend", {"k": 101}, 400, "k must"),
        ("/recommend", {"min_price": 9, "max_price": 1}, 400, "greater than"),
        ("/recommend", {"diversity": 1.5}, 400, "diversity"),
        ("/search", {"query": "a", "diversity": -0.1}, 400, "diversity"),
        ("/search", {"query": "a", "exclude_clicked": "maybe"}, 400, "exclude_clicked"),
        ("/similar", {"product_id": "p001", "same_category_boost": "lots"}, 400, "same_category_boost"),
        ("/similar", {"product_id": "p001", "category": "a\u0000b"}, 400, "control"),
    ],
)
def test_bad_input_is_a_clear_4xx(
    demo_url: str, user_id: str, encoding: str, path: str, fields: dict, status: int, words: str
) -> None:
    reply = call(demo_url, "POST", path, {**fields, "user_id": user_id}, encoding=encoding)
    assert words in reply.error(status)


def test_exclude_clicked_parses_like_the_other_booleans(demo_url: str, user_id: str) -> None:
    for word in ("1", "true", "on", "yes", "0", "false", "off", "no"):
        fields = {"user_id": user_id, "k": 3, "exclude_clicked": word}
        assert call(demo_url, "POST", "/recommend", fields, encoding="form").status == 200
