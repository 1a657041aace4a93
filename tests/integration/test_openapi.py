"""The OpenAPI 3.1 contract (docs/openapi.json) against the real server, and the probes.

- The document is valid OpenAPI 3.1 (schemathesis checks it against the specification's
  schema), and every JSON Schema in it is a valid Draft 2020-12 schema.
- Real answers of the real in-process server, for every endpoint, successes and errors, match
  the schema of the response the document lists for their path, method and status
  (jsonschema, Draft 2020-12 as OpenAPI 3.1 uses).
- A bounded, derandomized schemathesis run generates requests from the document (valid and
  invalid) and asserts no 5xx and answers that conform. It acts as a user of its own and never
  rebuilds the index, so the session's shared server is left as the other tests expect it.
- /healthz and /readyz: ready, not ready (no index, Redis down) with the reason, the Host rule,
  and no API slot taken. The not-ready cases run against a demo of their own (own Redis).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import jsonschema
import numpy as np
import pytest
import schemathesis
from conftest import running
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from test_http import Reply, call, first_in

from demo_api import OPENAPI_PATH, DemoApp
from demo_server import DemoServer
from local_redis import LocalRedis, connect
from recommender import RedisRecommender, product_embedding_bytes

log = logging.getLogger(__name__)

DOCUMENT: dict[str, Any] = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
DOCUMENT_URI = "urn:demo-openapi"
REGISTRY: Registry = Registry().with_resource(
    DOCUMENT_URI, Resource.from_contents(DOCUMENT, default_specification=DRAFT202012)
)
# Generated requests per operation (18 operations: all but /reset-index), valid and invalid mixed.
FUZZ_EXAMPLES = 25
FUZZ_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
UNKNOWN_PRODUCT = "no-such-product-0000"
FOREIGN_HOST = "rebind.example"


# --- reading the document -----------------------------------------------------------------------


def pointer(*parts: str) -> str:
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI Reference Object (`#/components/...`) followed to what it names."""
    while "$ref" in node:
        target: Any = DOCUMENT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def documented_response(template: str, method: str, status: int) -> tuple[dict[str, Any], list[str]]:
    """The Response Object the document lists for this operation and status, and where it is
    (the path of keys into the document, after a reference is followed)."""
    responses = DOCUMENT["paths"][template][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {template} answered {status}, which the document does not list"
    node = responses[str(status)]
    if "$ref" in node:
        return resolve(node), node["$ref"].removeprefix("#/").split("/")
    return node, ["paths", template, method.lower(), "responses", str(status)]


def assert_matches(schema_location: str, payload: Any) -> None:
    """Validate against the schema at this JSON pointer of the document, Draft 2020-12, with
    the document's own references resolved."""
    validator = jsonschema.Draft202012Validator({"$ref": DOCUMENT_URI + "#" + schema_location}, registry=REGISTRY)
    errors = sorted(validator.iter_errors(payload), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def assert_conforms(template: str, method: str, reply: Reply) -> Any:
    """The reply's status is documented for the operation, its media type too, and its body
    matches that media type's schema; returns the decoded JSON (None for HEAD and files)."""
    response, location = documented_response(template, method, reply.status)
    if method == "HEAD":
        assert reply.body == b""
        return None
    media_type = (reply.headers.get("Content-Type") or "").split(";", 1)[0].strip()
    assert media_type in response.get("content", {}), (media_type, list(response.get("content", {})))
    if media_type != "application/json":
        return None
    payload = json.loads(reply.body)
    assert_matches(pointer(*location, "content", media_type, "schema"), payload)
    return payload


def assert_error_conforms(reply: Reply, status: int, component: str) -> str:
    """An error of a kind the document describes once for every path (405 for any method a path
    does not take): its status and body match components/responses/<component>."""
    assert reply.status == status, (reply.status, reply.body[:300])
    assert_matches(f"/components/responses/{component}/content/application~1json/schema", json.loads(reply.body))
    message: str = json.loads(reply.body)["error"]
    return message


# --- (a) the document itself ------------------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.")
    schema = schemathesis.openapi.from_dict(json.loads(json.dumps(DOCUMENT)))
    schema.validate()  # the OpenAPI 3.1 specification's schema; raises on any violation
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == sum(
        method in ("get", "head", "post", "put", "patch", "delete")
        for item in DOCUMENT["paths"].values()
        for method in item
    )


def test_every_schema_is_a_draft_2020_12_schema() -> None:
    for name, schema in DOCUMENT["components"]["schemas"].items():
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise AssertionError(f"components/schemas/{name}: {exc.message}") from None


def test_the_server_serves_the_document(demo_url: str) -> None:
    reply = call(demo_url, "GET", "/openapi.json")
    assert assert_conforms("/openapi.json", "GET", reply) == DOCUMENT
    assert reply.headers["Cache-Control"] == "no-store"


# --- (b) real answers against the document ------------------------------------------------------


def test_state_conforms(demo_url: str, user_id: str) -> None:
    state = assert_conforms("/state", "GET", call(demo_url, "GET", f"/state?user_id={quote(user_id)}"))
    assert state["user"]["user_id"] == user_id
    assert_conforms("/state", "GET", call(demo_url, "GET", "/state?user_id=not%20valid"))
    assert_error_conforms(call(demo_url, "POST", "/state", {}), 405, "MethodNotAllowed")
    assert call(demo_url, "HEAD", "/state").status == 405


@pytest.mark.parametrize("encoding", ["json", "form"])
def test_list_endpoints_conform(demo_url: str, user_id: str, catalog: dict, encoding: str) -> None:
    """Every list endpoint, before and after the user clicks (which adds `why` terms, a session
    and affinities), in both encodings, and /click, /dismiss on the way."""
    jacket = first_in(catalog, "outerwear")
    shoe = first_in(catalog, "footwear")
    searches: list[tuple[str, dict[str, Any]]] = [
        ("/search", {"query": "waterproof jacket", "k": 3, "rerank": True, "use_session": True, "diversity": 0.3}),
        (
            "/search",
            {"query": "warm boots", "category": "footwear", "min_price": 10, "max_price": 500, "in_stock_only": True},
        ),
        ("/recommend", {"k": 4}),
        ("/similar", {"product_id": jacket["id"], "k": 3, "same_category_boost": 0.2}),
        ("/similar", {"product_id": jacket["id"], "k": 3, "signal": "co_occurrence"}),
        ("/recommend", {"k": 4, "signal": "content"}),
    ]
    for path, fields in searches:
        assert_conforms(path, "POST", call(demo_url, "POST", path, {**fields, "user_id": user_id}, encoding=encoding))
    clicked = assert_conforms(
        "/click",
        "POST",
        call(demo_url, "POST", "/click", {"product_id": jacket["id"], "user_id": user_id}, encoding=encoding),
    )
    assert clicked["user"]["has_session_vec"]
    assert_conforms(
        "/event",
        "POST",
        call(
            demo_url,
            "POST",
            "/event",
            {"product_id": shoe["id"], "event": "cart", "user_id": user_id},
            encoding=encoding,
        ),
    )
    assert_conforms(
        "/dismiss",
        "POST",
        call(demo_url, "POST", "/dismiss", {"product_id": shoe["id"], "user_id": user_id}, encoding=encoding),
    )
    for path, fields in searches:
        assert_conforms(path, "POST", call(demo_url, "POST", path, {**fields, "user_id": user_id}, encoding=encoding))
    feed = assert_conforms(
        "/recommend", "POST", call(demo_url, "POST", "/recommend", {"user_id": user_id}, encoding=encoding)
    )
    assert feed["source"] == "session"
    state = assert_conforms("/state", "GET", call(demo_url, "GET", f"/state?user_id={quote(user_id)}"))
    assert state["user"]["dismissed"] and state["popular"]
    assert_conforms(
        "/reset-user", "POST", call(demo_url, "POST", "/reset-user", {"user_id": user_id}, encoding=encoding)
    )


@pytest.fixture
def catalog_vector_back(demo_app: DemoApp, catalog: dict) -> Iterator[dict[str, Any]]:
    """A product whose vector a test replaces; it gets its catalogue vector back afterwards."""
    product = catalog["products"][-1]
    yield product
    vector = np.frombuffer(product_embedding_bytes(product, demo_app.recommender.vector_dim), dtype="<f4")
    demo_app.recommender.refresh_embedding(product["id"], vector)


def test_refresh_embedding_conforms(demo_url: str, user_id: str, catalog_vector_back: dict[str, Any]) -> None:
    fields = {
        "product_id": catalog_vector_back["id"],
        "text": "a brass telescope\nfor distant galaxies",
        "user_id": user_id,
    }
    for encoding in ("json", "form"):
        refreshed = call(demo_url, "POST", "/refresh-embedding", fields, encoding=encoding)
        assert assert_conforms("/refresh-embedding", "POST", refreshed)["product_id"] == catalog_vector_back["id"]
    unknown = call(demo_url, "POST", "/refresh-embedding", {**fields, "product_id": UNKNOWN_PRODUCT})
    assert unknown.status == 404
    assert_conforms("/refresh-embedding", "POST", unknown)


@pytest.mark.parametrize(
    ("path", "fields", "status"),
    [
        pytest.param("/search", {"query": "  "}, 400, id="search-empty-query"),
        pytest.param("/search", {"query": "x", "k": 0}, 400, id="search-k-0"),
        pytest.param("/search", {"query": "x", "min_price": 9, "max_price": 1}, 400, id="search-price-range"),
        pytest.param("/recommend", {"diversity": 2}, 400, id="recommend-diversity"),
        pytest.param("/similar", {}, 400, id="similar-no-product"),
        pytest.param("/similar", {"product_id": UNKNOWN_PRODUCT}, 404, id="similar-unknown"),
        pytest.param("/click", {"product_id": UNKNOWN_PRODUCT}, 404, id="click-unknown"),
        pytest.param("/event", {"product_id": UNKNOWN_PRODUCT, "event": "view"}, 404, id="event-unknown"),
        pytest.param("/event", {"product_id": "p001", "event": "buy"}, 400, id="event-bad-type"),
        pytest.param("/similar", {"product_id": "p001", "signal": "both"}, 400, id="similar-bad-signal"),
        pytest.param("/dismiss", {"product_id": "x" * 257}, 400, id="dismiss-bad-id"),
        pytest.param("/reset-user", {"user_id": "no spaces allowed"}, 400, id="reset-user-bad-user"),
        pytest.param("/refresh-embedding", {"product_id": UNKNOWN_PRODUCT}, 400, id="refresh-no-text"),
    ],
)
def test_errors_conform(demo_url: str, user_id: str, path: str, fields: dict[str, Any], status: int) -> None:
    reply = call(demo_url, "POST", path, {"user_id": user_id, **fields})
    assert reply.status == status, reply.body[:300]
    assert_conforms(path, "POST", reply)


def test_transport_errors_conform(demo_url: str, user_id: str) -> None:
    """The errors of the transport, each on the operation it happened to: a cross-site POST, a
    body too large or of another type, a wrong Host, a malformed body."""
    body = {"query": "x", "user_id": user_id}
    cross_site = call(demo_url, "POST", "/search", body, headers={"Origin": "http://other.example"})
    assert cross_site.status == 403
    assert_conforms("/search", "POST", cross_site)
    too_large = call(
        demo_url, "POST", "/search", body=b"x", content_type="application/json", headers={"Content-Length": "70000"}
    )
    assert too_large.status == 413
    assert_conforms("/search", "POST", too_large)
    plain = call(demo_url, "POST", "/search", body=b"query=x", content_type="text/plain")
    assert plain.status == 415
    assert_conforms("/search", "POST", plain)
    not_json = call(demo_url, "POST", "/click", body=b"{", content_type="application/json")
    assert not_json.status == 400
    assert_conforms("/click", "POST", not_json)
    for template, method in (("/state", "GET"), ("/search", "POST"), ("/", "GET"), ("/healthz", "GET")):
        reply = call(demo_url, method, template, {} if method == "POST" else None, headers={"Host": FOREIGN_HOST})
        assert reply.status == 421
        assert_conforms(template, method, reply)


def test_page_and_files_conform(demo_url: str) -> None:
    page = call(demo_url, "GET", "/")
    assert_conforms("/", "GET", page)
    assert page.headers["Set-Cookie"].startswith("rr_user=")
    assert_conforms("/", "HEAD", call(demo_url, "HEAD", "/"))
    for name in ("app.js", "style.css"):
        assert_conforms("/static/{file}", "GET", call(demo_url, "GET", f"/static/{name}"))
        assert_conforms("/static/{file}", "HEAD", call(demo_url, "HEAD", f"/static/{name}"))
    missing = call(demo_url, "GET", "/static/no-such-file.js")
    assert missing.status == 404
    assert_conforms("/static/{file}", "GET", missing)
    assert_error_conforms(call(demo_url, "POST", "/", {}), 405, "MethodNotAllowed")


def test_unknown_path_and_method_conform(demo_url: str) -> None:
    """A path the document does not list is a 404 and a method a path does not take a 405 with
    Allow, both with the one error shape."""
    assert "/nowhere" not in DOCUMENT["paths"]
    reply = call(demo_url, "GET", "/nowhere")
    assert reply.status == 404
    assert_matches("/components/schemas/Error", reply.json())
    for path, allowed in (("/search", "POST"), ("/healthz", "GET, HEAD"), ("/openapi.json", "GET, HEAD")):
        wrong = call(demo_url, "PUT", path, body=b"", content_type="application/json")
        assert_error_conforms(wrong, 405, "MethodNotAllowed")
        assert wrong.headers["Allow"] == allowed


# --- (c) schema-driven fuzzing of the real server ---------------------------------------------


@pytest.fixture(scope="module")
def fuzz_user(demo_app: DemoApp) -> Iterator[str]:
    """The fuzz run's own user: every generated request acts for it (never the shared `demo`)."""
    uid = f"openapi-fuzz-{secrets.token_hex(4)}"
    yield uid
    demo_app.recommender.reset_user(uid)


def fuzzed_operations() -> list[APIOperation]:
    """The operations the fuzz run calls: all but /reset-index, which reseeds the catalogue the
    other tests search (test_readyz_reports_a_missing_index calls it on a demo of its own)."""
    schema = schemathesis.openapi.from_dict(json.loads(json.dumps(DOCUMENT)))
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    return [operation for operation in operations if operation.path != "/reset-index"]


def act_as(case: schemathesis.Case, user: str) -> None:
    """Make the generated request act for `user`: the query of GET /state, the fields of a POST
    (a body that is no object is a 400 before it reaches any user)."""
    if case.operation.path == "/state":
        case.query = {**(case.query or {}), "user_id": user}
    elif case.operation.method.upper() == "POST":
        if isinstance(case.body, dict):
            case.body = {**case.body, "user_id": user}
        elif case.body is NOT_SET:
            case.body = {"user_id": user}
            case.media_type = "application/json"


@pytest.mark.parametrize("operation", fuzzed_operations(), ids=lambda operation: operation.label)
def test_fuzzed_requests_get_documented_answers(operation: APIOperation, demo_url: str, fuzz_user: str) -> None:
    """Requests generated from the document, valid and invalid (wrong types, missing or extra
    fields, out-of-range values), FUZZ_EXAMPLES of each per operation, derandomized. Only the
    generated phase runs: the document's examples name real products, and clicking them would
    move everyone's popularity."""
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    sent: list[int] = []

    @given(case=cases)
    @settings(
        max_examples=FUZZ_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],
    )
    def answers_as_documented(case: schemathesis.Case) -> None:
        act_as(case, fuzz_user)
        response = case.call_and_validate(base_url=demo_url, checks=FUZZ_CHECKS, timeout=30)
        sent.append(response.status_code)

    answers_as_documented()
    log.warning("%s: %d generated requests, statuses %s", operation.label, len(sent), sorted(Counter(sent).items()))
    assert sent and all(status < 500 for status in sent)


# --- (d) the probes -------------------------------------------------------------------------------


def test_healthz_and_readyz_on_a_ready_server(demo_url: str) -> None:
    for path in ("/healthz", "/readyz"):
        assert assert_conforms(path, "GET", call(demo_url, "GET", path)) == {"status": "ok"}
        head = call(demo_url, "HEAD", path)
        assert head.status == 200
        assert_conforms(path, "HEAD", head)


def test_probes_ignore_cookies_and_origins(demo_url: str) -> None:
    """Outside the cookie and origin rules: a forged cookie and a foreign origin change nothing,
    and no user cookie is handed out."""
    headers = {"Cookie": "rr_user=forged.sig", "Origin": "http://other.example", "Sec-Fetch-Site": "cross-site"}
    for path in ("/healthz", "/readyz", "/openapi.json"):
        reply = call(demo_url, "GET", path, headers=headers)
        assert reply.status == 200, reply.body[:200]
        assert "Set-Cookie" not in reply.headers


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
def test_probes_keep_the_host_rule(demo_url: str, path: str) -> None:
    reply = call(demo_url, "GET", path, headers={"Host": f"{FOREIGN_HOST}:80"})
    assert "does not answer for host" in assert_error_conforms(reply, 421, "MisdirectedRequest")


@pytest.fixture
def own_demo(onnx_embedder, catalog: dict) -> Iterator[tuple[str, DemoServer, LocalRedis]]:
    """A demo on a Redis of its own, which the test may empty or stop; at most one API slot."""
    redis_server = LocalRedis().start()
    app = DemoApp(RedisRecommender(connect(redis_server.url)), onnx_embedder, catalog, redis_description="probe Redis")
    try:
        app.seed()
        server = DemoServer(("127.0.0.1", 0), app, max_in_flight=1)
        with running(server) as url:
            yield url, server, redis_server
    finally:
        app.close()
        redis_server.stop()


def test_probes_take_no_api_slot(own_demo: tuple[str, DemoServer, LocalRedis]) -> None:
    """With every API slot taken, the API answers busy and the probes still answer."""
    url, server, _ = own_demo
    assert server.in_flight.acquire(timeout=5)
    try:
        busy = call(url, "GET", "/state?user_id=probe")
        assert busy.status == 503 and busy.headers["Retry-After"]
        assert_conforms("/state", "GET", busy)
        for path in ("/healthz", "/readyz", "/openapi.json"):
            assert call(url, "GET", path).status == 200, path
    finally:
        server.in_flight.release()


def test_readyz_finds_a_missing_index_and_rebuilds_it(own_demo: tuple[str, DemoServer, LocalRedis]) -> None:
    """No index: the server rebuilds it from its catalogue (issue 24: a server that finds its
    index missing re-seeds by itself), and the probe that found it answers ready once it serves.
    /healthz stays 200 throughout; /reset-index (its own bounded case, on this demo) still works."""
    url, server, _ = own_demo
    assert call(url, "GET", "/readyz").status == 200
    server.app.recommender.drop_index(delete_documents=True)
    healed = call(url, "GET", "/readyz")
    assert healed.status == 200 and assert_conforms("/readyz", "GET", healed)
    assert server.app.recommender.count_indexed() == len(server.app.catalog["products"])
    assert call(url, "GET", "/healthz").status == 200
    reset = call(url, "POST", "/reset-index", {"user_id": "probe"})
    assert assert_conforms("/reset-index", "POST", reset)["seeded"] == len(server.app.catalog["products"])
    assert call(url, "GET", "/readyz").status == 200


def test_readyz_reports_redis_down(own_demo: tuple[str, DemoServer, LocalRedis]) -> None:
    url, _, redis_server = own_demo
    redis_server.stop()
    down = call(url, "GET", "/readyz")
    assert "Redis is unreachable" in assert_error_conforms(down, 503, "NotReady")
    assert_conforms("/readyz", "GET", down)
    assert_conforms("/state", "GET", call(url, "GET", "/state?user_id=probe"))
    assert call(url, "GET", "/healthz").status == 200
    assert call(url, "HEAD", "/readyz").status == 503


def test_readyz_reports_a_stopped_encoder(own_demo: tuple[str, DemoServer, LocalRedis]) -> None:
    url, server, _ = own_demo
    server.app.encoder.close()
    reply = call(url, "GET", "/readyz")
    assert "shutting down" in assert_error_conforms(reply, 503, "NotReady")
