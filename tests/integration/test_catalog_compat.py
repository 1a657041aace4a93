"""Compatibility with the other ports of this demo: code written for the reference's
LocalEmbedder (redis-py port) runs unchanged on ours, and catalog.json files written by the
redis-py, Go and Node ports load and are checked by their vectors, not only by their model name.

The port catalogs here are written by these tests in each port's format (key order, indentation,
integer prices from Go's and JavaScript's JSON writers, the model name each port records) with
vectors from our own embedder: the same model gives the same vectors, the Node port's quantized
ONNX model gives vectors close to ours (simulated by a small rotation of each), and another model
gives vectors in another space (simulated by a random rotation of the whole space)."""

from __future__ import annotations

import base64
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

from build_catalog import DEFAULT_INPUT
from embeddings import DEFAULT_MODEL_NAME, LocalEmbedder, canonical_model_name, default_model_path, same_model
from recengine.catalog_file import check_catalog_vectors, product_text, read_catalog, sample_products
from recengine.catalog_input import CatalogError, load_products

REFERENCE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
NODE_MODEL = "Xenova/all-MiniLM-L6-v2"
# Key order of the ports' catalogs (their Product structs and object literals): in_stock before rating.
PORT_KEYS = ("id", "name", "description", "category", "brand", "price", "in_stock", "rating")
TEXTS = ["waterproof hiking boots", "a warm down parka for winter", "stainless soup spoon"]


@pytest.fixture(scope="module")
def products() -> list[dict]:
    return load_products(DEFAULT_INPUT)[:24]


