"""Hostile HTTP, generated: Hypothesis writes raw requests and the server must answer every one
with a status below 500, every 4xx with a JSON `error`, and come out of it serving, with its
catalogue intact.

Each request starts as a well-formed call of one endpoint whose field values are mostly
plausible and otherwise anything JSON can carry (any type, nesting, huge numbers, NaN, lone
surrogates), and then takes a few mutations: an odd method or target, a wrong or lying
Content-Type or Content-Length, a body in a broken encoding, a foreign Origin, junk cookies
and headers. Starting from well-formed requests is what gets hostile values past the parser
and into search, click and refresh, where a purely random request would never arrive.

The run has a demo server of its own (own Redis, same model and catalogue), because the fuzz
clicks, refreshes embeddings and now and then rebuilds the index.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from conftest import serving
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_http import Reply, get_state, post

from demo_api import DemoApp
from local_redis import LocalRedis, connect
from recommender import RedisRecommender

log = logging.getLogger(__name__)

REQUESTS = 2500
MIN_REQUESTS = 2000
TIME_BUDGET_S = 90
SOCKET_TIMEOUT_S = 15
MAX_BODY_BYTES = 64 * 1024

API_METHODS = {
    "/state": "GET",
    "/search": "POST",
    "/click": "POST",
    "/event": "POST",
    "/reset-user": "POST",
    "/reset-index": "POST",
    "/refresh-embedding": "POST",
}
# How often each endpoint is the starting point: refreshing an embedding always runs the model
# (30-60 ms for odd text on a small machine), so it is the rarest besides /reset-index.
ENDPOINT_MIX = [
    "/state",
    "/state",
    "/search",
    "/search",
    "/search",
    "/click",
    "/click",
    "/event",
    "/reset-user",
    "/refresh-embedding",
]
REQUIRED_FIELDS = {
    "/search": ["query"],
    "/click": ["product_id"],
    "/event": ["product_id", "event"],
    "/refresh-embedding": ["product_id", "text"],
}
OTHER_PATHS = [
    "/",
    "/static/app.js",
    "/static/style.css",
    "/static/../demo_server.py",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static//etc/passwd",
    "/static/",
    "/nope",
    "/state/",
    "//state",
    "/search/../state",
    "*",
    "http://127.0.0.1/state",
    "http://[/state",
    "/%00",
    "/\u00e9t\u00e9",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "BREW", "get", "M-SEARCH", "X" * 80]
PLAUSIBLE: dict[str, list[Any]] = {
    "query": ["warm winter coat", "boots for hiking", "tent"],
    "k": [1, 5, "10", 100],
    "category": ["outerwear", "footwear", "Bags"],
    "brand": ["Urban Loom", "northpeak"],
    "min_price": [0, 10.5, "20"],
    "max_price": [100, "500"],
    "min_rating": [0, 4.5, "3"],
    "text_match": ["waterproof", "wool"],
    "in_stock_only": [True, False, "on", ""],
    "use_session": [True, 1, "yes"],
    "rerank": [True, 0, "off"],
    "user_id": ["fuzz-a", "fuzz-b", "fuzz:c"],
    "text": ["a light tent for two", "warm\nwool socks"],
    "event": ["view", "click", "cart", "purchase", "Purchase"],
    "signal": ["content", "co_occurrence", "blend", "both"],
}
NUMBER_LITERALS = ["NaN", "Infinity", "-Infinity", "1e400", "-0", "1" + "0" * 400, "0.1e-400", "1" * 5000, "0x10"]
CONTENT_TYPES = [
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "application/x-www-form-urlencoded; charset=latin-1",
    "text/plain",
    "multipart/form-data; boundary=x",
    "application/jsonx",
    "",
    ";;;",
    "application/json\x7f",
]
# Bad values of Content-Length. None of them promises bytes that never come, which would only
# wait out the stall timeout (tests/integration/test_reliability.py covers that).
BAD_LENGTHS = ["abc", "-1", "1e3", "0x10", str(MAX_BODY_BYTES + 1), "9" * 30, "9" * 5000, "\u0661"]
HEADER_VALUES = {
    "origin": ("Origin", ["null", "http://evil.example", "http://[", "http://127.0.0.1:1", "file://"]),
    "sec-fetch-site": ("Sec-Fetch-Site", ["same-origin", "none", "cross-site", "same-site", "garbage"]),
    "cookie": ("Cookie", ["rr_user=fuzz-a", "rr_user=", 'rr_user="x\\"', "rr_user=" + "z" * 70, "a=b; rr_user=b"]),
    "transfer-encoding": ("Transfer-Encoding", ["chunked", "gzip", "identity"]),
    "expect": ("Expect", ["100-continue", "teapot"]),
}
MUTATIONS = [
    "method",
    "path",
    "target",
    "content-type",
    "content-length",
    "body",
    "origin",
    "sec-fetch-site",
    "cookie",
    "headers",
    "transfer-encoding",
    "expect",
    "http/1.0",
    "no-host",
]

# Text of every kind, and half the time with a lone surrogate inside, which JSON can carry as a
# \ud800 escape (st.text alone never draws one; a surrogate alphabet would draw them rarely).
any_text = st.text(max_size=40) | st.builds(
    "{}{}{}".format, st.text(max_size=20), st.characters(categories=["Cs"]), st.text(max_size=20)
)
header_text = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=60)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | any_text | st.integers(-(10**400), 10**400)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(any_text, children, max_size=3),
    max_leaves=6,
)


@dataclass(frozen=True)
class FuzzRequest:
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def to_bytes(self) -> bytes:
        head = f"{self.method} {self.target} {self.version}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in self.headers)
        return head.encode() + b"\r\n" + self.body


def mostly(usual: st.SearchStrategy[Any], unusual: st.SearchStrategy[Any], weight: int = 3) -> st.SearchStrategy[Any]:
    """`weight` draws in `weight + 1` from `usual`. (st.one_of would not do: it merges equal
    branches, so repeating one does not weigh it.)"""
    return st.sampled_from([*[usual] * weight, unusual]).flatmap(lambda strategy: strategy)


@st.composite
def endpoint_fields(draw: st.DrawFn, path: str, catalog_ids: list[str]) -> dict[Any, Any]:
    """The endpoint's required fields and a few others, each value mostly plausible."""
    names = [*REQUIRED_FIELDS.get(path, []), *draw(st.lists(st.sampled_from([*PLAUSIBLE, "product_id"]), max_size=3))]
    plausible = {**PLAUSIBLE, "product_id": catalog_ids}
    fields: dict[Any, Any] = {
        name: draw(mostly(st.sampled_from(plausible[name]), any_text | json_values)) for name in names
    }
    if draw(st.integers(0, 9)) == 0:
        fields[draw(any_text)] = draw(json_values)
    return fields


