"""The product catalogue in Redis: the index (create, drop, health) and the product hashes
(written in checked batches, read for display, one vector refreshed in place)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt
import redis

from recengine import query
from recengine.catalog_schema import ExtraField, split_levels
from recengine.errors import (
    IndexMissingError,
    ProductNotFoundError,
    classified_errors,
    is_index_exists_error,
    is_no_product_error,
)
from recengine.intent import Vocabulary
from recengine.layout import PRODUCT_FIELDS, KeyLayout, VectorFormat, VectorType, index_schema, product_to_hash
from recengine.reload import follow_serving, queue_serving, refresh_serving
from recengine.replies import (
    aggregate_rows,
    index_info_from,
    index_vector_type,
    number,
    product_summary,
    raw_rows,
    text,
)
from recengine.results import IndexInfo
from recengine.scripts import RefreshEmbedding, ScriptCall, Scripts, run_scripts_then
from recengine.store import Store

# "Cheap" means the cheapest third of the catalogue.
CHEAP_QUANTILE = 1 / 3


def read_vector_type(store: Store, keys: KeyLayout) -> VectorType | None:
    """The element type of the index's vectors (FT.INFO); None when there is no index."""
    try:
        return index_vector_type(store.command(*query.info_command(keys.index_name)))
    except IndexMissingError:
        return None


