"""The query encoder choice without a model: arguments refused before anything loads, derived
graphs named by what they are, and a batch never mixes queries with product texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from embeddings import LocalEmbedder, derived_model_path
from query_encoder import PendingText, length_groups
from recengine.server_cli import build_parser, chosen_query_encoder


@pytest.mark.parametrize(
    ("backend", "query_encoder", "message"),
    [
        ("onnx", "int4", "unknown query encoder 'int4'"),
        ("torch", "int8", "use backend='onnx'"),
    ],
)
def test_a_query_encoder_the_backend_cannot_run_is_refused(backend: str, query_encoder: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LocalEmbedder(backend=backend, query_encoder=query_encoder)


@pytest.mark.parametrize(
    ("argv", "chosen"),
    [
        ([], "int8"),
        (["--embedding-backend", "torch"], "float"),
        (["--query-encoder", "float"], "float"),
        (["--query-encoder", "int8"], "int8"),
    ],
)
def test_the_server_runs_int8_queries_unless_told_otherwise_or_on_torch(argv: list[str], chosen: str) -> None:
    args = build_parser().parse_args(argv)
    assert chosen_query_encoder(args.embedding_backend, args.query_encoder) == chosen


def test_derived_graphs_sit_beside_the_export_named_by_kind_and_onnxruntime_version() -> None:
    import onnxruntime

    export = Path("/cache/all-MiniLM-L6-v2-0123456789ab/model.onnx")
    int8 = derived_model_path(export, "int8")
    assert int8.parent == export.parent
    assert int8.name == f"model-int8-ort{onnxruntime.__version__}.onnx"
    assert derived_model_path(export, "fused") != int8


def test_queries_and_product_texts_are_never_embedded_in_one_call() -> None:
    batch = [
        PendingText("down parka", "query", 0.0),
        PendingText("down parka", "product", 0.0),
        PendingText("wool hat", "query", 0.0),
        PendingText("wool socks", "product", 0.0),
    ]
    groups = length_groups(batch)
    assert all(len({pending.kind for pending in group}) == 1 for group in groups)
    assert sorted((p.kind, p.text) for group in groups for p in group) == sorted((p.kind, p.text) for p in batch)
    assert len(groups) == 2  # similar lengths: one group per kind
