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
import base64
import contextlib
import email.errors
import functools
import hashlib
import hmac
import http.cookies
import ipaddress
import json
import logging
import mimetypes
import os
import re
import secrets
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from build_catalog import CatalogError, check_catalog_vectors, non_negative_int, positive_int, read_catalog
from demo_api import API_ROUTES, HTTP_MAX_K, SERVICE_ROUTES, ApiError, DemoApp, Fields
from embeddings import BACKENDS, LocalEmbedder, ModelNotFoundError
from local_redis import (
    DEFAULT_PROTOCOL,
    LocalRedis,
    LocalRedisError,
    SearchUnavailableError,
    _die_with_parent,
    connect,
    has_search,
    open_bundled,
    open_redis,
    redact,
)
from recommender import DEFAULT_EF_RUNTIME, DEFAULT_USER_TTL_S, HYBRID_POLICIES, RedisRecommender

log = logging.getLogger("demo_server")

ROOT = Path(__file__).resolve().parent
STATIC_DIR = ROOT / "static"
DEFAULT_CATALOG = ROOT / "catalog.json"
DEFAULT_DATA_DIR = ROOT / ".redis-data"

MAX_BODY_BYTES = 64 * 1024
# A response up to this size (every API answer; the page's files) leaves in one write.
RESPONSE_BUFFER_BYTES = 256 * 1024
# One encoder for every answer (json.dumps with options builds a new one per call).
JSON_ENCODER = json.JSONEncoder(ensure_ascii=False)
MAX_FORM_FIELDS = 100
USER_COOKIE = "rr_user"
DEFAULT_USER = "demo"
USER_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
CONNECTION_TIMEOUT_S = 10
# Content-Length is 1*DIGIT (RFC 9110): int() would also take "+5", "1_5" and non-ASCII digits.
CONTENT_LENGTH_PATTERN = re.compile(r"[0-9]+")
# A Host header: a DNS name or IPv4 address, or a bracketed IPv6 address, and an optional port.
HOST_PATTERN = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::([0-9]{1,5}))?")
DNS_NAME_PATTERN = re.compile(r"(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
COOKIE_SECRET_FILE = "cookie-secret"
COOKIE_SECRET_MIN_CHARS = 32
SIGNATURE_BYTES = 16
# API requests in flight per process. Each holds at most one Redis connection at a time, so the
# limit stays below the client's pool (redis-py's default is 100 connections): past the pool,
# redis-py fails a command with "Too many connections", which would be a false "Redis is down".
DEFAULT_MAX_IN_FLIGHT = 32
# redis-py's pool size when none is given; a cluster client keeps one such pool per node.
REDIS_POOL_DEFAULT = 100
BUSY_WAIT_S = 1.0
BUSY_RETRY_AFTER_S = 1
# A client that closes or resets its connection mid-request is normal, never a server error.
CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
WORKER_STOP_TIMEOUT_S = 10
# What the header parser reports for lines it dropped (not for, e.g., a multipart Content-Type
# without a body, which it also calls a defect).
HEADER_LINE_DEFECTS = (
    email.errors.MissingHeaderBodySeparatorDefect,
    email.errors.InvalidHeaderDefect,
    email.errors.FirstHeaderLineIsContinuationDefect,
)
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def valid_user_id(value: Any) -> str | None:
    return value if isinstance(value, str) and USER_ID_PATTERN.fullmatch(value) else None


def parse_form(data: bytes, what: str) -> dict[str, str]:
    """Urlencoded fields, UTF-8 whether raw or percent-encoded (browsers percent-encode, people
    and scripts often do not). A repeated name keeps its first value, as browsers submit a form
    and as the reference server reads one."""
    try:
        pairs = parse_qsl(
            data.decode("utf-8"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError:
        raise ApiError(400, f"the {what} is not valid UTF-8: send UTF-8 text, raw or percent-encoded") from None
    except ValueError as exc:
        raise ApiError(400, f"the {what} is malformed: {exc}") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def parse_body(content_type: str, body: bytes) -> dict[str, Any]:
    """JSON objects and urlencoded forms carry the same field names."""
    if not body.strip():
        return {}
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the JSON body must be an object of fields")
        for name, value in data.items():
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise ApiError(400, f"field {name!r} must be a string, number or boolean")
        return data
    if media_type == "application/x-www-form-urlencoded":
        return parse_form(body, "form body")
    raise ApiError(
        415,
        f"unsupported Content-Type {media_type or '(none)'!r}: send application/json or application/x-www-form-urlencoded",
    )


def split_target(target: str) -> SplitResult:
    """The request target's parts. urllib refuses some absolute URIs (`GET http://[/state`):
    that is the client's 400, not an exception that drops the connection unanswered."""
    try:
        return urlsplit(target)
    except ValueError:
        raise ApiError(400, "the request target is not a valid URL") from None


def origin_netloc(origin: str) -> str | None:
    """host[:port] of an Origin header; None for one urllib cannot parse, which is never ours."""
    try:
        return urlsplit(origin).netloc
    except ValueError:
        return None


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


# --- host names and cookies ------------------------------------------------------------------------


def host_name(value: str) -> str | None:
    """A host as the Host check compares it: lower case, an IPv6 address in brackets; None for
    anything else (a port, a scheme, a wildcard, spaces)."""
    name = value.strip().lower()
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
        return f"[{address.compressed}]" if address.version == 6 else address.compressed
    return name if DNS_NAME_PATTERN.fullmatch(name) else None


def allowed_host_argument(value: str) -> str:
    name = host_name(value)
    if name is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a host name: give the bare name the browser uses, e.g. demo.example.com "
            "(no scheme, port or wildcard)"
        )
    return name


@functools.lru_cache(maxsize=256)
def split_host_header(value: str) -> tuple[str, int | None] | None:
    """(name, port) of a Host header or a target's authority; None when malformed. Remembered
    for the last few hundred values: every request carries one, nearly always the same, and
    parsing it (a regex, an address parse) was a measurable part of a request's own time."""
    match = HOST_PATTERN.fullmatch(value.strip().lower())
    if not match:
        return None
    name = host_name(match.group(1))
    return (name, int(match.group(2)) if match.group(2) else None) if name else None


class CookieSigner:
    """The user cookie is `<user id>.<HMAC-SHA256 of the id>`, so that a cookie planted by
    someone without the server's secret (a page on another port of 127.0.0.1 can set cookies
    for this one) is ignored instead of choosing the user."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def signature(self, user_id: str) -> str:
        digest = hmac.new(self._secret, user_id.encode("utf-8"), hashlib.sha256).digest()[:SIGNATURE_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def sign(self, user_id: str) -> str:
        return f"{user_id}.{self.signature(user_id)}"

    def verify(self, value: str) -> str | None:
        """The user id of a genuine cookie value, else None."""
        user_id, _, signature = value.rpartition(".")
        if valid_user_id(user_id) is None:
            return None
        return user_id if hmac.compare_digest(signature, self.signature(user_id)) else None


def load_cookie_secret(data_dir: Path) -> bytes:
    """The secret that signs user cookies, kept in `data_dir` so that cookies stay good across
    restarts and between the workers and servers sharing the folder. Created when absent:
    written privately (0600) under a temporary name and linked into place, so a concurrent
    start either wins or reads the winner's secret, never half a file or a second secret."""
    path = data_dir / COOKIE_SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=data_dir, prefix=f".{COOKIE_SECRET_FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as temp:
                temp.write(secrets.token_hex(32) + "\n")
                temp.flush()
                os.fsync(temp.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temp_name, path)
        finally:
            os.unlink(temp_name)
    secret = path.read_text(encoding="ascii", errors="replace").strip()
    if len(secret) < COOKIE_SECRET_MIN_CHARS:
        raise ValueError(
            f"{path} holds no usable secret (under {COOKIE_SECRET_MIN_CHARS} characters): delete it and start "
            "again to make a new one (browsers then get new user cookies)"
        )
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        log.warning("%s can be read by other users: run `chmod 600 %s`", path, path)
    return secret.encode("ascii")


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

    def handle_request(self, method: str) -> None:
        started = time.perf_counter()
        self.unread_body = 0
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
        log.info("%s %s %d %.1fms", method, path, status, (time.perf_counter() - started) * 1000)

    def respond(self, method: str) -> tuple[int, str]:
        """Answer the request; (status, path for the log). Only a failure to talk to the client
        escapes (CLIENT_GONE)."""
        path = self.path
        try:
            self.unread_body = self.declared_body_length()
            target = split_target(self.path)
            path = target.path
            self.check_host(target)
            return self.dispatch(method, path), path
        except CLIENT_GONE:
            raise
        except ApiError as exc:
            self.send_json(exc.status, {"error": exc.message}, exc.headers)
            return exc.status, path
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("Redis unreachable during %s %s: %s", method, path, exc)
            self.send_json(503, {"error": f"Redis is unreachable ({self.app.redis_description}); retry shortly"})
            return 503, path
        except redis.ResponseError as exc:
            # FT.SEARCH says "no such index", FT.INFO (first thing the page asks) "Unknown index name".
            missing = any(words in str(exc).lower() for words in ("no such index", "unknown index name"))
            log.exception("Redis error on %s %s", method, path)
            message = (
                "the search index is missing: POST /reset-index to rebuild it"
                if missing
                else "Redis rejected the request; see the server log"
            )
            self.send_json(503 if missing else 500, {"error": message})
            return 503 if missing else 500, path
        except Exception:
            log.exception("unexpected error on %s %s", method, path)
            self.send_json(500, {"error": "internal error; see the server log"})
            return 500, path

    def declared_body_length(self) -> int:
        """The body's length from the framing headers, which must be unambiguous: one
        Content-Length of plain digits, no Transfer-Encoding, no malformed header line (which the
        parser would silently drop, Content-Length included). Anything else is refused and the
        connection closed, since where this request ends, and the next begins, is unknown."""
        if any(isinstance(defect, HEADER_LINE_DEFECTS) for defect in self.headers.defects):
            self.close_connection = True
            raise ApiError(400, "a header line is malformed (expected `Name: value`)")
        if self.headers.get_all("Transfer-Encoding"):
            self.close_connection = True
            raise ApiError(411, "send the body with a Content-Length (chunked bodies are not accepted)")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return 0
        if len(lengths) > 1:
            self.close_connection = True
            raise ApiError(400, "send exactly one Content-Length header")
        text = lengths[0].strip(" \t")
        if not CONTENT_LENGTH_PATTERN.fullmatch(text):
            self.close_connection = True
            raise ApiError(400, f"invalid Content-Length {lengths[0][:40]!r}: it must be digits only")
        if len(text) > 9 or int(text) > MAX_BODY_BYTES:
            self.close_connection = True
            size = f"{int(text)} bytes" if len(text) <= 20 else f"{len(text)} digits long"
            raise ApiError(413, f"the body is {size}; at most {MAX_BODY_BYTES} bytes are accepted")
        return int(text)

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
            if not self.server.host_allowed(host):
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
        service = SERVICE_ROUTES.get(path)
        if service is not None:
            # Probes and the contract: no user, cookie, body, same-origin rule or API slot.
            if method not in ("GET", "HEAD"):
                raise ApiError(405, f"{path} accepts GET only", {"Allow": "GET, HEAD"})
            self.send_json(200, service(self.app))
            return 200
        route = API_ROUTES.get(path)
        if route is None:
            raise ApiError(404, f"no such endpoint: {path}")
        if method != route.method:
            raise ApiError(405, f"{path} accepts {route.method} only", {"Allow": route.method})
        if method == "POST":
            self.check_same_origin()
            fields = parse_body(self.headers.get("Content-Type", ""), self.read_body())
        else:
            # Browsers send a URL's non-ASCII as percent-encoded UTF-8; http.server decoded the
            # request line as Latin-1, so this gives back the bytes exactly.
            fields = parse_form(split_target(self.path).query.encode("latin-1"), "query string")
        user_id = self.resolve_user(fields)
        # The body is read before a slot is taken: a client that trickles it in holds no slot.
        with self.server.api_slot():
            payload = route.endpoint(self.app, user_id, fields)
        self.send_json(200, payload)
        return 200

    def check_same_origin(self) -> None:
        """Another web page must not drive a user's local demo: browsers mark cross-site
        requests with Sec-Fetch-Site and Origin, which a page cannot forge."""
        site = self.headers.get("Sec-Fetch-Site")
        if site and site not in ("same-origin", "none"):
            raise ApiError(403, "cross-site requests are refused: use the demo page itself")
        origin = self.headers.get("Origin")
        if origin and origin != "null" and origin_netloc(origin) != self.headers.get("Host", ""):
            raise ApiError(403, "cross-origin requests are refused: use the demo page itself")
        if origin == "null":
            raise ApiError(403, "requests from an opaque origin are refused")

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
        """An explicit, valid user_id wins; then the browser's cookie; then the shared demo user."""
        explicit = fields.get("user_id")
        if explicit not in (None, ""):
            user_id = valid_user_id(explicit)
            if user_id is None:
                raise ApiError(400, "user_id must be 1-64 characters of letters, digits, '_', '.', ':' or '-'")
            return user_id
        return self.cookie_user() or DEFAULT_USER

    def cookie_user(self) -> str | None:
        """The user of a genuine (signed) cookie; None for none, or for one planted or forged."""
        cookies = http.cookies.SimpleCookie()
        try:
            cookies.load(self.headers.get("Cookie", ""))
        except http.cookies.CookieError:
            return None
        morsel = cookies.get(USER_COOKIE)
        return self.server.cookie_signer.verify(morsel.value) if morsel else None

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
        extra = {}
        if path.name == "index.html" and self.cookie_user() is None:
            value = self.server.cookie_signer.sign(f"u-{secrets.token_hex(8)}")
            extra["Set-Cookie"] = f"{USER_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=31536000"
        self.finish_headers(body, extra)
        if not head:
            self.wfile.write(body)
        self.wfile.flush()
        return 200

    def finish_headers(self, body: bytes, headers: Mapping[str, str] | None) -> None:
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
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


class DemoServer(ThreadingHTTPServer):
    """The demo's HTTP server for one DemoApp.

    allowed_hosts: names the Host header may carry besides this server's own address and the
    loopback names (e.g. the public name behind a reverse proxy), with any port.
    cookie_secret: signs user cookies (load_cookie_secret); by default a random one, good for
    this server object's lifetime.
    max_in_flight: API requests served at once; by default DEFAULT_MAX_IN_FLIGHT, and always
    below the Redis client's connection pool.
    reuse_port: bind with SO_REUSEPORT, so that several processes serve one port.
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
        reuse_port: bool = False,
    ) -> None:
        self.allow_reuse_port = reuse_port
        super().__init__(address, DemoRequestHandler)
        self.app = app
        self.cookie_signer = CookieSigner(cookie_secret or secrets.token_bytes(32))
        own = {name for name in (*LOOPBACK_NAMES, host_name(address[0]) or "") if name}
        self.local_names = frozenset(own)
        self.extra_names = frozenset(filter(None, (host_name(name) for name in allowed_hosts)))
        # Half the pool at most: room for anything that briefly holds a second connection.
        pool = getattr(app.recommender.redis, "connection_pool", None)
        pool_size = pool.max_connections if pool is not None else REDIS_POOL_DEFAULT
        self.max_in_flight = max(1, min(max_in_flight or DEFAULT_MAX_IN_FLIGHT, pool_size // 2))
        self.in_flight = threading.BoundedSemaphore(self.max_in_flight)

    def host_allowed(self, host: str) -> bool:
        """The loopback names and our own address with our port or none; allowed_hosts with
        any port (behind a proxy the public port is not ours)."""
        parsed = split_host_header(host)
        if parsed is None:
            return False
        name, port = parsed
        if name in self.extra_names:
            return True
        return name in self.local_names and port in (None, self.server_address[1])

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


# --- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Serve the real-time recommendation demo: the page and its JSON API.",
        epilog="Redis: --redis-url, else REDIS_URL, else a Redis with Search on localhost:6379, "
        "else the bundled Redis with Search (data kept in .redis-data/). --data-dir picks the bundled one directly.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; the demo has no authentication)"
    )
    parser.add_argument("--port", type=int, default=8084, help="port to listen on (default 8084)")
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        type=allowed_host_argument,
        metavar="NAME",
        help="a host name browsers may use to reach the demo, e.g. behind a reverse proxy (repeatable). "
        "Requests whose Host header names anything but this, 127.0.0.1, localhost, [::1] or --host get a 421",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="serve with N processes on the one port (SO_REUSEPORT), each with its own model; all state is "
        "in Redis (default 1)",
    )
    redis_choice = parser.add_mutually_exclusive_group()
    redis_choice.add_argument(
        "--redis-url", help="your Redis with Search, e.g. redis://:password@host:6379 or rediss:// for TLS"
    )
    redis_choice.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="use the bundled Redis with Search and keep its data (append-only file) in this folder; "
        "REDIS_URL and localhost:6379 are then not tried (without this flag the bundled Redis, "
        "when it is the one used, keeps its data in .redis-data/)",
    )
    redis_choice.add_argument(
        "--sentinel",
        action="append",
        default=[],
        type=sentinel_address,
        metavar="HOST:PORT",
        help="a Redis Sentinel to find the primary and its replicas through, instead of --redis-url (repeatable: "
        "give each Sentinel). Searches go to the replicas; a failover is followed without a restart",
    )
    parser.add_argument("--index-name", default="recommend:idx", help="the Search index name (default recommend:idx)")
    parser.add_argument("--key-prefix", default="product:", help="key prefix of product hashes (default product:)")
    parser.add_argument(
        "--catalog", type=Path, default=DEFAULT_CATALOG, help="catalog built by build_catalog.py (default catalog.json)"
    )
    parser.add_argument(
        "--topk", type=int, default=10, help="results per search when the request has no k (default 10)"
    )
    parser.add_argument(
        "--no-reset", action="store_true", help="keep the data already in Redis; only make sure the index exists"
    )
    parser.add_argument(
        "--model", help="embedding model name or path (default: the bundled all-MiniLM-L6-v2); must match the catalog's"
    )
    parser.add_argument(
        "--ef-runtime",
        type=positive_int,
        default=DEFAULT_EF_RUNTIME,
        help=f"HNSW search breadth per query: higher is more recall and more time (default {DEFAULT_EF_RUNTIME})",
    )
    parser.add_argument(
        "--hybrid-policy",
        choices=[p for p in HYBRID_POLICIES if p],
        help="force BATCHES (best for broad filters) or ADHOC_BF (best for filters matching a few hundred items) "
        "on filtered queries; default: Redis chooses per query",
    )
    parser.add_argument("--hnsw-m", type=positive_int, help="HNSW M for a newly created index (default: Redis' 16)")
    parser.add_argument(
        "--hnsw-ef-construction",
        type=positive_int,
        help="HNSW EF_CONSTRUCTION for a newly created index (default: Redis' 200)",
    )
    parser.add_argument(
        "--embedding-backend",
        choices=BACKENDS,
        default="onnx",
        help="how query texts are embedded: onnx (default; ~4x faster per query, starts in a fraction of a second, "
        "same vectors as torch; the first start exports the model once) or torch (sentence-transformers)",
    )
    parser.add_argument(
        "--user-ttl",
        type=non_negative_int,
        default=DEFAULT_USER_TTL_S,
        metavar="SECONDS",
        help=f"every key of a user expires this long after their last click or dismissal, so abandoned users "
        f"do not fill Redis (default {DEFAULT_USER_TTL_S} = 30 days; 0 keeps users forever)",
    )
    scale = parser.add_argument_group("beyond one Redis (README: Scaling out)")
    scale.add_argument(
        "--replica-url",
        action="append",
        default=[],
        metavar="URL",
        help="a replica of the Redis in use, with Search, to answer the searches (repeatable; used in turn, the "
        "primary when one fails). Writes and each user's own state stay on the primary",
    )
    scale.add_argument(
        "--sentinel-service",
        default="mymaster",
        metavar="NAME",
        help="the service the --sentinel Sentinels monitor (default mymaster)",
    )
    scale.add_argument(
        "--min-replicas-ack",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="answer a click, dismissal or refreshed embedding only once N replicas have it (WAIT); fewer within "
        "--replica-ack-timeout-ms is a 503, and the write stays on the primary (default 0: the primary's word)",
    )
    scale.add_argument(
        "--replica-ack-timeout-ms",
        type=positive_int,
        default=1000,
        metavar="MS",
        help="how long a write waits for --min-replicas-ack replicas (default 1000)",
    )
    scale.add_argument(
        "--cluster",
        action="store_true",
        help="--redis-url is a node of a Redis Cluster: user keys and popularity are routed to their shards. "
        "Searches need Search that spans shards (the coordinator of Redis Software or Redis Cloud)",
    )
    return parser


# --- beyond one Redis: replicas, Sentinel, Cluster (README: Scaling out) ---------------------------

SENTINEL_TIMEOUT_S = 0.5
REDIS_TIMEOUT_S = 2.0


def sentinel_address(value: str) -> tuple[str, int]:
    """argparse type of --sentinel: HOST:PORT, or [IPv6]:PORT."""
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:26379)")
    return host, int(port)


def client_options() -> dict[str, Any]:
    """What every connection of ours shares with local_redis.connect: bytes (vectors are
    binary), no retries (a click re-sent after a lost reply would count twice), 2 s timeouts,
    and its protocol (RESP2: the faster on the search path, see local_redis.DEFAULT_PROTOCOL)."""
    return {
        "decode_responses": False,
        "protocol": DEFAULT_PROTOCOL,
        "socket_connect_timeout": REDIS_TIMEOUT_S,
        "socket_timeout": REDIS_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 0),
    }


def check_scale_out_flags(args: argparse.Namespace) -> None:
    """Combinations that cannot work, refused before anything is opened."""
    if args.sentinel and args.replica_url:
        raise ValueError("the Sentinels name the replicas: drop --replica-url when using --sentinel")
    if args.cluster:
        if args.replica_url or args.sentinel or args.min_replicas_ack:
            raise ValueError(
                "--cluster sends every key to its shard's primary: drop --replica-url, --sentinel and --min-replicas-ack"
            )
        if not (args.redis_url or os.environ.get("REDIS_URL")):
            raise ValueError("--cluster needs --redis-url (or REDIS_URL) naming one node of the cluster")


def replica_without_search(where: str, fix: str) -> SearchUnavailableError:
    return SearchUnavailableError(
        f"the replica {where} has no Search module (FT.* commands are unknown), so it cannot answer searches: "
        f"load the same Search module there as on the primary (loadmodule in its config), or {fix}"
    )


def check_replica(client: redis.Redis, where: str, fix: str) -> None:
    """A read client must be a replica that can answer FT.SEARCH."""
    try:
        searchable = has_search(client)
        role = client.info("replication").get("role")
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise ValueError(f"cannot reach the replica {where} ({exc}): start it, or {fix}") from None
    if not searchable:
        raise replica_without_search(where, fix)
    if role != "slave":
        raise ValueError(f"{where} is not a replica (INFO replication says role:{role}): pass a replica, or {fix}")


def open_replica(url: str) -> redis.Redis:
    """A --replica-url: a checked connection (see check_replica), pooled as the primary's is."""
    fix = f"drop --replica-url {redact(url)}"
    try:
        client = connect(url)
    except SearchUnavailableError:
        raise replica_without_search(redact(url), fix) from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise ValueError(f"cannot reach the replica {redact(url)} ({exc}): start it, or {fix}") from None
    check_replica(client, redact(url), fix)
    return client


def open_sentinel(addresses: list[tuple[str, int]], service: str) -> tuple[redis.Redis, redis.Redis, str]:
    """The primary (master_for) and the searches' client (slave_for: the replicas in turn, the
    primary when none answers) of a service the Sentinels monitor. Both ask the Sentinels again
    when a connection fails, so a failover is followed without a restart; while no primary is
    known, commands raise MasterNotFoundError (a ConnectionError: a 503). Refuses a service no
    Sentinel knows and a node without Search. Returns the two clients and a description."""
    listed = ", ".join(f"{host}:{port}" for host, port in addresses)
    probe: dict[str, Any] = {
        "socket_connect_timeout": SENTINEL_TIMEOUT_S,
        "socket_timeout": SENTINEL_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 0),
    }
    sentinel = Sentinel(addresses, sentinel_kwargs=probe)
    known: set[str] = set()
    answered = 0
    for node, (host, port) in zip(sentinel.sentinels, addresses, strict=True):
        try:
            known.update(str(name) for name in node.sentinel_masters())
        except (redis.ConnectionError, redis.TimeoutError):
            continue
        except redis.ResponseError as exc:
            raise ValueError(f"{host}:{port} is not a Redis Sentinel ({exc}): check --sentinel") from None
        answered += 1
    if not answered:
        raise ValueError(f"no Sentinel answers at {listed}: start them, or check --sentinel HOST:PORT")
    if service not in known:
        raise ValueError(
            f"the Sentinels at {listed} monitor no service named {service!r} (they monitor: "
            f"{', '.join(sorted(known)) or 'none'}): pass --sentinel-service NAME"
        )
    primary = sentinel.master_for(service, **client_options())
    reads = sentinel.slave_for(service, **client_options())
    try:
        host, port = sentinel.discover_master(service)
        if not has_search(primary):
            raise SearchUnavailableError(
                f"the primary of {service} ({host}:{port}) has no Search module (FT.* commands are unknown): "
                "run Redis 8 or newer, or Redis Stack, on every node of the service"
            )
    except MasterNotFoundError:
        raise ValueError(
            f"the Sentinels know {service!r} but name no primary that is up (a failover under way?): retry shortly"
        ) from None
    for address in sentinel.discover_slaves(service):
        # redis-py 8.2 types each pair as any encodable value; its Sentinel reply parser yields
        # the address as str and the port as int, which these conversions state for mypy.
        replica_host, replica_port = str(address[0]), int(str(address[1]))
        replica = redis.Redis(host=replica_host, port=replica_port, **client_options())
        try:
            check_replica(replica, f"{replica_host}:{replica_port} of {service}", "remove it from the service")
        except ValueError as exc:  # down, or not yet a replica: Sentinel will notice; searches skip it
            log.warning("%s", exc)
        finally:
            replica.close()
    return primary, reads, f"Redis of Sentinel service {service} ({listed})"


def open_cluster(url: str) -> tuple[RedisCluster, str]:
    """--cluster: a RedisCluster client that finds every node from the one in the URL."""
    try:
        client = RedisCluster.from_url(url, **client_options())
    except RedisClusterException as exc:
        raise ValueError(
            f"{redact(url)} is not a reachable node of a Redis Cluster ({exc}): drop --cluster, or check --redis-url"
        ) from None
    try:
        client.execute_command("FT._LIST", target_nodes=client.get_random_node())
    except redis.ResponseError:
        raise SearchUnavailableError(
            f"the Redis Cluster at {redact(url)} has no Search module (FT._LIST is refused): run Redis 8 or newer, "
            "or Redis Stack, on every node"
        ) from None
    return client, f"Redis Cluster at {redact(url)}"


def check_replicas_connected(client: redis.Redis, required: int) -> None:
    """--min-replicas-ack N with fewer replicas than N would refuse every click."""
    connected = int(client.info("replication").get("connected_slaves", 0))
    if connected < required:
        raise ValueError(
            f"--min-replicas-ack {required}, but the primary has {connected} connected replica(s), so every click "
            "would be refused: start the replicas, or lower --min-replicas-ack"
        )


def close_connections(shared: Shared) -> None:
    """Before forking workers: none of the parent's connections may be shared with a child."""
    for client in (shared.client, *shared.read_clients):
        if isinstance(client, RedisCluster):
            client.disconnect_connection_pools()
        else:
            client.connection_pool.disconnect()


@dataclass
class Shared:
    """What one run sets up once, before any worker: the catalogue, the Redis connection (and
    the bundled Redis when we started it), the replicas that answer searches, and the cookie
    secret."""

    catalog: dict[str, Any]
    client: redis.Redis | RedisCluster
    local: LocalRedis | None
    cookie_secret: bytes
    redis_seconds: float
    read_clients: list[redis.Redis]
    description: str


def open_shared(args: argparse.Namespace) -> Shared:
    catalog = read_catalog(args.catalog)
    if not 1 <= args.topk <= HTTP_MAX_K:
        raise ValueError(f"--topk must be between 1 and {HTTP_MAX_K}")
    check_scale_out_flags(args)
    t0 = time.perf_counter()
    client: redis.Redis | RedisCluster
    local: LocalRedis | None = None
    read_clients: list[redis.Redis] = []
    if args.sentinel:
        client, reads, description = open_sentinel(args.sentinel, args.sentinel_service)
        read_clients = [reads]
    elif args.cluster:
        client, description = open_cluster(args.redis_url or os.environ["REDIS_URL"])
    else:
        if args.data_dir is not None:
            client, local = open_bundled(args.data_dir)
        else:
            client, local = open_redis(args.redis_url, data_dir=DEFAULT_DATA_DIR)
        where = client.connection_pool.connection_kwargs
        description = f"{'bundled ' if local else ''}Redis at {where.get('host')}:{where.get('port')}"
        read_clients = [open_replica(url) for url in args.replica_url]
    if args.min_replicas_ack and isinstance(client, redis.Redis):
        check_replicas_connected(client, args.min_replicas_ack)
    redis_seconds = time.perf_counter() - t0
    # Kept beside the bundled Redis's data even when another Redis is used.
    secret = load_cookie_secret(args.data_dir if args.data_dir is not None else DEFAULT_DATA_DIR)
    return Shared(catalog, client, local, secret, redis_seconds, read_clients, description)


def build_server(
    args: argparse.Namespace, shared: Shared, *, seed: bool = True, reuse_port: bool = False
) -> DemoServer:
    """One serving process's model, app and listening server. `seed` loads the catalogue (or,
    with --no-reset, makes sure the index exists): the first process does it, never a
    replacement worker, which must not wipe what users did meanwhile."""
    timings = {"redis": shared.redis_seconds}
    t0 = time.perf_counter()
    embedder = LocalEmbedder(args.model, backend=args.embedding_backend)
    embedder.encode_one("warm up the model before the first request")
    timings["model"] = time.perf_counter() - t0
    catalog = shared.catalog
    # The catalog's vectors, not its model name, decide: other ports name the same weights
    # differently (sentence-transformers/..., Xenova/...).
    check_catalog_vectors(catalog, embedder, source=args.catalog)
    recommender = RedisRecommender(
        shared.client,
        index_name=args.index_name,
        key_prefix=args.key_prefix,
        vector_dim=embedder.dim,
        hnsw_m=args.hnsw_m,
        hnsw_ef_construction=args.hnsw_ef_construction,
        ef_runtime=args.ef_runtime,
        hybrid_policy=args.hybrid_policy,
        user_ttl_s=args.user_ttl,
        read_clients=shared.read_clients,
        min_replicas_ack=args.min_replicas_ack,
        replica_ack_timeout_ms=args.replica_ack_timeout_ms,
    )
    app = DemoApp(recommender, embedder, catalog, default_k=args.topk, redis_description=shared.description)
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
            reuse_port=reuse_port,
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
    return build_server(args, shared), shared.local


def stop_serving(signum: int, frame: Any) -> None:
    """SIGTERM (kill, systemd) and SIGINT end serve_forever the same way, so the bundled Redis
    is shut down cleanly either way. Installed explicitly because a demo started in the
    background by a script inherits SIGINT as ignored."""
    raise KeyboardInterrupt


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


def serve_one(args: argparse.Namespace) -> int:
    """--workers 1: this process serves."""
    try:
        server, local = start(args)
    except Exception as exc:
        report_start_error(exc, args)
        return 1
    host, port = server.server_address[:2]
    log.info("listening on http://%s:%d", host, port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        server.server_close()
        server.app.close()
        if local:
            local.stop()
    return 0


def run_worker(
    args: argparse.Namespace, shared: Shared, seed: bool, ready_fd: int, close_fds: list[int], parent: int
) -> NoReturn:
    """A forked worker: its own model, app, Redis connections (redis-py resets an inherited
    pool) and listening socket on the shared port. It writes one byte to ready_fd once it
    listens, stops on SIGTERM/SIGINT, and gets SIGTERM when the parent dies. It always leaves
    with os._exit: the parent's exit handlers (stopping the bundled Redis) are not a worker's."""
    code = 1
    try:
        for fd in close_fds:
            os.close(fd)
        _die_with_parent()
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(0)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        try:
            server = build_server(args, shared, seed=seed, reuse_port=True)
        except Exception as exc:
            report_start_error(exc, args)
        else:
            os.write(ready_fd, b"1")
            log.info("worker %d serving", os.getpid())
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
            finally:
                server.server_close()
                server.app.close()
            code = 0
    except KeyboardInterrupt:
        code = 0
    except BaseException:
        log.exception("worker %d failed", os.getpid())
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


class WorkerStartError(RuntimeError):
    """A worker exited before it listened (it has printed why)."""


class Supervisor:
    """The parent of --workers N. It starts the workers one after the other (each loads the
    model; one at a time, a first start's one-time model export is never raced), replaces a
    worker that dies, and stops them all on SIGTERM/SIGINT."""

    def __init__(self, args: argparse.Namespace, shared: Shared, reservation: socket.socket) -> None:
        self.args = args
        self.shared = shared
        # Held until every first worker listens (see reserve_port).
        self.reservation: socket.socket | None = reservation
        self.workers: set[int] = set()

    def spawn(self, seed: bool) -> int:
        """Fork a worker and wait until it listens. Stop signals are blocked across the fork,
        so that neither process is interrupted half-way (a child running the parent's cleanup
        would stop the bundled Redis)."""
        read_fd, write_fd = os.pipe()
        parent = os.getpid()
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                inherited = [read_fd, *([self.reservation.fileno()] if self.reservation else [])]
                run_worker(self.args, self.shared, seed, write_fd, inherited, parent)
            self.workers.add(pid)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            os.close(write_fd)
        try:
            ready = os.read(read_fd, 1)
        finally:
            os.close(read_fd)
        if not ready:
            os.waitpid(pid, 0)
            self.workers.discard(pid)
            raise WorkerStartError(f"worker {pid} exited before it listened")
        return pid

    def run(self) -> None:
        """Start the workers, then keep N of them serving until interrupted."""
        for number in range(self.args.workers):
            self.spawn(seed=number == 0)
        if self.reservation:
            self.reservation.close()
            self.reservation = None
        log.info("listening on http://%s:%d with %d workers", self.args.host, self.args.port, self.args.workers)
        while True:
            pid, status = os.wait()
            if pid in self.workers:
                self.workers.discard(pid)
                log.warning("worker %d exited (%s); starting another", pid, describe_exit(status))
                log.info("worker %d replaced by worker %d", pid, self.spawn(seed=False))

    def stop(self) -> None:
        """SIGTERM to every worker; SIGKILL to one still running WORKER_STOP_TIMEOUT_S later."""
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + WORKER_STOP_TIMEOUT_S
        while self.workers:
            for pid in list(self.workers):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    self.workers.discard(pid)
                elif time.monotonic() > deadline:
                    log.warning("worker %d did not stop within %d s; killing it", pid, WORKER_STOP_TIMEOUT_S)
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    self.workers.discard(pid)
            time.sleep(0.02)


def describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening, so it is never given connections) to host:port with
    SO_REUSEPORT: a busy port is reported before any worker starts, port 0 becomes one real
    port for every worker, and no other program takes the port while the workers start."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}. Try another --port.") from None
    return sock


def serve_workers(args: argparse.Namespace) -> int:
    """--workers N: Redis (the bundled one started here, once) and the cookie secret in this
    process; N forked workers serve."""
    try:
        shared = open_shared(args)
        reservation = reserve_port(args.host, args.port)
    except Exception as exc:
        report_start_error(exc, args)
        return 1
    args.port = reservation.getsockname()[1]
    # Each worker opens its own connections: none of the parent's may be shared across a fork.
    close_connections(shared)
    supervisor = Supervisor(args, shared, reservation)
    code = 0
    try:
        supervisor.run()
    except KeyboardInterrupt:
        log.info("stopping")
    except WorkerStartError as exc:
        log.error("%s; stopping", exc)
        code = 1
    finally:
        reservation.close()
        supervisor.stop()
        if shared.local:
            shared.local.stop()
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    pid = "[%(process)d]" if args.workers > 1 else ""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s %(name)s{pid}: %(message)s")
    warn_if_exposed(args.host)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop_serving)
    return serve_workers(args) if args.workers > 1 else serve_one(args)


if __name__ == "__main__":
    sys.exit(main())
