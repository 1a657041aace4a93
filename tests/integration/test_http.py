"""The demo server's HTTP contract (docs/API.md), end to end: the real server on a free port with
the real Redis and the real model behind it. Only the standard library speaks HTTP here, so the
tests see the bytes on the wire (methods, headers, bodies) and not a client library's idea of them.

Every test works as its own user, so tests never see each other's clicks; tests that change
products put them back, and tests that rebuild the index leave it fully seeded.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import http.cookies
import json
import logging
import re
import secrets
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import numpy as np
import pytest

from demo_server import DemoRequestHandler
from recommender import product_embedding_bytes

ROOT = Path(__file__).resolve().parents[2]
ENCODINGS = ("json", "form")
MAX_BODY_BYTES = 64 * 1024

STATE_KEYS = {"user", "index", "products", "categories", "brands", "popular"}
USER_KEYS = {
    "user_id",
    "clicks",
    "last_clicked_id",
    "last_clicked_category",
    "affinities",
    "has_session_vec",
    "session_vec_dim",
    "recent_clicks",
    "dismissed",
    "session_weight",
    "session_fades_in_s",
}
INDEX_KEYS = {"num_docs", "indexing_failures", "vector_index_size_mb", "index_name", "model", "embedding_backend"}
PRODUCT_KEYS = {"id", "name", "category", "brand", "price", "rating", "in_stock"}
SEARCH_KEYS = {
    "candidates",
    "understood",
    "filter_clause",
    "used_session",
    "used_rerank",
    "embed_ms",
    "embed_cached",
    "search_ms",
    "rerank_ms",
    "timing_ms",
    "excluded_count",
    "exhausted",
    "session_weight",
}
CANDIDATE_KEYS = PRODUCT_KEYS | {"description", "vector_distance", "score", "why"}
CLICK_KEYS = {"category", "affinity", "clicks", "last_clicked_id", "already_applied", "name", "user"}


# --- talking HTTP -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        assert (self.headers.get("Content-Type") or "").startswith("application/json"), self.headers
        return json.loads(self.body)

    def error(self, status: int) -> str:
        """The error message of a JSON error reply, after checking it is the expected status."""
        assert self.status == status, (self.status, self.body[:300])
        payload = self.json()
        assert set(payload) == {"error"} and isinstance(payload["error"], str) and payload["error"], payload
        assert b"Traceback" not in self.body
        return payload["error"]


def form_value(value: Any) -> str:
    """What a browser form sends: a ticked checkbox is "on", an unticked one is empty."""
    if isinstance(value, bool):
        return "on" if value else ""
    return str(value)


def encode(fields: Mapping[str, Any], encoding: str) -> tuple[bytes, str]:
    if encoding == "json":
        return json.dumps(fields).encode(), "application/json"
    return urlencode({name: form_value(v) for name, v in fields.items()}).encode(), "application/x-www-form-urlencoded"


def call(
    base_url: str,
    method: str,
    path: str,
    fields: Mapping[str, Any] | None = None,
    *,
    encoding: str = "json",
    body: bytes | None = None,
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """One request on a fresh connection, with exactly the method, raw path and headers given
    (http.client adds only Host, Accept-Encoding and Content-Length)."""
    if fields is not None:
        body, content_type = encode(fields, encoding)
    sent = dict(headers or {})
    if content_type is not None:
        sent["Content-Type"] = content_type
    url = urlsplit(base_url)
    assert url.hostname is not None
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def raw_exchange(base_url: str, data: bytes) -> Reply:
    """Bytes no well-behaved client would send, and the server's answer to them."""
    url = urlsplit(base_url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return Reply(response.status, response.headers, response.read())


def post(base_url: str, path: str, fields: Mapping[str, Any], encoding: str = "json") -> dict[str, Any]:
    reply = call(base_url, "POST", path, fields, encoding=encoding)
    assert reply.status == 200, reply.body[:500]
    return reply.json()


def get_state(base_url: str, user_id: str) -> dict[str, Any]:
    reply = call(base_url, "GET", f"/state?user_id={quote(user_id)}")
    assert reply.status == 200, reply.body[:500]
    return reply.json()


class Browser:
    """A client that keeps cookies the way a browser does: one per simulated browser."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def open(self, method: str, path: str, fields: Mapping[str, Any] | None = None, encoding: str = "json") -> Any:
        body, headers = None, {}
        if fields is not None:
            body, headers["Content-Type"] = encode(fields, encoding)
        request = urllib.request.Request(self.base_url + path, data=body, headers=headers, method=method)
        with self.opener.open(request, timeout=60) as response:
            data = response.read()
            return json.loads(data) if response.headers.get_content_type() == "application/json" else data

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)


def user_of_cookie(value: str | None) -> str | None:
    """The user id in a signed `rr_user` value (`<user id>.<signature>`)."""
    return value.rsplit(".", 1)[0] if value else None


# --- fixtures and catalogue helpers ----------------------------------------------------------------


@pytest.fixture
def restore_vectors(demo_app, catalog: dict) -> Iterator[list[str]]:
    """Product ids whose vectors a test replaces; they get their catalogue vectors back after it."""
    changed: list[str] = []
    yield changed
    by_id = {p["id"]: p for p in catalog["products"]}
    dim = demo_app.recommender.vector_dim
    for product_id in changed:
        vector = np.frombuffer(product_embedding_bytes(by_id[product_id], dim), dtype="<f4")
        demo_app.recommender.refresh_embedding(product_id, vector)


def first_in(catalog: dict, category: str) -> dict[str, Any]:
    return next(p for p in catalog["products"] if p["category"] == category)


def unique_query(label: str) -> str:
    """A query text no other request has sent, so the query-vector cache has not seen it."""
    return f"{label} {secrets.token_hex(6)}"


# --- the page and its assets ---------------------------------------------------------------------


def test_page_sets_a_private_user_cookie_on_first_visit(demo_url: str) -> None:
    reply = call(demo_url, "GET", "/")
    assert reply.status == 200
    assert reply.headers.get_content_type() == "text/html"
    assert b'<script src="/static/app.js"' in reply.body
    cookies = http.cookies.SimpleCookie(reply.headers["Set-Cookie"])
    morsel = cookies["rr_user"]
    assert re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", morsel.value)
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "lax"
    assert morsel["path"] == "/"

    again = call(demo_url, "GET", "/", headers={"Cookie": f"rr_user={morsel.value}"})
    assert again.status == 200 and again.headers["Set-Cookie"] is None


def test_an_invalid_cookie_is_replaced_and_never_used(demo_url: str) -> None:
    """A client that sent a cookie is a browser: it gets a fresh user of its own and the cookie
    for it, never the shared demo user (issue 24, finding 2)."""
    bad = {"Cookie": "rr_user=" + "x" * 65}
    assert "rr_user=" in call(demo_url, "GET", "/", headers=bad).headers["Set-Cookie"]
    state = call(demo_url, "GET", "/state", headers=bad)
    assert state.json()["user"]["user_id"] not in ("demo", "x" * 65)
    assert state.headers["Set-Cookie"].startswith(f"rr_user={state.json()['user']['user_id']}.")


def test_head_of_the_page_has_headers_and_no_body(demo_url: str) -> None:
    page = call(demo_url, "GET", "/")
    head = call(demo_url, "HEAD", "/")
    assert head.status == 200 and head.body == b""
    assert head.headers["Content-Length"] == str(len(page.body))
    assert head.headers.get_content_type() == "text/html"


@pytest.mark.parametrize(("name", "media_type"), [("app.js", "javascript"), ("style.css", "text/css")])
def test_static_assets_are_served_as_they_are(demo_url: str, name: str, media_type: str) -> None:
    reply = call(demo_url, "GET", f"/static/{name}")
    assert reply.status == 200
    assert media_type in reply.headers["Content-Type"]
    assert reply.body == (ROOT / "static" / name).read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/static/../demo_server.py",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/demo_server.py",
        "/static/%2E%2E/%2E%2E/etc/passwd",
        "/static/..%2fdemo_server.py",
        "/static/%2e%2e%2fdemo_server.py",
        "/static/%252e%252e/demo_server.py",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/..%5cdemo_server.py",
        "/static/%5c..%5cdemo_server.py",
        "/static/app.js%00.css",
        "/static/",
        "/static/no-such-file.js",
    ],
)
def test_static_paths_outside_the_folder_are_404(demo_url: str, path: str) -> None:
    reply = call(demo_url, "GET", path)
    reply.error(404)
    assert b"import" not in reply.body and b"root:" not in reply.body


class MarkupAudit(HTMLParser):
    """What a strict Content-Security-Policy would block in a page: inline scripts, event
    handler attributes, javascript: URLs and inline styles."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.problems.append(f"<{tag} {name}=...>")
            if (value or "").strip().lower().startswith("javascript:"):
                self.problems.append(f"<{tag} {name}=javascript:...>")
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "script":
            self._in_script = True
            if not dict(attrs).get("src"):
                self.problems.append("<script> without src")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("inline script text")


def test_the_page_works_under_its_own_policy(demo_url: str) -> None:
    audit = MarkupAudit()
    audit.feed(call(demo_url, "GET", "/").body.decode("utf-8"))
    assert audit.problems == []


# --- security headers ----------------------------------------------------------------------------


def csp_directives(policy: str) -> dict[str, list[str]]:
    return {words[0]: words[1:] for words in (part.split() for part in policy.split(";")) if words}


@pytest.mark.parametrize(
    ("method", "path", "fields"),
    [
        ("GET", "/", None),
        ("HEAD", "/", None),
        ("GET", "/static/app.js", None),
        ("GET", "/state", None),
        ("POST", "/search", {"query": "rain jacket", "user_id": "headers-check"}),
        ("POST", "/search", {"query": ""}),
        ("GET", "/no-such-page", None),
        ("DELETE", "/", None),
    ],
    ids=["page", "head", "asset", "state", "search", "400", "404", "405"],
)
def test_every_response_carries_the_security_headers(
    demo_url: str, method: str, path: str, fields: dict | None
) -> None:
    reply = call(demo_url, method, path, fields)
    policy = csp_directives(reply.headers["Content-Security-Policy"] or "")
    scripts = policy.get("script-src", policy.get("default-src"))
    assert scripts, policy
    assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.headers["Referrer-Policy"]


# --- GET /state ----------------------------------------------------------------------------------


def test_state_has_the_documented_shape(demo_url: str, user_id: str, catalog: dict) -> None:
    state = get_state(demo_url, user_id)
    assert set(state) == STATE_KEYS
    assert state["user"] == {
        "user_id": user_id,
        "clicks": 0,
        "last_clicked_id": None,
        "last_clicked_category": None,
        "affinities": {},
        "has_session_vec": False,
        "session_vec_dim": 0,
        "session_weight": 0.0,
        "session_fades_in_s": None,
        "recent_clicks": [],
        "dismissed": [],
    }
    index = state["index"]
    assert set(index) == INDEX_KEYS
    assert index["num_docs"] == len(catalog["products"])
    assert index["indexing_failures"] == 0
    assert index["vector_index_size_mb"] > 0
    assert index["model"] == catalog["model"]
    assert isinstance(index["index_name"], str) and index["index_name"]

    products = state["products"]
    assert all(set(p) == PRODUCT_KEYS for p in products)
    prices = [p["price"] for p in products]
    assert prices == sorted(prices)
    expected = {p["id"]: p for p in catalog["products"]}
    assert {p["id"] for p in products} == set(expected)
    for product in products:
        source = expected[product["id"]]
        assert {k: product[k] for k in PRODUCT_KEYS - {"id"}} == {k: source[k] for k in PRODUCT_KEYS - {"id"}}

    assert state["categories"] == sorted({p["category"] for p in catalog["products"]})
    assert state["brands"] == sorted({p["brand"] for p in catalog["products"]})


# --- POST /search --------------------------------------------------------------------------------


def test_search_has_the_documented_shape(demo_url: str, user_id: str, encoding: str) -> None:
    result = post(demo_url, "/search", {"query": "warm winter coat", "user_id": user_id}, encoding)
    assert set(result) == SEARCH_KEYS
    assert result["filter_clause"] == "*"
    assert len(result["candidates"]) == 10  # the server's default k
    for candidate in result["candidates"]:
        assert set(candidate) == CANDIDATE_KEYS
        assert isinstance(candidate["in_stock"], bool)
        assert 0 <= candidate["vector_distance"] <= 2
    scores = [c["score"] for c in result["candidates"]]
    assert scores == sorted(scores)
    assert isinstance(result["embed_cached"], bool)
    for name in ("embed_ms", "search_ms", "rerank_ms", "timing_ms"):
        assert isinstance(result[name], (int, float)) and result[name] >= 0


FILTER_CASES: list[Any] = [
    pytest.param({"category": "outerwear"}, lambda p: p["category"] == "outerwear", id="category"),
    pytest.param({"brand": "Urban Loom"}, lambda p: p["brand"] == "Urban Loom", id="brand"),
    pytest.param({"min_price": 100}, lambda p: p["price"] >= 100, id="min_price"),
    pytest.param({"max_price": 50}, lambda p: p["price"] <= 50, id="max_price"),
    pytest.param({"min_price": 40, "max_price": 80.5}, lambda p: 40 <= p["price"] <= 80.5, id="price_range"),
    pytest.param({"min_rating": 4.5}, lambda p: p["rating"] >= 4.5, id="min_rating"),
    pytest.param({"text_match": "waterproof"}, lambda p: "waterproof" in p["description"].lower(), id="text_match"),
    pytest.param({"in_stock_only": True}, lambda p: p["in_stock"], id="in_stock_only"),
    pytest.param(
        {"category": "footwear", "in_stock_only": True, "max_price": 150},
        lambda p: p["category"] == "footwear" and p["in_stock"] and p["price"] <= 150,
        id="combined",
    ),
]


@pytest.mark.parametrize(("filters", "matches"), FILTER_CASES)
def test_search_returns_exactly_the_products_that_pass_a_filter(
    demo_url: str,
    user_id: str,
    encoding: str,
    catalog: dict,
    filters: dict[str, Any],
    matches: Callable[[Mapping[str, Any]], bool],
) -> None:
    fields = {"query": "something for the outdoors", "k": 100, "user_id": user_id, **filters}
    result = post(demo_url, "/search", fields, encoding)
    expected = {p["id"] for p in catalog["products"] if matches(p)}
    assert 0 < len(expected) < len(catalog["products"])
    assert all(matches(c) for c in result["candidates"])
    assert {c["id"] for c in result["candidates"]} == expected
    assert result["filter_clause"] != "*"


@pytest.mark.parametrize("k", [1, 3, 100])
def test_search_returns_k_candidates(demo_url: str, user_id: str, encoding: str, catalog: dict, k: int) -> None:
    result = post(demo_url, "/search", {"query": "a bag for travel", "k": k, "user_id": user_id}, encoding)
    assert len(result["candidates"]) == min(k, len(catalog["products"]))


@pytest.mark.parametrize(
    ("encoding", "value", "filters_stock"),
    [
        *(("form", word, True) for word in ("1", "true", "on", "yes", "TRUE", " Yes ")),
        *(("form", word, False) for word in ("", "0", "false", "off", "no", "OFF")),
        *(("json", value, True) for value in (True, 1, "yes", "on")),
        *(("json", value, False) for value in (False, 0, "no", "", None)),
    ],
)
def test_boolean_fields_accept_the_documented_words(
    demo_url: str, user_id: str, encoding: str, value: Any, filters_stock: bool
) -> None:
    fields = {"query": "shoes", "k": 100, "user_id": user_id, "in_stock_only": value}
    if encoding == "form":
        body, content_type = urlencode(fields).encode(), "application/x-www-form-urlencoded"
    else:
        body, content_type = json.dumps(fields).encode(), "application/json"
    reply = call(demo_url, "POST", "/search", body=body, content_type=content_type)
    assert reply.status == 200, reply.body
    result = reply.json()
    assert ("@in_stock:{true}" in result["filter_clause"]) is filters_stock
    assert all(c["in_stock"] for c in result["candidates"]) is filters_stock


def test_session_is_used_only_after_a_click(demo_url: str, user_id: str, encoding: str, catalog: dict) -> None:
    def flags(use_session: bool, rerank: bool) -> tuple[bool, bool]:
        # A vague query: one that names a kind of product is framed by its own relevance, and the
        # session does not blend into it (test_typed_query.py).
        fields = {"query": "gift ideas", "k": 5, "user_id": user_id, "use_session": use_session, "rerank": rerank}
        result = post(demo_url, "/search", fields, encoding)
        return result["used_session"], result["used_rerank"]

    # used_rerank means "an affinity changed a score", as in the reference: not before a click.
    assert flags(use_session=True, rerank=True) == (False, False)
    assert flags(use_session=False, rerank=False) == (False, False)
    post(demo_url, "/click", {"product_id": first_in(catalog, "footwear")["id"], "user_id": user_id}, encoding)
    assert flags(use_session=True, rerank=True) == (True, True)
    assert flags(use_session=True, rerank=False) == (True, False)
    assert flags(use_session=False, rerank=True) == (False, True)


def test_rerank_favours_the_clicked_category(demo_url: str, user_id: str, catalog: dict) -> None:
    post(demo_url, "/click", {"product_id": first_in(catalog, "outerwear")["id"], "user_id": user_id})
    # A vague query: one that names a product (its words in a name) is re-ordered only within tiers.
    fields = {"query": "gift ideas", "k": 30, "user_id": user_id, "use_session": False}

    def relevance(c: dict) -> float:  # the distance, less what the words' BM25 match earned
        return c["vector_distance"] - c["why"].get("text_bonus", 0.0)

    reranked = post(demo_url, "/search", {**fields, "rerank": True})["candidates"]
    assert any(c["category"] == "outerwear" for c in reranked)
    for c in reranked:
        if c["category"] == "outerwear":
            assert c["score"] < relevance(c)
        else:
            assert c["score"] == pytest.approx(relevance(c))
    assert [c["score"] for c in reranked] == sorted(c["score"] for c in reranked)

    plain = post(demo_url, "/search", {**fields, "rerank": False})["candidates"]
    assert all(c["score"] == pytest.approx(relevance(c)) for c in plain)
    assert [c["vector_distance"] for c in plain] == sorted(c["vector_distance"] for c in plain)


def test_a_repeated_query_reuses_its_embedding(demo_url: str, user_id: str, encoding: str) -> None:
    fields = {"query": unique_query("waterproof hiking boots"), "k": 3, "user_id": user_id}
    first = post(demo_url, "/search", fields, encoding)
    second = post(demo_url, "/search", fields, encoding)
    assert first["embed_cached"] is False
    assert second["embed_cached"] is True
    assert [c["id"] for c in first["candidates"]] == [c["id"] for c in second["candidates"]]


def test_a_query_of_the_maximum_length_is_accepted(demo_url: str, user_id: str) -> None:
    result = post(demo_url, "/search", {"query": ("long query " * 100)[:1000], "k": 1, "user_id": user_id})
    assert len(result["candidates"]) == 1


# --- POST /click ---------------------------------------------------------------------------------


def test_clicks_update_the_session(demo_url: str, user_id: str, encoding: str, catalog: dict) -> None:
    coat, boot = first_in(catalog, "outerwear"), first_in(catalog, "footwear")

    first = post(demo_url, "/click", {"product_id": coat["id"], "user_id": user_id}, encoding)
    assert set(first) == CLICK_KEYS and set(first["user"]) == USER_KEYS
    assert {k: v for k, v in first.items() if k != "user"} == {
        "category": "outerwear",
        "affinity": 1.0,
        "clicks": 1,
        "last_clicked_id": coat["id"],
        "already_applied": False,
        "name": coat["name"],
    }
    assert first["user"]["has_session_vec"] is True
    assert first["user"]["session_vec_dim"] == catalog["dim"]

    post(demo_url, "/click", {"product_id": boot["id"], "user_id": user_id}, encoding)
    last = post(demo_url, "/click", {"product_id": coat["id"], "user_id": user_id}, encoding)
    assert (last["clicks"], last["affinity"]) == (3, 2.0)
    user = last["user"]
    assert user["user_id"] == user_id
    assert user["affinities"] == {"outerwear": 2.0, "footwear": 1.0}
    assert (user["last_clicked_id"], user["last_clicked_category"]) == (coat["id"], "outerwear")
    assert user["recent_clicks"] == [
        {"id": coat["id"], "name": coat["name"]},
        {"id": boot["id"], "name": boot["name"]},
        {"id": coat["id"], "name": coat["name"]},
    ]
    assert get_state(demo_url, user_id)["user"] == user


def test_recent_clicks_keep_the_newest_six(demo_url: str, user_id: str, catalog: dict) -> None:
    clicked = catalog["products"][:8]
    for product in clicked:
        post(demo_url, "/click", {"product_id": product["id"], "user_id": user_id})
    recent = get_state(demo_url, user_id)["user"]["recent_clicks"]
    assert recent == [{"id": p["id"], "name": p["name"]} for p in reversed(clicked[2:])]


@pytest.mark.parametrize("path", ["/click", "/refresh-embedding"])
def test_an_unknown_product_is_404(demo_url: str, user_id: str, encoding: str, path: str) -> None:
    fields = {"product_id": "no-such-product", "text": "anything", "user_id": user_id}
    assert "no-such-product" in call(demo_url, "POST", path, fields, encoding=encoding).error(404)
    assert get_state(demo_url, user_id)["user"]["clicks"] == 0


# --- POST /refresh-embedding ---------------------------------------------------------------------


def test_refresh_embedding_moves_the_product_towards_its_new_text(
    demo_url: str, user_id: str, encoding: str, catalog: dict, restore_vectors: list[str]
) -> None:
    query = "heavy duty arctic expedition parka with hood"
    target = first_in(catalog, "bags")["id"]
    search = {"query": query, "k": 100, "user_id": user_id, "use_session": False, "rerank": False}

    def distance() -> float:
        candidates = post(demo_url, "/search", search, encoding)["candidates"]
        return next(c["vector_distance"] for c in candidates if c["id"] == target)

    before = distance()
    restore_vectors.append(target)
    result = post(demo_url, "/refresh-embedding", {"product_id": target, "text": query, "user_id": user_id}, encoding)
    assert set(result) == {"product_id", "embed_ms"}
    assert result["product_id"] == target and result["embed_ms"] >= 0
    after = distance()
    assert after < before - 0.2
    assert after == pytest.approx(0, abs=1e-3)


def test_refresh_text_may_span_lines(demo_url: str, catalog: dict, restore_vectors: list[str]) -> None:
    """The page edits the new description in a textarea, where Enter makes a new line."""
    target = first_in(catalog, "tops")["id"]
    restore_vectors.append(target)
    result = post(demo_url, "/refresh-embedding", {"product_id": target, "text": "A light tee.\r\nBreathable.\tSoft."})
    assert result["product_id"] == target


# --- POST /reset-user and /reset-index -----------------------------------------------------------


def test_reset_user_forgets_the_session(demo_url: str, user_id: str, encoding: str, catalog: dict) -> None:
    post(demo_url, "/click", {"product_id": catalog["products"][0]["id"], "user_id": user_id}, encoding)
    assert post(demo_url, "/reset-user", {"user_id": user_id}, encoding) == {"ok": True}
    user = get_state(demo_url, user_id)["user"]
    assert (user["clicks"], user["affinities"], user["recent_clicks"], user["has_session_vec"]) == (0, {}, [], False)


def test_reset_index_reseeds_the_catalogue_and_the_user(
    demo_url: str, demo_app, user_id: str, encoding: str, catalog: dict
) -> None:
    product_id = catalog["products"][0]["id"]
    post(demo_url, "/click", {"product_id": product_id, "user_id": user_id}, encoding)
    demo_app.recommender.redis.delete(demo_app.recommender.product_key(product_id))
    assert get_state(demo_url, user_id)["index"]["num_docs"] == len(catalog["products"]) - 1

    assert post(demo_url, "/reset-index", {"user_id": user_id}, encoding) == {"seeded": len(catalog["products"])}
    state = get_state(demo_url, user_id)
    assert state["index"]["num_docs"] == len(catalog["products"])
    assert product_id in {p["id"] for p in state["products"]}
    assert state["user"]["clicks"] == 0


def test_a_missing_index_is_rebuilt_by_the_server(demo_url: str, demo_app, user_id: str, catalog: dict) -> None:
    """Someone dropped the index behind the server's back: the next request that meets the
    missing index rebuilds it from the catalogue (issue 24) and gets its answer."""
    demo_app.recommender.drop_index(delete_documents=True)
    try:
        search = call(demo_url, "POST", "/search", {"query": "boots", "user_id": user_id})
        assert search.status == 200 and len(search.json()["candidates"]) == 10
        assert get_state(demo_url, user_id)["index"]["num_docs"] == len(catalog["products"])
        assert post(demo_url, "/reset-index", {"user_id": user_id}) == {"seeded": len(catalog["products"])}
    finally:
        if not demo_app.recommender.index_exists():
            demo_app.seed()


# --- users ---------------------------------------------------------------------------------------


def test_each_browser_gets_its_own_session(demo_url: str, demo_app, encoding: str, catalog: dict) -> None:
    alice, bob = Browser(demo_url), Browser(demo_url)
    alice.open("GET", "/")
    bob.open("GET", "/")
    alice_id, bob_id = (user_of_cookie(browser.cookie("rr_user")) for browser in (alice, bob))
    try:
        assert alice_id and bob_id and alice_id != bob_id
        assert alice.open("GET", "/state")["user"]["user_id"] == alice_id
        assert bob.open("GET", "/state")["user"]["user_id"] == bob_id

        clicked = alice.open("POST", "/click", {"product_id": catalog["products"][0]["id"]}, encoding)
        assert clicked["user"]["user_id"] == alice_id and clicked["clicks"] == 1
        assert alice.open("GET", "/state")["user"]["clicks"] == 1
        assert bob.open("GET", "/state")["user"]["clicks"] == 0
        assert bob.open("POST", "/search", {"query": "hat", "use_session": True}, encoding)["used_session"] is False
    finally:
        for uid in (alice_id, bob_id):
            if uid:
                demo_app.recommender.reset_user(uid)


def test_an_explicit_user_id_overrides_the_cookie(
    demo_url: str, demo_app, user_id: str, encoding: str, catalog: dict
) -> None:
    browser = Browser(demo_url)
    browser.open("GET", "/")
    cookie_user = user_of_cookie(browser.cookie("rr_user"))
    try:
        clicked = browser.open(
            "POST", "/click", {"product_id": catalog["products"][0]["id"], "user_id": user_id}, encoding
        )
        assert clicked["user"]["user_id"] == user_id
        assert browser.open("GET", f"/state?user_id={user_id}")["user"]["clicks"] == 1
        own = browser.open("GET", "/state")["user"]
        assert (own["user_id"], own["clicks"], own["recent_clicks"]) == (cookie_user, 0, [])
    finally:
        demo_app.recommender.reset_user(cookie_user)


def test_without_cookie_or_user_id_the_user_is_demo(demo_url: str) -> None:
    assert call(demo_url, "GET", "/state").json()["user"]["user_id"] == "demo"
    assert call(demo_url, "GET", "/state?user_id=").json()["user"]["user_id"] == "demo"


@pytest.mark.parametrize("good", ["a", "x" * 64, "Az09_.:-"])
def test_user_ids_of_the_allowed_form_are_accepted(demo_url: str, good: str) -> None:
    assert get_state(demo_url, good)["user"]["user_id"] == good


@pytest.mark.parametrize("bad", ["x" * 65, "has space", "a/b", "<script>", "ünïcode", "a\u0000b", "semi;colon"])
def test_a_malformed_user_id_is_400(demo_url: str, encoding: str, catalog: dict, bad: str) -> None:
    assert "user_id" in call(demo_url, "GET", f"/state?user_id={quote(bad)}").error(400)
    fields = {"product_id": catalog["products"][0]["id"], "user_id": bad}
    assert "user_id" in call(demo_url, "POST", "/click", fields, encoding=encoding).error(400)


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        pytest.param({"query": ""}, "query", id="empty-query"),
        pytest.param({"query": "   "}, "query", id="blank-query"),
        pytest.param({}, "query", id="no-query"),
        pytest.param({"query": "x" * 1001}, "query", id="query-too-long"),
        pytest.param({"query": "a\u0007b"}, "query", id="control-character"),
        pytest.param({"query": "a", "min_price": "cheap"}, "min_price", id="min_price-text"),
        pytest.param({"query": "a", "max_price": "12,50"}, "max_price", id="max_price-text"),
        pytest.param({"query": "a", "min_rating": "good"}, "min_rating", id="min_rating-text"),
        pytest.param({"query": "a", "min_price": "nan"}, "min_price", id="min_price-nan"),
        pytest.param({"query": "a", "max_price": "inf"}, "max_price", id="max_price-inf"),
        pytest.param({"query": "a", "min_price": -1}, "min_price", id="negative-price"),
        pytest.param({"query": "a", "min_price": 50, "max_price": 10}, "min_price", id="min-over-max"),
        pytest.param({"query": "a", "min_rating": 5.5}, "min_rating", id="rating-over-5"),
        pytest.param({"query": "a", "k": "ten"}, "k", id="k-text"),
        pytest.param({"query": "a", "k": 0}, "k", id="k-0"),
        pytest.param({"query": "a", "k": 101}, "k", id="k-101"),
        pytest.param({"query": "a", "k": -3}, "k", id="k-negative"),
        pytest.param({"query": "a", "k": 2.5}, "k", id="k-fraction"),
        pytest.param({"query": "a", "in_stock_only": "maybe"}, "in_stock_only", id="bool-word"),
    ],
)
def test_invalid_search_fields_are_400(demo_url: str, encoding: str, fields: dict, names: str) -> None:
    message = call(demo_url, "POST", "/search", {**fields, "user_id": "errors-check"}, encoding=encoding).error(400)
    assert names in message


