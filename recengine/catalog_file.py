"""catalog.json, the hand-off between ports: embedding products, writing the file atomically,
reading one back (ours or another port's) by the input's rules, and checking that its vectors
come from the embedder in use.

The format is fixed: {"model", "dim", "products": [{id, name, description, category, brand,
price, rating, in_stock, embedding_b64}]}, embedding_b64 being the base64 of little-endian
float32 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from atomic_file import refuse_unless_regular, write_text_atomic
from embeddings import LocalEmbedder, normalize_rows, same_model
from recengine.catalog_input import CatalogError, check_record, decode_utf8, problems_error, shown
from recengine.catalog_schema import ExtraField
from recengine.catalog_schema import product_text as embedded_text
from recengine.layout import product_embedding_bytes, vector_to_bytes

# Named after the builder, whose checks these were: its warnings keep one logger name.
log = logging.getLogger("build_catalog")

# Texts per model call when embedding a catalogue.
DEFAULT_BATCH_SIZE = 32
# check_catalog_vectors: below this mean cosine a catalog was made by another model; from this
# minimum up, by the same model on an equivalent runtime.
DIFFERENT_MODEL_MEAN_COSINE = 0.98
EXACT_MIN_COSINE = 0.995


# --- embedding and the catalog file ---------------------------------------------------------


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def product_text(product: dict[str, Any]) -> str:
    """What gets embedded (catalog_schema.product_text: the same recipe as the other ports', so
    their catalogs' vectors can be checked against ours by check_catalog_vectors)."""
    return embedded_text(product["name"], product["description"])


def encode_vector(vector: Any, dim: int) -> str:
    return base64.b64encode(vector_to_bytes(vector, dim)).decode("ascii")


def embed_products(
    products: Sequence[dict[str, Any]], embedder: LocalEmbedder, batch_size: int = DEFAULT_BATCH_SIZE
) -> list[dict[str, Any]]:
    """The products with `embedding_b64` added. Batches are fixed by position, so the same
    input and batch size always group the same texts and give the same bytes."""
    vectors: list[np.ndarray] = []
    with tqdm(total=len(products), desc="embedding", unit="text") as bar:
        for batch in chunks(products, batch_size):
            vectors.extend(embedder.encode_many([product_text(p) for p in batch], batch_size=batch_size))
            bar.update(len(batch))
    return [
        {**product, "embedding_b64": encode_vector(vector, embedder.dim)}
        for product, vector in zip(products, vectors, strict=True)
    ]


def catalog_text(
    model_name: str, dim: int, products: Sequence[dict[str, Any]], extra_fields: Sequence[ExtraField] = ()
) -> str:
    """Strict JSON (no NaN) with one product per line: readable, and a changed product is a
    one-line diff. Key order is the caller's, so the same products give the same bytes. Extra
    filter fields, when there are any, are declared in "extra_fields" (other ports ignore it)."""
    rows = ",\n".join(f"    {json.dumps(product, ensure_ascii=False, allow_nan=False)}" for product in products)
    extras = [{"name": extra.name, "kind": extra.kind} for extra in extra_fields]
    declared = f'  "extra_fields": {json.dumps(extras)},\n' if extras else ""
    return (
        f'{{\n  "model": {json.dumps(model_name)},\n  "dim": {int(dim)},\n{declared}  "products": [\n{rows}\n  ]\n}}\n'
    )


def check_output(path: Path) -> None:
    """Refuse an output the build could not replace, before minutes of embedding, not after:
    a symlink, a device or a directory (atomic_file replaces only regular files), or a folder
    that does not exist."""
    try:
        refuse_unless_regular(path)
    except OSError as exc:
        raise CatalogError(f"{path}: cannot write it: {exc}") from None
    if not path.parent.is_dir():
        raise CatalogError(f"{path}: cannot write it: the folder {path.parent} does not exist")


def write_catalog(
    path: Path | str,
    model_name: str,
    dim: int,
    products: Sequence[dict[str, Any]],
    extra_fields: Sequence[ExtraField] = (),
) -> None:
    """Replace `path` atomically (atomic_file): a reader, or a crash, never sees a half-written
    catalog, and a symlink or device at `path` is refused (OSError), never written through."""
    write_text_atomic(path, catalog_text(model_name, dim, products, extra_fields))


def catalog_vectors(catalog: dict[str, Any]) -> np.ndarray:
    """(n, dim) float32 matrix of the catalog's vectors, in product order."""
    dim = int(catalog["dim"])
    blobs = [product_embedding_bytes(product, dim) for product in catalog["products"]]
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim)