def rotated_slightly(vectors: np.ndarray, low: float, high: float, seed: int = 1) -> np.ndarray:
    """Each unit vector turned by a random angle whose cosine lies in [low, high]."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=vectors.shape)
    noise -= np.sum(noise * vectors, axis=1, keepdims=True) * vectors
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    cosines = rng.uniform(low, high, size=(len(vectors), 1))
    return (cosines * vectors + np.sqrt(1 - cosines**2) * noise).astype(np.float32)


def another_space(vectors: np.ndarray, seed: int = 2) -> np.ndarray:
    """The vectors under one random orthogonal map: neighbours are kept, directions are not,
    which is what a different model with the same dimension looks like."""
    rotation, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(vectors.shape[1], vectors.shape[1])))
    return (vectors @ rotation).astype(np.float32)


def port_number(value: float, integers: bool) -> float | int:
    """Go's encoding/json and JavaScript's JSON.stringify write 289.0 as 289; Python keeps 289.0."""
    return int(value) if integers and float(value).is_integer() else value


def write_port_catalog(
    path: Path, model: str, products: list[dict], vectors: np.ndarray, integers: bool = False
) -> Path:
    rows = [
        {
            **{key: port_number(p[key], integers) if key in ("price", "rating") else p[key] for key in PORT_KEYS},
            "embedding_b64": base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii"),
        }
        for p, vector in zip(products, vectors, strict=True)
    ]
    path.write_text(json.dumps({"model": model, "dim": int(vectors.shape[1]), "products": rows}, indent=2))
    return path


# --- the reference's LocalEmbedder calls, on ours ---------------------------------------------


def test_reference_calls_work_unchanged_on_torch(embedder: LocalEmbedder) -> None:
    """Every public call of the reference's embeddings.py, spelled as it spells them."""
    reference = LocalEmbedder(model_name=REFERENCE_MODEL)  # the reference's default, loaded offline
    assert reference.model_name == REFERENCE_MODEL
    assert reference.dim == 384
    with warnings.catch_warnings():  # sentence-transformers 6 renamed it, and warns on the old name
        warnings.simplefilter("ignore", FutureWarning)
        assert reference.model.get_sentence_embedding_dimension() == 384
    vectors = reference.model.encode(TEXTS, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    assert vectors.shape == (3, 384)
    many = reference.encode_many(text for text in TEXTS)  # the reference takes any iterable
    assert many.shape == (3, 384) and many.dtype == np.float32
    np.testing.assert_allclose(many, embedder.encode_many(TEXTS), atol=1e-6)
    one = reference.encode_one(TEXTS[0])
    assert one.shape == (384,) and one.dtype == np.float32
    assert LocalEmbedder.to_bytes(one) == one.astype(np.float32).tobytes()
    assert reference.to_bytes(one.astype(np.float64)) == one.tobytes()  # cast, as the reference does
    assert len(LocalEmbedder.to_bytes([0.5] * 384)) == 384 * 4


def test_reference_calls_work_unchanged_on_onnx(onnx_embedder: LocalEmbedder) -> None:
    """The onnx backend has no SentenceTransformer, but its `model` answers the reference's calls."""
    node_named = LocalEmbedder(NODE_MODEL, backend="onnx")  # positional model_name, as in the reference
    assert node_named.model_name == NODE_MODEL
    assert node_named.model.get_sentence_embedding_dimension() == node_named.dim == 384
    vectors = node_named.model.encode(TEXTS, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(vectors, onnx_embedder.encode_many(TEXTS), atol=1e-6)
    assert node_named.model.encode(TEXTS[0]).shape == (384,)
    np.testing.assert_allclose(node_named.encode_many(iter(TEXTS)), vectors, atol=1e-6)


# --- model names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right", "same"),
    [
        (REFERENCE_MODEL, DEFAULT_MODEL_NAME, True),
        (NODE_MODEL, DEFAULT_MODEL_NAME, True),
        (NODE_MODEL, REFERENCE_MODEL, True),
        ("SENTENCE-TRANSFORMERS/all-minilm-l6-v2", DEFAULT_MODEL_NAME, True),
        (None, REFERENCE_MODEL, True),
        ("/cache/hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/abc123", NODE_MODEL, True),
        ("sentence-transformers/all-MiniLM-L12-v2", DEFAULT_MODEL_NAME, False),
        ("BAAI/bge-small-en-v1.5", DEFAULT_MODEL_NAME, False),
        ("someone/all-MiniLM-L6-v2", DEFAULT_MODEL_NAME, False),
    ],
)
def test_same_model(left: str | None, right: str, same: bool) -> None:
    assert same_model(left, right) is same
    assert same_model(right, left) is same


def test_the_bundled_package_path_is_the_same_model() -> None:
    assert canonical_model_name(default_model_path()) == REFERENCE_MODEL
    assert same_model(str(default_model_path()), NODE_MODEL)


# --- the ports' catalogs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "model", "integers"),
    [("redis-py", REFERENCE_MODEL, False), ("go", REFERENCE_MODEL, True), ("ours", DEFAULT_MODEL_NAME, False)],
)
def test_catalogs_of_the_same_model_load_and_match(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    products: list[dict],
    embedder: LocalEmbedder,
    onnx_embedder: LocalEmbedder,
    port: str,
    model: str,
    integers: bool,
) -> None:
    """Built with torch (redis-py) or ONNX (Go's hugot), checked against either backend: the
    same model, so silent."""
    builder = onnx_embedder if port == "go" else embedder
    vectors = builder.encode_many([product_text(p) for p in products])
    path = write_port_catalog(tmp_path / "catalog.json", model, products, vectors, integers)
    catalog = read_catalog(path)
    assert [p["id"] for p in catalog["products"]] == [p["id"] for p in products]
    assert all(isinstance(p["price"], float) and isinstance(p["rating"], float) for p in catalog["products"])
    for checker in (embedder, onnx_embedder):
        with caplog.at_level(logging.INFO, logger="build_catalog"):
            agreement = check_catalog_vectors(catalog, checker, source=path)
        assert agreement.exact and agreement.sampled == 16
        assert agreement.min_cosine > 0.9999
        assert caplog.text == ""