@pytest.mark.parametrize(
    ("path", "fields", "name"),
    [
        ("/click", {}, "product_id"),
        ("/click", {"product_id": "   "}, "product_id"),
        ("/refresh-embedding", {"product_id": "p001"}, "text"),
        ("/refresh-embedding", {"product_id": "p001", "text": ""}, "text"),
        ("/refresh-embedding", {"text": "a new description"}, "product_id"),
    ],
)
def test_missing_required_fields_are_400(demo_url: str, encoding: str, path: str, fields: dict, name: str) -> None:
    assert name in call(demo_url, "POST", path, fields, encoding=encoding).error(400)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{", id="truncated"),
        pytest.param(b'{"query": "a",}', id="trailing-comma"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b'"query"', id="string"),
        pytest.param(b'{"query": ["a"]}', id="list-value"),
        pytest.param(b'{"query": {"text": "a"}}', id="object-value"),
        pytest.param(b'\xff\xfe{"query": "a"}', id="not-utf8"),
        pytest.param(b"[" * 50_000, id="deeply-nested"),
        pytest.param(b'{"query": "a", "min_price": 1' + b"0" * 400 + b"}", id="huge-integer-price"),
        pytest.param(b'{"query": "a", "k": 1e400}', id="infinite-k"),
        pytest.param(b'{"query": "a", "max_price": NaN}', id="nan-price"),
        pytest.param(b'{"query": "a", "k": 1' + b"0" * 5000 + b"}", id="too-many-digits"),
    ],
)
def test_bad_json_bodies_are_400(demo_url: str, body: bytes) -> None:
    call(demo_url, "POST", "/search", body=body, content_type="application/json").error(400)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"query=%ff%fe", id="bad-percent-utf8"),
        pytest.param("query=café".encode("latin-1"), id="raw-latin-1"),
        pytest.param("&".join(f"f{i}=1" for i in range(101)).encode() + b"&query=a", id="too-many-fields"),
    ],
)
def test_malformed_forms_are_400(demo_url: str, body: bytes) -> None:
    call(demo_url, "POST", "/search", body=body, content_type="application/x-www-form-urlencoded").error(400)


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/nope"), ("POST", "/nope"), ("GET", "/static"), ("GET", "/state/")]
)
def test_unknown_paths_are_404(demo_url: str, method: str, path: str) -> None:
    call(demo_url, method, path).error(404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/search", {"POST"}),
        ("GET", "/click", {"POST"}),
        ("POST", "/state", {"GET"}),
        ("PUT", "/click", {"POST"}),
        ("PATCH", "/reset-user", {"POST"}),
        ("OPTIONS", "/search", {"POST"}),
        ("DELETE", "/", {"GET", "HEAD"}),
        ("POST", "/", {"GET", "HEAD"}),
        ("POST", "/static/app.js", {"GET", "HEAD"}),
    ],
)
def test_a_wrong_method_is_405_with_allow(demo_url: str, method: str, path: str, allowed: set[str]) -> None:
    reply = call(demo_url, method, path)
    reply.error(405)
    assert {m.strip() for m in reply.headers["Allow"].split(",")} == allowed


