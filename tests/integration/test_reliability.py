"""Reliability, measured: what the demo does when Redis goes away or hangs, when clients stall,
when data in Redis is corrupt, and when the whole demo is stopped, killed and started again.

The fault tests stop, freeze and restart a Redis, so they run against a demo server of their
own (own Redis, same model and catalogue) and never disturb the other tests' servers. The
restart test runs demo_server.py itself with its bundled Redis in a temporary folder.
Measured latencies are logged (at WARNING, so a failing run shows them).
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import serving
from test_http import Reply, call, first_in, get_state, post, raw_exchange
from test_server_cli import ROOT, SERVER, ServedDemo

from demo_api import DemoApp
from demo_server import DemoRequestHandler, build_parser, warn_if_exposed
from local_redis import LocalRedis, connect, free_port, running_bundled_url
from recommender import EMBEDDING_FIELD, SESSION_VEC_FIELD, RedisRecommender

log = logging.getLogger(__name__)

# The contract: a dead Redis is a 503 at once, a hung one within the client's 2 s socket
# timeout (local_redis.connect), and service is back within 2 s of Redis returning.
DOWN_BOUND_S = 2.0
HUNG_BOUND_S = 3.0
RECOVERY_BOUND_S = 2.0
STALL_TIMEOUT_S = 1
IDLE_CONNECTIONS = 50
AOF_FSYNC_S = 1.0
NEW_TEXT = "a brass telescope for watching distant galaxies"


@dataclass(frozen=True)
class FaultDemo:
    url: str
    redis: LocalRedis
    app: DemoApp

    @property
    def address(self) -> tuple[str, int]:
        url = urlsplit(self.url)
        assert url.hostname is not None and url.port is not None
        return url.hostname, url.port


@pytest.fixture(scope="module")
def fault(embedder, catalog: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultDemo]:
    """A demo server whose Redis the tests may stop, freeze and restart. The Redis keeps an
    append-only file and a fixed port, as a real one would across a restart."""
    redis_server = LocalRedis(tmp_path_factory.mktemp("fault-redis"), persistent=True, port=free_port()).start()
    try:
        recommender = RedisRecommender(connect(redis_server.url))
        app = DemoApp(recommender, embedder, catalog, redis_description="the fault tests' Redis")
        app.seed()
        with serving(app) as url:
            yield FaultDemo(url, redis_server, app)
    finally:
        redis_server.stop()


def new_user(label: str) -> str:
    return f"{label}-{secrets.token_hex(4)}"


def timed(request: Callable[[], Reply]) -> tuple[Reply, float]:
    started = time.monotonic()
    reply = request()
    return reply, time.monotonic() - started


def redis_requests(url: str, user_id: str, product_id: str) -> dict[str, Callable[[], Reply]]:
    """One request per endpoint that needs Redis, by name."""
    return {
        "/state": lambda: call(url, "GET", f"/state?user_id={user_id}"),
        "/search": lambda: call(url, "POST", "/search", {"query": "rain jacket", "user_id": user_id}),
        "/click": lambda: call(url, "POST", "/click", {"product_id": product_id, "user_id": user_id}),
    }


def seconds_until_served(url: str, user_id: str, limit_s: float = 10.0) -> float:
    """How long until GET /state succeeds again, polled every 20 ms (at most `limit_s`)."""
    started = time.monotonic()
    while call(url, "GET", f"/state?user_id={user_id}").status != 200:
        assert time.monotonic() - started < limit_s, f"still failing after {limit_s} s"
        time.sleep(0.02)
    return time.monotonic() - started


# --- Redis goes away ---------------------------------------------------------------------------


def test_a_stopped_redis_is_a_prompt_503_and_service_resumes_when_it_returns(fault: FaultDemo, catalog: dict) -> None:
    user_id, product_id = new_user("stopped"), catalog["products"][0]["id"]
    assert post(fault.url, "/click", {"product_id": product_id, "user_id": user_id})["clicks"] == 1
    fault.redis.stop()
    try:
        for path, request in redis_requests(fault.url, user_id, product_id).items():
            reply, seconds = timed(request)
            log.warning("Redis stopped: %s answered %d in %.3f s", path, reply.status, seconds)
            assert "Redis is unreachable" in reply.error(503)
            assert reply.headers["X-Content-Type-Options"] == "nosniff"
            assert seconds < DOWN_BOUND_S
    finally:
        fault.redis.start()
    recovery = seconds_until_served(fault.url, user_id)
    log.warning("Redis restarted on the same port: served again after %.3f s", recovery)
    assert recovery < RECOVERY_BOUND_S

    fault.app.recommender.wait_until_indexed()
    state = get_state(fault.url, user_id)
    assert state["index"]["num_docs"] == len(catalog["products"])
    assert state["user"]["clicks"] == 1  # the append-only file kept it
    assert post(fault.url, "/click", {"product_id": product_id, "user_id": user_id})["clicks"] == 2
    assert post(fault.url, "/search", {"query": "rain jacket", "user_id": user_id})["candidates"]


def test_a_hung_redis_is_a_503_within_the_socket_timeout_and_heals(fault: FaultDemo, catalog: dict) -> None:
    """SIGSTOP: the port still accepts connections, but nothing ever answers."""
    user_id, product_id = new_user("hung"), catalog["products"][1]["id"]
    requests = redis_requests(fault.url, user_id, product_id)
    assert fault.redis.process is not None
    pid = fault.redis.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(len(requests)) as pool:
            results = dict(zip(requests, pool.map(timed, requests.values()), strict=True))
    finally:
        os.kill(pid, signal.SIGCONT)
    recovery = seconds_until_served(fault.url, user_id)
    for path, (reply, seconds) in results.items():
        log.warning("Redis hung: %s answered %d in %.3f s", path, reply.status, seconds)
    log.warning("Redis resumed: served again after %.3f s", recovery)
    for reply, seconds in results.values():
        assert "Redis is unreachable" in reply.error(503)
        assert seconds < HUNG_BOUND_S
    assert recovery < RECOVERY_BOUND_S
    assert post(fault.url, "/search", {"query": "rain jacket", "user_id": user_id})["candidates"]


# --- slow and broken clients ---------------------------------------------------------------------


def is_open(sock: socket.socket) -> bool:
    """True unless the peer has closed the connection; never waits (a socket with a timeout
    would wait for data before even trying to read)."""
    timeout = sock.gettimeout()
    sock.settimeout(0)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(timeout)


def test_stalled_clients_hold_only_their_own_connection(
    fault: FaultDemo, catalog: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(DemoRequestHandler, "timeout", STALL_TIMEOUT_S)
    user_id = new_user("stalls")
    head = b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    with (
        socket.create_connection(fault.address, timeout=10) as no_blank_line,
        socket.create_connection(fault.address, timeout=10) as short_body,
    ):
        no_blank_line.sendall(head)
        short_body.sendall(head + b"Content-Length: 100\r\n\r\n" + b'{"query":')
        stalled_at = time.monotonic()

        assert get_state(fault.url, user_id)["index"]["num_docs"] == len(catalog["products"])
        assert post(fault.url, "/search", {"query": "wool socks", "k": 1, "user_id": user_id})["candidates"]
        served = time.monotonic() - stalled_at
        assert is_open(no_blank_line) and is_open(short_body), "the other requests waited for the stalls"

        response = http.client.HTTPResponse(short_body)
        response.begin()
        assert response.status == 408
        response.read()
        assert short_body.recv(1) == b""
        assert no_blank_line.recv(1) == b""  # no request, so no answer: just closed
        closed = time.monotonic() - stalled_at
    log.warning("stalled clients: others served after %.3f s; stalls closed after %.3f s", served, closed)


def test_many_idle_connections_do_not_stop_service(
    fault: FaultDemo, catalog: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(DemoRequestHandler, "timeout", STALL_TIMEOUT_S)
    user_id = new_user("idle")
    with contextlib.ExitStack() as stack:
        idle = [
            stack.enter_context(socket.create_connection(fault.address, timeout=10)) for _ in range(IDLE_CONNECTIONS)
        ]
        assert get_state(fault.url, user_id)["index"]["num_docs"] == len(catalog["products"])
        assert post(fault.url, "/click", {"product_id": catalog["products"][2]["id"], "user_id": user_id})
        assert all(sock.recv(1) == b"" for sock in idle)  # each is closed after the timeout


# --- corrupt data in Redis -----------------------------------------------------------------------


def test_a_corrupt_session_vector_is_ignored_logged_and_replaced_by_the_next_click(
    fault: FaultDemo, catalog: dict, caplog: pytest.LogCaptureFixture
) -> None:
    user_id = new_user("bad-session")
    recommender = fault.app.recommender
    recommender.redis.hset(recommender.features_key(user_id), SESSION_VEC_FIELD, b"\x00" * 10)
    with caplog.at_level(logging.WARNING, logger="recommender"):
        state = get_state(fault.url, user_id)
        search = post(fault.url, "/search", {"query": "boots", "use_session": True, "user_id": user_id})
        click = post(fault.url, "/click", {"product_id": catalog["products"][0]["id"], "user_id": user_id})
    assert state["user"]["has_session_vec"] is False
    assert search["used_session"] is False and search["candidates"]
    assert (click["user"]["has_session_vec"], click["user"]["session_vec_dim"]) == (True, catalog["dim"])
    assert "stored session vector has 10 bytes" in caplog.text


@pytest.mark.parametrize(
    ("field", "value", "indexed", "logged"),
    [
        pytest.param("price", b"abc", False, "has price 'abc', not a finite number", id="price-abc"),
        pytest.param("name", None, True, "lacks name", id="missing-name"),
        pytest.param("embedding", b"\x00" * 12, False, "has no valid 384-d embedding", id="short-embedding"),
        pytest.param("category", None, True, "lacks category", id="missing-category"),
    ],
)
def test_a_garbled_product_is_skipped_or_shown_and_always_logged(
    fault: FaultDemo,
    catalog: dict,
    caplog: pytest.LogCaptureFixture,
    field: str,
    value: bytes | None,
    indexed: bool,
    logged: str,
) -> None:
    """A copy of a catalogue product with one field broken behind the API's back. Redis refuses
    to index a non-numeric price or a short vector (the product drops out of lists and search);
    a missing text field is indexed and shown empty. Either way every endpoint still answers."""
    source, user_id = catalog["products"][0], new_user(f"garbled-{field}")
    recommender = fault.app.recommender
    bad_id = f"bad-{field}-{secrets.token_hex(4)}"
    recommender.index_products([{**source, "id": bad_id}])
    key = recommender.product_key(bad_id)
    if value is None:
        recommender.redis.hdel(key, field)
    else:
        recommender.redis.hset(key, field, value)
    try:
        with caplog.at_level(logging.WARNING, logger="recommender"):
            state = get_state(fault.url, user_id)
            search = {"query": source["name"], "k": 100, "user_id": user_id}
            found = {c["id"]: c for c in post(fault.url, "/search", search)["candidates"]}
            click = post(fault.url, "/click", {"product_id": bad_id, "user_id": user_id})
        listed = {p["id"]: p for p in state["products"]}
        assert (bad_id in listed, bad_id in found) == (indexed, indexed)
        if indexed:
            assert listed[bad_id][field] == found[bad_id][field] == ""
        else:
            assert state["index"]["indexing_failures"] >= 1
            assert key in caplog.text  # the index's last error names the product
        assert click["clicks"] == 1
        assert click["name"] == (bad_id if field == "name" else source["name"])
        assert click["category"] == ("unknown" if field == "category" else source["category"])
        assert logged in caplog.text
    finally:
        recommender.redis.delete(key)


# --- security basics -----------------------------------------------------------------------------


def test_the_default_address_is_loopback() -> None:
    assert build_parser().parse_args([]).host == "127.0.0.1"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.23", "10.0.0.7", "", "demo.example.lan"])
def test_listening_beyond_loopback_warns_that_there_is_no_authentication(
    host: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="demo_server"):
        warn_if_exposed(host)
    assert "NO authentication" in caplog.text


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_addresses_do_not_warn(host: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="demo_server"):
        warn_if_exposed(host)
    assert caplog.records == []


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Sec-Fetch-Site": "same-site"}, id="sibling-site"),
        pytest.param({"Origin": "null"}, id="opaque-origin"),
        pytest.param({"Origin": "http://["}, id="unparsable-origin"),
    ],
)
def test_cross_site_posts_the_http_tests_do_not_cover_are_403(
    fault: FaultDemo, catalog: dict, headers: dict[str, str]
) -> None:
    user_id = new_user("cross-site")
    fields = {"product_id": catalog["products"][0]["id"], "user_id": user_id}
    call(fault.url, "POST", "/click", fields, headers=headers).error(403)
    assert get_state(fault.url, user_id)["user"]["clicks"] == 0


@pytest.mark.parametrize(
    ("target", "status"),
    [
        pytest.param("http://127.0.0.1/static/../demo_server.py", 404, id="absolute-form-traversal"),
        pytest.param("http://127.0.0.1/static/%2e%2e/demo_server.py", 404, id="absolute-form-encoded"),
        pytest.param("http://[/state", 400, id="unparsable-absolute-form"),
        pytest.param("/static/" + "a" * 300, 404, id="name-too-long"),
    ],
)
def test_odd_request_targets_get_a_json_4xx(fault: FaultDemo, target: str, status: int) -> None:
    reply = raw_exchange(fault.url, f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    reply.error(status)
    assert b"import" not in reply.body


# --- restarting the whole demo -------------------------------------------------------------------


class BundledDemo(ServedDemo):
    """demo_server.py with its bundled Redis on a data folder: the first argument is the folder
    (--data-dir), not a Redis URL, and REDIS_URL is removed from its environment."""

    def _spawn(self, data_dir: str, extra: tuple[str, ...]) -> subprocess.Popen[str]:
        env = {name: value for name, value in os.environ.items() if name != "REDIS_URL"}
        return subprocess.Popen(
            [sys.executable, str(SERVER), "--port", str(self.port), "--data-dir", data_dir, *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )


def test_data_dir_selects_the_bundled_redis_so_it_excludes_a_redis_url(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--data-dir", "somewhere", "--redis-url", "redis://127.0.0.1:1"])
    error = capsys.readouterr().err
    assert "--redis-url: not allowed with argument --data-dir" in error


def snapshot(demo: BundledDemo, data_dir: Path, user_id: str, product_id: str) -> dict[str, Any]:
    """What must survive: the user as /state shows it, the catalogue size, and the raw bytes of
    the session vector and of a refreshed embedding."""
    url = running_bundled_url(data_dir)
    assert url, f"no bundled Redis running on {data_dir}"
    client = connect(url)
    keys = RedisRecommender(client)
    state = demo.request("GET", f"/state?user_id={user_id}")
    # The session's weight fades with the seconds between two snapshots: what must survive is
    # the session itself (its bytes, below), not how much it weighs at this instant.
    user = {
        name: value for name, value in state["user"].items() if name not in ("session_weight", "session_fades_in_s")
    }
    return {
        "user": user,
        "num_docs": state["index"]["num_docs"],
        "session_vec": client.hget(keys.features_key(user_id), SESSION_VEC_FIELD),
        "embedding": client.hget(keys.product_key(product_id), EMBEDDING_FIELD),
    }


def is_gone(pid: int) -> bool:
    """Exited, or a zombie: a killed demo's Redis is reparented, and a container's init may
    never reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] in "ZX"
    except FileNotFoundError:
        return True


