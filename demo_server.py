"""The demo web server: the page, and a JSON API over RedisRecommender.

Stdlib only (http.server), so the demo runs with nothing but the library's own requirements.
Every answer is JSON, errors included: a client never sees a traceback, and an unreachable
Redis is a 503 that heals by itself once Redis is back (redis-py reconnects per command).
"""

from __future__ import annotations

import argparse
import contextlib
import http.cookies
import ipaddress
import json
import logging
import mimetypes
import re
import secrets
import signal
import sys
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

import redis

from build_catalog import CatalogError, positive_int, read_catalog
from demo_api import API_ROUTES, MAX_K, ApiError, DemoApp, Fields
from embeddings import BACKENDS, LocalEmbedder, ModelNotFoundError
from local_redis import LocalRedisError, SearchUnavailableError, open_bundled, open_redis
from recommender import DEFAULT_EF_RUNTIME, HYBRID_POLICIES, RedisRecommender

log = logging.getLogger("demo_server")

ROOT = Path(__file__).resolve().parent
STATIC_DIR = ROOT / "static"
DEFAULT_CATALOG = ROOT / "catalog.json"
DEFAULT_DATA_DIR = ROOT / ".redis-data"

MAX_BODY_BYTES = 64 * 1024
USER_COOKIE = "rr_user"
DEFAULT_USER = "demo"
USER_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
CONNECTION_TIMEOUT_S = 10

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
        try:
            pairs = parse_qs(body.decode("ascii"), keep_blank_values=True, errors="strict", max_num_fields=100)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(400, f"the form body is malformed: {exc}") from None
        return {name: values[-1] for name, values in pairs.items()}
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


# --- HTTP ------------------------------------------------------------------------------------


class DemoRequestHandler(BaseHTTPRequestHandler):
    server_version = "RedisRecommenderDemo/1.0"
    protocol_version = "HTTP/1.1"
    # A client that stalls mid-request holds only its own thread, and only this long.
    timeout = CONNECTION_TIMEOUT_S
    # Headers and body leave in separate writes; with Nagle on, a keep-alive client's delayed
    # ACK stalls every response by ~40 ms.
    disable_nagle_algorithm = True

    @property
    def app(self) -> DemoApp:
        return self.server.app  # type: ignore[attr-defined]

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
        path = self.path
        status = 500
        try:
            path = split_target(self.path).path
            status = self.dispatch(method, path)
        except ApiError as exc:
            status = exc.status
            self.send_json(exc.status, {"error": exc.message}, exc.headers)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            status = 503
            log.warning("Redis unreachable during %s %s: %s", method, path, exc)
            self.send_json(503, {"error": f"Redis is unreachable ({self.app.redis_description}); retry shortly"})
        except redis.ResponseError as exc:
            # FT.SEARCH says "no such index", FT.INFO (first thing the page asks) "Unknown index name".
            missing = any(words in str(exc).lower() for words in ("no such index", "unknown index name"))
            status = 503 if missing else 500
            log.exception("Redis error on %s %s", method, path)
            message = (
                "the search index is missing: POST /reset-index to rebuild it"
                if status == 503
                else "Redis rejected the request; see the server log"
            )
            self.send_json(status, {"error": message})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            log.exception("unexpected error on %s %s", method, path)
            self.send_json(500, {"error": "internal error; see the server log"})
        finally:
            log.info("%s %s %d %.1fms", method, path, status, (time.perf_counter() - started) * 1000)

    def dispatch(self, method: str, path: str) -> int:
        if path == "/" or path.startswith("/static/"):
            if method not in ("GET", "HEAD"):
                raise ApiError(405, f"{path} accepts GET only", {"Allow": "GET, HEAD"})
            return self.send_file(
                STATIC_DIR / "index.html" if path == "/" else static_file(path), head=method == "HEAD"
            )
        route = API_ROUTES.get(path)
        if route is None:
            raise ApiError(404, f"no such endpoint: {path}")
        if method != route.method:
            raise ApiError(405, f"{path} accepts {route.method} only", {"Allow": route.method})
        if method == "POST":
            self.check_same_origin()
            fields = parse_body(self.headers.get("Content-Type", ""), self.read_body())
        else:
            fields = {name: values[-1] for name, values in parse_qs(split_target(self.path).query).items()}
        user_id = self.resolve_user(fields)
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
        length_header = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ApiError(411, "send the body with a Content-Length (chunked bodies are not accepted)")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, f"invalid Content-Length {length_header!r}") from None
        if length < 0:
            self.close_connection = True
            raise ApiError(400, f"invalid Content-Length {length_header!r}")
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiError(413, f"the body is {length} bytes; at most {MAX_BODY_BYTES} are accepted")
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            raise ApiError(408, f"the body did not arrive within {self.timeout} s") from None
        if len(body) < length:
            self.close_connection = True
            raise ApiError(400, f"the body ended after {len(body)} of {length} bytes")
        return body

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
        cookies = http.cookies.SimpleCookie()
        try:
            cookies.load(self.headers.get("Cookie", ""))
        except http.cookies.CookieError:
            return None
        morsel = cookies.get(USER_COOKIE)
        return valid_user_id(morsel.value) if morsel else None

    def send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.finish_headers(body, headers)
        if self.command != "HEAD":
            self.wfile.write(body)

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
            extra["Set-Cookie"] = (
                f"{USER_COOKIE}=u-{secrets.token_hex(8)}; Path=/; HttpOnly; SameSite=Lax; Max-Age=31536000"
            )
        self.finish_headers(body, extra)
        if not head:
            self.wfile.write(body)
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
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: DemoApp) -> None:
        super().__init__(address, DemoRequestHandler)
        self.app = app


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
    return parser


