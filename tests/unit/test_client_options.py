"""One set of client settings for every Redis client: the ones connect() makes and the demo's
replica, Sentinel and cluster clients. Clients are built, never connected: no Redis is needed."""

from __future__ import annotations

import inspect

import pytest
import redis
from redis.sentinel import Sentinel

from local_redis import CLIENT_TIMEOUT_S, DEFAULT_PROTOCOL, client_options, connect

SHARED_SETTINGS = {"decode_responses", "protocol", "socket_connect_timeout", "socket_timeout", "retry"}


def test_bytes_no_retries_two_second_timeouts_and_resp2_by_default() -> None:
    options = client_options()
    assert set(options) == SHARED_SETTINGS
    assert options["decode_responses"] is False
    assert options["protocol"] == DEFAULT_PROTOCOL == 2
    assert options["socket_connect_timeout"] == options["socket_timeout"] == CLIENT_TIMEOUT_S == 2.0
    assert options["retry"].get_retries() == 0


def test_the_timeout_and_protocol_can_be_chosen() -> None:
    options = client_options(timeout_s=0.5, protocol=3)
    assert (options["socket_connect_timeout"], options["socket_timeout"], options["protocol"]) == (0.5, 0.5, 3)


def test_connect_defaults_to_the_shared_timeout_and_protocol() -> None:
    parameters = inspect.signature(connect).parameters
    assert parameters["timeout_s"].default == CLIENT_TIMEOUT_S
    assert parameters["protocol"].default == DEFAULT_PROTOCOL


def carried(kwargs: dict[str, object]) -> dict[str, object]:
    return {name: kwargs[name] for name in SHARED_SETTINGS}


def test_a_replica_client_carries_the_settings() -> None:
    options = client_options()
    client = redis.Redis(host="127.0.0.1", port=1, **options)
    assert carried(client.connection_pool.connection_kwargs) == dict(options)


@pytest.mark.parametrize("role", ["master_for", "slave_for"])
def test_sentinel_managed_clients_carry_the_settings(role: str) -> None:
    options = client_options()
    client = getattr(Sentinel([("127.0.0.1", 1)]), role)("mymaster", **options)
    assert carried(client.connection_pool.connection_kwargs) == dict(options)


def test_a_url_pool_built_as_connect_builds_it_carries_the_settings() -> None:
    options = client_options(timeout_s=1.5)
    pool = redis.BlockingConnectionPool.from_url("redis://127.0.0.1:1/0?protocol=3", **options)
    kwargs = carried(pool.connection_kwargs)
    assert kwargs.pop("protocol") == 3  # the URL's protocol wins, as connect documents
    assert kwargs == {name: value for name, value in options.items() if name != "protocol"}
