"""The admin API: the catalogue written over HTTP, one product or a batch at a time.

    PUT    /products/<id>   create or replace a product (JSON object: name, price, ...); its text
                            is embedded by the server's own encoder, and only when it changed
    PATCH  /products/<id>   set filter fields (price, in_stock, rating, category, brand, extra
                            fields); never re-embeds; 404 for an unknown product
    DELETE /products/<id>   remove it (and its popularity); 404 for an unknown product
    GET    /products/<id>   what is stored (display fields)
    POST   /products        batch upsert: {"products": [{id, name, price, ...}, ...]}

Every write answers with what it did: created or not, embedded or not, the fields written. The
id in the path is percent-decoded UTF-8 (an id may hold any printable character: "BANK
CHARGES" is /products/BANK%20CHARGES, "a/b" is /products/a%2Fb). Bodies are JSON only, up to
MAX_ADMIN_BODY_BYTES; a product is checked by build_catalog's own rules (check_record), so a
file and the API accept the same products. Who may call it (the bearer token) is
admin_token.py's rule, applied by demo_server.py before any of this runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from demo_api import DemoApp, Fields, answering_library_errors
from recengine.catalog_input import MAX_FIELD_CHARS, RECORD_FIELDS, check_record
from recengine.http_request import ApiError
from recommender import ProductWrite

PRODUCTS_PATH = "/products"
# A batch of a thousand products with paragraph-long descriptions; a 10 MB description is a 413.
MAX_ADMIN_BODY_BYTES = 1024 * 1024
MAX_BATCH_PRODUCTS = 1000
VECTOR_KEYS = ("embedding", "embedding_b64")


def is_admin_target(target: str) -> bool:
    """Whether a raw request target names the admin API (it allows a larger body); never raises,
    as it runs before the target is checked."""
    try:
        path = urlsplit(target).path
    except ValueError:
        return False
    return path == PRODUCTS_PATH or path.startswith(PRODUCTS_PATH + "/")


def product_id_of(path: str) -> str | None:
    """The product id in /products/<id> (percent-decoded), None for /products itself."""
    if path == PRODUCTS_PATH:
        return None
    encoded = path[len(PRODUCTS_PATH) + 1 :]
    product_id = unquote(encoded, errors="strict") if encoded else ""
    if not product_id:
        raise ApiError(404, "name the product: /products/<id> (percent-encode a '/', '?', '#' or '%' in it)")
    return product_id


@dataclass(eq=False)
class AdminApi:
    """The admin endpoints over one DemoApp (its recommender and its encoder)."""

    app: DemoApp

    def _embed(self, texts: list[str]) -> np.ndarray:
        """New text through the server's own encoder, one model call at a time with the searches."""
        return np.stack([self.app.encoder.encode_uncached(text) for text in texts])

    def _checked(self, product_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A product by build_catalog's rules; 400 with every problem, or for a field the
        schema does not have, or a vector (the server embeds with its own model)."""
        extras = self.app.recommender.extra_fields
        known = {*RECORD_FIELDS, *(extra.name for extra in extras)}
        unknown = sorted(name for name in body if name not in known)
        if any(name in VECTOR_KEYS for name in body):
            raise ApiError(400, "send no embedding: the server embeds the product's text with its own model")
        if unknown:
            raise ApiError(
                400, f"unknown field(s) {', '.join(map(repr, unknown))}: the fields are {', '.join(sorted(known))}"
            )
        if "id" in body and body["id"] != product_id:
            raise ApiError(400, f"the body's id {body['id']!r} is not the id in the path ({product_id!r})")
        product, problems = check_record({**body, "id": product_id}, False, extras)
        if problems:
            raise ApiError(400, f"product {product_id!r}: " + "; ".join(problems))
        return product

    def _upsert(self, products: Sequence[dict[str, Any]]) -> tuple[list[ProductWrite], float]:
        started = time.perf_counter()
        writes = self.app.recommender.upsert_products(products, embed=self._embed)
        return writes, (time.perf_counter() - started) * 1000

    def put(self, product_id: str | None, body: Fields) -> dict[str, Any]:
        product_id = named(product_id)
        (write,), ms = self._upsert([self._checked(product_id, body)])
        return {**write_payload(write), "ms": round(ms, 1)}

    def patch(self, product_id: str | None, body: Fields) -> dict[str, Any]:
        product_id = named(product_id)
        if any(isinstance(value, str) and len(value) > MAX_FIELD_CHARS for value in body.values()):
            raise ApiError(400, f"a field holds more than {MAX_FIELD_CHARS:,} characters")
        return write_payload(self.app.recommender.update_product(product_id, **dict(body)))

    def delete(self, product_id: str | None, body: Fields) -> dict[str, Any]:
        product_id = named(product_id)
        if not self.app.recommender.delete_product(product_id):
            raise ApiError(404, f"no product with id {product_id!r}")
        return {"product_id": product_id, "deleted": True}

    def get(self, product_id: str | None, body: Fields) -> dict[str, Any]:
        product_id = named(product_id)
        found = self.app.recommender.get_products([product_id])
        if product_id not in found:
            raise ApiError(404, f"no product with id {product_id!r}")
        return found[product_id]

    def batch(self, product_id: str | None, body: Fields) -> dict[str, Any]:
        products = body.get("products")
        if not isinstance(products, list) or not products or not all(isinstance(p, dict) for p in products):
            raise ApiError(400, 'send {"products": [{"id": ..., "name": ..., "price": ...}, ...]} (at least one)')
        if len(products) > MAX_BATCH_PRODUCTS:
            raise ApiError(400, f"at most {MAX_BATCH_PRODUCTS} products per batch, got {len(products):,}")
        ids = [p.get("id") for p in products]
        if not all(isinstance(i, str) and i for i in ids):
            raise ApiError(400, "every product of a batch needs its id (a non-empty string)")
        if len(set(ids)) < len(ids):
            raise ApiError(400, "the batch holds an id twice: nothing was written")
        writes, ms = self._upsert([self._checked(str(p["id"]), p) for p in products])
        return {
            "written": sum(1 for w in writes if w.fields),
            "unchanged": sum(1 for w in writes if not w.fields),
            "embedded": sum(1 for w in writes if w.embedded),
            "results": [write_payload(w) for w in writes],
            "ms": round(ms, 1),
        }


def named(product_id: str | None) -> str:
    """The product a /products/<id> endpoint acts on (the route table only sends those there)."""
    if product_id is None:
        raise ApiError(404, "name the product: /products/<id>")
    return product_id


def write_payload(write: ProductWrite) -> dict[str, Any]:
    return {
        "product_id": write.product_id,
        "created": write.created,
        "embedded": write.embedded,
        "fields": list(write.fields),
        "changed": bool(write.fields),
    }


AdminEndpoint = Callable[[AdminApi, "str | None", Fields], dict[str, Any]]
# (method, whether the path names a product) -> endpoint.
ADMIN_ROUTES: dict[tuple[str, bool], AdminEndpoint] = {
    key: answering_library_errors(endpoint)
    for key, endpoint in (
        (("PUT", True), AdminApi.put),
        (("PATCH", True), AdminApi.patch),
        (("DELETE", True), AdminApi.delete),
        (("GET", True), AdminApi.get),
        (("POST", False), AdminApi.batch),
    )
}


def allowed_methods(names_product: bool) -> str:
    return ", ".join(method for method, by_id in ADMIN_ROUTES if by_id == names_product)