def start(args: argparse.Namespace) -> tuple[DemoServer, Any]:
    """Everything before serving: catalog, Redis, model, index. Raises with a message for
    every problem a user can fix."""
    catalog = read_catalog(args.catalog)
    if not 1 <= args.topk <= MAX_K:
        raise ValueError(f"--topk must be between 1 and {MAX_K}")
    timings = {}
    t0 = time.perf_counter()
    if args.data_dir is not None:
        client, local = open_bundled(args.data_dir)
    else:
        client, local = open_redis(args.redis_url, data_dir=DEFAULT_DATA_DIR)
    timings["redis"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    embedder = LocalEmbedder(args.model, backend=args.embedding_backend)
    embedder.encode_one("warm up the model before the first request")
    timings["model"] = time.perf_counter() - t0
    if embedder.dim != int(catalog["dim"]) or embedder.model_name != catalog["model"]:
        raise ValueError(
            f"{args.catalog} was embedded with {catalog['model']} ({catalog['dim']}-d) but the server loaded "
            f"{embedder.model_name} ({embedder.dim}-d): rebuild it with `python build_catalog.py --model ...` or pass the same --model"
        )
    recommender = RedisRecommender(
        client,
        index_name=args.index_name,
        key_prefix=args.key_prefix,
        vector_dim=embedder.dim,
        hnsw_m=args.hnsw_m,
        hnsw_ef_construction=args.hnsw_ef_construction,
        ef_runtime=args.ef_runtime,
        hybrid_policy=args.hybrid_policy,
    )
    where = client.connection_pool.connection_kwargs
    described = f"{'bundled ' if local else ''}Redis at {where.get('host')}:{where.get('port')}"
    app = DemoApp(recommender, embedder, catalog, default_k=args.topk, redis_description=described)
    t0 = time.perf_counter()
    count = app.ensure_index() if args.no_reset else app.seed()
    timings["seed"] = time.perf_counter() - t0
    try:
        server = DemoServer((args.host, args.port), app)
    except OSError as exc:
        raise ValueError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}. Try another --port."
        ) from None
    log.info(
        "%d products in %s; %s embeddings; ready in %s",
        count, args.index_name, embedder.backend, ", ".join(f"{name} {seconds:.2f}s" for name, seconds in timings.items()),
    )  # fmt: skip
    return server, local


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


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        server, local = start(args)
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if not args.catalog.exists():
            print("Run `python build_catalog.py` first to create it.", file=sys.stderr)
        return 1
    except (SearchUnavailableError, LocalRedisError, ModelNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        print(f"error: cannot reach Redis: {str(exc).rstrip('.')}. Check --redis-url / REDIS_URL.", file=sys.stderr)
        return 1
    except OSError as exc:  # the data dir, the catalog's folder, ...: say which file and why
        print(f"error: {exc}", file=sys.stderr)
        return 1
    warn_if_exposed(args.host)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop_serving)
    host, port = server.server_address[:2]
    log.info("listening on http://%s:%d", host, port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        server.server_close()
        if local:
            local.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