def json_type(value: Any) -> str:
    """A JSON value's type in JSON's words, for messages about a file written in JSON."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def catalog_problems(
    raw_products: list[Any], dim: int, extra_fields: Sequence[ExtraField] = ()
) -> tuple[list[dict[str, Any]], list[str]]:
    """The catalog's products as the builder would have written them, checked by the builder's
    own rules (check_record), and what is wrong with each entry, named by its index and id."""
    products: list[dict[str, Any]] = []
    problems: list[str] = []
    first_index_of: dict[str, int] = {}
    for index, entry in enumerate(raw_products):
        where = f"products[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a product object, got {json_type(entry)}")
            continue
        product, record_problems = check_record(entry, False, extra_fields)
        product_id = product["id"]
        label = f"{where} (id {product_id!r})" if product_id else where
        problems += [f"{label}: {message}" for message in record_problems]
        if product_id in first_index_of:
            problems.append(
                f"{label}: duplicate id {product_id!r}, already used by products[{first_index_of[product_id]}]"
            )
        elif product_id:
            first_index_of[product_id] = index
        if "embedding_b64" not in entry and "embedding" not in entry:
            problems.append(f"{label}: no vector (embedding_b64 is missing)")
            continue
        try:
            blob = product_embedding_bytes(entry, dim)
        except (TypeError, ValueError) as exc:  # binascii.Error (bad base64) is a ValueError
            problems.append(f"{label}: {str(exc).removeprefix(f'product {product_id!r}: ')}")
            continue
        stored = entry.get("embedding_b64")
        products.append({**product, "embedding_b64": stored if isinstance(stored, str) else encode_vector(blob, dim)})
    return products, problems


def read_catalog(path: Path | str) -> dict[str, Any]:
    """A catalog written by this builder or by another port of the demo (the redis-py
    reference, Go, Node: same format, other key order, integer prices), checked by the rules
    the builder applies to its input, so that a consumer never meets a broken product halfway
    through indexing. Products come back in the builder's form: its fields, in its order,
    prices and ratings as floats, the vector as embedding_b64."""
    path = Path(path)
    try:
        text = decode_utf8(path, path.read_bytes())
    except FileNotFoundError:
        raise CatalogError(f"{path}: no such file: build it with `python build_catalog.py`") from None
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    try:
        catalog = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(
            f"{path}: not a readable catalog: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise CatalogError(f"{path}: not a readable catalog: arrays or objects nested too deeply") from None
    except ValueError as exc:
        raise CatalogError(f"{path}: not a readable catalog: {exc}") from None
    if not isinstance(catalog, dict) or not isinstance(catalog.get("products"), list):
        raise CatalogError(f"{path}: not a catalog: expected an object with model, dim and products")
    model, dim = catalog.get("model"), catalog.get("dim")
    if not isinstance(model, str) or not model.strip():
        raise CatalogError(f"{path}: not a catalog: model must name the embedding model, got {shown(model)}")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise CatalogError(f"{path}: not a catalog: dim must be a positive integer, got {shown(dim)}")
    extra_fields = declared_extra_fields(path, catalog.get("extra_fields", []))
    products, problems = catalog_problems(catalog["products"], dim, extra_fields)
    if problems:
        raise problems_error(path, problems)
    if not products:
        raise CatalogError(f"{path}: the catalog holds no products: build it with `python build_catalog.py`")
    return {"model": model, "dim": dim, "products": products, "extra_fields": extra_fields}


def declared_extra_fields(path: Path, declared: Any) -> tuple[ExtraField, ...]:
    """A catalog's "extra_fields": [{"name", "kind": "tag" | "numeric"}], as catalog_text writes it."""
    if not isinstance(declared, list):
        raise CatalogError(f"{path}: not a catalog: extra_fields must be a list, got {json_type(declared)}")
    extras = []
    for entry in declared:
        if not isinstance(entry, dict) or entry.get("kind") not in ("tag", "numeric"):
            raise CatalogError(f'{path}: not a catalog: an extra field is {{"name", "kind": "tag" or "numeric"}}')
        try:
            extras.append(ExtraField(str(entry.get("name")), entry["kind"]))
        except ValueError as exc:
            raise CatalogError(f"{path}: not a catalog: {exc}") from None
    return tuple(extras)


