"""The demo's JSON API without the sockets: request fields parsed into the library's typed
requests, one method per endpoint, and the route table. demo_server.py owns HTTP itself (bytes,
headers, origins, cookies) and the command line; this module changes when an endpoint does."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from embeddings import LocalEmbedder
from query_encoder import QueryEncoder
from recengine.ab_report import build_report
from recengine.client_budgets import BudgetExceeded
from recengine.experiments import NO_ARM, Experiment
from recengine.http_request import ApiError
from recengine.impressions import Impression, ImpressionError, ImpressionLog, ListSource, check_rec_id
from recengine.metrics import Metrics
from recengine.validation import MAX_PRODUCT_ID_CHARS
from recommender import (
    EVENT_TYPES,
    SIGNALS,
    ClickResult,
    DismissResult,
    DurabilityTimeoutError,
    EventResult,
    EventType,
    IndexMissingError,
    MayCreateUser,
    PartlyAppliedError,
    ProductNotFoundError,
    Recommendation,
    RedisRecommender,
    ReloadFailedError,
    ReloadInProgressError,
    ReplicationTimeoutError,
    SearchFilters,
    Signal,
    UserState,
    WriteOutcomeUnknownError,
    WriteRefusedError,
    check_event_id,
    check_product_id,
)

log = logging.getLogger(__name__)

# The API's contract (OpenAPI 3.1), beside the prose of docs/API.md: both change with an endpoint.
OPENAPI_PATH = Path(__file__).resolve().parent / "docs" / "openapi.json"
MAX_QUERY_CHARS = 1000
# The most results one HTTP request may ask for: a page shows tens, not thousands. (The
# library's own bound, recommender.MAX_K, is what one FT.SEARCH may return.)
HTTP_MAX_K = 100
# A server that finds its index missing rebuilds it from its catalogue; a request that met the
# missing index waits this long for that (or for another worker's rebuild) before a 503.
HEAL_WAIT_S = 30.0
# GET /report's window when none is given, and the longest it takes (the log's cap bounds it too).
DEFAULT_REPORT_WINDOW_S = 86400.0
MAX_REPORT_WINDOW_S = 90 * 86400.0
TRUE_WORDS = {"1", "true", "on", "yes"}
FALSE_WORDS = {"", "0", "false", "off", "no"}


def no_turn() -> AbstractContextManager[None]:
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Caller:
    """Who asks, as the server knows them: the user, and what the server lets their client hold.

    may_create_user: asked before a write would create the user (the server's per-client budget
    of new users; it raises BudgetExceeded to refuse).
    model_turn: held while the request waits for the model (the per-client bound on the model's
    queue; it raises BudgetExceeded when the client already waits enough).
    redis_turn: held around the request's Redis work only (one of the server's API slots), so
    that a request waiting for the model holds none.
    """

    user_id: str
    may_create_user: MayCreateUser | None = None
    model_turn: Callable[[], AbstractContextManager[None]] = no_turn
    redis_turn: Callable[[], AbstractContextManager[None]] = no_turn


# --- request fields: data in, data out ------------------------------------------------------

Fields = Mapping[str, Any]


def parse_bool(fields: Fields, name: str, default: bool = False) -> bool:
    """Form semantics: an unticked checkbox is simply absent, so absent means false (unless the
    endpoint's documented default is true)."""
    value = fields.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ApiError(400, f"{name} must be a boolean (1/true/on/yes or 0/false/off/no), got {value!r}")


def parse_optional_float(
    fields: Fields, name: str, low: float | None = None, high: float | None = None
) -> float | None:
    value = fields.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ApiError(400, f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ApiError(400, f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ApiError(400, f"{name} must be a finite number")
    if low is not None and number < low:
        raise ApiError(400, f"{name} must be at least {low:g}, got {number:g}")
    if high is not None and number > high:
        raise ApiError(400, f"{name} must be at most {high:g}, got {number:g}")
    return number


def parse_k(fields: Fields, default: int) -> int:
    value = fields.get("k")
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ApiError(400, f"k must be a whole number from 1 to {HTTP_MAX_K}, got {value!r}")
    try:
        k = int(value) if not isinstance(value, str) else int(value.strip())
    except (TypeError, ValueError):
        raise ApiError(400, f"k must be a whole number from 1 to {HTTP_MAX_K}, got {value!r}") from None
    if not 1 <= k <= HTTP_MAX_K:
        raise ApiError(400, f"k must be a whole number from 1 to {HTTP_MAX_K}, got {k}")
    return k


def parse_string(fields: Fields, name: str, *, required: bool = False, max_chars: int = MAX_QUERY_CHARS) -> str | None:
    """A string field, stripped; empty counts as absent ("Any" in the page's selects). What the
    text may hold is the business of whoever uses it: the library checks filter values and
    product ids, parse_free_text the texts the model embeds."""
    value = fields.get(name)
    if value is not None and not isinstance(value, str):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ApiError(400, f"{name} must be a string")
        value = str(value)
    text = (value or "").strip()
    if not text:
        if required:
            raise ApiError(400, f"{name} is required and must not be empty")
        return None
    if len(text) > max_chars:
        raise ApiError(400, f"{name} is too long ({len(text)} characters; at most {max_chars})")
    return text


def parse_free_text(fields: Fields, name: str, *, multiline: bool = False) -> str:
    """A required text for the model to embed (a query, a product's new text): no control
    characters (`multiline` admits the line breaks and tabs a textarea produces) and no lone
    surrogates, which JSON can spell and no UTF-8 encoder (the tokenizer) accepts."""
    text = parse_string(fields, name, required=True)
    assert text is not None  # required=True raised otherwise
    if any((ord(ch) < 32 and not (multiline and ch in "\t\n\r")) or ord(ch) == 127 for ch in text):
        raise ApiError(400, f"{name} must not contain control characters")
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        raise ApiError(400, f"{name} must be valid Unicode text (it contains a lone surrogate)")
    return text


def parse_filters(fields: Fields) -> SearchFilters:
    """The filter fields as the library's SearchFilters. The HTTP layer converts types and
    bounds what a form can say (prices ≥ 0, ratings 0–5, lengths); the filters' own rules
    (literal text, min ≤ max) are the library's, and its ValueError becomes this 400."""
    try:
        return SearchFilters(
            category=parse_string(fields, "category", max_chars=200),
            brand=parse_string(fields, "brand", max_chars=200),
            min_price=parse_optional_float(fields, "min_price", low=0),
            max_price=parse_optional_float(fields, "max_price", low=0),
            min_rating=parse_optional_float(fields, "min_rating", low=0, high=5),
            text_match=parse_string(fields, "text_match", max_chars=200),
            in_stock_only=parse_bool(fields, "in_stock_only"),
        )
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def parse_diversity(fields: Fields) -> float:
    return parse_optional_float(fields, "diversity", low=0, high=1) or 0.0


def parse_signal(fields: Fields) -> Signal:
    """What ranks "more like this" and the feed; blend when absent."""
    value = parse_string(fields, "signal", max_chars=32) or "blend"
    if value not in SIGNALS:
        raise ApiError(400, f"signal must be one of {', '.join(SIGNALS)}, got {value!r}")
    return value  # type: ignore[return-value]


def parse_event(fields: Fields) -> EventType:
    """event is required: one of the four types."""
    value = parse_string(fields, "event", required=True, max_chars=32)
    if value not in EVENT_TYPES:
        raise ApiError(400, f"event must be one of {', '.join(EVENT_TYPES)}, got {value!r}")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class SearchRequest:
    """POST /search: a typed query, personalised."""

    query: str
    k: int
    filters: SearchFilters
    use_session: bool
    use_rerank: bool
    exclude_clicked: bool
    diversity: float
    understand: bool

    @classmethod
    def parse(cls, fields: Fields, default_k: int) -> SearchRequest:
        return cls(
            query=parse_free_text(fields, "query"),
            k=parse_k(fields, default_k),
            filters=parse_filters(fields),
            use_session=parse_bool(fields, "use_session"),
            use_rerank=parse_bool(fields, "rerank"),
            exclude_clicked=parse_bool(fields, "exclude_clicked"),
            diversity=parse_diversity(fields),
            understand=parse_bool(fields, "understand", default=True),
        )


@dataclass(frozen=True)
class FeedRequest:
    """POST /recommend: the "for you" feed, no query. Clicked products are left out unless
    exclude_clicked says otherwise: a feed that repeats what was just clicked is no feed."""

    k: int
    filters: SearchFilters
    exclude_clicked: bool
    diversity: float
    signal: Signal

    @classmethod
    def parse(cls, fields: Fields, default_k: int) -> FeedRequest:
        return cls(
            k=parse_k(fields, default_k),
            filters=parse_filters(fields),
            exclude_clicked=parse_bool(fields, "exclude_clicked", default=True),
            diversity=parse_diversity(fields),
            signal=parse_signal(fields),
        )


@dataclass(frozen=True)
class SimilarRequest:
    """POST /similar: "more like this" for one product."""

    product_id: str
    k: int
    filters: SearchFilters
    same_category_boost: float | None
    exclude_clicked: bool
    diversity: float
    signal: Signal

    @classmethod
    def parse(cls, fields: Fields, default_k: int) -> SimilarRequest:
        return cls(
            product_id=parse_product_id(fields),
            k=parse_k(fields, default_k),
            filters=parse_filters(fields),
            same_category_boost=parse_optional_float(fields, "same_category_boost", low=0, high=2),
            exclude_clicked=parse_bool(fields, "exclude_clicked"),
            diversity=parse_diversity(fields),
            signal=parse_signal(fields),
        )


def parse_event_id(fields: Fields) -> str | None:
    """event_id is optional: an idempotency key that makes a retried write count once."""
    value = fields.get("event_id")
    if value is None:
        return None
    try:
        return check_event_id(value)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def parse_rec_id(fields: Fields) -> str | None:
    """The optional rec_id of the list a click or an event came from (any endpoint that takes
    one reads it here); its form is checked, whether it was shown to the user is the log's."""
    rec_id = parse_string(fields, "rec_id", max_chars=64)
    if rec_id is None:
        return None
    try:
        return check_rec_id(rec_id)
    except ImpressionError as exc:
        raise ApiError(exc.status, str(exc)) from None


def parse_product_id(fields: Fields) -> str:
    """product_id is required; its form (any printable text, up to MAX_PRODUCT_ID_CHARS) is the
    library's rule."""
    product_id = parse_string(fields, "product_id", required=True, max_chars=MAX_PRODUCT_ID_CHARS)
    try:
        return check_product_id(product_id)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


T = TypeVar("T")
# What one recorded write answers (ClickResult, EventResult, DismissResult): DemoApp.recorded.
Recorded = TypeVar("Recorded", ClickResult, EventResult, DismissResult)
Recorded_co = TypeVar("Recorded_co", ClickResult, EventResult, DismissResult, covariant=True)


class StatefulWrite(Protocol[Recorded_co]):
    """record_click_with_state, dismiss_with_state, and record_event_with_state with its type."""

    def __call__(
        self, user_id: str, product_id: str, *, event_id: str | None = None, may_create: MayCreateUser | None = None
    ) -> tuple[Recorded_co, UserState]: ...


P = ParamSpec("P")


class SingleFlight(Generic[T]):
    """Calls `run` for one caller at a time; a caller that arrives while a call is under way
    waits for it and gets its outcome (value or exception) instead of starting another. The
    readiness probe uses it: probes take no API slot, so without it a burst of them could hold
    as many Redis connections as it has requests; with it they hold one."""

    def __init__(self, run: Callable[[], T]) -> None:
        self._run = run
        self._lock = threading.Lock()
        self._under_way: Future[T] | None = None

    def __call__(self) -> T:
        with self._lock:
            call = self._under_way
            leads = call is None
            if call is None:
                call = self._under_way = Future()
        if leads:
            try:
                call.set_result(self._run())
            except BaseException as exc:  # whatever ends the call, the waiters get it
                call.set_exception(exc)
            finally:
                with self._lock:
                    self._under_way = None
        return call.result()


@functools.cache
def openapi_document() -> dict[str, Any]:
    """docs/openapi.json, read once per process (GET /openapi.json serves it)."""
    document: dict[str, Any] = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    return document


class DemoApp:
    """The endpoints as plain methods: fields in, JSON-ready dicts out."""

    def __init__(
        self,
        recommender: RedisRecommender,
        embedder: LocalEmbedder,
        catalog: Mapping[str, Any],
        *,
        default_k: int = 10,
        redis_description: str = "Redis",
        metrics: Metrics | None = None,
        impressions: ImpressionLog | None = None,
        experiment: Experiment | None = None,
    ) -> None:
        self.recommender = recommender
        self.embedder = embedder
        self.catalog = catalog
        self.default_k = default_k
        self.redis_description = redis_description
        self.metrics = metrics or Metrics()
        # Every list shown is logged here and answers with its rec_id (None: --no-impressions).
        self.impressions = impressions
        self.experiment = experiment
        # One recommender per arm, over the same Redis, index and keys: only the ranking differs.
        self.arms = {arm.name: recommender.with_config(arm.config) for arm in experiment.arms} if experiment else {}
        # Recent queries from its cache; fresh ones that arrive while the model is busy are
        # embedded together, one model call at a time.
        self.encoder = QueryEncoder(embedder, observer=self.metrics)
        self._readiness = SingleFlight(self._check_ready)
        # Read now, so that a missing or broken contract stops the start, not a later request.
        openapi_document()

    def close(self) -> None:
        """Stop the encoder's worker thread (the server calls this when it stops)."""
        self.encoder.close()

    def seed(self, lock_wait_s: float = HEAL_WAIT_S) -> int:
        """Load the catalog's vectors as they are (nothing is re-embedded) as a new generation
        beside whatever serves, then switch to it (RedisRecommender.reload_catalog): searches
        never see a missing or half-loaded index, and a failure leaves the old catalogue."""
        if self.recommender.is_cluster:  # no aliases across a cluster's shards: the old way
            self.recommender.drop_index(delete_documents=True)
            self.recommender.create_index()
            return self.recommender.index_products(self.catalog["products"])
        result = self.recommender.reload_catalog(
            self.catalog["products"], model=str(self.catalog.get("model", "")), lock_wait_s=lock_wait_s
        )
        return result.written

    def ensure_index(self) -> int:
        """--no-reset: keep what Redis has; seed only a missing or empty index."""
        if self.recommender.index_exists():
            self.recommender.wait_until_indexed()
            count = self.recommender.count_indexed()
            if count:
                return count
        return self.seed()

    def heal_missing_index(self) -> bool:
        """The index is missing (dropped, flushed): rebuild it from the catalogue, one worker at
        a time; a worker that finds another one rebuilding waits for it. True once it serves."""
        deadline = time.monotonic() + HEAL_WAIT_S
        while not self.recommender.index_exists():
            try:
                log.warning("the search index is missing: rebuilding it from the catalogue")
                self.seed(lock_wait_s=0)
            except ReloadInProgressError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.1)
            except ReloadFailedError as exc:
                log.error("could not rebuild the missing index: %s", exc)
                return False
        return True

    def ranker_for(self, user_id: str) -> tuple[str, RedisRecommender]:
        """The user's experiment arm and the recommender that ranks (and records clicks) for it."""
        if self.experiment is None:
            return NO_ARM, self.recommender
        arm = self.experiment.arm_for(user_id).name
        return arm, self.arms[arm]

    def shown(self, user_id: str, source: ListSource, arm: str, result: Recommendation) -> dict[str, Any]:
        """A list answer's candidates (each `why` with the arm when an experiment runs) and, when
        impressions are logged, its rec_id."""
        payload = recommendation_payload(result)
        if self.experiment is not None:
            for candidate in payload["candidates"]:
                candidate["why"]["arm"] = arm
        if self.impressions is not None:
            payload["rec_id"] = self.impressions.record(user_id, source, arm, [c.id for c in result.candidates])
            self.metrics.impression(source, arm)
        return payload

    def user_state(self, user_id: str, state: UserState | None = None) -> dict[str, Any]:
        """The user's panel; from `state` when the caller has read it already (a click reads
        it in the click's own round trip)."""
        rec = self.ranker_for(user_id)[1]
        if state is None:
            state = rec.user_state(user_id)
        features, names = state.features, state.product_names
        session = features.session_vec
        affinities = rec.faded_affinities(features)
        return {
            "user_id": user_id,
            "clicks": features.clicks,
            "last_clicked_id": features.last_clicked_id,
            "last_clicked_category": features.last_clicked_category,
            "affinities": {
                name: round(value, 4) for name, value in sorted(affinities.items(), key=lambda kv: (-kv[1], kv[0]))
            },
            "has_session_vec": session is not None,
            "session_vec_dim": int(session.shape[0]) if session is not None else 0,
            "session_weight": round(rec.session_weight_now(features), 4),
            "session_fades_in_s": rec.session_fades_in_s(features),
            "recent_clicks": [{"id": pid, "name": names.get(pid) or pid} for pid in state.recent_clicks],
            "dismissed": [{"id": pid, "name": names.get(pid) or pid} for pid in state.dismissed],
        }

    def state(self, caller: Caller, fields: Fields) -> dict[str, Any]:
        user_id = caller.user_id
        info = self.recommender.index_info()
        top = self.recommender.popularity(5, user_id=user_id)
        names = self.recommender.get_products([pid for pid, _ in top])
        trending = (
            {"popular_rec_id": self.impressions.record(user_id, "trending", NO_ARM, [pid for pid, _ in top])}
            if self.impressions is not None
            else {}
        )
        if trending:
            self.metrics.impression("trending", NO_ARM)
        return {
            "user": self.user_state(user_id),
            "index": {
                "num_docs": info.num_docs,
                "indexing_failures": info.indexing_failures,
                "vector_index_size_mb": info.vector_index_size_mb,
                "index_name": self.recommender.index_name,
                "model": self.embedder.model_name,
                "embedding_backend": self.embedder.backend,
            },
            "products": self.recommender.list_products(limit=1000),
            "categories": self.recommender.list_categories(),
            "brands": self.recommender.list_brands(),
            "popular": [
                {"id": pid, "name": names.get(pid, {}).get("name") or pid, "popularity": round(score, 4)}
                for pid, score in top
            ],
            **trending,
        }

    def search(self, caller: Caller, fields: Fields) -> dict[str, Any]:
        """The query's vector first, holding no API slot (the model's queue is bounded per
        client instead), then the Redis work in one slot."""
        user_id = caller.user_id
        request = SearchRequest.parse(fields, self.default_k)
        arm, ranker = self.ranker_for(user_id)
        started = time.perf_counter()
        with caller.model_turn():
            query_vec, cached = self.encoder.encode(request.query)
        embedded = time.perf_counter()
        with caller.redis_turn():
            result = ranker.recommend(
                query_vec,
                user_id=user_id,
                k=request.k,
                filters=request.filters,
                use_session=request.use_session,
                use_rerank=request.use_rerank,
                exclude_clicked=request.exclude_clicked,
                diversity=request.diversity,
                query_text=request.query,
                understand=request.understand,
            )
        return {
            **self.shown(user_id, "search", arm, result),
            "understood": result.understood,
            "used_session": result.used_session,
            "used_rerank": result.used_rerank,
            "session_weight": result.session_weight,
            "embed_ms": round((embedded - started) * 1000, 3),
            "embed_cached": cached,
            "search_ms": round(result.search_ms, 3),
            "rerank_ms": round(result.rerank_ms, 3),
            "timing_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    def recommend(self, caller: Caller, fields: Fields) -> dict[str, Any]:
        user_id = caller.user_id
        request = FeedRequest.parse(fields, self.default_k)
        arm, ranker = self.ranker_for(user_id)
        started = time.perf_counter()
        result = ranker.for_you(
            user_id,
            k=request.k,
            filters=request.filters,
            exclude_clicked=request.exclude_clicked,
            diversity=request.diversity,
            signal=request.signal,
        )
        return {
            "source": result.source,
            "signal": request.signal,
            **self.shown(user_id, "feed", arm, result),
            "session_weight": result.session_weight,
            "timing_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    def similar(self, caller: Caller, fields: Fields) -> dict[str, Any]:
        user_id = caller.user_id
        request = SimilarRequest.parse(fields, self.default_k)
        arm, ranker = self.ranker_for(user_id)
        started = time.perf_counter()
        result = ranker.similar(
            request.product_id,
            k=request.k,
            filters=request.filters,
            same_category_boost=request.same_category_boost,
            user_id=user_id,
            exclude_clicked=request.exclude_clicked,
            diversity=request.diversity,
            signal=request.signal,
        )
        return {
            "product_id": request.product_id,
            "signal": request.signal,
            **self.shown(user_id, "similar", arm, result),
            "timing_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    def click(self, caller: Caller, fields: Fields) -> dict[str, Any]:
        product_id = parse_product_id(fields)
        result, user = self.recorded(caller, fields, product_id, "click", lambda rec: rec.record_click_with_state)
        return {
            "category": result.category,
            "affinity": round(result.affinity, 6),
            "clicks": result.clicks,
            "last_clicked_id": result.last_clicked_id,
            "already_applied": result.already_applied,
            # The click is the newest recent click, whose name user_state has just looked up.
            "name": next((c["name"] for c in user["recent_clicks"] if c["id"] == product_id), product_id),
            "user": user,
        }

    def event(self, caller: Caller, fields: Fields) -> dict[str, Any]:
        """POST /event: a view, click, cart or purchase, now, in the user's current window (the
        page has no session ids: events of a user minutes apart go together)."""
        product_id, event = parse_product_id(fields), parse_event(fields)
        result, user = self.recorded(
            caller, fields, product_id, event, lambda rec: functools.partial(rec.record_event_with_state, event=event)
        )
        return {
            "event": result.event,
            "product_id": product_id,
            "category": result.category,
            "affinity": round(result.affinity, 6),
            "clicks": result.clicks,
            "paired_with": result.paired_with,
            "already_applied": result.already_applied,
            "user": user,
        }

    def dismiss(self, caller: Caller, fields: Fields) -> dict[str, Any]:
        product_id = parse_product_id(fields)
        result, user = self.recorded(caller, fields, product_id, "dismiss", lambda rec: rec.dismiss_with_state)
        return {
            "category": result.category,
            "affinity": round(result.affinity, 6),
            "product_id": product_id,
            "already_applied": result.already_applied,
            "name": next((c["name"] for c in user["dismissed"] if c["id"] == product_id), product_id),
            "user": user,
        }

    def recorded(
        self,
        caller: Caller,
        fields: Fields,
        product_id: str,
        kind: str,
        write: Callable[[RedisRecommender], StatefulWrite[Recorded]],
    ) -> tuple[Recorded, dict[str, Any]]:
        """What click, event and dismiss share: the event id and the impression it came from
        (checked before anything is written), the write (`write` picks it from the user's arm's
        recommender), the event counted (and joined to its impression) unless its event id had
        been applied before, and the user's panel after it."""
        user_id = caller.user_id
        event_id = parse_event_id(fields)
        impression = self.impression_of(user_id, fields, product_id)
        record = write(self.ranker_for(user_id)[1])
        result, state = record(user_id, product_id, event_id=event_id, may_create=caller.may_create_user)
        if not result.already_applied:
            self.attribute(impression, kind, product_id)
        return result, self.user_state(user_id, state)

    def impression_of(self, user_id: str, fields: Fields, product_id: str) -> Impression | None:
        """The impression a click or event names by its rec_id, checked before anything is
        written (an unknown rec_id, another user's, or one without the product is refused with
        nothing applied); None without a rec_id."""
        rec_id = parse_rec_id(fields)
        if rec_id is None:
            return None
        if self.impressions is None:
            raise ApiError(400, "this server logs no impressions (--no-impressions): send no rec_id")
        return self.impressions.find(user_id, rec_id, product_id)

    def attribute(self, impression: Impression | None, kind: str, product_id: str) -> None:
        """Count a recorded event, and join it to its impression when it came from one."""
        self.metrics.event(kind)
        if kind == "click":
            self.metrics.click(impression.source if impression else "none", impression.arm if impression else "none")
        if impression is not None and self.impressions is not None:
            self.impressions.record_outcome(impression, kind, product_id)

    def report(self, caller: Caller, fields: Fields) -> dict[str, Any]:
        """GET /report: click-through and conversion by list source and arm over `window` seconds."""
        if self.impressions is None:
            raise ApiError(404, "this server logs no impressions (--no-impressions), so it has no report")
        window = parse_optional_float(fields, "window", low=1, high=MAX_REPORT_WINDOW_S) or DEFAULT_REPORT_WINDOW_S
        impressions, outcomes = self.impressions.window(window)
        return build_report(impressions, outcomes, window, self.experiment)

    def reset_user(self, caller: Caller, fields: Fields) -> dict[str, Any]:
        self.recommender.reset_user(caller.user_id)
        return {"ok": True}

    def reset_index(self, caller: Caller, fields: Fields) -> dict[str, Any]:
        """The shipped catalogue again, switched to in one step (a reset that is running
        elsewhere is a 409, a failed one a 503 saying the old catalogue still serves)."""
        seeded = self.seed(lock_wait_s=0)
        self.recommender.reset_user(caller.user_id)
        return {"seeded": seeded}

    # --- for load balancers and client generators: no user, no fields ---------------------------

    def health(self) -> dict[str, Any]:
        """GET /healthz: this process answers HTTP. Nothing else is asked, so that a liveness
        probe never restarts a server for a fault of Redis (which /readyz reports)."""
        return {"status": "ok"}

    def ready(self) -> dict[str, Any]:
        """GET /readyz: whether this process can answer searches now; the reason as a 503
        otherwise. Concurrent probes share one check (SingleFlight)."""
        return self._readiness()

    def _check_ready(self) -> dict[str, Any]:
        """The encoder runs (it stops when the server does), Redis answers PING, and the index
        exists (else IndexMissingError, a 503) and has scanned every product. The model itself
        is loaded before the server listens (LocalEmbedder loads it, build_server warms it)."""
        if not self.encoder.running:
            raise ApiError(503, "the query encoder has stopped: this server is shutting down")
        self.recommender.redis.ping()
        scanned = self.recommender.index_info().percent_indexed
        if scanned < 1.0:
            raise ApiError(
                503,
                f"the search index is being built ({scanned:.0%} of the products scanned); retry shortly",
                RETRY_LATER,
            )
        return {"status": "ok"}

    def openapi(self) -> dict[str, Any]:
        """GET /openapi.json: the API's OpenAPI 3.1 description."""
        return openapi_document()

    def refresh_embedding(self, caller: Caller, fields: Fields) -> dict[str, Any]:
        """As search: the model first, with no API slot; then the write in one."""
        product_id = parse_product_id(fields)
        text = parse_free_text(fields, "text", multiline=True)
        started = time.perf_counter()
        with caller.model_turn():
            vector = self.encoder.encode_uncached(text)
        embed_ms = (time.perf_counter() - started) * 1000
        with caller.redis_turn():
            self.recommender.refresh_embedding(product_id, vector)
        return {"product_id": product_id, "embed_ms": round(embed_ms, 3)}


def recommendation_payload(result: Recommendation) -> dict[str, Any]:
    """What every list endpoint answers: the candidates (each with its `why`) and how the list
    was made."""
    return {
        "candidates": [c.to_dict() for c in result.candidates],
        "filter_clause": result.filter_clause,
        "excluded_count": result.excluded_count,
        "exhausted": result.exhausted,
    }


Endpoint = Callable[[DemoApp, Caller, Fields], dict[str, Any]]
# An endpoint of SERVICE_ROUTES: answered for the server, not for a user.
ServiceEndpoint = Callable[[DemoApp], dict[str, Any]]


def answering_library_errors(endpoint: Callable[P, dict[str, Any]]) -> Callable[P, dict[str, Any]]:
    """The library's errors as the API's answers, in one place: bad arguments are the client's
    400, an unknown product a 404, and conditions of Redis (no index, writes refused, replicas
    that did not acknowledge) a 503 that says what is wrong, its cause kept (`from exc`) for the
    Redis-error metric. Redis being unreachable is the transport's 503 (demo_server.py)."""

    @functools.wraps(endpoint)
    def answer(*args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
        try:
            try:
                return endpoint(*args, **kwargs)
            except IndexMissingError:
                # The endpoints' first argument is the app (or a part of the API holding it).
                app = getattr(args[0], "app", args[0])
                if not isinstance(app, DemoApp) or not app.heal_missing_index():
                    raise
                return endpoint(*args, **kwargs)
        except ProductNotFoundError as exc:
            raise ApiError(404, f"no product with id {exc.product_id!r}") from None
        except ImpressionError as exc:
            raise ApiError(exc.status, str(exc)) from None
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        except IndexMissingError as exc:
            raise ApiError(503, MISSING_INDEX_MESSAGE, RETRY_LATER) from exc
        except ReloadInProgressError as exc:
            raise ApiError(409, "another reset of the catalogue is running: it will be done in moments") from exc
        except ReloadFailedError as exc:
            log.error("reload failed: %s", exc)
            raise ApiError(503, str(exc), RETRY_LATER) from exc
        except WriteRefusedError as exc:
            log.error("write refused by Redis: %s", exc)
            raise ApiError(503, f"Redis refused the write: {exc.reason}; nothing was saved", RETRY_LATER) from exc
        except PartlyAppliedError as exc:
            log.error("write applied in part: %s", exc)
            raise ApiError(
                503,
                f"the write was applied in part ({exc}): retry with the same event_id to complete it",
                RETRY_LATER,
                {"applied": exc.applied},
            ) from exc
        except WriteOutcomeUnknownError as exc:
            log.warning("%s", exc)
            raise ApiError(
                503,
                "outcome unknown (Redis did not answer in time): retry with the same event_id "
                "(without one, a retry may count twice)",
                RETRY_LATER,
            ) from exc
        except (ReplicationTimeoutError, DurabilityTimeoutError) as exc:
            log.error("write not confirmed: %s", exc)
            raise ApiError(503, f"outcome unknown ({exc}): retry with the same event_id", RETRY_LATER) from exc
        except BudgetExceeded as exc:
            raise ApiError(429, str(exc), {"Retry-After": str(exc.retry_after_s)}) from exc

    return answer


RETRY_LATER = {"Retry-After": "1"}
MISSING_INDEX_MESSAGE = "the search index is missing and could not be rebuilt yet: retry shortly"


@dataclass(frozen=True)
class Route:
    """An endpoint and its method. `uses_model`: it waits for the model, and takes its own
    Caller.redis_turn around its Redis work; every other endpoint runs inside one."""

    method: str
    endpoint: Endpoint
    uses_model: bool = False


API_ROUTES: dict[str, Route] = {
    path: Route(method, answering_library_errors(endpoint), uses_model)
    for path, method, endpoint, uses_model in (
        ("/state", "GET", DemoApp.state, False),
        ("/search", "POST", DemoApp.search, True),
        ("/recommend", "POST", DemoApp.recommend, False),
        ("/similar", "POST", DemoApp.similar, False),
        ("/click", "POST", DemoApp.click, False),
        ("/event", "POST", DemoApp.event, False),
        ("/dismiss", "POST", DemoApp.dismiss, False),
        ("/reset-user", "POST", DemoApp.reset_user, False),
        ("/reset-index", "POST", DemoApp.reset_index, False),
        ("/refresh-embedding", "POST", DemoApp.refresh_embedding, True),
        ("/report", "GET", DemoApp.report, False),
    )
}

# Probes and the contract: GET or HEAD, no user (so no cookie), no body, no same-origin rule
# (nothing changes) and no API slot (answers without Redis, or, /readyz, one Redis check at a
# time). The Host rule, which demo_server.py applies before any route, holds for them too.
SERVICE_ROUTES: dict[str, ServiceEndpoint] = {
    "/healthz": DemoApp.health,
    "/readyz": answering_library_errors(DemoApp.ready),
    "/openapi.json": DemoApp.openapi,
}