def test_a_body_over_64_kib_is_413_and_64_kib_is_accepted(demo_url: str, user_id: str) -> None:
    fields = json.dumps({"query": "a small backpack", "k": 1, "user_id": user_id}).encode()
    exactly = fields + b" " * (MAX_BODY_BYTES - len(fields))  # JSON allows trailing whitespace
    assert call(demo_url, "POST", "/search", body=exactly, content_type="application/json").status == 200
    over = exactly + b" "
    call(demo_url, "POST", "/search", body=over, content_type="application/json").error(413)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "multipart/form-data; boundary=x", "application/xml", "application/jsonx", None],
)
def test_an_unsupported_content_type_is_415(demo_url: str, content_type: str | None) -> None:
    reply = call(demo_url, "POST", "/search", body=b'{"query": "a"}', content_type=content_type)
    assert "Content-Type" in reply.error(415)


def test_json_content_type_parameters_are_accepted(demo_url: str, user_id: str) -> None:
    body = json.dumps({"query": "scarf", "k": 1, "user_id": user_id}).encode()
    reply = call(demo_url, "POST", "/search", body=body, content_type="Application/JSON; charset=utf-8")
    assert reply.status == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /a b HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", id="bad-request-line"),
        pytest.param(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ten\r\n\r\n", id="bad-length"),
        pytest.param(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n", id="negative-length"),
        pytest.param(
            b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            id="chunked",
        ),
        pytest.param(
            b"GET /state HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n", id="huge-header"
        ),
    ],
)
def test_malformed_requests_get_a_json_4xx(demo_url: str, request_bytes: bytes) -> None:
    reply = raw_exchange(demo_url, request_bytes)
    assert 400 <= reply.status < 500
    reply.error(reply.status)


