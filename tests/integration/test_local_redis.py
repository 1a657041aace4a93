"""The bundled Redis with Search: start, readiness, persistence, stale servers, and the
checked connection to a user's Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from local_redis import (
    LocalRedis,
    SearchUnavailableError,
    connect,
    free_port,
    has_search,
    open_redis,
    redact,
    redis_server_binary,
)


def test_starts_with_search_on_loopback(local_redis: LocalRedis) -> None:
    client = local_redis.client()
    assert has_search(client)
    assert client.config_get("bind")["bind"] == "127.0.0.1"
    assert client.info("server")["redis_version"].startswith("8.")
    assert local_redis.url.startswith("redis://127.0.0.1:")


def test_temporary_server_leaves_nothing_behind() -> None:
    server = LocalRedis().start()
    assert server.process is not None
    data_dir, pid = server.data_dir, server.process.pid
    server.stop()
    assert not data_dir.exists()
    assert not Path(f"/proc/{pid}").exists() or b"redis-server" not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_persistent_server_keeps_data_across_restart(tmp_path: Path) -> None:
    with LocalRedis(tmp_path, persistent=True) as server:
        client = server.client()
        client.execute_command("FT.CREATE", "keep:idx", "ON", "HASH", "PREFIX", "1", "keep:", "SCHEMA", "name", "TEXT")
        client.hset("keep:1", "name", "survivor")
    assert (tmp_path / "appendonlydir").is_dir()
    with LocalRedis(tmp_path, persistent=True) as server:
        client = server.client(protocol=2)
        assert client.hget("keep:1", "name") == b"survivor"
        assert client.execute_command("FT.SEARCH", "keep:idx", "survivor", "NOCONTENT") == [1, b"keep:1"]


def test_stale_pid_file_of_a_dead_process_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "redis.pid").write_text("999999")
    with LocalRedis(tmp_path, persistent=True) as server:
        assert server.client().ping()


def test_stale_live_server_from_an_earlier_run_is_stopped_first(tmp_path: Path) -> None:
    """A demo killed with SIGKILL leaves its redis-server running on the data dir."""
    port = free_port()
    orphan = subprocess.Popen(
        [str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
         "--pidfile", str(tmp_path / "redis.pid"), "--appendonly", "yes"],
        stdout=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "redis.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with LocalRedis(tmp_path, persistent=True) as server:
            assert orphan.wait(timeout=10) == 0
            assert server.port != port and has_search(server.client())
    finally:
        if orphan.poll() is None:
            os.kill(orphan.pid, signal.SIGKILL)


def test_redis_without_search_fails_fast_with_the_fix(tmp_path: Path) -> None:
    port = free_port()
    plain = subprocess.Popen(
        [str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(SearchUnavailableError, match=r"no Search module.*Redis 8"):
            connect(url)
        assert time.monotonic() - started < 2
        with pytest.raises(SearchUnavailableError):
            open_redis(url, data_dir=tmp_path / "unused")
    finally:
        plain.terminate()
        plain.wait()


def test_connect_to_nothing_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        connect(f"redis://127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 3


def test_open_redis_prefers_an_explicit_url(local_redis: LocalRedis, tmp_path: Path) -> None:
    client, started = open_redis(local_redis.url, data_dir=tmp_path)
    assert started is None and has_search(client)


def test_open_redis_starts_the_bundled_server_when_nothing_answers(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    client, started = open_redis(None, data_dir=tmp_path, try_default=False)
    assert started is not None
    try:
        assert has_search(client)
        assert (tmp_path / "appendonlydir").is_dir()
    finally:
        started.stop()


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:s3cret@host:6379/0", "redis://***@host:6379/0"),
        ("rediss://alice:s3cret@host:6380", "rediss://alice:***@host:6380"),
        ("redis://host:6379", "redis://host:6379"),
    ],
)
def test_passwords_never_appear_in_messages(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_a_second_process_shares_the_running_bundled_server(tmp_path: Path, monkeypatch) -> None:
    """build_catalog.py --load next to a running demo must use the demo's Redis, not stop it."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    first_client, first = open_redis(None, data_dir=tmp_path, try_default=False)
    assert first is not None
    try:
        second_client, second = open_redis(None, data_dir=tmp_path, try_default=False)
        assert second is not None
        try:
            assert first.owner and not second.owner and second.port == first.port
            second_client.set("shared", "yes")
            assert first_client.get("shared") == b"yes"
        finally:
            second.stop()
        assert first_client.get("shared") == b"yes"
    finally:
        first.stop()
    assert not (tmp_path / "redis.port").exists()
