"""Issue 24, findings 5 and 6: what an answer to a write promises.

5. A 503 that said "retry shortly" could follow a write that happened (Redis frozen, killed
   after writing its AOF, a reply lost), so the retry it asked for counted twice; and at
   maxmemory a click could update the user but not popularity while the answer said "nothing
   was saved". Writes now take an idempotency key (`event_id`), an unknown outcome says so, and a
   partly applied write says exactly what was applied.
6. On a full disk an acknowledged click could be lost: with `appendfsync everysec` the 200 left
   before the fsync. With durability on (WAITAOF), a 200 means the click is on disk; without it,
   the disk reserve (local_redis.DiskReserve) gives Redis room for it when it stops.

The lost reply is injected by a TCP proxy between the demo and its real Redis: Redis runs every
command, and the proxy drops its replies on one connection once a script call has gone through,
as a network fault or a Redis killed between writing and replying would.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from conftest import make_products, serving
from test_http import Reply, call, get_state, post
from test_local_redis_faults import tiny_disk  # noqa: F401  (the 2 MB tmpfs fixture)
from test_reliability import new_user

from demo_api import DemoApp
from local_redis import LocalRedis, connect
from recommender import RecommenderError, RedisRecommender

# The commands that run a script: the write a lost reply hides.
SCRIPT_CALLS = (b"EVALSHA", b"FCALL")


class ReplyDropper:
    """A TCP proxy to a Redis. Armed, it drops every reply on the first connection that sends a
    script call, from that call on (the connection's client then times out and closes it); every
    request still reaches Redis. It disarms itself after one such connection."""

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.dropped_on = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.redis_port))
            dropping = threading.Event()
            threading.Thread(target=self._requests, args=(client, upstream, dropping), daemon=True).start()
            threading.Thread(target=self._replies, args=(upstream, client, dropping), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, dropping: threading.Event) -> None:
        with client, upstream:
            while data := _receive(client):
                if self.armed.is_set() and any(call in data.upper() for call in SCRIPT_CALLS):
                    with self._lock:
                        if self.armed.is_set():
                            self.armed.clear()
                            self.dropped_on += 1
                            dropping.set()
                upstream.sendall(data)

    def _replies(self, upstream: socket.socket, client: socket.socket, dropping: threading.Event) -> None:
        while data := _receive(upstream):
            if not dropping.is_set():
                try:
                    client.sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        self.listener.close()


def _receive(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


@dataclass(frozen=True)
class OwnDemo:
    url: str
    redis: LocalRedis
    recommender: RedisRecommender  # straight to Redis, never through the proxy
    dropper: ReplyDropper


@pytest.fixture
def own_demo(onnx_embedder, catalog: dict) -> Iterator[OwnDemo]:
    """A demo server on its own Redis, reached through a ReplyDropper."""
    with LocalRedis() as redis_server:
        assert redis_server.port is not None
        dropper = ReplyDropper(redis_server.port)
        app = DemoApp(
            RedisRecommender(connect(f"redis://127.0.0.1:{dropper.port}")),
            onnx_embedder,
            catalog,
            redis_description="t",
        )
        app.seed()
        try:
            with serving(app) as url:
                yield OwnDemo(url, redis_server, RedisRecommender(connect(redis_server.url)), dropper)
        finally:
            app.close()
            dropper.close()


def popularity_of(recommender: RedisRecommender, product_id: str) -> float:
    return dict(recommender.popularity(100)).get(product_id, 0.0)


# --- 5. idempotent writes --------------------------------------------------------------------------


def test_a_click_sent_twice_with_one_event_id_counts_once(demo_url: str, demo_app: DemoApp, catalog: dict) -> None:
    user_id, product_id = new_user("idempotent"), catalog["products"][3]["id"]
    event_id = secrets.token_hex(16)
    try:
        before = popularity_of(demo_app.recommender, product_id)
        first = post(demo_url, "/click", {"product_id": product_id, "user_id": user_id, "event_id": event_id})
        again = post(demo_url, "/click", {"product_id": product_id, "user_id": user_id, "event_id": event_id})
        assert first["clicks"] == again["clicks"] == 1
        assert again["already_applied"] is True and first["already_applied"] is False
        assert get_state(demo_url, user_id)["user"]["clicks"] == 1
        assert popularity_of(demo_app.recommender, product_id) - before == pytest.approx(1.0, abs=0.01)
        other = post(
            demo_url, "/click", {"product_id": product_id, "user_id": user_id, "event_id": secrets.token_hex(16)}
        )
        assert other["clicks"] == 2 and other["already_applied"] is False
    finally:
        demo_app.recommender.reset_user(user_id)


def test_a_dismissal_sent_twice_with_one_event_id_counts_once(demo_url: str, demo_app: DemoApp, catalog: dict) -> None:
    user_id, product_id = new_user("idempotent"), catalog["products"][4]["id"]
    fields = {"product_id": product_id, "user_id": user_id, "event_id": secrets.token_hex(16)}
    try:
        first, again = post(demo_url, "/dismiss", fields), post(demo_url, "/dismiss", fields)
        assert again["affinity"] == first["affinity"]
        assert again["already_applied"] is True
    finally:
        demo_app.recommender.reset_user(user_id)


@pytest.mark.parametrize("event_id", ["", "x" * 129, "has space", "new\nline", "é"])
def test_a_malformed_event_id_is_400(demo_url: str, catalog: dict, event_id: str) -> None:
    fields = {"product_id": catalog["products"][0]["id"], "user_id": new_user("bad-event"), "event_id": event_id}
    reply = call(demo_url, "POST", "/click", fields)
    assert "event_id" in reply.error(400)


def test_a_click_whose_reply_is_lost_says_its_outcome_is_unknown_and_its_retry_counts_once(
    own_demo: OwnDemo, catalog: dict
) -> None:
    user_id, product_id = new_user("lost-reply"), catalog["products"][5]["id"]
    fields = {"product_id": product_id, "user_id": user_id, "event_id": secrets.token_hex(16)}
    post(own_demo.url, "/click", {"product_id": product_id, "user_id": new_user("warm-up")})  # scripts loaded
    own_demo.dropper.armed.set()
    lost = call(own_demo.url, "POST", "/click", fields)
    assert own_demo.dropper.dropped_on == 1, "the proxy saw no script call: the fault was not injected"
    assert own_demo.recommender.user_state(user_id).features.clicks == 1, "the click did not happen"
    error = lost.error(503)
    assert "outcome unknown" in error and "retry with the same event_id" in error, error
    retried = post(own_demo.url, "/click", fields)
    assert retried["clicks"] == 1 and retried["already_applied"] is True
    assert own_demo.recommender.user_state(user_id).features.clicks == 1
    assert popularity_of(own_demo.recommender, product_id) == pytest.approx(2.0, abs=0.01)


def click_at_memory_headroom(demo: OwnDemo, headroom: int, product_id: str) -> tuple[Reply, bool, bool]:
    """A new user's click with Redis' maxmemory (noeviction) set `headroom` bytes above what it
    uses: (the reply, whether the user's state changed, whether popularity did)."""
    admin = demo.redis.client()
    user_id = new_user(f"oom-{headroom}")
    before = popularity_of(demo.recommender, product_id)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + headroom)
    try:
        reply = call(demo.url, "POST", "/click", {"product_id": product_id, "user_id": user_id})
    finally:
        admin.config_set("maxmemory", 0)
    user_applied = demo.recommender.user_state(user_id).features.clicks == 1
    return reply, user_applied, popularity_of(demo.recommender, product_id) - before > 0.5


def test_a_click_applied_in_part_at_maxmemory_says_exactly_what_was_applied(own_demo: OwnDemo, catalog: dict) -> None:
    """The user's state and popularity are two scripts (two Cluster slots): at the memory limit
    the first can fit and the second be refused. Where that happens depends on a few hundred
    bytes, so the headroom is swept until it does."""
    product_id = catalog["products"][6]["id"]
    for headroom in range(0, 12_000, 250):
        reply, user_applied, popularity_applied = click_at_memory_headroom(own_demo, headroom, product_id)
        if user_applied != popularity_applied:
            break
    else:
        pytest.fail("no headroom made a click apply in part: the test proves nothing")
    payload = reply.json()
    assert reply.status == 503, payload
    assert "nothing was saved" not in payload["error"]
    assert payload["applied"] == {"user": user_applied, "popularity": popularity_applied}, payload


# --- 6. durability ----------------------------------------------------------------------------------


@pytest.mark.parametrize("durable", [False, True], ids=["default", "durable"])
def test_a_full_disk_loses_no_acknowledged_click(tiny_disk: Path, durable: bool) -> None:  # noqa: F811
    """Durable: a 200 waits for the fsync. Default: the click that Redis answered but could not
    append stays in its memory, and the disk reserve deleted at stop gives it room."""
    products = make_products(5)
    server = LocalRedis(tiny_disk, persistent=True).start()
    acknowledged: list[str] = []
    refusal: Exception | None = None
    try:
        recommender = RedisRecommender(connect(server.url), durable=durable)
        recommender.create_index()
        recommender.index_products(products)
        filler = tiny_disk / "filler"
        filler.write_bytes(b"\0" * (shutil.disk_usage(tiny_disk).free - 16_000))
        for number in range(200):
            user_id = f"durable-{number}"
            try:
                recommender.record_click(user_id, products[number % 5]["id"])
            except (redis.RedisError, RecommenderError) as exc:
                refusal = exc
                break
            acknowledged.append(user_id)
    finally:
        server.stop()
    logging.getLogger(__name__).warning("%d clicks acknowledged, then: %s", len(acknowledged), refusal)
    assert refusal is not None and acknowledged, (refusal, len(acknowledged))
    filler.unlink()
    with LocalRedis(tiny_disk, persistent=True) as restarted:
        after = RedisRecommender(connect(restarted.url))
        lost = [user_id for user_id in acknowledged if after.user_state(user_id).features.clicks != 1]
    assert lost == [], f"{len(lost)} of {len(acknowledged)} acknowledged clicks lost"
