"""Writes Redis refuses are a 503 that says why, never a 500 or a 200: a Redis at maxmemory
(OOM), a read-only replica (READONLY), and a disk Redis cannot write (MISCONF). Reads keep
working meanwhile, and writes work again once Redis does. Real Redis processes, the real server."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from conftest import serving

from demo_api import DemoApp
from local_redis import LocalRedis, connect
from recommender import RedisRecommender, WriteRefusedError, classify_response_error


def request(url: str, method: str, path: str, fields: dict[str, Any] | None = None) -> tuple[int, Any]:
    where = urlsplit(url)
    assert where.hostname is not None
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    try:
        body = json.dumps(fields).encode() if fields is not None else None
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture(scope="module")
def own_redis() -> Iterator[LocalRedis]:
    with LocalRedis() as server:
        yield server


@pytest.fixture(scope="module")
def url(own_redis: LocalRedis, onnx_embedder, catalog: dict) -> Iterator[str]:
    app = DemoApp(RedisRecommender(connect(own_redis.url)), onnx_embedder, catalog, redis_description="test Redis")
    app.seed()
    with serving(app) as served:
        yield served
    app.close()


def test_a_redis_at_maxmemory_refuses_clicks_with_a_503_and_reads_go_on(own_redis: LocalRedis, url: str) -> None:
    admin = own_redis.client()
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", str(used // 2))
    try:
        status, reply = request(url, "POST", "/click", {"product_id": "p001", "user_id": "full"})
        assert status == 503 and "memory is full" in reply["error"]
        assert request(url, "POST", "/dismiss", {"product_id": "p002", "user_id": "full"})[0] == 503
        assert request(url, "GET", "/state?user_id=full")[0] == 200
        assert request(url, "POST", "/search", {"query": "warm coat", "user_id": "full"})[0] == 200
    finally:
        admin.config_set("maxmemory", "0")
    status, reply = request(url, "POST", "/click", {"product_id": "p001", "user_id": "full"})
    assert status == 200 and reply["clicks"] == 1  # nothing of the refused click was applied


def test_a_read_only_replica_refuses_writes_with_a_503(own_redis: LocalRedis, onnx_embedder, catalog: dict) -> None:
    with LocalRedis() as replica:
        client = replica.client()
        client.execute_command("REPLICAOF", "127.0.0.1", str(own_redis.port))
        deadline = time.monotonic() + 30
        while not client.exists("product:p001") and time.monotonic() < deadline:  # the first sync
            time.sleep(0.05)
        app = DemoApp(RedisRecommender(connect(replica.url)), onnx_embedder, catalog, redis_description="replica")
        try:
            with serving(app) as served:
                status, reply = request(served, "POST", "/click", {"product_id": "p001", "user_id": "ro"})
                assert status == 503 and "read-only replica" in reply["error"]
        finally:
            app.close()
            client.execute_command("REPLICAOF", "NO", "ONE")


@pytest.mark.parametrize(
    "reply, reason",
    [
        ("MISCONF Errors writing to the AOF file: No space left on device", "the disk is full or not writable"),
        ("OOM command not allowed when used memory > 'maxmemory'.", "memory is full"),
        ("READONLY You can't write against a read only replica.", "this is a read-only replica"),
    ],
)
def test_write_refusals_are_classified_in_one_place(reply: str, reason: str) -> None:
    error = classify_response_error(redis.ResponseError(reply))
    assert isinstance(error, WriteRefusedError) and error.reason == reason
    assert isinstance(error, redis.ResponseError)  # code that catches redis-py's errors still does
