"""What the server counts for Prometheus (GET /metrics): request latency by endpoint and status,
Redis errors by class, the query encoder's batch sizes and cache lookups, events by type, and
impressions and clicks by list source and experiment arm.

Every label value comes from a closed set the server owns (its routes, status codes, exception
class names, list sources, event types, the experiment file's arm names): never a user id, a
query or a product id, so a scrape can neither leak what a shopper did nor grow without bound.

`--workers N` is served by N processes, and a scrape reaches one of them. prometheus_client's
multiprocess mode makes each answer the sum of all: every process writes its values to files in
one directory (PROMETHEUS_MULTIPROC_DIR), and a scrape reads them all. The library reads that
variable when it is first imported, so `metrics_directory` sets it before the first import (that
is why prometheus_client is imported inside PrometheusMetrics and nowhere at module level).

`Metrics` itself records nothing: it is what `--no-metrics` runs with, and what a DemoApp made
without a server (tests, scripts) gets.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds: from a cached search's ~2 ms to a cold model call or a slow Redis.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The recording interface, recording nothing (see the module docstring)."""

    enabled = False

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        """One answered HTTP request; `endpoint` is a route's path or "other", never a raw path."""

    def redis_error(self, error_class: str) -> None:
        """A Redis fault that reached the client as an error (a 5xx), by exception class."""

    def query_cache(self, hit: bool) -> None:
        """One lookup in the query encoder's cache (query_encoder.EncoderObserver)."""

    def encoder_batch(self, size: int) -> None:
        """One model call of the query encoder and the texts it embedded together."""

    def event(self, kind: str) -> None:
        """A user event the server recorded (click, dismiss, ...)."""

    def impression(self, source: str, arm: str) -> None:
        """A list shown, by where it came from and the experiment arm that ranked it."""

    def click(self, source: str, arm: str) -> None:
        """A click, by the source and arm of the list it came from ("none": no rec_id)."""

    def exposition(self) -> bytes | None:
        """The text format of every process's values; None when nothing is recorded."""
        return None


class PrometheusMetrics(Metrics):
    """Metrics in prometheus_client's multiprocess mode; needs metrics_directory's variable set
    before the library is first imported in this process (checked)."""

    enabled = True

    def __init__(self) -> None:
        directory = os.environ.get(MULTIPROC_ENV)
        if not directory or not Path(directory).is_dir():
            raise RuntimeError(f"{MULTIPROC_ENV} must name a directory before metrics are made (metrics_directory)")
        import prometheus_client
        from prometheus_client import values

        if not getattr(values.ValueClass, "_multiprocess", False):
            raise RuntimeError(
                f"prometheus_client was imported before {MULTIPROC_ENV} was set: its values would stay in this process"
            )
        self._prometheus = prometheus_client
        # registry=None: the values live in the directory's files, and a scrape collects those.
        self._latency = prometheus_client.Histogram(
            "recommender_http_request_duration_seconds",
            "Time to answer an HTTP request, by endpoint and status",
            ("endpoint", "status"),
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self._redis_errors = prometheus_client.Counter(
            "recommender_redis_errors", "Redis faults answered with an error, by exception class", ("error_class",),
            registry=None,
        )  # fmt: skip
        self._cache = prometheus_client.Counter(
            "recommender_query_cache_lookups", "Query-vector cache lookups, by result", ("result",), registry=None
        )
        self._batches = prometheus_client.Histogram(
            "recommender_encoder_batch_size", "Texts per model call of the query encoder", buckets=BATCH_BUCKETS,
            registry=None,
        )  # fmt: skip
        self._events = prometheus_client.Counter(
            "recommender_events", "User events recorded, by type", ("type",), registry=None
        )
        self._impressions = prometheus_client.Counter(
            "recommender_impressions", "Lists shown, by list source and experiment arm", ("source", "arm"),
            registry=None,
        )  # fmt: skip
        self._clicks = prometheus_client.Counter(
            "recommender_clicks", "Clicks, by the list source and experiment arm they came from", ("source", "arm"),
            registry=None,
        )  # fmt: skip

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        self._latency.labels(endpoint, str(status)).observe(seconds)

    def redis_error(self, error_class: str) -> None:
        self._redis_errors.labels(error_class).inc()

    def query_cache(self, hit: bool) -> None:
        self._cache.labels("hit" if hit else "miss").inc()

    def encoder_batch(self, size: int) -> None:
        self._batches.observe(size)

    def event(self, kind: str) -> None:
        self._events.labels(kind).inc()

    def impression(self, source: str, arm: str) -> None:
        self._impressions.labels(source, arm).inc()

    def click(self, source: str, arm: str) -> None:
        self._clicks.labels(source, arm).inc()

    def exposition(self) -> bytes:
        from prometheus_client import multiprocess

        registry = self._prometheus.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        data: Any = self._prometheus.generate_latest(registry)
        return bytes(data)


@contextlib.contextmanager
def metrics_directory() -> Iterator[Path]:
    """The directory every process of this server run writes its values to, set in the
    environment for this process and the workers it forks. PROMETHEUS_MULTIPROC_DIR, when set,
    is used and emptied of earlier runs' files first (stale counts would be summed in); otherwise
    a new temporary directory, removed when the run ends."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        yield directory
        return
    directory = Path(tempfile.mkdtemp(prefix="recommender-metrics-"))
    os.environ[MULTIPROC_ENV] = str(directory)
    try:
        yield directory
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)