@dataclass(eq=False)
class Catalog:
    """The index and the products of one recommender."""

    store: Store
    keys: KeyLayout
    scripts: Scripts
    vectors: VectorFormat
    hnsw_m: int | None
    hnsw_ef_construction: int | None
    extra_fields: Sequence[ExtraField] = ()

    # the index

    def schema(self) -> list[str]:
        return index_schema(
            self.vectors.dim, self.hnsw_m, self.hnsw_ef_construction, self.extra_fields, self.vectors.vector_type
        )

    def info(self) -> IndexInfo:
        """FT.INFO; IndexMissingError when there is no index."""
        return index_info_from(self.keys.index_name, self.store.command(*query.info_command(self.keys.index_name)))

    def exists(self) -> bool:
        try:
            self.info()
        except IndexMissingError:
            return False
        return True

    def create(self) -> bool:
        """The real index `index_name` over `key_prefix` (generation 0, the layout every port
        shares), if no index of that name (or alias) serves. The catalogue hash of a generation
        that served before goes with it, so that every process reads and writes generation 0."""
        if self.exists():
            return False
        vector_type = self.vectors.vector_type
        command = query.create_index_command(self.keys.index_name, self.keys.key_prefix, self.schema())
        try:
            self.store.command(*command)
        except redis.ResponseError as exc:  # already classified: only "exists" is not an error here
            if is_index_exists_error(exc):
                self.vectors.learn(None)  # another process made it: read its type when next needed
                return False
            raise
        self.vectors.learn(vector_type)
        self.store.primary.delete(self.keys.catalog_meta())
        self.keys.serving.move_to(0, self.keys.key_prefix)
        return True

    def drop(self, delete_documents: bool) -> bool:
        try:
            self.store.command(*query.drop_index_command(self.keys.index_name, delete_documents))
        except IndexMissingError:
            return False
        finally:
            self.vectors.learn(None)
        return True

    def count(self) -> int:
        try:
            return self.info().num_docs
        except IndexMissingError:
            return 0

    def wait_until_indexed(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.info().percent_indexed < 1.0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"index {self.keys.index_name} still scanning after {timeout_s}s")
            time.sleep(0.02)

    def keys_of(self, product_ids: Iterable[str]) -> list[str]:
        """Products' keys in the generation serving now: Redis is asked once a call, since the
        caller (product_key and product_keys, for scripts and tests that touch hashes directly)
        may run in a thread whose cached view a reload elsewhere left behind."""
        refresh_serving(self.store, self.keys)
        return [self.keys.product(product_id) for product_id in product_ids]

    # writing products

    def index_products(self, products: Iterable[Mapping[str, Any]], batch_size: int) -> int:
        """Every product checked (a whole batch before any of it is sent), then HSET by batch,
        into the generation serving (read first: a reload may have moved the catalogue)."""
        refresh_serving(self.store, self.keys)
        written = 0
        batch: list[tuple[str, dict[str, bytes | str]]] = []
        dim, vector_type = self.vectors.dim, self.vectors.vector_type
        for product in products:
            if not str(product.get("id", "")).strip():
                raise ValueError(f"product without an id: {dict(product).get('name')!r}")
            stored = product_to_hash(product, dim, self.extra_fields, vector_type)
            batch.append((self.keys.product(str(product["id"])), stored))
            if len(batch) >= batch_size:
                written += self.store.write_hashes(batch)
                batch = []
        return written + self.store.write_hashes(batch)

    def refresh_embedding(self, product_id: str, new_vector: npt.ArrayLike) -> None:
        """One script, so the product cannot be re-created; then what the store's writes wait
        for (replicas, the disk), when anything. A product missing under the cached key prefix is
        looked for again in the generation the catalogue hash names (a reload may have moved it)."""
        argv = RefreshEmbedding(self.vectors.encode(new_vector)).argv()
        while True:
            call = ScriptCall(self.scripts.refresh_embedding, [self.keys.product(product_id)], argv)
            try:
                with classified_errors():
                    if self.store.confirms_writes:
                        written, confirmation = run_scripts_then(
                            self.store.primary, [call], self.store.queue_confirmation
                        )
                        if isinstance(written, Exception):
                            raise written
                        self.store.check_confirmation(confirmation)
                    else:
                        call.script(keys=call.keys, args=call.args)
                return
            except redis.ResponseError as exc:
                if not is_no_product_error(exc):
                    raise
            if not refresh_serving(self.store, self.keys):
                raise ProductNotFoundError(product_id)

    # reading products

    def get_products(self, product_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Display fields from the primary, from the generation serving (read in the same round
        trip); unknown ids are left out."""
        while True:
            pipe = self.store.pipeline()
            for pid in product_ids:
                pipe.hmget(self.keys.product(pid), list(PRODUCT_FIELDS))
            queue_serving(pipe, self.keys)
            *replies, serving = self.store.execute(pipe)
            if not follow_serving(self.keys, serving):
                break
        found = {}
        for pid, values in zip(product_ids, replies, strict=True):
            if all(v is None for v in values):  # no such key; a hash that lacks a field still exists
                continue
            stored = {name: text(v) for name, v in zip(PRODUCT_FIELDS, values, strict=True) if v is not None}
            found[pid] = product_summary(pid, stored)
        return found

    def queue_names(self, pipe: Any, product_ids: Sequence[str]) -> None:
        """The products' names, queued on a pipeline the caller may share (a click's answer
        reads them in the click's own round trip)."""
        for pid in product_ids:
            pipe.hget(self.keys.product(pid), "name")

    def names_from(self, product_ids: Sequence[str], replies: Sequence[Any]) -> dict[str, str]:
        """Names by id from the replies of queue_names; unknown products and empty names left out."""
        return {pid: text(name) for pid, name in zip(product_ids, replies, strict=True) if name}

    def product_names(self, product_ids: Sequence[str]) -> dict[str, str]:
        """Names by id, from the primary, in one round trip (none for no ids)."""
        if not product_ids:
            return {}
        pipe = self.store.pipeline()
        self.queue_names(pipe, product_ids)
        return self.names_from(product_ids, self.store.execute(pipe))

    def list_products(self, limit: int) -> list[dict[str, Any]]:
        response = self.store.search(query.by_price_search_command(self.keys.index_name, limit))
        return [
            product_summary(self.keys.product_id(key), {n: text(v) for n, v in raw.items()})
            for key, raw in raw_rows(response)
        ]

    def distinct_values(self, field_name: str) -> list[str]:
        """No index has no values (an empty list, as in the reference)."""
        try:
            response = self.store.search(query.distinct_values_command(self.keys.index_name, field_name))
        except IndexMissingError:
            return []
        values = {fields.get(field_name, "") for fields in aggregate_rows(response)}
        if field_name == "category":  # a path is stored as its every level: each is a category
            values = {level for value in values for level in split_levels(value)}
        return sorted(v for v in values if v)

    def vocabulary(self) -> Vocabulary:
        """The facet values query understanding recognises, from the index itself (so a user's own
        catalogue needs no configuration): its brands and categories as written, and the price
        below which a third of its products lie ("cheap"). One pipelined round trip."""
        index = self.keys.index_name
        replies = self.store.search_many(
            [
                query.distinct_values_command(index, "brand"),
                query.distinct_values_command(index, "category"),
                query.price_quantile_command(index, CHEAP_QUANTILE),
            ]
        )
        brands, categories = (
            tuple(sorted({row.get(name, "") for row in aggregate_rows(reply)} - {""}))
            for name, reply in (("brand", replies[0]), ("category", replies[1]))
        )
        prices = [number(row.get("price"), default=math.nan) for row in aggregate_rows(replies[2])]
        cheap = prices[0] if prices and math.isfinite(prices[0]) else None
        return Vocabulary(brands, categories, cheap)
