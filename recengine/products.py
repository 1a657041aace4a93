"""Writing products one at a time (or a batch at a time): upsert, update, delete.

What decided the design (bench/catalog_updates.py, 100k products): RediSearch re-indexes a
whole hash, its vector included, on any write to it, even of an unchanged value. An HSET of
one price cost 4.8 ms of Redis' main thread (a delete and a re-insert in the HNSW graph),
against 53 µs for a hash outside the vector index. The price and stock still live in the
product hash, so that a search stays one FT.SEARCH with exact pre-filters (a separate hash
would need a second round trip and a post-filter that loses products under narrow filters);
the cost is kept to the writes that change something:

- every write goes through lua/write_product.lua, which compares and writes only the fields
  whose stored value differs: re-sending an unchanged catalogue costs no re-indexing at all;
- a product's text is embedded only when it changed: the digest of the embedded text
  (TEXT_DIGEST_FIELD) is kept in the hash beside the vector;
- update never re-embeds (the text fields are refused: they go through upsert).

A delete removes the hash and the product's popularity at once. The users' recent clicks,
seen and dismissed lists keep the id and are cleaned lazily, on read: every reader already
leaves out ids that are no longer products (product_names, and an exclusion of an id that no
search returns is a no-op).

Every write reads which generation serves in the same round trip (reload.queue_serving): one
that raced a reload's switch is sent again to the new generation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from recengine.catalog_schema import TEXT_DIGEST_FIELD, ExtraField, product_text
from recengine.errors import ProductNotFoundError, classified_errors, is_no_product_error
from recengine.layout import (
    EMBEDDING_FIELD,
    PRODUCT_FIELDS,
    PRODUCT_TEXT_FIELDS,
    KeyLayout,
    VectorFormat,
    encode_updates,
    product_fields,
)
from recengine.reload import follow_serving, glob_escape, queue_serving, refresh_serving
from recengine.replies import text
from recengine.results import ProductWrite
from recengine.scripts import ScriptCall, Scripts, WriteProduct, WriteProductReply, run_scripts_then
from recengine.store import Store

# Texts in, one row of vector_dim floats per text out: the server's own encoder, or a model's.
Embed = Callable[[list[str]], npt.ArrayLike]
# Fields the reply never names: the vector is reported as `embedded`, the digest goes with it.
_UNREPORTED = frozenset({EMBEDDING_FIELD, TEXT_DIGEST_FIELD})
# Reading the stored digests of a big upsert: products per pipelined round trip.
READ_BATCH = 1000


@dataclass(frozen=True)
class _Planned:
    """One product of an upsert, checked: its stored form without the vector, the vector it
    came with (if any), and whether its text differs from the stored one (or it is new)."""

    product_id: str
    fields: dict[str, str]
    vector: bytes | None
    text_changed: bool
    text: str


@dataclass(eq=False)
class ProductWriter:
    """Upserts, updates and deletes of one recommender's products."""

    store: Store
    keys: KeyLayout
    scripts: Scripts
    vectors: VectorFormat
    extra_fields: Sequence[ExtraField] = ()

    # upsert

    def upsert(self, products: Iterable[Mapping[str, Any]], embed: Embed | None, batch_size: int) -> list[ProductWrite]:
        """Create or update products; a new vector only where the text is new or changed (from
        the product's own `embedding`/`embedding_b64`, else from `embed`). Every product is
        checked, and every vector made, before anything is written (ValueError names the
        product)."""
        checked = [self._check(product) for product in products]
        ids = [product_id for product_id, _, _ in checked]
        if len(set(ids)) < len(ids):
            raise ValueError("the products hold an id twice: each id may appear once")
        planned = self._with_stored_texts(checked)
        vectors = self._vectors(planned, embed)
        writes: list[ProductWrite] = []
        for start in range(0, len(planned), batch_size):
            writes += self._write_batch(planned[start : start + batch_size], vectors)
        return writes

    def _check(self, product: Mapping[str, Any]) -> tuple[str, dict[str, str], bytes | None]:
        fields = product_fields(product, self.extra_fields)
        has_vector = "embedding" in product or "embedding_b64" in product
        vector = self.vectors.product_bytes(product) if has_vector else None
        return str(product["id"]), fields, vector

    def _with_stored_texts(self, checked: Sequence[tuple[str, dict[str, str], bytes | None]]) -> list[_Planned]:
        """Which products' text differs from what is stored, from the stored digests (or, for
        a product stored without one, its name and description)."""
        names = [TEXT_DIGEST_FIELD, *PRODUCT_TEXT_FIELDS]
        stored: list[Any] = []
        for start in range(0, len(checked), READ_BATCH):
            part = checked[start : start + READ_BATCH]
            pipe = self.store.pipeline()
            for product_id, _, _ in part:
                pipe.hmget(self.keys.product(product_id), names)
            queue_serving(pipe, self.keys)
            replies = self.store.execute(pipe)
            if follow_serving(self.keys, replies[-1]):
                return self._with_stored_texts(checked)
            stored += replies[:-1]
        planned = []
        for (product_id, fields, vector), (digest, name, description) in zip(checked, stored, strict=True):
            if digest is not None:
                changed = text(digest) != fields[TEXT_DIGEST_FIELD]
            else:
                changed = name is None or (text(name), text(description)) != (fields["name"], fields["description"])
            planned.append(
                _Planned(product_id, fields, vector, changed, product_text(fields["name"], fields["description"]))
            )
        return planned

    def _vectors(self, planned: Sequence[_Planned], embed: Embed | None) -> dict[str, bytes]:
        """The vectors to store: the products' own where their text changed, the others made by
        `embed` in one call."""
        vectors = {p.product_id: p.vector for p in planned if p.text_changed and p.vector is not None}
        wanted = [p for p in planned if p.text_changed and p.vector is None]
        if wanted and embed is None:
            raise ValueError(
                f"product {wanted[0].product_id!r} is new or has new text but no embedding, and no embed function "
                "was given: pass embed=<texts -> vectors> or the products' embeddings; nothing was written"
            )
        if wanted and embed is not None:
            made = np.asarray(embed([p.text for p in wanted]), dtype="<f4")
            if made.shape != (len(wanted), self.vectors.dim):
                raise ValueError(f"embed returned shape {made.shape}, expected ({len(wanted)}, {self.vectors.dim})")
            vectors.update({p.product_id: self.vectors.encode(row) for p, row in zip(wanted, made, strict=True)})
        return vectors

    def _write_batch(self, batch: Sequence[_Planned], vectors: Mapping[str, bytes]) -> list[ProductWrite]:
        declared = [extra.name for extra in self.extra_fields]
        writes = []
        for p in batch:
            fields: list[tuple[str, bytes | str]] = list(p.fields.items())
            if p.product_id in vectors:
                fields.append((EMBEDDING_FIELD, vectors[p.product_id]))
            deletes = tuple(name for name in declared if name not in p.fields)
            writes.append((p.product_id, WriteProduct("upsert", tuple(fields), deletes)))
        replies = self._run(writes)
        return [
            self._result(product_id, reply, product_id in vectors)
            for (product_id, _), reply in zip(writes, replies, strict=True)
        ]

    # update and delete

    def update(self, product_id: str, updates: Mapping[str, Any]) -> ProductWrite:
        """Set filter fields of an existing product, never its text or vector. ValueError for an
        unknown field, a text field or a bad value; ProductNotFoundError for an unknown product
        (which is never created)."""
        if not updates:
            raise ValueError("nothing to update: name at least one field (price, in_stock, ...)")
        encoded = encode_updates(updates, f"product {product_id!r}", self.extra_fields)
        while True:
            try:
                (reply,) = self._run([(product_id, WriteProduct("update", tuple(encoded.items())))])
                return self._result(product_id, reply, False)
            except redis.ResponseError as exc:
                if not is_no_product_error(exc):
                    raise
            # Not under the cached prefix: unknown, or a reload moved the catalogue meanwhile.
            if not refresh_serving(self.store, self.keys):
                raise ProductNotFoundError(product_id)

    def delete(self, product_id: str) -> bool:
        """Remove the product and its popularity; False when there was no such product."""
        popularity, _ = self.keys.popularity()
        while True:
            pipe = self.store.pipeline()
            pipe.delete(self.keys.product(product_id))
            pipe.zrem(popularity, product_id)
            queue_serving(pipe, self.keys)
            deleted, _, serving = self.store.execute(pipe)
            if not follow_serving(self.keys, serving):
                return bool(deleted)

    # reading, for a sync

    def stored(self) -> dict[str, dict[str, str]]:
        """Every stored product's fields but the vector, by id, from the serving generation: what
        a sync compares a file with."""
        refresh_serving(self.store, self.keys)
        names = [*PRODUCT_FIELDS, TEXT_DIGEST_FIELD, *(extra.name for extra in self.extra_fields)]
        prefix = self.keys.serving.prefix
        keys = [text(key) for key in self.store.primary.scan_iter(match=glob_escape(prefix) + "*", count=READ_BATCH)]
        found: dict[str, dict[str, str]] = {}
        for start in range(0, len(keys), READ_BATCH):
            part = keys[start : start + READ_BATCH]
            pipe = self.store.pipeline()
            for key in part:
                pipe.hmget(key, names)
            for key, values in zip(part, self.store.execute(pipe), strict=True):
                found[key[len(prefix) :]] = {n: text(v) for n, v in zip(names, values, strict=True) if v is not None}
        return found

    # one round trip per batch, redone on the new generation if a reload switched meanwhile

    def _run(self, writes: Sequence[tuple[str, WriteProduct]]) -> list[WriteProductReply]:
        """The writes' scripts, the serving generation and what the store's writes wait for
        (replicas, the disk) in one round trip; the first error reply is raised, classified."""

        def then(pipe: Any) -> None:
            queue_serving(pipe, self.keys)
            self.store.queue_confirmation(pipe)

        while True:
            calls = [
                ScriptCall(self.scripts.write_product, [self.keys.product(product_id)], write.argv())
                for product_id, write in writes
            ]
            with classified_errors():
                replies = run_scripts_then(self.store.primary, calls, then)
                for reply in replies[: len(calls)]:
                    if isinstance(reply, Exception):
                        raise reply
            if follow_serving(self.keys, replies[len(calls)]):
                continue  # a reload switched meanwhile: the same writes, on the new generation
            if self.store.confirms_writes:
                self.store.check_confirmation(replies[len(calls) + 1])
            return [WriteProductReply.parse(reply) for reply in replies[: len(calls)]]

    def _result(self, product_id: str, reply: WriteProductReply, embedded: bool) -> ProductWrite:
        order = {name: i for i, name in enumerate([*PRODUCT_FIELDS, *(e.name for e in self.extra_fields)])}
        fields = sorted((name for name in reply.changed if name not in _UNREPORTED), key=lambda n: order.get(n, 99))
        return ProductWrite(product_id, reply.created, embedded and EMBEDDING_FIELD in reply.changed, tuple(fields))
