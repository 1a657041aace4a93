"""Replace the whole catalogue without downtime: build a new generation beside the serving one,
switch the index name to it in one step, then remove the old one.

One implementation for every full replacement: `/reset-index`, a reload from a file, a new
embedding model, and a server that finds its index missing. What searches see:

    before        recommend:idx (a real index, or an alias)  ->  products under product:      (or product@g:)
    building      the same, untouched; recommend:idx@n is filled under product@n:
    switch        MULTI: FT.ALIASUPDATE recommend:idx recommend:idx@n; HSET recommend:idx:catalog ...; EXEC
    after         recommend:idx -> recommend:idx@n; the old index is dropped and its keys unlinked

- The name searches use (`index_name`) becomes an alias of the generation's index. A real index
  of that name (generation 0, what `create_index` makes, under `key_prefix` itself: the layout
  every port shares) shadows an alias of the same name, so the first switch adds the alias and
  drops the real index in one MULTI: there is no instant without an index.
- Generation n > 0 keeps its products under `<key_prefix without its final ':'>@<n>:`, which
  never starts with another generation's prefix, so no index ever sees another's keys.
- `<index_name>:catalog` (a hash) says what serves: generation, key prefix, product count,
  model, dim, when it switched, and a prefix still being removed (`retiring_prefix`). It is
  written in the same MULTI as the alias, so a reader that checks it after a write knows which
  generation the write went to (see `serving_prefix`).
- Reloads are serialised by a lock key with a token and an expiry that the holder renews per
  batch: a second reloader (another worker) waits for it; a killed one lets it expire.
- A failure before the switch (Redis at maxmemory, a lost connection, a bad product) drops the
  half-built generation and raises ReloadFailedError saying that the old catalogue still
  serves. A reload killed half-way leaves an index `<index_name>@<n>` that serves nothing: the
  next reload drops it with its keys before it starts, and finishes removing a retired prefix.

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

from recommender import (
    RecommenderError,
    RedisRecommender,
    classify_response_error,
    info_dict,
    product_to_hash,
)

log = logging.getLogger(__name__)

RELOAD_BATCH_SIZE = 500
UNLINK_BATCH_SIZE = 500
LOCK_TTL_MS = 60_000
DEFAULT_LOCK_WAIT_S = 300.0
INDEX_WAIT_S = 600.0

# Compare-and-renew and compare-and-delete of the lock: only its holder may extend or free it.
_RENEW_LOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE_LOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ReloadError(RecommenderError):
    """A reload that did not switch. The catalogue that served before it still serves."""


class ReloadInProgressError(ReloadError):
    """Another reload held the lock for longer than this one was willing to wait."""


class ReloadFailedError(ReloadError):
    """The new generation could not be built (Redis refused a write, the connection dropped, a
    product was invalid). What was written of it has been removed (or will be, by the next
    reload, if even that failed); `serving` names the generation that still serves."""

    def __init__(self, message: str, serving: Serving, written: int, total: int) -> None:
        super().__init__(message)
        self.serving = serving
        self.written = written
        self.total = total


@dataclass(frozen=True)
class Serving:
    """What `index_name` answers from: its generation (0 for the real index `create_index`
    makes), the index and key prefix of that generation, and how many products it holds."""

    generation: int
    index: str
    key_prefix: str
    products: int

    def describe(self) -> str:
        return f"generation {self.generation} ({self.products:,} products under {self.key_prefix!r})"


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did: the generation now serving and the one it replaced, products
    written, seconds spent building (write and index), switching, and removing the old keys."""

    serving: Serving
    replaced: Serving | None
    written: int
    build_s: float
    switch_ms: float
    removed_keys: int
    cleanup_s: float


# --- names: the only place that spells them ---------------------------------------------------


def generation_index(index_name: str, generation: int) -> str:
    """The real index of generation n > 0; generation 0 is `index_name` itself."""
    return index_name if generation == 0 else f"{index_name}@{generation}"


def generation_prefix(key_prefix: str, generation: int) -> str:
    """`product:` for generation 0, `product@n:` after: no generation's prefix starts with
    another's, so an index over one never picks up the keys of the next."""
    return key_prefix if generation == 0 else f"{key_prefix.removesuffix(':')}@{generation}:"


def catalog_meta_key(index_name: str) -> str:
    return f"{index_name}:catalog"