def test_node_catalog_agrees_roughly_and_is_used_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, products: list[dict], onnx_embedder: LocalEmbedder
) -> None:
    """transformers.js runs a quantized ONNX all-MiniLM-L6-v2: its vectors are within a cosine of
    about 0.986 of ours, close enough to rank alike, not equal."""
    vectors = rotated_slightly(onnx_embedder.encode_many([product_text(p) for p in products]), 0.984, 0.995)
    path = write_port_catalog(tmp_path / "catalog.json", NODE_MODEL, products, vectors, integers=True)
    catalog = read_catalog(path)
    with caplog.at_level(logging.INFO, logger="build_catalog"):
        agreement = check_catalog_vectors(catalog, onnx_embedder, source=path)
    assert not agreement.exact
    assert 0.984 < agreement.min_cosine < 0.995 and agreement.mean_cosine > 0.98
    assert len(caplog.records) == 1
    assert caplog.records[0].levelno == logging.WARNING
    assert f"{path}: its vectors ({NODE_MODEL}) agree with {DEFAULT_MODEL_NAME} only roughly" in caplog.text


@pytest.mark.parametrize("change", ["another space", "perturbed"])
def test_a_catalog_from_another_model_is_refused(
    tmp_path: Path, products: list[dict], onnx_embedder: LocalEmbedder, change: str
) -> None:
    """Even under the right name: the vectors decide."""
    vectors = onnx_embedder.encode_many([product_text(p) for p in products])
    vectors = another_space(vectors) if change == "another space" else rotated_slightly(vectors, 0.90, 0.96)
    path = write_port_catalog(tmp_path / "catalog.json", REFERENCE_MODEL, products, vectors)
    with pytest.raises(CatalogError) as caught:
        check_catalog_vectors(read_catalog(path), onnx_embedder, source=path)
    message = str(caught.value)
    assert message.startswith(f"{path} was not embedded with {DEFAULT_MODEL_NAME} (it says {REFERENCE_MODEL})")
    assert "gives a mean cosine of " in message and "rebuild it with `python build_catalog.py`" in message


def test_a_catalog_of_another_dimension_is_refused(
    tmp_path: Path, products: list[dict], onnx_embedder: LocalEmbedder
) -> None:
    vectors = np.random.default_rng(3).normal(size=(len(products), 768)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    path = write_port_catalog(tmp_path / "catalog.json", "BAAI/bge-base-en-v1.5", products, vectors)
    with pytest.raises(CatalogError, match=r"holds 768-dimensional vectors from BAAI/bge-base-en-v1\.5, but"):
        check_catalog_vectors(read_catalog(path), onnx_embedder, source=path)


def test_another_name_with_matching_vectors_is_used_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, products: list[dict], onnx_embedder: LocalEmbedder
) -> None:
    vectors = onnx_embedder.encode_many([product_text(p) for p in products])
    path = write_port_catalog(tmp_path / "catalog.json", "my-copy-of-minilm", products, vectors)
    with caplog.at_level(logging.INFO, logger="build_catalog"):
        assert check_catalog_vectors(read_catalog(path), onnx_embedder, source=path).exact
    assert f"{path} says model my-copy-of-minilm, and its vectors match" in caplog.text


def test_the_sample_is_deterministic_and_independent_of_order(
    products: list[dict], onnx_embedder: LocalEmbedder
) -> None:
    ids = [p["id"] for p in sample_products(products, 5)]
    assert ids == [p["id"] for p in sample_products(list(reversed(products)), 5)]
    assert ids != [p["id"] for p in products[:5]]
    assert len(sample_products(products, 100)) == len(products)
    with pytest.raises(ValueError, match="sample must be at least 1"):
        check_catalog_vectors({"model": "m", "dim": 384, "products": products}, onnx_embedder, sample=0)


def test_the_committed_catalog_passes_the_check(catalog: dict, onnx_embedder: LocalEmbedder) -> None:
    """What the demo server does at start: our own catalog, the server's default backend."""
    assert check_catalog_vectors(catalog, onnx_embedder).exact
