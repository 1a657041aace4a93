"""The demo web server: the page, and a JSON API over RedisRecommender.

Stdlib only (http.server), so the demo runs with nothing but the library's own requirements.
Every answer is JSON, errors included: a client never sees a traceback, and an unreachable
Redis is a 503 that heals by itself once Redis is back (redis-py reconnects per command).

The transport's defences (SECURITY.md has the threat model): a request's body is always read or
the connection closed, so bytes a client declared as a body are never parsed as a request; the
Host header must name this server (DNS rebinding); the user cookie is signed; API requests in
flight are bounded below the Redis connection pool. `--workers N` runs N such servers on one
port (SO_REUSEPORT) under a supervising parent.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import ipaddress
import json
import logging
import mimetypes
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote

import redis

from demo_api import API_ROUTES, HTTP_MAX_K, MISSING_INDEX_MESSAGE, SERVICE_ROUTES, Caller, DemoApp, Fields
from embeddings import LocalEmbedder, ModelNotFoundError
from local_redis import LocalRedis, LocalRedisError, SearchUnavailableError
from recengine.admin_api import (
    ADMIN_ROUTES,
    MAX_ADMIN_BODY_BYTES,
    AdminApi,
    allowed_methods,
    is_admin_target,
    product_id_of,
)
from recengine.admin_token import ADMIN_TOKEN_ENV, AdminToken
from recengine.catalog_file import check_catalog_vectors, read_catalog
from recengine.catalog_input import CatalogError
from recengine.client_budgets import NewUserBudget, WaitingLimit
from recengine.http_request import (
    MAX_BODY_BYTES,
    ApiError,
    declared_body_length,
    parse_body,
    parse_form,
    parse_json_object,
    split_target,
)
from recengine.impressions import ImpressionLog
from recengine.metrics import EXPOSITION_CONTENT_TYPE, PrometheusMetrics, metrics_directory
from recengine.server_cli import build_parser, chosen_query_encoder
from recengine.topology import Topology, close_connections, open_topology
from recengine.web_guard import (
    SECURITY_HEADERS,
    USER_COOKIE,
    AllowedHosts,
    CookieSigner,
    CookieUser,
    cross_site_refusal,
    load_cookie_secret,
    valid_user_id,
)
from recengine.workers import STOP_SIGNALS, reserve_port, supervise
from recommender import RedisRecommender, is_missing_index_error

log = logging.getLogger("demo_server")

ROOT = Path(__file__).resolve().parent
STATIC_DIR = ROOT / "static"
DEFAULT_DATA_DIR = ROOT / ".redis-data"

# A response up to this size (every API answer; the page's files) leaves in one write.
RESPONSE_BUFFER_BYTES = 256 * 1024
# One encoder for every answer (json.dumps with options builds a new one per call).
JSON_ENCODER = json.JSONEncoder(ensure_ascii=False)
DEFAULT_USER = "demo"
CONNECTION_TIMEOUT_S = 10
# API requests in flight per process. Each holds at most one Redis connection at a time, so the
# limit stays below the client's pool (redis-py's default is 100 connections): past the pool,
# redis-py fails a command with "Too many connections", which would be a false "Redis is down".
DEFAULT_MAX_IN_FLIGHT = 32
# redis-py's pool size when none is given; a cluster client keeps one such pool per node.
REDIS_POOL_DEFAULT = 100
BUSY_WAIT_S = 1.0
BUSY_RETRY_AFTER_S = 1
# How often a serving loop says it is alive (see DemoServer.service_actions, workers.py).
HEARTBEAT_S = 0.5
# A client that closes or resets its connection mid-request is normal, never a server error.
CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
METRICS_PATH = "/metrics"


def static_file(url_path: str) -> Path:
    """The file under static/ that a /static/... path names; anything that would leave the
    folder (.., encoded or not, absolute paths, links out) is a 404."""
    relative = unquote(url_path[len("/static/") :])
    if not relative or "\x00" in relative or relative.startswith(("/", "\\")) or ".." in Path(relative).parts:
        raise ApiError(404, "no such file")
    try:
        path = (STATIC_DIR / relative).resolve()
        found = path.is_relative_to(STATIC_DIR.resolve()) and path.is_file()
    except OSError:  # a name the file system refuses, e.g. longer than NAME_MAX
        found = False
    if not found:
        raise ApiError(404, "no such file")
    return path


# --- HTTP ------------------------------------------------------------------------------------


class DemoRequestHandler(BaseHTTPRequestHandler):
    server: DemoServer
    server_version = "RedisRecommenderDemo/1.0"
    protocol_version = "HTTP/1.1"
    # A client that stalls mid-request holds only its own thread, and only this long.
    timeout = CONNECTION_TIMEOUT_S
    # Responses are buffered and leave in one write, headers and body together (send_json and
    # send_file flush): one send per answer instead of two, and no Nagle delay between them. A
    # body larger than the buffer goes straight out after the headers, so Nagle stays off: with
    # it on, a keep-alive client's delayed ACK would stall such a response by ~40 ms.
    wbufsize = RESPONSE_BUFFER_BYTES
    disable_nagle_algorithm = True
    # Bytes of the current request's body that the client declared and nobody has read yet.
    unread_body = 0
    # A Set-Cookie the current request's answer carries: a fresh user of the client's own.
    new_cookie: str | None = None

    @property
    def app(self) -> DemoApp:
        return self.server.app

    def handle(self) -> None:
        """Serve the connection's requests; a client that goes away between or inside them
        (reset, closed, stopped reading) ends it with one debug line, never a traceback."""
        try:
            super().handle()
        except CLIENT_GONE as exc:
            log.debug("%s went away (%s)", self.client_address[0], type(exc).__name__)

    def do_GET(self) -> None:
        self.handle_request("GET")

    def do_HEAD(self) -> None:
        self.handle_request("HEAD")

    def do_POST(self) -> None:
        self.handle_request("POST")

    def __getattr__(self, name: str) -> Callable[[], None]:
        """Any other method (PUT, DELETE, OPTIONS, BREW...) gets a JSON 405, not the stdlib's
        HTML 501."""
        if name.startswith("do_"):
            return lambda: self.handle_request(name[3:])
        raise AttributeError(name)

    def handle_expect_100(self) -> bool:
        """`Expect: 100-continue`: the interim answer leaves at once (the stdlib writes it into
        the response buffer, which nothing flushed, so a client waited for it in vain)."""
        super().handle_expect_100()
        self.wfile.flush()
        return True

    def handle_request(self, method: str) -> None:
        started = time.perf_counter()
        self.unread_body = 0
        self.new_cookie = None
        try:
            status, path = self.respond(method)
            # Whatever the answer, the declared body leaves the stream before the next request
            # is read: unread, it would be parsed as one (a page's no-cors POST body could hold
            # a whole request without an Origin header).
            self.discard_unread_body()
        except CLIENT_GONE as exc:
            self.close_connection = True
            log.debug("%s %s: the client went away (%s)", method, self.path[:200], type(exc).__name__)
            return
        elapsed = time.perf_counter() - started
        self.app.metrics.request(endpoint_label(path), status, elapsed)
        log.info("%s %s %d %.1fms", method, path, status, elapsed * 1000)

    def respond(self, method: str) -> tuple[int, str]:
        """Answer the request; (status, path for the log). Only a failure to talk to the client
        escapes (CLIENT_GONE)."""
        path = self.path
        try:
            self.unread_body = self.framed_body_length(
                MAX_ADMIN_BODY_BYTES if is_admin_target(self.path) else MAX_BODY_BYTES
            )
            target = split_target(self.path)
            path = target.path
            self.check_host(target)
            return self.dispatch(method, path), path
        except CLIENT_GONE:
            raise
        except ApiError as exc:
            if exc.__cause__ is not None:  # a condition of Redis (answering_library_errors)
                self.app.metrics.redis_error(type(exc.__cause__).__name__)
            self.send_json(exc.status, exc.payload(), exc.headers)
            return exc.status, path
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.app.metrics.redis_error(type(exc).__name__)
            log.warning("Redis unreachable during %s %s: %s", method, path, exc)
            self.send_json(503, {"error": f"Redis is unreachable ({self.app.redis_description}); retry shortly"})
            return 503, path
        except redis.ResponseError as exc:
            # The library's classifier reads Redis' wording (FT.SEARCH's and FT.INFO's differ).
            missing = is_missing_index_error(exc)
            self.app.metrics.redis_error(type(exc).__name__)
            log.exception("Redis error on %s %s", method, path)
            message = MISSING_INDEX_MESSAGE if missing else "Redis rejected the request; see the server log"
            self.send_json(503 if missing else 500, {"error": message})
            return 503 if missing else 500, path
        except Exception:
            log.exception("unexpected error on %s %s", method, path)
            self.send_json(500, {"error": "internal error; see the server log"})
            return 500, path

    def framed_body_length(self, limit: int) -> int:
        """declared_body_length of this request; a refusal closes the connection, since where
        this request ends, and the next begins, is unknown."""
        try:
            return declared_body_length(self.headers, limit)
        except ApiError:
            self.close_connection = True
            raise

    def check_host(self, target: SplitResult) -> None:
        """DNS rebinding: a page on a name its owner re-points at 127.0.0.1 is same-origin with
        itself, so neither Origin nor Sec-Fetch-Site catches it; only the Host header (and an
        absolute target's authority, which overrides it) shows the name the browser used."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) > 1:
            self.close_connection = True
            raise ApiError(400, "send exactly one Host header")
        named = [*hosts, *([target.netloc] if target.netloc else [])]
        if not named and self.request_version != "HTTP/1.0":
            raise ApiError(400, "an HTTP/1.1 request needs a Host header")
        for host in named:
            if not self.server.hosts.allows(host):
                raise ApiError(
                    421,
                    f"this server does not answer for host {host[:100]!r}: open it as http://127.0.0.1:"
                    f"{self.server.server_address[1]}/ or start it with --allowed-host NAME",
                )

    def dispatch(self, method: str, path: str) -> int:
        if path == "/" or path.startswith("/static/"):
            if method not in ("GET", "HEAD"):
                raise ApiError(405, f"{path} accepts GET only", {"Allow": "GET, HEAD"})
            return self.send_file(
                STATIC_DIR / "index.html" if path == "/" else static_file(path), head=method == "HEAD"
            )
        if path == METRICS_PATH:
            return self.send_metrics(method)
        service = SERVICE_ROUTES.get(path)
        if service is not None:
            # Probes and the contract: no user, cookie, body, same-origin rule or API slot.
            if method not in ("GET", "HEAD"):
                raise ApiError(405, f"{path} accepts GET only", {"Allow": "GET, HEAD"})
            self.send_json(200, service(self.app))
            return 200
        if is_admin_target(path):
            return self.dispatch_admin(method, path)
        route = API_ROUTES.get(path)
        if route is None:
            raise ApiError(404, f"no such endpoint: {path}")
        if method != route.method:
            raise ApiError(405, f"{path} accepts {route.method} only", {"Allow": route.method})
        if path == "/reset-index" and self.server.admin_token is not None:
            # With a live catalogue (the admin API on), a reset to the shipped one is an admin's act.
            self.check_admin()
        if method == "POST":
            self.check_same_origin()
            fields = parse_body(self.headers.get("Content-Type", ""), self.read_body())
        else:
            # Browsers send a URL's non-ASCII as percent-encoded UTF-8; http.server decoded the
            # request line as Latin-1, so this gives back the bytes exactly.
            fields = parse_form(split_target(self.path).query.encode("latin-1"), "query string")
        caller = self.server.caller(self.resolve_user(fields), self.client_address[0])
        # The body is read before a slot is taken: a client that trickles it in holds no slot.
        # An endpoint that waits for the model takes its slot itself, after the model.
        with contextlib.nullcontext() if route.uses_model else self.server.api_slot():
            payload = route.endpoint(self.app, caller, fields)
        self.send_json(200, payload)
        return 200

    def dispatch_admin(self, method: str, path: str) -> int:
        """The admin API (recengine/admin_api.py): the bearer token first, then a JSON body."""
        self.check_admin()
        product_id = product_id_of(path)
        endpoint = ADMIN_ROUTES.get((method, product_id is not None))
        if endpoint is None:
            allowed = allowed_methods(product_id is not None)
            raise ApiError(405, f"{path} accepts {allowed}", {"Allow": allowed})
        fields: Fields = {}
        if method in ("PUT", "PATCH", "POST"):
            content_type = self.headers.get("Content-Type", "")
            if content_type.split(";")[0].strip().lower() != "application/json":
                raise ApiError(415, "send the body as JSON (Content-Type: application/json)")
            fields = parse_json_object(self.read_body())
        with self.server.api_slot():
            payload = endpoint(self.server.admin, product_id, fields)
        self.send_json(200, payload)
        return 200

    def check_admin(self) -> None:
        """The admin bearer token (admin_token.py): off unless set, 401 without, 403 wrong.
        Never the shopper's cookie."""
        token = self.server.admin_token
        if token is None:
            raise ApiError(
                404, f"the admin API is off: start the server with --admin-token or {ADMIN_TOKEN_ENV} to enable it"
            )
        verdict = token.verdict(self.headers.get("Authorization"))
        if verdict == "missing":
            raise ApiError(401, "send the admin token: Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
        if verdict == "wrong":
            log.warning("a wrong admin token from %s", self.client_address[0])
            raise ApiError(403, "the admin token is wrong")

    def send_metrics(self, method: str) -> int:
        """GET /metrics: every worker's values in Prometheus' text format. Like the probes: no
        user, cookie, body, same-origin rule or API slot (it reads local files, not Redis)."""
        if method not in ("GET", "HEAD"):
            raise ApiError(405, f"{METRICS_PATH} accepts GET only", {"Allow": "GET, HEAD"})
        body = self.app.metrics.exposition()
        if body is None:
            raise ApiError(404, "metrics are off on this server (--no-metrics)")
        self.send_response(200)
        self.send_header("Content-Type", EXPOSITION_CONTENT_TYPE)
        self.send_header("Cache-Control", "no-store")
        self.finish_headers(body, None)
        if method != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()
        return 200

    def check_same_origin(self) -> None:
        """Another web page must not drive a user's local demo: browsers mark cross-site
        requests with Sec-Fetch-Site and Origin, which a page cannot forge."""
        refusal = cross_site_refusal(
            self.headers.get("Sec-Fetch-Site"), self.headers.get("Origin"), self.headers.get("Host", "")
        )
        if refusal:
            raise ApiError(403, refusal)

    def read_body(self) -> bytes:
        length, self.unread_body = self.unread_body, 0
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            raise ApiError(408, f"the body did not arrive within {self.timeout} s") from None
        if len(body) < length:
            self.close_connection = True
            raise ApiError(400, f"the body ended after {len(body)} of {length} bytes")
        return body

    def discard_unread_body(self) -> None:
        """Read and drop a body the answer did not need (at most MAX_BODY_BYTES, which the
        framing check guarantees); if it does not all arrive in time, close the connection."""
        length, self.unread_body = self.unread_body, 0
        if not length:
            return
        try:
            received = len(self.rfile.read(length))
        except TimeoutError:
            received = 0
        if received < length:
            self.close_connection = True

    def resolve_user(self, fields: Fields) -> str:
        """An explicit, valid user_id wins; then the browser's genuine cookie; then, for a client
        that sent cookies but no genuine user cookie, a fresh user of its own (with a new cookie
        in the answer); only a client without any cookie is the shared demo user."""
        explicit = fields.get("user_id")
        if explicit not in (None, ""):
            user_id = valid_user_id(explicit)
            if user_id is None:
                raise ApiError(400, "user_id must be 1-64 characters of letters, digits, '_', '.', ':' or '-'")
            return user_id
        cookies = self.cookie_user()
        if cookies.user_id is not None:
            return cookies.user_id
        return self.fresh_user(cookies) if cookies.sent_cookies else DEFAULT_USER

    def cookie_user(self) -> CookieUser:
        """What the request's cookies say about its user (web_guard.CookieSigner.read)."""
        return self.server.cookie_signer.read(self.headers.get("Cookie"))

    def fresh_user(self, cookies: CookieUser) -> str:
        """A new user, whose cookie this request's answer sets; logged when the client sent
        cookies (its own user cookie was lost, forged, or hidden by a page's)."""
        user_id, self.new_cookie = self.server.cookie_signer.mint()
        if cookies.sent_cookies:
            why = "a Cookie header over 8 KB, not read" if cookies.too_long else f"cookies but no genuine {USER_COOKIE}"
            log.info("%s sent %s: a fresh user %s, with a new cookie", self.client_address[0], why, user_id)
        return user_id

    def send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        body = JSON_ENCODER.encode(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.finish_headers(body, headers)
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def send_file(self, path: Path, head: bool = False) -> int:
        body = path.read_bytes()
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self.send_response(200)
        self.send_header(
            "Content-Type",
            f"{content_type}; charset=utf-8"
            if content_type.startswith("text/") or content_type.endswith("javascript")
            else content_type,
        )
        self.send_header("Cache-Control", "no-cache")
        if path.name == "index.html":
            cookies = self.cookie_user()
            if cookies.user_id is None:
                self.fresh_user(cookies)
        self.finish_headers(body, {})
        if not head:
            self.wfile.write(body)
        self.wfile.flush()
        return 200

    def finish_headers(self, body: bytes, headers: Mapping[str, str] | None) -> None:
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        if self.new_cookie:
            self.send_header("Set-Cookie", self.new_cookie)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (bad request line, headers too large, ...) as JSON too."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.send_json(code, {"error": message or HTTPStatus(code).phrase})

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """handle_request logs one line per request with its duration instead."""


def endpoint_label(path: str) -> str:
    """The metrics' endpoint label: a path the server routes, "/static" for the page's files, and
    "other" for anything else (a path a client made up must not become a label)."""
    if path in API_ROUTES or path in SERVICE_ROUTES or path in ("/", METRICS_PATH):
        return path
    if is_admin_target(path):  # one label for the admin API: an id must not become a label
        return "/products"
    return "/static" if path.startswith("/static/") else "other"


class DemoServer(ThreadingHTTPServer):
    """The demo's HTTP server for one DemoApp.

    allowed_hosts: names the Host header may carry besides this server's own address and the
    loopback names (e.g. the public name behind a reverse proxy), with any port.
    cookie_secret: signs user cookies (load_cookie_secret); by default a random one, good for
    this server object's lifetime.
    max_in_flight: API requests served at once; by default DEFAULT_MAX_IN_FLIGHT, and always
    below the Redis client's connection pool. A request holds its slot only around its Redis
    work: waiting for the model it holds none.
    new_users_per_minute: how many new users (users with no state in Redis yet) one client (IP
    address) may create per minute; past it a write that would create one is a 429. None: no
    limit (the command line's default is server_cli.DEFAULT_NEW_USERS_PER_MINUTE).
    model_queue_per_client: how many requests of one client may wait for the model at once;
    past it a 429. None: no bound (the command line's: server_cli.DEFAULT_MODEL_QUEUE_PER_CLIENT).
    reuse_port: bind with SO_REUSEPORT, so that several processes serve one port.
    heartbeat: called from the serving loop at least every HEARTBEAT_S while it runs (a
    worker's liveness signal to its supervisor).
    """

    daemon_threads = True
    # Connections waiting to be accepted: a burst of a few hundred must not be dropped at SYN.
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        app: DemoApp,
        *,
        allowed_hosts: Iterable[str] = (),
        cookie_secret: bytes | None = None,
        max_in_flight: int | None = None,
        new_users_per_minute: int | None = None,
        model_queue_per_client: int | None = None,
        reuse_port: bool = False,
        admin_token: AdminToken | None = None,
        heartbeat: Callable[[], None] | None = None,
    ) -> None:
        self.allow_reuse_port = reuse_port
        super().__init__(address, DemoRequestHandler)
        self.app = app
        self.admin = AdminApi(app)
        self.admin_token = admin_token
        self.cookie_signer = CookieSigner(cookie_secret or secrets.token_bytes(32))
        self.hosts = AllowedHosts.serving(address[0], self.server_address[1], allowed_hosts)
        # Half the pool at most: room for anything that briefly holds a second connection.
        pool = getattr(app.recommender.redis, "connection_pool", None)
        pool_size = pool.max_connections if pool is not None else REDIS_POOL_DEFAULT
        self.max_in_flight = max(1, min(max_in_flight or DEFAULT_MAX_IN_FLIGHT, pool_size // 2))
        self.in_flight = threading.BoundedSemaphore(self.max_in_flight)
        self.new_users = NewUserBudget(new_users_per_minute) if new_users_per_minute else None
        self.model_queue = WaitingLimit(model_queue_per_client, "the model") if model_queue_per_client else None
        self.heartbeat = heartbeat
        self._beat_at = 0.0

    def caller(self, user_id: str, client: str) -> Caller:
        """The user of a request, with this server's budgets for its client."""
        new_users, model_queue = self.new_users, self.model_queue

        def may_create_user() -> bool:
            """Spend one of the client's new users (BudgetExceeded, a 429, when none is left)."""
            assert new_users is not None
            new_users.spend(client)
            return True

        return Caller(
            user_id,
            may_create_user=may_create_user if new_users else None,
            model_turn=(lambda: model_queue.waiting(client)) if model_queue else Caller.model_turn,
            redis_turn=self.api_slot,
        )

    def service_actions(self) -> None:
        """Called by serve_forever on every turn of its loop (at least every poll interval):
        the heartbeat, when one is set, at most every HEARTBEAT_S."""
        now = time.monotonic()
        if self.heartbeat is not None and now - self._beat_at >= HEARTBEAT_S:
            self._beat_at = now
            self.heartbeat()

    @contextlib.contextmanager
    def api_slot(self) -> Iterator[None]:
        """One of the max_in_flight slots for an API request, waited for briefly; a server that
        stays saturated says so (503 with Retry-After) instead of queueing without end."""
        if not self.in_flight.acquire(timeout=BUSY_WAIT_S):
            raise ApiError(503, "the server is busy; retry shortly", {"Retry-After": str(BUSY_RETRY_AFTER_S)})
        try:
            yield
        finally:
            self.in_flight.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """What escapes a handler: a client gone is a debug line; anything else goes to the log
        (the stdlib would print it to stderr)."""
        if isinstance(sys.exc_info()[1], CLIENT_GONE):
            log.debug("%s went away", client_address[0])
        else:
            log.exception("unexpected error while serving %s", client_address[0])


@dataclass
class Shared:
    """What one run sets up once, before any worker: the catalogue, the Redis clients (and the
    bundled Redis when we started it), and the cookie secret."""

    catalog: dict[str, Any]
    redis: Topology
    cookie_secret: bytes
    redis_seconds: float


def open_shared(args: argparse.Namespace) -> Shared:
    catalog = read_catalog(args.catalog)
    if not 1 <= args.topk <= HTTP_MAX_K:
        raise ValueError(f"--topk must be between 1 and {HTTP_MAX_K}")
    t0 = time.perf_counter()
    topology = open_topology(args, DEFAULT_DATA_DIR)
    redis_seconds = time.perf_counter() - t0
    # Kept beside the bundled Redis's data even when another Redis is used.
    secret = load_cookie_secret(args.data_dir if args.data_dir is not None else DEFAULT_DATA_DIR)
    return Shared(catalog, topology, secret, redis_seconds)


def build_server(
    args: argparse.Namespace,
    shared: Shared,
    *,
    seed: bool = True,
    reuse_port: bool = False,
    heartbeat: Callable[[], None] | None = None,
) -> DemoServer:
    """One serving process's model, app and listening server. `seed` loads the catalogue (or,
    with --no-reset, makes sure the index exists): the first process does it, never a
    replacement worker, which must not wipe what users did meanwhile. `heartbeat`: a worker's
    liveness signal (DemoServer)."""
    timings = {"redis": shared.redis_seconds}
    t0 = time.perf_counter()
    embedder = LocalEmbedder(args.model, backend=args.embedding_backend, query_encoder=args.query_encoder)
    embedder.encode_one("warm up the model before the first request")
    timings["model"] = time.perf_counter() - t0
    catalog = shared.catalog
    # The catalog's vectors, not its model name, decide: other ports name the same weights
    # differently (sentence-transformers/..., Xenova/...).
    check_catalog_vectors(catalog, embedder, source=args.catalog)
    recommender = RedisRecommender(
        shared.redis.client,
        index_name=args.index_name,
        key_prefix=args.key_prefix,
        vector_dim=embedder.dim,
        hnsw_m=args.hnsw_m,
        hnsw_ef_construction=args.hnsw_ef_construction,
        ef_runtime=args.ef_runtime,
        hybrid_policy=args.hybrid_policy,
        vector_type=args.vector_type,
        user_ttl_s=args.user_ttl,
        read_clients=shared.redis.read_clients,
        min_replicas_ack=args.min_replicas_ack,
        replica_ack_timeout_ms=args.replica_ack_timeout_ms,
        extra_fields=catalog.get("extra_fields", ()),
        durable=args.durable,
    )
    app = DemoApp(
        recommender, embedder, catalog, default_k=args.topk, redis_description=shared.redis.description,
        metrics=None if args.no_metrics else PrometheusMetrics(),
        impressions=None if args.no_impressions else ImpressionLog(shared.redis.client, args.impressions_cap),
        experiment=args.experiment,
    )  # fmt: skip
    count = None
    if seed:
        t0 = time.perf_counter()
        count = app.ensure_index() if args.no_reset else app.seed()
        timings["seed"] = time.perf_counter() - t0
        if recommender.is_cluster and recommender.count_indexed() < count:
            raise ValueError(
                f"the cluster's Search index {args.index_name} holds {recommender.count_indexed()} of the {count} "
                "products: this Search has no coordinator, so an index covers one shard and every search would miss "
                "the others. Use Redis Software or Redis Cloud (Search across shards), or one Redis without --cluster"
            )
    try:
        server = DemoServer(
            (args.host, args.port),
            app,
            allowed_hosts=args.allowed_host,
            cookie_secret=shared.cookie_secret,
            new_users_per_minute=args.new_users_per_minute or None,
            model_queue_per_client=args.model_queue_per_client or None,
            reuse_port=reuse_port,
            admin_token=AdminToken.configured(args.admin_token, os.environ),
            heartbeat=heartbeat,
        )
    except OSError as exc:
        raise ValueError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}. Try another --port."
        ) from None
    loaded = f"{count} products in {args.index_name}; " if count is not None else ""
    log.info(
        "%s%s embeddings; ready in %s",
        loaded, embedder.backend, ", ".join(f"{name} {seconds:.2f}s" for name, seconds in timings.items()),
    )  # fmt: skip
    return server


def start(args: argparse.Namespace) -> tuple[DemoServer, LocalRedis | None]:
    """Everything before serving in one process: catalog, Redis, cookie secret, model, index.
    Raises with a message for every problem a user can fix."""
    shared = open_shared(args)
    return build_server(args, shared), shared.redis.local


def stop_serving(signum: int, frame: Any) -> None:
    """SIGTERM (kill, systemd) and SIGINT end serve_forever the same way, so the bundled Redis
    is shut down cleanly either way. Installed explicitly because a demo started in the
    background by a script inherits SIGINT as ignored. The first signal starts the shutdown and
    later ones are ignored: a second Ctrl-C, or `timeout` and a person both sending SIGTERM,
    would otherwise raise inside it and leave Redis running (SIGKILL still ends it at once)."""
    for each in STOP_SIGNALS:
        signal.signal(each, already_stopping)
    raise KeyboardInterrupt


def already_stopping(signum: int, frame: Any) -> None:
    """A stop signal during the shutdown: nothing to do. A Python function rather than SIG_IGN,
    because a signal that arrived before the switch is still dispatched to the handler then in
    place, and Python refuses to dispatch one to SIG_IGN (OSError: "ignored due to race")."""
    log.info("already stopping (signal %d)", signum)


def warn_if_exposed(host: str) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        log.warning(
            "listening on %s: the demo has NO authentication; anyone who can reach this address can use it", host
        )


def start_error_message(exc: BaseException, args: argparse.Namespace) -> str | None:
    """What to tell the user about a failed start; None for an exception that is a bug."""
    if isinstance(exc, CatalogError):
        hint = "\nRun `python build_catalog.py` first to create it." if not args.catalog.exists() else ""
        return f"error: {exc}{hint}"
    if isinstance(exc, (SearchUnavailableError, LocalRedisError, ModelNotFoundError, ValueError)):
        return f"error: {exc}"
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return f"error: cannot reach Redis: {str(exc).rstrip('.')}. Check --redis-url / REDIS_URL."
    if isinstance(exc, OSError):  # the data dir, the catalog's folder, ...: say which file and why
        return f"error: {exc}"
    return None


def report_start_error(exc: BaseException, args: argparse.Namespace) -> None:
    """Tell the user what to fix about a failed start, on stderr; a bug is raised again."""
    message = start_error_message(exc, args)
    if message is None:
        raise exc
    print(message, file=sys.stderr)


def serve_until_stopped(server: DemoServer) -> None:
    """Serve until a stop signal (KeyboardInterrupt, see stop_serving, which this lets through),
    then close the listening socket and the app."""
    try:
        server.serve_forever()
    finally:
        server.server_close()
        server.app.close()


def serve_one(args: argparse.Namespace) -> int:
    """--workers 1: this process serves. A stop signal may come at any moment from the start
    on (stop_serving raises KeyboardInterrupt wherever the main thread is, even inside a log
    call), so everything from the start to the serving is inside the one try that ends quietly;
    a bundled Redis started before the signal stops at exit (LocalRedis registers its stop)."""
    local = None
    try:
        try:
            server, local = start(args)
        except Exception as exc:
            report_start_error(exc, args)
            return 1
        host, port = server.server_address[:2]
        log.info("listening on http://%s:%d", host, port)
        serve_until_stopped(server)
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        if local:
            local.stop()
    return 0


def serve_worker(
    args: argparse.Namespace, shared: Shared, seed: bool, ready: Callable[[], None], beat: Callable[[], None]
) -> int:
    """A forked worker's Work (recengine.workers): its own model, app, Redis connections
    (redis-py resets an inherited pool) and listening socket on the shared port; its serving
    loop beats for the supervisor's liveness check."""
    try:
        server = build_server(args, shared, seed=seed, reuse_port=True, heartbeat=beat)
    except Exception as exc:
        report_start_error(exc, args)
        return 1
    ready()
    log.info("worker %d serving", os.getpid())
    serve_until_stopped(server)
    return 0


def serve_workers(args: argparse.Namespace) -> int:
    """--workers N: Redis (the bundled one started here, once) and the cookie secret in this
    process; N forked workers serve."""
    try:
        shared = open_shared(args)
        reservation = reserve_port(args.host, args.port)
    except Exception as exc:
        report_start_error(exc, args)
        return 1
    except KeyboardInterrupt:  # stopped while starting (see serve_one)
        log.info("stopping")
        return 0
    try:
        args.port = reservation.getsockname()[1]
        # Each worker opens its own connections: none of the parent's may be shared across a fork.
        close_connections(shared.redis)
        return supervise(functools.partial(serve_worker, args, shared), args.workers, args.host, reservation)
    except KeyboardInterrupt:  # a stop before supervise took over its signals
        log.info("stopping")
        return 0
    finally:
        if shared.redis.local:
            shared.redis.local.stop()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.query_encoder == "int8" and args.embedding_backend != "onnx":
        parser.error("--query-encoder int8 runs on the onnx backend: drop --embedding-backend torch")
    args.query_encoder = chosen_query_encoder(args.embedding_backend, args.query_encoder)
    pid = "[%(process)d]" if args.workers > 1 else ""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s %(name)s{pid}: %(message)s")
    warn_if_exposed(args.host)
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop_serving)
    if args.experiment is not None:
        log.info("experiment %s: %s", args.experiment.name,
                 ", ".join(f"{arm.name} {arm.share:.0%}" for arm in args.experiment.arms))  # fmt: skip
    # Every process of this run (the workers are forked inside) writes its metrics here.
    with contextlib.nullcontext() if args.no_metrics else metrics_directory():
        return serve_workers(args) if args.workers > 1 else serve_one(args)


if __name__ == "__main__":
    sys.exit(main())