def form_body(fields: dict[Any, Any]) -> bytes:
    return urlencode({str(name): str(value) for name, value in fields.items()}, errors="surrogatepass").encode()


@st.composite
def hostile_bodies(draw: st.DrawFn, fields: dict[Any, Any]) -> bytes:
    kind = draw(st.sampled_from(["raw-text", "number", "nested", "encoding", "bytes", "empty", "array"]))
    if kind == "raw-text":
        return draw(any_text).encode("utf-8", errors="surrogatepass")
    if kind == "number":
        name, literal = draw(st.sampled_from([*PLAUSIBLE])), draw(st.sampled_from(NUMBER_LITERALS))
        return f'{{"query": "boots", "{name}": {literal}}}'.encode()
    if kind == "nested":
        depth = draw(st.integers(1, 3000))
        return b'{"query": ' + b"[" * depth + b"]" * draw(st.sampled_from([0, depth])) + b"}"
    if kind == "encoding":
        codec = draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252", "utf-8-sig"]))
        return json.dumps(fields, ensure_ascii=False, default=str).encode(codec, errors="replace")
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "array":
        return json.dumps(list(fields.values())).encode()
    return b""


def target_of(path: str, fields: dict[Any, Any]) -> str:
    """GET /state takes its fields in the query string."""
    return f"{path}?{form_body(fields).decode()}" if fields else path


