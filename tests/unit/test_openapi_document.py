"""docs/openapi.json against the server's routes, without a server: every path and method the
server answers is in the document, and the document lists nothing the server does not answer.
(tests/integration/test_openapi.py checks real answers against it.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from demo_api import API_ROUTES, OPENAPI_PATH, SERVICE_ROUTES, openapi_document

DOCUMENT: dict[str, Any] = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
OPERATION_KEYS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# demo_server.DemoRequestHandler.dispatch serves these before any route table: the page and its
# files, and the metrics, on GET and HEAD.
FILE_ROUTES = {"/": {"GET", "HEAD"}, "/static/{file}": {"GET", "HEAD"}, "/metrics": {"GET", "HEAD"}}


def served() -> dict[str, set[str]]:
    """Every path the server answers, with the methods it takes there."""
    routes = {path: {route.method} for path, route in API_ROUTES.items()}
    routes |= {path: {"GET", "HEAD"} for path in SERVICE_ROUTES}
    return routes | FILE_ROUTES


def documented() -> dict[str, set[str]]:
    return {path: {key.upper() for key in item if key in OPERATION_KEYS} for path, item in DOCUMENT["paths"].items()}


def test_every_served_route_is_documented_and_nothing_else() -> None:
    assert documented() == served()


@pytest.mark.parametrize("path", sorted(API_ROUTES))
def test_api_operations_name_the_user_cookie(path: str) -> None:
    """The cookie chooses the user of every API request that names none."""
    operation = DOCUMENT["paths"][path][API_ROUTES[path].method.lower()]
    assert {"$ref": "#/components/parameters/UserCookie"} in operation["parameters"]


@pytest.mark.parametrize("path", sorted(path for path, route in API_ROUTES.items() if route.method == "POST"))
def test_post_bodies_take_json_and_forms_alike(path: str) -> None:
    content = DOCUMENT["paths"][path]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "application/x-www-form-urlencoded"}
    assert content["application/json"]["schema"] == content["application/x-www-form-urlencoded"]["schema"]


def test_errors_share_one_shape() -> None:
    """Every documented JSON error body is the one Error schema."""
    responses = DOCUMENT["components"]["responses"]
    for item in DOCUMENT["paths"].values():
        for key, operation in item.items():
            if key not in OPERATION_KEYS:
                continue
            for status, response in operation["responses"].items():
                response = responses[response["$ref"].rsplit("/", 1)[1]] if "$ref" in response else response
                if int(status) >= 400 and "content" in response:
                    assert response["content"] == {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    }


def test_the_served_document_is_the_file() -> None:
    assert openapi_document() == DOCUMENT
    assert DOCUMENT["openapi"].startswith("3.1.")
