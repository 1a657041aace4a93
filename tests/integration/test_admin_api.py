"""The admin API over real HTTP, a real Redis and the real model: off unless a token is set,
401 without it and 403 with another, every write answering what it did, bad input refused with
the right status, ids with query syntax or slashes addressed literally."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from conftest import serving
from test_http import Reply, call

from demo_api import DemoApp
from local_redis import LocalRedis, connect
from recengine.admin_token import AdminToken
from recommender import RedisRecommender

TOKEN = "admin-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MUG = {"name": "Speckled enamel camping mug", "description": "A chip-resistant mug for coffee at camp.", "price": 9.5}


@dataclass(frozen=True)
class Admin:
    url: str
    app: DemoApp

    def send(self, method: str, product_id: str | None, body: Any = None, **headers: str) -> Reply:
        path = "/products" if product_id is None else f"/products/{quote(product_id, safe='')}"
        data = None if body is None else json.dumps(body).encode()
        sent = {**AUTH, **({"Content-Type": "application/json"} if data is not None else {}), **headers}
        return call(self.url, method, path, body=data, headers=sent)

    def ok(self, method: str, product_id: str | None, body: Any = None) -> dict[str, Any]:
        reply = self.send(method, product_id, body)
        assert reply.status == 200, reply.body[:500]
        return reply.json()

    def search(self, query: str, k: int = 5) -> list[str]:
        reply = call(self.url, "POST", "/search", {"query": query, "k": k, "user_id": "admin-test"})
        assert reply.status == 200, reply.body[:300]
        return [c["id"] for c in reply.json()["candidates"]]


@pytest.fixture(scope="module")
def admin(onnx_embedder, catalog: dict) -> Iterator[Admin]:
    """A server of its own (its writes change its catalogue), with the admin API on."""
    with LocalRedis() as redis_server:
        app = DemoApp(RedisRecommender(connect(redis_server.url)), onnx_embedder, catalog, redis_description="test")
        app.seed()
        with serving(app, admin_token=AdminToken.configured(TOKEN, {})) as url:
            yield Admin(url, app)
        app.close()


def test_the_admin_api_is_off_unless_a_token_is_set(demo_url: str) -> None:
    reply = call(demo_url, "PUT", "/products/x", body=b"{}", headers={**AUTH, "Content-Type": "application/json"})
    assert "the admin API is off" in reply.error(404)


def test_no_token_is_401_and_a_wrong_one_403_and_a_cookie_is_no_token(admin: Admin) -> None:
    missing = call(admin.url, "DELETE", "/products/p001")
    assert "Authorization: Bearer" in missing.error(401) and missing.headers["WWW-Authenticate"] == "Bearer"
    assert "wrong" in admin.send("DELETE", "p001", Authorization=f"Bearer {TOKEN}x").error(403)
    assert admin.send("DELETE", "p001", Authorization="Basic Zm9vOmJhcg==").status == 401
    with_cookie = call(admin.url, "DELETE", "/products/p001", headers={"Cookie": "rr_user=demo"})
    assert with_cookie.status == 401
    assert admin.app.recommender.get_products(["p001"])


def test_put_embeds_a_new_product_with_the_servers_model_and_answers_what_it_did(admin: Admin) -> None:
    created = admin.ok("PUT", "mug-1", MUG)
    assert created["created"] and created["embedded"] and created["product_id"] == "mug-1"
    assert created["fields"] == ["name", "description", "category", "brand", "price", "rating", "in_stock"]
    assert "mug-1" in admin.search("enamel mug for camp coffee")
    again = admin.ok("PUT", "mug-1", MUG)
    assert (again["created"], again["embedded"], again["fields"], again["changed"]) == (False, False, [], False)
    renamed = admin.ok("PUT", "mug-1", {**MUG, "description": "A tall mug for tea."})
    assert renamed["embedded"] and renamed["fields"] == ["description"]
    assert admin.ok("GET", "mug-1")["price"] == 9.5


def test_patch_writes_filter_fields_without_embedding(admin: Admin) -> None:
    admin.ok("PUT", "mug-2", MUG)
    patched = admin.ok("PATCH", "mug-2", {"price": 4.25, "in_stock": False})
    assert patched == {
        "product_id": "mug-2",
        "created": False,
        "embedded": False,
        "fields": ["price", "in_stock"],
        "changed": True,
    }
    assert admin.ok("GET", "mug-2")["in_stock"] is False


@pytest.mark.parametrize(
    ("product_id", "body", "status", "words"),
    [
        ("no-such-product", {"price": 1}, 404, "no product with id"),
        ("p001", {"colour": "red"}, 400, "colour"),
        ("p001", {"name": "Renamed"}, 400, "upsert"),
        ("p001", {"price": -1}, 400, "price"),
        ("p001", {"price": "NaN"}, 400, "price"),
        ("p001", {"rating": 7}, 400, "rating"),
        ("p001", {}, 400, "nothing to update"),
    ],
)
def test_bad_patches_are_refused(admin: Admin, product_id: str, body: dict, status: int, words: str) -> None:
    assert words in admin.send("PATCH", product_id, body).error(status)


def test_a_nan_literal_is_refused_too(admin: Admin) -> None:
    reply = call(
        admin.url,
        "PATCH",
        "/products/p001",
        body=b'{"price": NaN}',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert reply.status == 400


def test_a_10_mb_description_is_413(admin: Admin) -> None:
    """Refused on its Content-Length, before the body is read: only its first bytes are sent (the
    server closes the connection after answering, as for any refused framing)."""
    body = json.dumps({**MUG, "description": "x" * 10_000_000}).encode()
    url = urlsplit(admin.url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        head = (
            f"PUT /products/big HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body[:65536])
        status_line = sock.makefile("rb").readline()
    assert status_line.split()[1] == b"413"
    assert admin.send("GET", "big").status == 404


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"price": 3}, "name"),
        ({**MUG, "embedding": [0.1] * 384}, "send no embedding"),
        ({**MUG, "colour": "red"}, "unknown field"),
        ({**MUG, "id": "another"}, "not the id in the path"),
        ({**MUG, "category": "a,b"}, "tag separator"),
    ],
)
def test_bad_puts_are_400(admin: Admin, body: dict, words: str) -> None:
    assert words in admin.send("PUT", "bad-put", body).error(400)
    assert admin.send("GET", "bad-put").status == 404


def test_json_only(admin: Admin) -> None:
    reply = call(
        admin.url,
        "PUT",
        "/products/x",
        body=b"name=a&price=1",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status == 415


def test_delete_removes_the_product_from_search_and_a_second_delete_is_404(admin: Admin) -> None:
    admin.ok("PUT", "gone-mug", {**MUG, "name": "Disappearing glow-in-the-dark mug"})
    assert admin.ok("DELETE", "gone-mug") == {"product_id": "gone-mug", "deleted": True}
    assert "gone-mug" not in admin.search("glow in the dark mug", k=20)
    assert admin.send("DELETE", "gone-mug").error(404)


def test_batch_upsert_counts_what_it_did(admin: Admin) -> None:
    products = [{**MUG, "id": f"batch-{i}", "name": f"Batch mug number {i}"} for i in range(3)]
    first = admin.ok("POST", None, {"products": products})
    assert (first["written"], first["unchanged"], first["embedded"]) == (3, 0, 3)
    products[1]["price"] = 1.0
    second = admin.ok("POST", None, {"products": products})
    assert (second["written"], second["unchanged"], second["embedded"]) == (1, 2, 0)
    assert "twice" in admin.send("POST", None, {"products": [products[0], products[0]]}).error(400)


@pytest.mark.parametrize("product_id", ["BANK CHARGES", 'x"} | @brand:{y', "a/b?c#d%e", "ünï cødé", "*"])
def test_ids_with_syntax_characters_are_addressed_literally(admin: Admin, product_id: str) -> None:
    assert admin.ok("PUT", product_id, MUG)["created"]
    assert admin.ok("GET", product_id)["id"] == product_id
    assert admin.ok("PATCH", product_id, {"price": 2})["fields"] == ["price"]
    click = call(admin.url, "POST", "/click", {"product_id": product_id, "user_id": "admin-test"})
    assert click.status == 200, click.body[:300]
    assert admin.ok("DELETE", product_id)["deleted"]


def test_reset_index_needs_the_token_when_the_admin_api_is_on(admin: Admin) -> None:
    assert call(admin.url, "POST", "/reset-index", {"user_id": "admin-test"}).status == 401
    reply = call(admin.url, "POST", "/reset-index", {"user_id": "admin-test"}, headers=AUTH)
    assert reply.status == 200 and reply.json() == {"seeded": len(admin.app.catalog["products"])}