@st.composite
def fuzz_requests(draw: st.DrawFn, port: int, catalog_ids: list[str]) -> FuzzRequest:
    path = draw(st.sampled_from(ENDPOINT_MIX))
    # A rebuild drops and reloads the index: rare, so most of the run hits a full index.
    if draw(st.sampled_from(range(400))) == 0:
        path = "/reset-index"
    fields = draw(endpoint_fields(path, catalog_ids))
    method, version = API_METHODS[path], "HTTP/1.1"
    target = target_of(path, fields) if method == "GET" else path
    as_json = draw(st.booleans())
    body = b"" if method == "GET" else json.dumps(fields).encode() if as_json else form_body(fields)
    content_type: str | None = "application/json" if as_json else "application/x-www-form-urlencoded"
    length: str | None = str(len(body))
    headers = [("Host", f"127.0.0.1:{port}"), ("Origin", f"http://127.0.0.1:{port}")]
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=3, unique=True)):
        if mutation == "method":
            method = draw(st.sampled_from(METHODS))
        elif mutation == "path":
            target = draw(st.sampled_from(OTHER_PATHS))
        elif mutation == "target":
            target += quote(draw(any_text), errors="surrogatepass") * draw(st.integers(1, 300))
        elif mutation == "content-type":
            content_type = draw(st.none() | st.sampled_from(CONTENT_TYPES) | header_text)
        elif mutation == "content-length":
            size = len(body)
            length = draw(
                st.sampled_from([None, f"+{size}", f" {size} ", f"0{size}", str(max(size - 1, 0)), *BAD_LENGTHS])
            )
        elif mutation == "body":
            body = draw(hostile_bodies(fields))
            length = str(len(body))
        elif mutation == "headers":
            headers += draw(st.lists(st.tuples(st.sampled_from(["X-Junk", "Accept", "Host"]), header_text), max_size=3))
        elif mutation == "http/1.0":
            version = "HTTP/1.0"
        elif mutation == "no-host":
            headers = [(name, value) for name, value in headers if name != "Host"]
        else:
            name, values = HEADER_VALUES[mutation]
            headers = [(n, v) for n, v in headers if n != name] + [(name, draw(st.sampled_from(values) | header_text))]
    if content_type is not None and method != "GET":
        headers.append(("Content-Type", content_type))
    if length is not None and body:
        headers.append(("Content-Length", length))
    return FuzzRequest(method, target, version, tuple(headers), body)


def send(port: int, request: FuzzRequest) -> Reply:
    """The raw bytes, and the first response to them (a HEAD response has no body to read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S) as sock:
        sock.sendall(request.to_bytes())
        response = http.client.HTTPResponse(sock, method=request.method)
        response.begin()
        return Reply(response.status, response.headers, response.read())


def check(request: FuzzRequest, reply: Reply) -> None:
    assert reply.status < 500, (request, reply.status, reply.body[:300])
    is_json = (reply.headers.get("Content-Type") or "").startswith("application/json")
    if 400 <= reply.status < 500:
        assert is_json, (request, reply.headers)
        if request.method != "HEAD":
            reply.error(reply.status)
    elif is_json and request.method != "HEAD":
        reply.json()


@pytest.fixture(scope="module")
def fuzz_url(embedder, catalog: dict) -> Iterator[str]:
    """A demo server of the fuzz run's own, seeded from the catalogue."""
    with LocalRedis() as redis_server:
        app = DemoApp(RedisRecommender(connect(redis_server.url)), embedder, catalog, redis_description="fuzz Redis")
        app.seed()
        with serving(app) as url:
            yield url


def test_generated_requests_never_break_the_server(fuzz_url: str, catalog: dict) -> None:
    port = int(fuzz_url.rsplit(":", 1)[1])
    catalog_ids = [p["id"] for p in catalog["products"]]
    statuses: Counter[int] = Counter()
    reset_index_calls = 0
    docs_before = get_state(fuzz_url, "fuzz-before")["index"]["num_docs"]
    stop_at = time.monotonic() + TIME_BUDGET_S

    @settings(
        max_examples=REQUESTS,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(fuzz_requests(port, catalog_ids))
    def one_request(request: FuzzRequest) -> None:
        nonlocal reset_index_calls
        if time.monotonic() > stop_at:
            return
        reply = send(port, request)
        statuses[reply.status] += 1
        reset_index_calls += reply.status == 200 and request.target.startswith("/reset-index")
        check(request, reply)

    started = time.monotonic()
    one_request()
    sent = sum(statuses.values())
    log.warning(
        "fuzz: %d requests in %.1f s, %d index rebuilds; statuses %s",
        sent, time.monotonic() - started, reset_index_calls, dict(sorted(statuses.items())),
    )  # fmt: skip
    assert sent >= MIN_REQUESTS

    state = get_state(fuzz_url, "fuzz-after")
    assert state["index"]["num_docs"] == (len(catalog_ids) if reset_index_calls else docs_before)
    assert state["index"]["indexing_failures"] == 0
    assert sorted(p["id"] for p in state["products"]) == sorted(catalog_ids)
    assert post(fuzz_url, "/search", {"query": "warm coat", "k": 3, "user_id": "fuzz-after"})["candidates"]
