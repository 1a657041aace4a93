"""Issue 24, finding 7, the ranking parts, against the real server:

- one user clicking one product 300 times in 0.7 s put it at the top of every newcomer's feed:
  popularity now counts a user's clicks on a product at most once per window;
- the Trending panel (`/state.popular`) still showed a product the user had dismissed;
- popular and top-rated results reported `vector_distance` 2.0, which is no distance: where
  none was computed it is null.
"""

from __future__ import annotations

import pytest
from test_http import get_state, post
from test_reliability import new_user

from demo_api import DemoApp

REPEATS = 30


def popularity_of(app: DemoApp, product_id: str) -> float:
    return dict(app.recommender.popularity(100)).get(product_id, 0.0)


def test_one_user_clicking_one_product_again_and_again_counts_once(
    demo_url: str, demo_app: DemoApp, catalog: dict
) -> None:
    product_id = catalog["products"][7]["id"]
    clicker, other = new_user("repeat-clicker"), new_user("second-clicker")
    try:
        before = popularity_of(demo_app, product_id)
        for _ in range(REPEATS):
            post(demo_url, "/click", {"product_id": product_id, "user_id": clicker})
        assert get_state(demo_url, clicker)["user"]["clicks"] == REPEATS  # the user's own signals count them all
        assert popularity_of(demo_app, product_id) - before == pytest.approx(1.0, abs=0.01)
        post(demo_url, "/click", {"product_id": product_id, "user_id": other})
        assert popularity_of(demo_app, product_id) - before == pytest.approx(2.0, abs=0.01)
    finally:
        for user_id in (clicker, other):
            demo_app.recommender.reset_user(user_id)


def test_trending_leaves_out_what_the_user_dismissed(demo_url: str, demo_app: DemoApp, catalog: dict) -> None:
    product_id = catalog["products"][8]["id"]
    top = demo_app.recommender.popularity(5)
    # Enough distinct fans to be in the top five, whatever other tests clicked before.
    needed = int(top[-1][1] - popularity_of(demo_app, product_id)) + 2 if len(top) == 5 else 1
    fans = [new_user("fan") for _ in range(needed)]
    user_id = new_user("not-interested")
    try:
        for fan in fans:
            post(demo_url, "/click", {"product_id": product_id, "user_id": fan})
        assert product_id in {p["id"] for p in get_state(demo_url, user_id)["popular"]}
        post(demo_url, "/dismiss", {"product_id": product_id, "user_id": user_id})
        popular = get_state(demo_url, user_id)["popular"]
        assert product_id not in {p["id"] for p in popular}
        assert len(popular) == 5 or len(popular) == len(demo_app.recommender.popularity(100)) - 1
        assert product_id in {p["id"] for p in get_state(demo_url, fans[0])["popular"]}
    finally:
        for uid in (*fans, user_id):
            demo_app.recommender.reset_user(uid)


def test_popular_and_top_rated_results_have_no_vector_distance(demo_url: str, user_id: str) -> None:
    feed = post(demo_url, "/recommend", {"user_id": user_id, "k": 20})
    assert feed["source"] in ("popular", "rating"), feed["source"]
    assert feed["candidates"]
    assert [c["vector_distance"] for c in feed["candidates"]] == [None] * len(feed["candidates"])
