"""Issue 24, finding 4: anonymous clients grew Redis without bound, and the documented cap
evicted real users piecemeal.

- every new `user_id` that clicks costs Redis memory (2,780 B measured) and the demo had no
  `--maxmemory`, so one client at 518 requests/s added ~5 GB an hour;
- nothing limited how many new users one client could create;
- a user's state was four keys, so `maxmemory` with `volatile-lru` evicted them one at a time:
  a user could keep their features and lose their dismissals, and a product they marked "not
  interested" came back.

bench/user_memory.py measures the bytes per user that README quotes.
"""

from __future__ import annotations

import secrets
from collections import Counter
from pathlib import Path

import redis
from conftest import make_products, serving
from test_http import call
from test_reliability import BundledDemo

from demo_api import DemoApp
from local_redis import LocalRedis, connect, running_bundled_url
from recommender import RedisRecommender

FLOODED_USERS = 800
# Room for a few hundred of them above what the products take.
HEADROOM_BYTES = 1_500_000


def test_the_demo_caps_the_memory_of_its_bundled_redis_and_can_answer_only_once_on_disk(
    tmp_path: Path, catalog: dict
) -> None:
    """--maxmemory caps the bundled Redis (users evicted, products never); --durable makes it
    fsync every write before it answers, so that the click's WAITAOF returns at once."""
    demo = BundledDemo(str(tmp_path), "--maxmemory", "64mb", "--durable")
    try:
        demo.wait_until_listening()
        url = running_bundled_url(tmp_path)
        assert url
        client = connect(url)
        assert client.config_get("maxmemory") == {"maxmemory": str(64 * 1024 * 1024)}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-lru"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        clicked = demo.request("POST", "/click", {"product_id": catalog["products"][0]["id"], "user_id": "durable"})
        assert clicked["clicks"] == 1
    finally:
        demo.kill()


def test_one_client_creates_a_bounded_number_of_new_users_per_minute(demo_app: DemoApp, catalog: dict) -> None:
    product_id = catalog["products"][0]["id"]
    users = [f"flood-{secrets.token_hex(6)}" for _ in range(15)]
    try:
        with serving(demo_app, new_users_per_minute=10) as limited_server:
            replies = [call(limited_server, "POST", "/click", {"product_id": product_id, "user_id": u}) for u in users]
            outcomes = Counter(reply.status for reply in replies)
            assert outcomes == {200: 10, 429: 5}, outcomes
            refused = next(reply for reply in replies if reply.status == 429)
            assert int(refused.headers["Retry-After"]) >= 1
            assert "new users" in refused.json()["error"]
            # Users that exist are never refused: their writes create nothing.
            assert call(limited_server, "POST", "/click", {"product_id": product_id, "user_id": users[0]}).status == 200
            # Refused users were not created.
            assert demo_app.recommender.user_state(users[-1]).features.clicks == 0
    finally:
        for user_id in users:
            demo_app.recommender.reset_user(user_id)


def user_shape(recommender: RedisRecommender, user_id: str) -> str:
    """ "whole" (everything the user did is there), "gone" (nothing is), "dismissal only" (the
    user was evicted whole between the click and the dismissal, which then made a new user:
    Redis' LRU clock ticks once a second, so the user just written can be the one evicted), or
    "partial (...)" saying which parts survived."""
    state = recommender.user_state(user_id)
    parts = (
        state.features.clicks == 1,
        bool(state.recent_clicks),
        bool(state.dismissed),
        state.features.session_vec is not None,
    )
    if all(parts):
        return "whole"
    if parts == (False, False, True, False):
        return "dismissal only"
    return "gone" if not any(parts) else f"partial {parts}"


def test_a_memory_cap_evicts_a_user_whole_or_not_at_all() -> None:
    products = make_products(20)
    with LocalRedis(maxmemory="1gb") as server:
        client: redis.Redis = connect(server.url)
        recommender = RedisRecommender(client)
        recommender.create_index()
        recommender.index_products(products)
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + HEADROOM_BYTES)
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-lru"}
        users = [f"flood-{i}" for i in range(FLOODED_USERS)]
        for number, user_id in enumerate(users):
            recommender.record_click(user_id, products[number % 20]["id"])
            recommender.dismiss(user_id, products[(number + 1) % 20]["id"])
        assert client.info("stats")["evicted_keys"] > 0, "the cap was never reached: the test proves nothing"
        shapes = Counter(user_shape(recommender, user_id) for user_id in users)
        assert shapes["whole"] > 0 and shapes["gone"] > 0, shapes
        assert set(shapes) <= {"whole", "gone", "dismissal only"}, shapes
