"""Issue 24, finding 7, the HTTP and process parts:

- `Expect: 100-continue` was buffered and never flushed (curl waited 1 s, stricter clients time
  out);
- a request waiting for the model held one of the API slots, so slow fresh queries made a
  victim's click a 503 "busy"; and nothing bounded how many queries one client queued;
- with `--workers`, a frozen worker was never detected (new connections hung), and the
  supervisor's `os.wait()` reaped the bundled Redis, so a SIGKILLed Redis was logged as
  "exited with status 0".

The model is gated here (a real embedder behind a switch the test holds) so that "waiting for
the model" lasts exactly as long as the test needs, whatever the machine's speed.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import serving
from test_http import Reply, call
from test_reliability import BundledDemo, is_gone

from demo_api import DemoApp

ANSWERED_WITHIN_S = 0.5
LIVENESS_LIMIT_S = 15.0


# --- Expect: 100-continue ---------------------------------------------------------------------------


def test_expect_100_continue_is_answered_before_the_body_is_sent(demo_url: str) -> None:
    url = urlsplit(demo_url)
    body = b'{"query": "rain boots", "k": 3}'
    head = (
        f"POST /search HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(head)
        sock.settimeout(ANSWERED_WITHIN_S)
        try:
            interim = sock.recv(4096)
        except TimeoutError:
            pytest.fail(f"no answer to Expect: 100-continue within {ANSWERED_WITHIN_S} s")
        assert interim.startswith((b"HTTP/1.1 100 ", b"HTTP/1.1 417 ")), interim[:100]
        if interim.startswith(b"HTTP/1.1 100 "):
            sock.settimeout(30)
            sock.sendall(body)
            final = interim.split(b"\r\n\r\n", 1)[1] or sock.recv(65536)
            assert final.startswith(b"HTTP/1.1 200 "), final[:200]


# --- the model and the API slots ----------------------------------------------------------------------


class GatedEmbedder:
    """The real embedder, whose model calls wait until the gate opens."""

    def __init__(self, embedder: Any, gate: threading.Event) -> None:
        self._embedder = embedder
        self._gate = gate
        self.waiting = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)

    def _gated(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.waiting += 1
        self._gate.wait(30)
        return getattr(self._embedder, method)(*args, **kwargs)

    def encode_one(self, *args: Any, **kwargs: Any) -> Any:
        return self._gated("encode_one", *args, **kwargs)

    def encode_many(self, *args: Any, **kwargs: Any) -> Any:
        return self._gated("encode_many", *args, **kwargs)

    def encode_queries(self, *args: Any, **kwargs: Any) -> Any:
        return self._gated("encode_queries", *args, **kwargs)


@contextlib.contextmanager
def gated_server(demo_app: DemoApp, catalog: dict, **options: Any) -> Iterator[tuple[str, threading.Event]]:
    """A demo server on the shared Redis and index whose model waits for the yielded gate."""
    gate = threading.Event()
    app = DemoApp(demo_app.recommender, GatedEmbedder(demo_app.embedder, gate), catalog)  # type: ignore[arg-type]
    try:
        with serving(app, **options) as url:
            try:
                yield url, gate
            finally:
                gate.set()  # before the server closes: it waits for the requests the gate holds
    finally:
        app.close()


def fresh_searches(url: str, count: int) -> list[Any]:
    """`count` searches with texts nobody sent before, started at once; their futures."""
    pool = ThreadPoolExecutor(count)
    futures = [
        pool.submit(call, url, "POST", "/search", {"query": f"slow query {secrets.token_hex(8)}", "user_id": "q"})
        for _ in range(count)
    ]
    pool.shutdown(wait=False)
    return futures


def test_queries_waiting_for_the_model_leave_the_api_slots_to_others(
    demo_app: DemoApp, catalog: dict, user_id: str
) -> None:
    with gated_server(demo_app, catalog, max_in_flight=2) as (url, gate):
        waiting = fresh_searches(url, 4)
        time.sleep(0.5)  # every search is in, waiting for the model
        started = time.monotonic()
        victim = call(url, "POST", "/click", {"product_id": catalog["products"][0]["id"], "user_id": user_id})
        seconds = time.monotonic() - started
        gate.set()
        searches = Counter(future.result(timeout=30).status for future in waiting)
    assert victim.status == 200, victim.body[:300]
    assert seconds < ANSWERED_WITHIN_S
    assert searches == {200: 4}


def test_one_client_can_queue_only_a_few_queries_for_the_model(demo_app: DemoApp, catalog: dict) -> None:
    with gated_server(demo_app, catalog, model_queue_per_client=2) as (url, gate):
        futures = fresh_searches(url, 6)
        time.sleep(0.5)
        refused = [future.result(timeout=5) for future in futures if future.done()]
        gate.set()
        answered = [future.result(timeout=30) for future in futures]
    assert len(refused) == 4, f"{len(refused)} answered before the model was free"
    assert Counter(reply.status for reply in answered) == {200: 2, 429: 4}
    busy: Reply = next(reply for reply in answered if reply.status == 429)
    assert "waiting for the model" in busy.json()["error"]
    assert int(busy.headers["Retry-After"]) >= 1


# --- --workers: liveness and the bundled Redis' exit status ---------------------------------------


def worker_pids(demo: BundledDemo) -> set[int]:
    return {int(pid) for pid in re.findall(r"worker (\d+) serving", demo.log)}


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[BundledDemo]:
    demo = BundledDemo(str(tmp_path), "--workers", "2")
    try:
        demo.wait_until_listening()
        deadline = time.monotonic() + 30
        while len(worker_pids(demo)) < 2:  # the parent may say "listening" before a worker logs
            assert time.monotonic() < deadline, demo.log[-2000:]
            time.sleep(0.05)
        yield demo
    finally:
        for pid in worker_pids(demo):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # a stopped worker ignores the parent's SIGTERM
        demo.kill()


def answers(url: str) -> bool:
    try:
        return call_with_timeout(url, 2.0).status == 200
    except OSError:
        return False


def call_with_timeout(url: str, timeout_s: float) -> Reply:
    import http.client

    parts = urlsplit(url)
    assert parts.hostname is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        connection.request("GET", "/state?user_id=liveness")
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def test_a_frozen_worker_is_replaced_and_new_connections_are_answered(two_workers: BundledDemo) -> None:
    demo = two_workers
    pids = worker_pids(demo)
    assert len(pids) == 2, demo.log[-2000:]
    frozen = pids.pop()
    os.kill(frozen, signal.SIGSTOP)
    deadline = time.monotonic() + LIVENESS_LIMIT_S
    while not is_gone(frozen):
        assert time.monotonic() < deadline, f"the frozen worker {frozen} still holds its place:\n{demo.log[-2000:]}"
        time.sleep(0.2)
    while len(worker_pids(demo) - {frozen}) < 2:
        assert time.monotonic() < deadline + 60, f"no replacement started:\n{demo.log[-2000:]}"
        time.sleep(0.2)
    assert f"worker {frozen}" in demo.log and "not answering" in demo.log
    with ThreadPoolExecutor(8) as pool:
        outcomes = Counter(pool.map(lambda _: answers(demo.url), range(40)))
    assert outcomes == {True: 40}, outcomes


def test_a_killed_bundled_redis_is_reported_as_killed_under_workers(tmp_path: Path, two_workers: BundledDemo) -> None:
    demo = two_workers
    redis_pid = int((tmp_path / "redis.pid").read_text())
    os.kill(redis_pid, signal.SIGKILL)
    deadline = time.monotonic() + LIVENESS_LIMIT_S
    while "restarting it on" not in demo.log:
        assert time.monotonic() < deadline, demo.log[-2000:]
        time.sleep(0.1)
    line = next(line for line in demo.lines if "restarting it on" in line)
    assert f"(pid {redis_pid}) was killed by SIGKILL" in line, line
    deadline = time.monotonic() + LIVENESS_LIMIT_S
    while not answers(demo.url):
        assert time.monotonic() < deadline, demo.log[-2000:]
        time.sleep(0.2)
    assert demo.process.poll() is None
