"""Fixtures shared by every test: one real Redis with Search per session (the bundled one),
a client per protocol, and the real embedding model. Nothing here emulates Redis."""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import redis

from local_redis import LocalRedis, connect
from recommender import Candidate, RedisRecommender

if TYPE_CHECKING:
    from demo_api import DemoApp
    from demo_server import DemoServer

DIM = 384
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def local_redis() -> Iterator[LocalRedis]:
    with LocalRedis() as server:
        yield server


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def redis_client(request: pytest.FixtureRequest, local_redis: LocalRedis) -> Iterator[redis.Redis]:
    """A client on each protocol (redis-py 8 defaults to RESP3), on an empty database.

    It FLUSHALLs the session Redis: a test that keeps data across tests (module scope) needs
    its own key prefix and client, not this fixture, or a later test wipes its data.
    """
    client = local_redis.client(protocol=request.param)
    client.flushall()
    yield client
    client.close()


# A fixed time for the shared fixture, so nothing fades between two steps of a test; tests of
# fading make their own recommender with a clock they move.
FIXED_NOW = 1_790_000_000.0


@pytest.fixture
def recommender(redis_client: redis.Redis) -> RedisRecommender:
    rec = RedisRecommender(redis_client, clock=lambda: FIXED_NOW)
    rec.create_index()
    return rec


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One private ONNX export cache for the whole session, inherited by the demo servers the
    tests start as subprocesses: the export runs once (a few seconds), and the user's
    ~/.cache is never written."""
    from embeddings import ONNX_CACHE_ENV

    root = tmp_path_factory.mktemp("onnx-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ONNX_CACHE_ENV, str(root))
        yield root


@pytest.fixture(scope="session")
def embedder():
    """The reference: sentence-transformers on torch."""
    from embeddings import LocalEmbedder

    return LocalEmbedder()


@pytest.fixture(scope="session")
def onnx_embedder():
    """What the demo server runs by default: the same model through onnxruntime."""
    from embeddings import LocalEmbedder

    return LocalEmbedder(backend="onnx")


def unit_vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def raw(value: object) -> bytes:
    """A value read with redis-py, which types replies loosely: bytes, as a client without
    decode_responses gives it (asserted, so a str or a missing field fails the test here)."""
    assert isinstance(value, bytes), value
    return value


def distances_of(candidates: Iterable[Candidate]) -> list[float]:
    """The candidates' vector distances, which every KNN result has (co-occurrence ones may not)."""
    distances = [candidate.vector_distance for candidate in candidates]
    assert all(distance is not None for distance in distances), distances
    return [distance for distance in distances if distance is not None]


def make_products(
    n: int, seed: int = 0, categories: tuple[str, ...] = ("outerwear", "footwear", "tops", "bags")
) -> list[dict]:
    """Synthetic products with random unit vectors: enough to test mechanics without the model."""
    rng = np.random.default_rng(seed)
    vectors = unit_vectors(n, seed)
    return [
        {
            "id": f"t{i:04d}",
            "name": f"Test item {i}",
            "description": "a waterproof shell" if i % 3 == 0 else "a warm wool layer",
            "category": categories[i % len(categories)],
            "brand": ("Northpeak", "Urban Loom", "Tidewater")[i % 3],
            "price": float(round(rng.uniform(10, 400), 2)),
            "rating": float(round(rng.uniform(2, 5), 1)),
            "in_stock": i % 5 != 0,
            "embedding": vectors[i],
        }
        for i in range(n)
    ]


@pytest.fixture(scope="session")
def catalog() -> dict:
    from recengine.catalog_file import read_catalog

    return read_catalog(ROOT / "catalog.json")


@pytest.fixture(scope="session")
def server_redis() -> Iterator[LocalRedis]:
    """The demo server's own Redis, so that other tests' FLUSHALL never pulls data from under it."""
    with LocalRedis() as server:
        yield server


@pytest.fixture(scope="session")
def demo_app(server_redis: LocalRedis, onnx_embedder, catalog: dict):
    from demo_api import DemoApp

    app = DemoApp(RedisRecommender(connect(server_redis.url)), onnx_embedder, catalog, redis_description="test Redis")
    app.seed()
    return app


@contextlib.contextmanager
def running(server: DemoServer) -> Iterator[str]:
    """`server` answering from a thread of this process; yields its URL, and stops it after."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def serving(app: DemoApp, **options: Any) -> contextlib.AbstractContextManager[str]:
    """The real HTTP server for `app` (with DemoServer's `options`) on a free port; yields its URL."""
    from demo_server import DemoServer

    return running(DemoServer(("127.0.0.1", 0), app, **options))


@pytest.fixture(scope="session")
def demo_url(demo_app) -> Iterator[str]:
    """The real HTTP server, in this process, on a free port."""
    with serving(demo_app) as url:
        yield url


@pytest.fixture(params=["json", "form"])
def encoding(request: pytest.FixtureRequest) -> str:
    """Every POST must accept JSON and urlencoded forms with the same field names."""
    return str(request.param)


@pytest.fixture
def user_id(request: pytest.FixtureRequest, demo_app) -> Iterator[str]:
    """A user of this test alone, named after it so that a leftover is easy to trace."""
    name = re.sub(r"[^A-Za-z0-9_.:-]+", "-", request.node.name)[:50]
    uid = f"{name}-{secrets.token_hex(4)}"
    yield uid
    demo_app.recommender.reset_user(uid)