def reload_lock_key(index_name: str) -> str:
    return f"{index_name}:reload-lock"


_GENERATION_INDEX = re.compile(r"@(\d+)$")


def _glob_escape(text: str) -> str:
    """A literal for SCAN MATCH: every glob metacharacter backslash-escaped."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


# --- reading what serves ------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def serving(rec: RedisRecommender) -> Serving | None:
    """What `rec.index_name` answers from now; None when there is no index by that name."""
    meta = {_text(k): _text(v) for k, v in rec.redis.hgetall(catalog_meta_key(rec.index_name)).items()}
    try:
        info = info_dict(rec.redis.execute_command("FT.INFO", rec.index_name))
    except redis.ResponseError as exc:
        if "no such index" in str(exc).lower() or "unknown index name" in str(exc).lower():
            return None
        raise classify_response_error(exc) from exc
    index = _text(info.get("index_name", rec.index_name))
    definition = info_dict(info.get("index_definition") or [])
    prefixes = definition.get("prefixes") or [rec.key_prefix.encode()]
    found = _GENERATION_INDEX.search(index) if index != rec.index_name else None
    generation = int(found.group(1)) if found else 0
    if meta and int(meta.get("generation", -1)) != generation:
        log.warning("%s says generation %s, but the index serves generation %d", rec.index_name, meta, generation)
    return Serving(generation, index, _text(prefixes[0]), int(float(_text(info.get("num_docs", 0)))))


def serving_prefix(client: Any, index_name: str, default: str) -> str:
    """The key prefix of the serving generation, from the catalogue hash (one HGET); `default`
    (the configured key_prefix) before the first reload."""
    value = client.hget(catalog_meta_key(index_name), "key_prefix")
    return _text(value) if value is not None else default


# --- the reload ---------------------------------------------------------------------------------


class _Lock:
    """The reload lock: SET NX with a token and an expiry, renewed per batch by its holder."""

    def __init__(self, client: Any, key: str, ttl_ms: int) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = ttl_ms
        self.token = secrets.token_hex(16)
        self._renew = client.register_script(_RENEW_LOCK_LUA)
        self._release = client.register_script(_RELEASE_LOCK_LUA)

    def acquire(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while not self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            if time.monotonic() > deadline:
                raise ReloadInProgressError(
                    f"another reload of this catalogue is running (lock {self.key}); waited {wait_s:g} s"
                )
            time.sleep(0.05)

    def renew(self) -> None:
        if not self._renew(keys=[self.key], args=[self.token, self.ttl_ms]):
            raise ReloadError(f"lost the reload lock {self.key} (it expired): another reload may be running")

    def release(self) -> None:
        try:
            self._release(keys=[self.key], args=[self.token])
        except redis.RedisError as exc:  # it expires by itself
            log.warning("could not release the reload lock %s: %s", self.key, exc)


def reload_catalog(
    rec: RedisRecommender,
    products: Iterable[Mapping[str, Any]],
    *,
    model: str = "",
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
    batch_size: int = RELOAD_BATCH_SIZE,
    lock_ttl_ms: int = LOCK_TTL_MS,
    progress: Callable[[int, int], None] | None = None,
) -> ReloadResult:
    """Replace every product `rec.index_name` serves by `products` (each with an `embedding` or
    `embedding_b64` of rec.vector_dim floats), with no moment where searches miss the index or
    see a mixture. Every product is checked (ValueError) before anything is written.

    Raises ReloadInProgressError when another reload holds the lock past `lock_wait_s`, and
    ReloadFailedError (the old catalogue still serving) when building the new one fails.
    `progress(written, total)` is called after each batch. The lock expires `lock_ttl_ms` after
    its last renewal, so a reloader that was killed holds it no longer than that."""
    hashes = [(str(product["id"]), product_to_hash(product, rec.vector_dim)) for product in products]
    if not hashes:
        raise ValueError("a reload needs at least one product")
    lock = _Lock(rec.redis, reload_lock_key(rec.index_name), lock_ttl_ms)
    before: Serving | None = None
    try:
        before = serving(rec)
        lock.acquire(lock_wait_s)
        _remove_leftovers(rec)
        before = serving(rec)
        generation = _next_generation(rec, before)
    except redis.RedisError as exc:
        lock.release()
        raise _failed(rec, before, exc, 0, len(hashes)) from exc
    try:
        started = time.perf_counter()
        built = _build(rec, generation, hashes, before, lock, batch_size, progress)
        build_s = time.perf_counter() - started
        switched = time.perf_counter()
        _switch(rec, before, built, model)
        switch_ms = (time.perf_counter() - switched) * 1000
        cleaned = time.perf_counter()
        removed = _retire(rec, before) if before is not None else 0
        cleanup_s = time.perf_counter() - cleaned
    finally:
        lock.release()
    log.info(
        "%s now serves %s (was %s): built in %.1f s, switched in %.1f ms, %d old keys removed in %.1f s",
        rec.index_name,
        built.describe(),
        before.describe() if before else "nothing",
        build_s,
        switch_ms,
        removed,
        cleanup_s,
    )
    return ReloadResult(built, before, len(hashes), build_s, switch_ms, removed, cleanup_s)


def _existing_generations(rec: RedisRecommender) -> list[int]:
    pattern = re.compile(re.escape(rec.index_name) + r"@(\d+)$")
    names = [_text(name) for name in rec.redis.execute_command("FT._LIST")]
    return sorted(int(m.group(1)) for m in map(pattern.match, names) if m)


def _next_generation(rec: RedisRecommender, before: Serving | None) -> int:
    highest = max([before.generation if before else 0, *_existing_generations(rec)])
    meta_generation = rec.redis.hget(catalog_meta_key(rec.index_name), "generation")
    return max(highest, int(_text(meta_generation)) if meta_generation is not None else 0) + 1


def _remove_leftovers(rec: RedisRecommender) -> None:
    """What a killed reload left: a generation's index that serves nothing (dropped with its
    keys), and a retired prefix whose keys were not all removed."""
    current = serving(rec)
    for generation in _existing_generations(rec):
        if current is None or generation != current.generation:
            log.warning("dropping %s, left by an unfinished reload", generation_index(rec.index_name, generation))
            rec.redis.execute_command("FT.DROPINDEX", generation_index(rec.index_name, generation), "DD")
    retiring = rec.redis.hget(catalog_meta_key(rec.index_name), "retiring_prefix")
    if retiring is not None and (current is None or _text(retiring) != current.key_prefix):
        _unlink_prefix(rec.redis, _text(retiring))
        rec.redis.hdel(catalog_meta_key(rec.index_name), "retiring_prefix")


def _build(
    rec: RedisRecommender,
    generation: int,
    hashes: Sequence[tuple[str, Mapping[str, Any]]],
    before: Serving | None,
    lock: _Lock,
    batch_size: int,
    progress: Callable[[int, int], None] | None,
) -> Serving:
    index = generation_index(rec.index_name, generation)
    prefix = generation_prefix(rec.key_prefix, generation)
    if before is not None and (prefix.startswith(before.key_prefix) or before.key_prefix.startswith(prefix)):
        raise ReloadError(
            f"key prefix {rec.key_prefix!r} cannot be versioned: {prefix!r} and {before.key_prefix!r} nest "
            "(use a key prefix that ends with ':')"
        )
    written = 0
    try:
        # Nothing may live under the new prefix yet (a key a killed reload left would join the
        # catalogue), and so the index skips the scan of existing keys: a scan running while
        # the products are written re-indexes them, vector and all, a second time (measured:
        # a 40k reload stalled at 18 % of its scan after 6 minutes).
        _unlink_prefix(rec.redis, prefix)
        rec.redis.execute_command(
            "FT.CREATE", index, "ON", "HASH", "PREFIX", "1", prefix, "STOPWORDS", "0", "SKIPINITIALSCAN",
            "SCHEMA", *rec.index_schema(),
        )  # fmt: skip
        for start in range(0, len(hashes), batch_size):
            pipe = rec.redis.pipeline(transaction=False)
            for product_id, mapping in hashes[start : start + batch_size]:
                pipe.hset(f"{prefix}{product_id}", mapping=dict(mapping))  # type: ignore[arg-type]
            pipe.execute()
            written += min(batch_size, len(hashes) - start)
            lock.renew()
            if progress is not None:
                progress(written, len(hashes))
        _wait_indexed(rec.redis, index, len(hashes))
    except (redis.RedisError, ReloadError) as exc:
        _abandon(rec.redis, index)
        raise _failed(rec, before, exc, written, len(hashes)) from exc
    return Serving(generation, index, prefix, len(hashes))


def _failed(
    rec: RedisRecommender, before: Serving | None, exc: Exception, written: int, total: int
) -> ReloadFailedError:
    """What a reload that did not switch tells its caller: why, how far it got, and what serves."""
    reason = classify_response_error(exc) if isinstance(exc, redis.ResponseError) else exc
    still = (
        f"the previous catalogue, {before.describe()}, is still serving"
        if before is not None
        else "there was no catalogue before, and there is none now"
    )
    return ReloadFailedError(
        f"the reload failed after writing {written:,} of {total:,} products ({reason}); nothing of it was kept, "
        f"and {still}",
        before or Serving(0, rec.index_name, rec.key_prefix, 0),
        written,
        total,
    )


def _wait_indexed(client: Any, index: str, expected: int) -> None:
    deadline = time.monotonic() + INDEX_WAIT_S
    while True:
        info = info_dict(client.execute_command("FT.INFO", index))
        done = float(_text(info.get("percent_indexed", 1))) >= 1.0
        if done and int(float(_text(info.get("num_docs", 0)))) >= expected:
            return
        if time.monotonic() > deadline:
            raise ReloadError(f"{index} was still indexing after {INDEX_WAIT_S:g} s")
        time.sleep(0.05)


def _abandon(client: Any, index: str) -> None:
    """Drop a half-built generation with its keys; when even that fails, the next reload does."""
    try:
        client.execute_command("FT.DROPINDEX", index, "DD")
    except redis.RedisError as exc:
        log.warning("could not drop the half-built %s (%s): the next reload will", index, exc)


def _switch(rec: RedisRecommender, before: Serving | None, built: Serving, model: str) -> None:
    """One MULTI: the name points at the new index and the catalogue hash says so. Over a real
    index of that name (generation 0), which shadows any alias, the alias is added and the real
    index dropped (its keys stay until _retire)."""
    pipe = rec.redis.pipeline(transaction=True)
    if before is not None and before.generation == 0:
        pipe.execute_command("FT.ALIASADD", rec.index_name, built.index)
        pipe.execute_command("FT.DROPINDEX", rec.index_name)
    else:
        pipe.execute_command("FT.ALIASUPDATE", rec.index_name, built.index)
    meta: dict[str, str | int] = {
        "generation": built.generation,
        "index": built.index,
        "key_prefix": built.key_prefix,
        "products": built.products,
        "model": model,
        "dim": rec.vector_dim,
        "switched_at": repr(time.time()),
    }
    if before is not None:
        meta["retiring_prefix"] = before.key_prefix
    pipe.hset(catalog_meta_key(rec.index_name), mapping=meta)  # type: ignore[arg-type]
    try:
        pipe.execute()
    except redis.RedisError as exc:
        _abandon(rec.redis, built.index)
        raise _failed(rec, before, exc, built.products, built.products) from exc


def _retire(rec: RedisRecommender, before: Serving) -> int:
    """Drop the old generation's index (unless the switch did: generation 0) and unlink its keys
    in batches, so that no single command holds Redis for long. The switch is done by then: a
    failure here is logged, and the next reload finishes the job (`retiring_prefix`)."""
    try:
        return _retire_now(rec, before)
    except redis.RedisError as exc:
        log.warning("%s: could not remove all of %s (%s); the next reload will", rec.index_name, before.describe(), exc)
        return 0


def _retire_now(rec: RedisRecommender, before: Serving) -> int:
    if before.generation > 0:
        try:
            rec.redis.execute_command("FT.DROPINDEX", before.index)
        except redis.ResponseError as exc:
            log.warning("could not drop %s: %s", before.index, exc)
    removed = _unlink_prefix(rec.redis, before.key_prefix)
    rec.redis.hdel(catalog_meta_key(rec.index_name), "retiring_prefix")
    return removed


def _unlink_prefix(client: Any, prefix: str) -> int:
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=_glob_escape(prefix) + "*", count=UNLINK_BATCH_SIZE):
        batch.append(key)
        if len(batch) >= UNLINK_BATCH_SIZE:
            removed += int(client.unlink(*batch))
            batch = []
    if batch:
        removed += int(client.unlink(*batch))
    return removed
