"""Generations of the catalogue: which one the index name serves, and a reload that replaces the
whole catalogue without downtime by building the next one beside it.

One implementation for every full replacement: `/reset-index`, a reload from a file, a new
embedding model, and a server that finds its index missing. What searches see:

    before        recommend:idx (a real index, or an alias)  ->  products under product:  (or product@g:)
    building      the same, untouched; recommend:idx@n is filled under product@n:
    switch        MULTI: FT.ALIASUPDATE recommend:idx recommend:idx@n; HSET recommend:idx:catalog ...; EXEC
    after         recommend:idx -> recommend:idx@n; the old index is dropped and its keys unlinked

- The name searches use becomes an alias of the generation's index. A real index of that name
  (generation 0, what create_index makes, under key_prefix itself: the layout every port
  shares) shadows an alias of the same name, so the first switch adds the alias and drops the
  real index in one MULTI: there is no instant without an index. A reload when nothing serves
  builds generation 0 (`<index_name>@0` over key_prefix itself), so a first load keeps the shared
  layout. Names: layout.KeyLayout.
- `<index_name>:catalog` (a hash) says what serves: generation, key prefix, products, model,
  dim, when it switched, and a prefix still being removed (`retiring_prefix`). It is written in
  the same MULTI as the alias. Readers and writers of one product read it in the same pipeline
  as their own commands (queue_serving / follow_serving), so a process that cached the old
  prefix follows a switch without an extra round trip, and a write that raced a switch is
  redone on the new generation.
- Reloads are serialised by a lock key with a token and an expiry that the holder renews per
  batch (lua/reload_lock.lua): a second reloader waits for it, up to `lock_wait_s`, then gets
  ReloadInProgressError; a killed one lets it expire.
- A failure before the switch (Redis at maxmemory, a lost connection) drops the half-built
  generation and raises ReloadFailedError saying that the old catalogue is still serving. A
  reload killed half-way leaves an index `<index_name>@<n>` that serves nothing: the next reload
  drops it with its keys before it starts, and finishes removing a retired prefix.

Memory: during a reload Redis holds both generations (about twice the catalogue's memory).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from recengine.catalog_schema import ExtraField
from recengine.errors import (
    IndexMissingError,
    ReloadError,
    ReloadFailedError,
    ReloadInProgressError,
    WriteRefusedError,
    classify_response_error,
)
from recengine.layout import KeyLayout, VectorFormat, product_to_hash
from recengine.replies import info_dict, number, text
from recengine.results import ReloadResult, Serving
from recengine.scripts import ReloadLock, Scripts
from recengine.store import Store

log = logging.getLogger("recommender")

RELOAD_BATCH_SIZE = 500
UNLINK_BATCH_SIZE = 500
LOCK_TTL_MS = 60_000
DEFAULT_LOCK_WAIT_S = 300.0
INDEX_WAIT_S = 600.0
SERVING_FIELDS = ("generation", "key_prefix")


# --- which generation serves: read beside a product's own commands ------------------------------


def queue_serving(pipe: Any, keys: KeyLayout) -> None:
    """Queue the read of the serving generation (its reply goes to follow_serving)."""
    pipe.hmget(keys.catalog_meta(), list(SERVING_FIELDS))


def follow_serving(keys: KeyLayout, reply: Sequence[Any]) -> bool:
    """Move the cached key prefix to the generation the catalogue hash names (generation 0,
    key_prefix, before any reload); True when it moved: the commands that went with the read
    used the old prefix and must be sent again."""
    generation, prefix = reply
    if generation is None or prefix is None:
        return keys.serving.move_to(0, keys.key_prefix)
    return keys.serving.move_to(int(number(generation)), text(prefix))


def refresh_serving(store: Store, keys: KeyLayout) -> bool:
    """Ask Redis which generation serves, in a round trip of its own, and follow it; True when
    the cached prefix moved (for a caller whose write found no product under the old one)."""
    pipe = store.pipeline()
    queue_serving(pipe, keys)
    return follow_serving(keys, store.execute(pipe)[0])


def glob_escape(value: str) -> str:
    """A literal for SCAN MATCH: every glob metacharacter backslash-escaped."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", value)