def test_a_body_that_never_arrives_is_408(demo_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that promises a body and stalls must get a timeout answer, not a 500."""
    monkeypatch.setattr(DemoRequestHandler, "timeout", 1)
    head = b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    raw_exchange(demo_url, head + b'{"query":').error(408)


# --- cross-site requests -------------------------------------------------------------------------


CROSS_SITE_HEADERS = [
    pytest.param({"Sec-Fetch-Site": "cross-site"}, id="sec-fetch-site"),
    pytest.param({"Origin": "http://evil.example"}, id="foreign-origin"),
    pytest.param({"Origin": "http://127.0.0.1:1"}, id="other-port"),
]


@pytest.mark.parametrize("headers", CROSS_SITE_HEADERS)
@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/search", {"query": "jacket"}),
        ("/click", {"product_id": "p001"}),
        ("/reset-user", {}),
        ("/reset-index", {}),
        ("/refresh-embedding", {"product_id": "p001", "text": "pwned"}),
    ],
)
def test_cross_site_posts_are_403(
    demo_url: str, user_id: str, encoding: str, headers: dict, path: str, fields: dict
) -> None:
    body, content_type = encode({**fields, "user_id": user_id}, encoding)
    call(demo_url, "POST", path, body=body, content_type=content_type, headers=headers).error(403)
    assert get_state(demo_url, user_id)["user"]["clicks"] == 0


@pytest.mark.parametrize(
    "make_headers",
    [
        pytest.param(lambda url: {"Sec-Fetch-Site": "same-origin"}, id="same-origin"),
        pytest.param(lambda url: {"Sec-Fetch-Site": "none"}, id="typed-by-user"),
        pytest.param(lambda url: {"Origin": url}, id="origin"),
        pytest.param(lambda url: {"Origin": url, "Sec-Fetch-Site": "same-origin"}, id="origin-and-sec-fetch"),
    ],
)
def test_same_origin_posts_are_accepted(
    demo_url: str, user_id: str, make_headers: Callable[[str], dict[str, str]]
) -> None:
    reply = call(demo_url, "POST", "/reset-user", {"user_id": user_id}, headers=make_headers(demo_url))
    assert reply.status == 200, reply.body


# --- logging -------------------------------------------------------------------------------------


def logged(caplog: pytest.LogCaptureFixture, pattern: str) -> list[str]:
    """The server's log lines that match, once its handler thread has written them: the line is
    written after the response is sent, so give it a moment."""
    deadline = time.monotonic() + 2
    while True:
        lines = [r.getMessage() for r in caplog.records if r.name == "demo_server"]
        matching = [line for line in lines if re.fullmatch(pattern, line)]
        if matching or time.monotonic() > deadline:
            return matching
        time.sleep(0.01)


def test_one_log_line_per_request(demo_url: str, user_id: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="demo_server")
    missing = f"/missing-{secrets.token_hex(4)}"
    call(demo_url, "GET", missing)
    assert len(logged(caplog, rf"GET {missing} 404 \d+\.\dms")) == 1

    post(demo_url, "/search", {"query": "beanie", "k": 1, "user_id": user_id})
    assert len(logged(caplog, r"POST /search 200 \d+\.\dms")) == 1