# --- is this catalog's model the embedder's? --------------------------------------------------


@dataclass(frozen=True)
class VectorAgreement:
    """How the catalog's stored vectors compare with the embedder's own for the same texts."""

    sampled: int
    mean_cosine: float
    min_cosine: float
    worst_id: str

    @property
    def exact(self) -> bool:
        """Same model on an equivalent runtime (torch, our ONNX export): equal up to float noise."""
        return self.min_cosine >= EXACT_MIN_COSINE


def sample_products(products: Sequence[dict[str, Any]], sample: int) -> list[dict[str, Any]]:
    """`sample` products picked by the hash of their ids: the same ones on every run and
    whatever the catalog's order, spread over its categories rather than the first few."""
    return sorted(products, key=lambda product: hashlib.sha256(product["id"].encode()).digest())[:sample]


def check_catalog_vectors(
    catalog: dict[str, Any], embedder: LocalEmbedder, sample: int = 16, *, source: Path | str | None = None
) -> VectorAgreement:
    """Whether `embedder` made (or could have made) the catalog's vectors, judged on the vectors
    rather than on the model's name: a sample of products is embedded again from the text the
    builder embeds, and compared with the stored vectors by cosine.

    - mean cosine below 0.98: another model; CatalogError, as queries would be compared with
      vectors in another space and every ranking would be noise;
    - all at least 0.995: the same model; silent;
    - in between: the same weights on another runtime (the Node port's quantized ONNX
      all-MiniLM-L6-v2 is within a minimum cosine of about 0.986 of ours); one warning line.

    Names that denote the same weights differently (embeddings.same_model) are not a problem;
    a name of other weights whose vectors match anyway gets a log line, not an error."""
    if sample < 1:
        raise ValueError(f"sample must be at least 1, got {sample}")
    where = f"{source}" if source is not None else "the catalog"
    dim, name = int(catalog["dim"]), str(catalog["model"])
    if dim != embedder.dim:
        raise CatalogError(
            f"{where} holds {dim}-dimensional vectors from {name}, but {embedder.model_name} makes "
            f"{embedder.dim}-dimensional ones: rebuild it with `python build_catalog.py --model {embedder.model_name}` "
            f"or load the model it was built with (--model {name})"
        )
    chosen = sample_products(catalog["products"], sample)
    if not chosen:
        raise CatalogError(f"{where} holds no products to check")
    stored = normalize_rows(np.stack([np.frombuffer(product_embedding_bytes(p, dim), dtype="<f4") for p in chosen]))
    fresh = embedder.encode_many([product_text(product) for product in chosen])
    cosines = np.sum(stored * fresh, axis=1)
    worst = int(np.argmin(cosines))
    agreement = VectorAgreement(len(chosen), float(cosines.mean()), float(cosines[worst]), chosen[worst]["id"])
    if agreement.mean_cosine < DIFFERENT_MODEL_MEAN_COSINE:
        raise CatalogError(
            f"{where} was not embedded with {embedder.model_name} (it says {name}): re-embedding {agreement.sampled} "
            f"of its products gives a mean cosine of {agreement.mean_cosine:.3f} with the stored vectors, where the "
            f"same model gives at least {DIFFERENT_MODEL_MEAN_COSINE}: rebuild it with `python build_catalog.py` "
            "or load the model it was built with (--model)"
        )
    if not agreement.exact:
        log.warning(
            "%s: its vectors (%s) agree with %s only roughly: cosine mean %.4f, min %.4f (%s) over %d products; "
            "the same weights on another runtime, so it is used as it is",
            where,
            name,
            embedder.model_name,
            agreement.mean_cosine,
            agreement.min_cosine,
            agreement.worst_id,
            agreement.sampled,
        )
    if not same_model(name, embedder.model_name):
        log.info("%s says model %s, and its vectors match %s's: using it", where, name, embedder.model_name)
    return agreement