def test_the_whole_demo_keeps_sessions_and_embeddings_across_a_restart_and_a_kill(
    tmp_path: Path, catalog: dict
) -> None:
    user_id = "restart-user"
    coat, boot, refreshed = first_in(catalog, "outerwear"), first_in(catalog, "footwear"), catalog["products"][-1]
    started: list[BundledDemo] = []

    def start(*extra: str) -> BundledDemo:
        demo = BundledDemo(str(tmp_path), *extra)
        started.append(demo)
        demo.wait_until_listening()
        return demo

    try:
        first = start()
        for product in (coat, boot, coat):
            first.request("POST", "/click", {"product_id": product["id"], "user_id": user_id})
        first.request("POST", "/refresh-embedding", {"product_id": refreshed["id"], "text": NEW_TEXT})
        before = snapshot(first, tmp_path, user_id, refreshed["id"])
        assert before["user"]["affinities"] == {"outerwear": 2.0, "footwear": 1.0}
        assert before["session_vec"] and before["num_docs"] == len(catalog["products"])
        assert first.interrupt() == 0

        second = start("--no-reset")
        assert snapshot(second, tmp_path, user_id, refreshed["id"]) == before
        second.request("POST", "/click", {"product_id": boot["id"], "user_id": user_id})
        clicked = snapshot(second, tmp_path, user_id, refreshed["id"])
        assert clicked["user"]["clicks"] == 4 and clicked["session_vec"] != before["session_vec"]
        time.sleep(AOF_FSYNC_S + 0.5)  # appendfsync everysec: what is older than a second is on disk
        redis_pid = int((tmp_path / "redis.pid").read_text())
        second.kill()  # SIGKILL: the demo cleans nothing up; its Redis gets SIGTERM from the kernel
        deadline = time.monotonic() + 10
        while not is_gone(redis_pid):
            assert time.monotonic() < deadline, "the killed demo's Redis is still running"
            time.sleep(0.05)

        third = start("--no-reset")
        assert snapshot(third, tmp_path, user_id, refreshed["id"]) == clicked
        assert third.interrupt() == 0
        assert all("Traceback" not in demo.log for demo in started)
    finally:
        for demo in started:
            demo.kill()


def test_a_second_stop_signal_during_shutdown_does_not_interrupt_it(tmp_path: Path) -> None:
    """Ctrl-C pressed twice, or `timeout` and a person both sending SIGTERM: the first signal
    starts the shutdown, which stops the bundled Redis cleanly; later ones must not break into it
    (they used to raise inside it: a traceback, and Redis left running for the next start). The
    test sends SIGINT every 5 ms until the demo has gone, so some land in the shutdown."""
    demo = BundledDemo(str(tmp_path))
    try:
        demo.wait_until_listening()
        demo.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while demo.process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                demo.process.send_signal(signal.SIGINT)
            time.sleep(0.005)
        code = demo.process.wait(timeout=1)
        demo.reader.join(timeout=5)
    finally:
        demo.kill()
    assert "Traceback" not in demo.log, demo.log
    assert "already stopping" in demo.log  # signals did arrive during the shutdown
    assert running_bundled_url(tmp_path) is None  # and its Redis was shut down, not left running
    # 0, or killed by a SIGINT that came after the shutdown, once Python's own exit has put the
    # default handlers back.
    assert code in (0, -signal.SIGINT), demo.log