def unlink_prefix(client: Any, prefix: str) -> int:
    """UNLINK every key under `prefix`, in batches: no single command holds Redis for long."""
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=glob_escape(prefix) + "*", count=UNLINK_BATCH_SIZE):
        batch.append(key)
        if len(batch) >= UNLINK_BATCH_SIZE:
            removed += int(client.unlink(*batch))
            batch = []
    if batch:
        removed += int(client.unlink(*batch))
    return removed


# --- the reload -----------------------------------------------------------------------------------


class _Lock:
    """The reload lock: SET NX with a token and an expiry, renewed per batch by its holder."""

    def __init__(self, client: Any, scripts: Scripts, key: str, ttl_ms: int) -> None:
        self.client = client
        self.script = scripts.reload_lock
        self.key = key
        self.ttl_ms = ttl_ms
        self.token = secrets.token_hex(16)

    def acquire(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while not self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            if time.monotonic() >= deadline:
                raise ReloadInProgressError(
                    f"another reload of this catalogue is running (lock {self.key}); waited {wait_s:g} s"
                )
            time.sleep(0.05)

    def renew(self) -> None:
        if not self.script(keys=[self.key], args=ReloadLock("renew", self.token, self.ttl_ms).argv()):
            raise ReloadError(f"lost the reload lock {self.key} (it expired): another reload may be running")

    def release(self) -> None:
        try:
            self.script(keys=[self.key], args=ReloadLock("release", self.token).argv())
        except redis.RedisError as exc:  # it expires by itself
            log.warning("could not release the reload lock %s: %s", self.key, exc)


@dataclass(eq=False)
class Reloads:
    """Reloads of one recommender's catalogue (see the module's docstring)."""

    store: Store
    keys: KeyLayout
    scripts: Scripts
    vectors: VectorFormat
    schema: Callable[[], list[str]]
    extra_fields: Sequence[ExtraField] = ()

    @property
    def client(self) -> Any:
        return self.store.primary

    def serving(self) -> Serving | None:
        """What the index name answers from now; None when there is no index by that name."""
        try:
            info = info_dict(self.store.command("FT.INFO", self.keys.index_name))
        except IndexMissingError:
            return None
        index = text(info.get("index_name", self.keys.index_name))
        definition = info_dict(info.get("index_definition") or [])
        prefixes = definition.get("prefixes") or [self.keys.key_prefix]
        generation = self._generation_of_index(index) or 0
        return Serving(generation, index, text(prefixes[0]), int(number(info.get("num_docs"))))

    def _generation_of_index(self, name: str) -> int | None:
        found = re.fullmatch(re.escape(self.keys.index_name) + r"@(\d+)", name)
        return int(found.group(1)) if found else None

    def reload(
        self,
        products: Iterable[Mapping[str, Any]],
        *,
        model: str,
        lock_wait_s: float,
        batch_size: int,
        lock_ttl_ms: int,
        progress: Callable[[int, int], None] | None,
    ) -> ReloadResult:
        """Replace every product the index name serves by `products` (see
        RedisRecommender.reload_catalog)."""
        if self.store.is_cluster:
            raise ValueError(
                "reload_catalog needs one Redis (FT.ALIASUPDATE in a MULTI): on a cluster, load with "
                "drop_index, create_index and index_products"
            )
        dim, vector_type = self.vectors.dim, self.vectors.vector_type
        hashes = [(str(p.get("id", "")), product_to_hash(p, dim, self.extra_fields, vector_type)) for p in products]
        if not hashes:
            raise ValueError("a reload needs at least one product")
        duplicates = len(hashes) - len({product_id for product_id, _ in hashes})
        if duplicates:
            raise ValueError(f"the products hold {duplicates} duplicate id(s): each id may appear once")
        lock = _Lock(self.client, self.scripts, self.keys.reload_lock(), lock_ttl_ms)
        before: Serving | None = None
        try:
            before = self.serving()
            lock.acquire(lock_wait_s)
            self._remove_leftovers()
            before = self.serving()
            generation = self._next_generation(before)
        except redis.RedisError as exc:
            lock.release()
            raise _failed(before, exc, 0, len(hashes)) from exc
        try:
            started = time.perf_counter()
            built = self._build(generation, hashes, before, lock, batch_size, progress)
            build_s = time.perf_counter() - started
            switched = time.perf_counter()
            self._switch(before, built, model)
            switch_ms = (time.perf_counter() - switched) * 1000
            cleaned = time.perf_counter()
            removed = self._retire(before) if before is not None else 0
            cleanup_s = time.perf_counter() - cleaned
        finally:
            lock.release()
        self.keys.serving.move_to(built.generation, built.key_prefix)
        log.info(
            "%s now serves %s (was %s): built in %.1f s, switched in %.1f ms, %d old keys removed in %.1f s",
            self.keys.index_name,
            built.describe(),
            before.describe() if before else "nothing",
            build_s,
            switch_ms,
            removed,
            cleanup_s,
        )
        return ReloadResult(built, before, len(hashes), build_s, switch_ms, removed, cleanup_s)

    def _existing_generations(self) -> list[int]:
        names = [text(name) for name in self.store.command("FT._LIST")]
        return sorted(g for g in map(self._generation_of_index, names) if g is not None)

    def _next_generation(self, before: Serving | None) -> int:
        """Generation 0 when nothing serves (a first load keeps the layout every port shares,
        products under key_prefix itself); the next number otherwise."""
        if before is None:
            return 0
        recorded = self.client.hget(self.keys.catalog_meta(), "generation")
        highest = max([before.generation, *self._existing_generations()])
        return max(highest, int(number(recorded))) + 1

    def _remove_leftovers(self) -> None:
        """What a killed reload left: a generation's index that serves nothing (dropped with its
        keys), and a retired prefix whose keys were not all removed."""
        current = self.serving()
        for generation in self._existing_generations():
            index = self.keys.generation_index(generation)
            if current is None or index != current.index:
                log.warning("dropping %s, left by an unfinished reload", index)
                self.store.command("FT.DROPINDEX", index, "DD")
        retiring = self.client.hget(self.keys.catalog_meta(), "retiring_prefix")
        if retiring is not None and (current is None or text(retiring) != current.key_prefix):
            unlink_prefix(self.client, text(retiring))
            self.client.hdel(self.keys.catalog_meta(), "retiring_prefix")

    def _build(
        self,
        generation: int,
        hashes: Sequence[tuple[str, Mapping[str, Any]]],
        before: Serving | None,
        lock: _Lock,
        batch_size: int,
        progress: Callable[[int, int], None] | None,
    ) -> Serving:
        index = self.keys.generation_index(generation)
        prefix = self.keys.generation_prefix(generation)
        if before is not None and (prefix.startswith(before.key_prefix) or before.key_prefix.startswith(prefix)):
            raise ReloadError(
                f"key prefix {self.keys.key_prefix!r} cannot be versioned: {prefix!r} and {before.key_prefix!r} "
                "nest (use a key prefix that ends with ':')"
            )
        written = 0
        try:
            # Nothing may live under the new prefix yet (a key a killed reload left would join the
            # catalogue), and so the index skips the scan of existing keys: a scan running while
            # the products are written re-indexes them, vector and all, a second time (measured:
            # a 40k reload stalled at 18 % of its scan after 6 minutes).
            unlink_prefix(self.client, prefix)
            self.store.command(
                "FT.CREATE", index, "ON", "HASH", "PREFIX", "1", prefix, "STOPWORDS", "0", "SKIPINITIALSCAN",
                "SCHEMA", *self.schema(),
            )  # fmt: skip
            for start in range(0, len(hashes), batch_size):
                batch = hashes[start : start + batch_size]
                self.store.write_hashes([(f"{prefix}{product_id}", dict(mapping)) for product_id, mapping in batch])
                written += len(batch)
                lock.renew()
                if progress is not None:
                    progress(written, len(hashes))
            self._wait_indexed(index, len(hashes))
        except (redis.RedisError, ReloadError) as exc:
            self._abandon(index)
            raise _failed(before, exc, written, len(hashes)) from exc
        return Serving(generation, index, prefix, len(hashes))

    def _wait_indexed(self, index: str, expected: int) -> None:
        deadline = time.monotonic() + INDEX_WAIT_S
        while True:
            info = info_dict(self.store.command("FT.INFO", index))
            if number(info.get("percent_indexed"), 1.0) >= 1.0 and number(info.get("num_docs")) >= expected:
                return
            if time.monotonic() > deadline:
                raise ReloadError(f"{index} was still indexing after {INDEX_WAIT_S:g} s")
            time.sleep(0.05)

    def _abandon(self, index: str) -> None:
        """Drop a half-built generation with its keys; when even that fails, the next reload does."""
        try:
            self.store.command("FT.DROPINDEX", index, "DD")
        except redis.RedisError as exc:
            log.warning("could not drop the half-built %s (%s): the next reload will", index, exc)

    def _switch(self, before: Serving | None, built: Serving, model: str) -> None:
        """One MULTI: the name points at the new index and the catalogue hash says so. Over a real
        index of that name (generation 0), which shadows any alias, the alias is added and the
        real index dropped (its keys stay until _retire)."""
        pipe = self.client.pipeline(transaction=True)
        if before is not None and before.index == self.keys.index_name:
            pipe.execute_command("FT.ALIASADD", self.keys.index_name, built.index)
            pipe.execute_command("FT.DROPINDEX", self.keys.index_name)
        else:
            pipe.execute_command("FT.ALIASUPDATE", self.keys.index_name, built.index)
        meta: dict[str, str | int] = {
            "generation": built.generation,
            "index": built.index,
            "key_prefix": built.key_prefix,
            "products": built.products,
            "model": model,
            "dim": self.vectors.dim,
            "switched_at": repr(time.time()),
        }
        if before is not None:
            meta["retiring_prefix"] = before.key_prefix
        pipe.hset(self.keys.catalog_meta(), mapping=meta)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            self._abandon(built.index)
            raise _failed(before, exc, built.products, built.products) from exc

    def _retire(self, before: Serving) -> int:
        """Drop the old generation's index (unless the switch did: generation 0) and unlink its
        keys. The switch is done by then: a failure here is logged, and the next reload finishes
        the job (`retiring_prefix`)."""
        try:
            if before.index != self.keys.index_name:  # the real one was dropped by the switch
                self.store.command("FT.DROPINDEX", before.index)
            removed = unlink_prefix(self.client, before.key_prefix)
            self.client.hdel(self.keys.catalog_meta(), "retiring_prefix")
        except redis.RedisError as exc:
            log.warning(
                "%s: could not remove all of %s (%s); the next reload will",
                self.keys.index_name,
                before.describe(),
                exc,
            )
            return 0
        return removed


def _failed(before: Serving | None, exc: Exception, written: int, total: int) -> ReloadFailedError:
    """What a reload that did not switch tells its caller: why, how far it got, and what serves."""
    classified = classify_response_error(exc) if isinstance(exc, redis.ResponseError) else exc
    # The reason in words, not Redis' whole reply (which quotes the failing command, product and all).
    reason = f"Redis refused a write: {classified.reason}" if isinstance(classified, WriteRefusedError) else classified
    still = (
        f"the previous catalogue, {before.describe()}, is still serving"
        if before is not None
        else "there was no catalogue before, and there is none now"
    )
    return ReloadFailedError(
        f"the reload failed after writing {written:,} of {total:,} products ({reason}); nothing of it was kept, "
        f"and {still}",
        before,
        written,
        total,
    )
