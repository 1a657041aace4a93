"""Query vectors for the server's request threads: recent queries from an LRU cache, fresh ones
embedded together in micro-batches.

Why batch: one model call at a time is the rule on a small machine (concurrent calls only fight
over the cores), so with a lock around single-text calls eight concurrent clients get no more
texts per second than one. The ONNX backend embeds a batch of short queries at up to about twice
the single-query rate, so fresh queries that wait at the same time are embedded in one call.

How: a caller looks its text up in the cache; on a miss it queues the text. If the model is
idle and nothing else is queued, the caller takes the model and runs the batch on its own thread
(leader); otherwise it waits for its vector while the model is busy, and a worker thread embeds
what queued meanwhile as soon as the model is free. Whoever runs a batch first waits until
`window_s` after the oldest queued text arrived, or until `max_batch` distinct texts wait, then
embeds them together (one embedder call, or one per kind and length group, below) and hands every
caller its row. Identical texts waiting at the same time (queued or being embedded) share one
row. When a model call fails, its texts are embedded again one by one, so the error reaches the
callers of the text that fails alone (every caller of the batch if everything fails), and the
next batch runs as usual.

Why this split between callers and one worker: a lone query then runs on its caller's thread
exactly as a direct encode_one would, with no thread hand-off (a hand-off costs tens of
microseconds on an idle machine but a millisecond or more when other processes hold both cores,
measured); and under load no caller ever runs a batch other than its own (a plain
leader-follower design makes the leader also run what queued behind it), while the worker
drains the backlog. One model call at a time holds because the model is taken and freed under
the lock, by exactly one of them. onnxruntime releases the GIL and brings its own intra-op
threads, so the model is as fast on any thread. close() stops the worker; callers that lead
need no stopping.

Why no window by default (window_s=0): texts that arrive while a batch is being embedded wait
for it anyway, and that is where batches come from (about 4 texts per call at 8 clients, 8 at
16). bench/batching.py measured 8 and 16 concurrent clients, back to back and with pauses
between calls, in three runs on a 2-core machine shared with other work: windows of 0.5, 1 and
2 ms were ahead of no window in some cells and behind in others, by about as much as repeated
runs differ, while a lone query paid each window in full. A window only pays when queries
trickle in while the model is idle, which is when latency matters more than throughput; it
remains configurable.

Batched vectors are the single-call vectors: the ONNX export masks padding in attention and
mean-pools over real tokens only, and on the project's machine 200 varied texts (empty to
over 256 tokens) embedded in shuffled batches of 8 and 16 matched their single calls bit for
bit (bench/batching.py; tests/integration/test_query_encoder.py checks them to 1e-6). With the
int8 query encoder (LocalEmbedder(query_encoder="int8")) the embedder runs each query of a batch
alone, for the same reason: its activation scales are per call (embeddings.OnnxEncoder).

Queries go to the embedder's encode_queries (its query encoder: float or int8), product texts
(encode_uncached) to encode_many, the float model, so that a refreshed product vector is the one
a catalog build would write. A batch is cut by kind before length.

Padding costs time, though: every text of a call is padded to its longest, so fifteen short
queries batched with one 1000-character text cost about six times as much as the two groups
embedded apart (measured). A batch is therefore cut into groups of similar length, the longest
at most about twice the shortest in characters (a tokenizer-free proxy for tokens), embedded
shortest first, one model call per group. Typical queries fall into one group.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Protocol

import numpy as np

from embeddings import LocalEmbedder

log = logging.getLogger("query_encoder")

DEFAULT_WINDOW_S = 0.0
DEFAULT_MAX_BATCH = 16
DEFAULT_CACHE_SIZE = 2048
# Texts share a model call when the longest is at most MAX_PADDING_RATIO times the shortest,
# counting LENGTH_SLACK more characters for each so that very short texts need not be alone.
MAX_PADDING_RATIO = 2.0
LENGTH_SLACK = 16
CLOSE_TIMEOUT_S = 10.0


class EncoderClosedError(RuntimeError):
    """encode() after close(): the server is shutting down."""


@dataclass(frozen=True)
class EncoderStats:
    """Counters since the encoder started: how well the cache and the batching work."""

    requests: int
    cache_hits: int
    model_calls: int
    texts_embedded: int
    largest_batch: int


class EncoderObserver(Protocol):
    """Told of every cache lookup and model call as they happen (the server's metrics)."""

    def query_cache(self, hit: bool) -> None: ...

    def encoder_batch(self, size: int) -> None: ...


TextKind = Literal["query", "product"]


@dataclass
class PendingText:
    """One distinct text queued or being embedded; every caller that asked for it waits on
    `vector`. A query is embedded by the query encoder and cached; a product text by the float
    model (catalog vectors stay the float model's) and not cached."""

    text: str
    kind: TextKind
    arrived: float
    vector: Future[np.ndarray] = field(default_factory=Future)


def length_groups(batch: Sequence[PendingText]) -> list[list[PendingText]]:
    """The batch cut into runs of one kind and similar length, shortest first, so that padding
    to the longest text of a call wastes at most about half of it."""
    groups: list[list[PendingText]] = []
    for pending in sorted(batch, key=lambda pending: (pending.kind, len(pending.text))):
        if (
            groups
            and groups[-1][0].kind == pending.kind
            and len(pending.text) + LENGTH_SLACK <= MAX_PADDING_RATIO * (len(groups[-1][0].text) + LENGTH_SLACK)
        ):
            groups[-1].append(pending)
        else:
            groups.append([pending])
    return groups


class RecentVectors:
    """Least-recently-used query vectors by exact text (one encoder is one model, so the text is
    the whole key). Not locked itself: the encoder's lock guards it together with the queue, so
    that a text is always either cached or pending while its vector is handed over."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, text: str) -> np.ndarray | None:
        vector = self._items.get(text)
        if vector is not None:
            self._items.move_to_end(text)
        return vector

    def put(self, text: str, vector: np.ndarray) -> None:
        self._items[text] = vector
        self._items.move_to_end(text)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)


class QueryEncoder:
    """Thread-safe query embedding with an LRU cache and micro-batching (see the module
    docstring). Vectors are read-only arrays shared between callers and the cache: copy one
    before changing it in place. close() it (or use it as a context manager) to stop its
    worker thread."""

    def __init__(
        self,
        embedder: LocalEmbedder,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        max_batch: int = DEFAULT_MAX_BATCH,
        cache_size: int = DEFAULT_CACHE_SIZE,
        observer: EncoderObserver | None = None,
    ) -> None:
        if not (math.isfinite(window_s) and 0 <= window_s <= 1):
            raise ValueError(f"window_s must be from 0 to 1 second, got {window_s!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch!r}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be 0 (no cache) or more, got {cache_size!r}")
        self.embedder = embedder
        self.window_s = window_s
        self.max_batch = max_batch
        self._observer = observer
        self._cache = RecentVectors(cache_size)
        self._queue: deque[PendingText] = deque()
        self._pending: dict[tuple[TextKind, str], PendingText] = {}
        self._lock = threading.Condition()
        self._closed = False
        self._model_busy = False  # a batch is being collected or embedded, by a caller or the worker
        self._requests = self._cache_hits = self._model_calls = self._texts_embedded = self._largest_batch = 0
        self._worker = threading.Thread(target=self._run, name="query-encoder", daemon=True)
        self._worker.start()

    # --- callers' side ------------------------------------------------------------------------

    def encode(self, text: str) -> tuple[np.ndarray, bool]:
        """The text's vector, and whether it came from the cache."""
        with self._lock:
            self._requests += 1
            vector = self._cache.get(text)
            if vector is not None:
                self._cache_hits += 1
            else:
                pending, leads = self._enqueue(text, "query")
        if self._observer is not None:
            self._observer.query_cache(vector is not None)
        if vector is not None:
            return vector, True
        if leads:
            self._lead()
        return pending.vector.result(), False

    def encode_uncached(self, text: str) -> np.ndarray:
        """A product text's vector from the float model, neither read from nor written to the
        cache (a refreshed embedding would only push queries out of it)."""
        with self._lock:
            self._requests += 1
            pending, leads = self._enqueue(text, "product")
        if leads:
            self._lead()
        return pending.vector.result()

    def _enqueue(self, text: str, kind: TextKind) -> tuple[PendingText, bool]:
        """Join the text's pending request or queue a new one; and whether this caller runs the
        model itself (it was idle with nothing queued), in which case the model is now taken.
        Called with the lock held."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if self._closed:
            raise EncoderClosedError("the query encoder is closed")
        pending = self._pending.get((kind, text))
        if pending is not None:  # queued or being embedded: share its row
            return pending, False
        pending = PendingText(text, kind, time.monotonic())
        self._pending[kind, text] = pending
        self._queue.append(pending)
        if not self._model_busy and len(self._queue) == 1:
            self._model_busy = True
            return pending, True
        if len(self._queue) >= self.max_batch:
            self._lock.notify_all()  # whoever is collecting a batch: it is full
        return pending, False

    def _lead(self) -> None:
        """On the caller's own thread: collect a batch (this caller's text first), embed it,
        then free the model and wake the worker if texts queued meanwhile."""
        try:
            with self._lock:
                batch = self._collect_batch()
            for group in length_groups(batch):
                self._embed(group)
        finally:
            self._free_model()

    def _free_model(self) -> None:
        with self._lock:
            self._model_busy = False
            if self._queue or self._closed:  # work for the worker, or its cue to stop
                self._lock.notify_all()

    def stats(self) -> EncoderStats:
        with self._lock:
            return EncoderStats(
                self._requests, self._cache_hits, self._model_calls, self._texts_embedded, self._largest_batch
            )

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Refuse new texts, embed the ones already queued (their callers get their vectors),
        and stop the worker thread. Idempotent."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._worker.join(timeout_s)
        if self._worker.is_alive():
            log.warning("the query encoder's model call did not finish within %.0f s; leaving it behind", timeout_s)

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive (until close())."""
        return self._worker.is_alive()

    def __enter__(self) -> QueryEncoder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # --- the model's side: the worker, and what a leading caller shares with it ----------------

    def _run(self) -> None:
        """Embed what queued while the model was busy, until closed with nothing left."""
        while True:
            with self._lock:
                while not (self._queue and not self._model_busy) and not (self._closed and not self._queue):
                    self._lock.wait()
                if not self._queue:
                    return
                self._model_busy = True
                batch = self._collect_batch()
            try:
                for group in length_groups(batch):
                    self._embed(group)
            finally:
                self._free_model()

    def _collect_batch(self) -> list[PendingText]:
        """Up to max_batch queued texts, once the oldest has waited window_s or the batch is
        full (at once when closing). Called with the lock held and the model taken."""
        deadline = self._queue[0].arrived + self.window_s
        while len(self._queue) < self.max_batch and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._lock.wait(remaining)
        count = min(len(self._queue), self.max_batch)
        return [self._queue.popleft() for _ in range(count)]

    def _embed(self, group: list[PendingText]) -> None:
        """One model call for a group of the batch, outside the lock; then cache and hand over
        each row. If the call fails, each text is embedded again on its own, so that one text
        the model cannot take (or a passing failure) costs only its own callers their vector,
        and they get the model's exception."""
        try:
            rows = self._model_call(group[0].kind, [pending.text for pending in group])
        except Exception as exc:  # the callers decide what a failed embedding means
            if len(group) == 1:
                self._deliver(group, [exc])
                return
            outcomes: list[np.ndarray | Exception] = []
            for pending in group:
                try:
                    outcomes.extend(self._model_call(pending.kind, [pending.text]))
                except Exception as single_exc:
                    outcomes.append(single_exc)
            self._deliver(group, outcomes)
            return
        self._deliver(group, rows)

    def _model_call(self, kind: TextKind, texts: list[str]) -> list[np.ndarray]:
        """Read-only vectors, one per text, from a single call of the embedder: encode_queries
        for queries, encode_many (the float model) for product texts."""
        with self._lock:
            self._model_calls += 1
            self._texts_embedded += len(texts)
            self._largest_batch = max(self._largest_batch, len(texts))
        if self._observer is not None:
            self._observer.encoder_batch(len(texts))
        if kind == "query":
            vectors = self.embedder.encode_queries(texts)
        else:
            vectors = self.embedder.encode_many(texts, batch_size=len(texts))
        if len(vectors) != len(texts):
            raise RuntimeError(f"the embedder returned {len(vectors)} vectors for {len(texts)} texts")
        rows = []
        for row in vectors:
            # A copy per text: a row of the batch would keep the whole batch alive in the cache.
            vector = np.array(row, dtype=np.float32)
            vector.flags.writeable = False
            rows.append(vector)
        return rows

    def _deliver(self, batch: list[PendingText], outcomes: Sequence[np.ndarray | Exception]) -> None:
        """Cache the vectors and wake every caller. The text leaves `pending` in the same locked
        step as it enters the cache, so a caller arriving meanwhile finds it in one or the other."""
        with self._lock:
            for pending, outcome in zip(batch, outcomes, strict=True):
                if pending.kind == "query" and isinstance(outcome, np.ndarray):
                    self._cache.put(pending.text, outcome)
                del self._pending[pending.kind, pending.text]
        for pending, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, np.ndarray):
                pending.vector.set_result(outcome)
            else:
                pending.vector.set_exception(outcome)
