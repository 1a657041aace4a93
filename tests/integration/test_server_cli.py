"""demo_server.py as a person runs it: its help, the failures they can fix (each one a message and
an exit code, never a traceback), and a real start, stop and restart against the test Redis.

The served runs use their own index and key prefix, so they never touch the in-process demo
server's data, and they clean up after themselves.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from embeddings import INT8_MIN_COSINE
from local_redis import LocalRedis, connect, free_port
from recommender import RedisRecommender

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "demo_server.py"
FLAGS = (
    "--host",
    "--port",
    "--redis-url",
    "--index-name",
    "--key-prefix",
    "--catalog",
    "--topk",
    "--no-reset",
    "--query-encoder",
    "--model",
    "--embedding-backend",
    "--data-dir",
    "--ef-runtime",
    "--hybrid-policy",
    "--hnsw-m",
    "--hnsw-ef-construction",
    "--vector-type",
    "--user-ttl",
    "--allowed-host",
    "--workers",
    "--replica-url",
    "--sentinel",
    "--sentinel-service",
    "--min-replicas-ack",
    "--replica-ack-timeout-ms",
    "--cluster",
    "--maxmemory",
    "--new-users-per-minute",
    "--model-queue-per-client",
    "--durable",
)
INDEX_NAME = "cli:idx"
KEY_PREFIX = "cli:product:"
START_TIMEOUT_S = 120


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SERVER), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_help_lists_every_option() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for flag in FLAGS:
        assert flag in result.stdout


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_a_bad_user_ttl_is_a_clear_error(value: str) -> None:
    result = run_cli("--user-ttl", value)
    assert result.returncode == 2 and "--user-ttl" in result.stderr and "Traceback" not in result.stderr


def test_an_unknown_vector_type_is_a_clear_error() -> None:
    result = run_cli("--vector-type", "FLOAT64")
    assert result.returncode == 2 and "invalid choice: 'FLOAT64'" in result.stderr and "FLOAT16" in result.stderr


def test_the_int8_query_encoder_on_torch_is_refused_with_the_fix() -> None:
    result = run_cli("--query-encoder", "int8", "--embedding-backend", "torch")
    assert result.returncode == 2 and "drop --embedding-backend torch" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_catalog_says_how_to_build_it() -> None:
    result = run_cli("--catalog", "/nonexistent.json")
    assert result.returncode != 0
    assert "python build_catalog.py" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_an_unreachable_redis_is_a_clear_error() -> None:
    result = run_cli("--redis-url", f"redis://127.0.0.1:{free_port()}")
    assert result.returncode != 0
    assert "cannot reach Redis" in result.stderr and "--redis-url" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@contextlib.contextmanager
def ctrl_c_reaches_children() -> Iterator[None]:
    """A shell that starts pytest in the background makes it ignore SIGINT, children inherit
    that, and a Python child then never raises KeyboardInterrupt: Ctrl-C could not be tested.
    A handled signal is reset to the default in a child, so handle it while spawning."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous)


class ServedDemo:
    """demo_server.py serving in a subprocess. A thread drains its log, so a chatty server can
    never block on a full pipe, and the test can wait for the line that says it is ready."""

    def __init__(self, redis_url: str, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with ctrl_c_reaches_children():
            self.process = self._spawn(redis_url, extra)
        self.lines: list[str] = []
        self.listening = threading.Event()
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _spawn(self, redis_url: str, extra: tuple[str, ...]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                sys.executable, str(SERVER),
                "--port", str(self.port),
                "--redis-url", redis_url,
                "--index-name", INDEX_NAME,
                "--key-prefix", KEY_PREFIX,
                *extra,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if "listening on" in line:
                self.listening.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.listening.wait(0.1):
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode} before listening:\n{self.log}")
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not listen within {START_TIMEOUT_S} s:\n{self.log}")
        assert f"listening on {self.url}" in self.log

    def interrupt(self) -> int:
        """Ctrl-C, as a person stops it; the exit code."""
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=30)
        self.reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def request(self, method: str, path: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps(fields).encode() if fields is not None else None
        request = urllib.request.Request(
            self.url + path, data=body, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())


@pytest.fixture
def cli_recommender(server_redis: LocalRedis) -> Iterator[RedisRecommender]:
    """The served runs' index, dropped with its documents afterwards."""
    recommender = RedisRecommender(connect(server_redis.url), index_name=INDEX_NAME, key_prefix=KEY_PREFIX)
    yield recommender
    recommender.drop_index(delete_documents=True)


@pytest.fixture
def served(server_redis: LocalRedis) -> Iterator[list[ServedDemo]]:
    """Servers a test starts; any still running when it ends (a failed test) are killed."""
    started: list[ServedDemo] = []
    yield started
    for demo in started:
        demo.kill()


def test_serve_stop_and_restart_with_no_reset_keeps_the_data(
    server_redis: LocalRedis, cli_recommender: RedisRecommender, served: list[ServedDemo], catalog: dict
) -> None:
    user_id = "cli-test-user"
    clicked, refreshed = catalog["products"][0], catalog["products"][-1]
    new_text = "a telescope for watching distant galaxies"
    cli_recommender.reset_user(user_id)
    try:
        first = ServedDemo(server_redis.url)
        served.append(first)
        first.wait_until_listening()
        state = first.request("GET", f"/state?user_id={user_id}")
        assert state["index"]["index_name"] == INDEX_NAME
        assert state["index"]["num_docs"] == len(catalog["products"])
        assert first.request("POST", "/click", {"product_id": clicked["id"], "user_id": user_id})["clicks"] == 1
        first.request("POST", "/refresh-embedding", {"product_id": refreshed["id"], "text": new_text})
        assert first.interrupt() == 0
        assert "Traceback" not in first.log

        second = ServedDemo(server_redis.url, "--no-reset")
        served.append(second)
        second.wait_until_listening()
        state = second.request("GET", f"/state?user_id={user_id}")
        assert state["index"]["num_docs"] == len(catalog["products"])
        assert state["user"]["clicks"] == 1
        assert state["user"]["recent_clicks"] == [{"id": clicked["id"], "name": clicked["name"]}]
        # Re-seeding would have put the catalogue's vector back; --no-reset kept the refreshed one
        # (the float model's vector of new_text; the query's is the int8 encoder's, within its
        # checked cosine of it).
        search = {"query": new_text, "k": 1, "use_session": False, "rerank": False, "user_id": user_id}
        (best,) = second.request("POST", "/search", search)["candidates"]
        assert best["id"] == refreshed["id"] and best["vector_distance"] == pytest.approx(0, abs=1 - INT8_MIN_COSINE)
        assert second.interrupt() == 0
        assert "Traceback" not in second.log
    finally:
        cli_recommender.reset_user(user_id)


def test_a_busy_port_is_a_clear_error(server_redis: LocalRedis, cli_recommender: RedisRecommender) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "--port", str(port), "--redis-url", server_redis.url, "--index-name", INDEX_NAME, "--key-prefix", KEY_PREFIX
        )  # fmt: skip
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
