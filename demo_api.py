"""The demo's JSON API without the sockets: request fields parsed into the library's typed
requests, one method per endpoint, and the route table. demo_server.py owns HTTP itself (bytes,
headers, origins, cookies) and the command line; this module changes when an endpoint does."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from embeddings import LocalEmbedder
from recommender import RedisRecommender, field_problem

log = logging.getLogger("demo_server")

log = logging.getLogger("demo_server")

MAX_QUERY_CHARS = 1000
MAX_K = 100
TRUE_WORDS = {"1", "true", "on", "yes"}
FALSE_WORDS = {"", "0", "false", "off", "no"}
QUERY_CACHE_SIZE = 2048


class ApiError(Exception):
    """An answer for the client: status, and a message that says what to fix."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


# --- request fields: data in, data out ------------------------------------------------------

Fields = Mapping[str, Any]


def parse_bool(fields: Fields, name: str) -> bool:
    """Form semantics: an unticked checkbox is simply absent, so absent means false."""
    value = fields.get(name)
    if value is None or isinstance(value, bool):
        return bool(value)
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
        raise ApiError(400, f"k must be a whole number from 1 to {MAX_K}, got {value!r}")
    try:
        k = int(value) if not isinstance(value, str) else int(value.strip())
    except (TypeError, ValueError):
        raise ApiError(400, f"k must be a whole number from 1 to {MAX_K}, got {value!r}") from None
    if not 1 <= k <= MAX_K:
        raise ApiError(400, f"k must be a whole number from 1 to {MAX_K}, got {k}")
    return k


def parse_text(
    fields: Fields, name: str, *, required: bool = False, max_chars: int = MAX_QUERY_CHARS, multiline: bool = False
) -> str | None:
    """A free-text field, stripped; empty counts as absent ("Any" in the page's selects).
    `multiline` admits line breaks and tabs, which a textarea produces."""
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
    if any((ord(ch) < 32 and not (multiline and ch in "\t\n\r")) or ord(ch) == 127 for ch in text):
        raise ApiError(400, f"{name} must not contain control characters")
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        # JSON can spell a lone surrogate ("\ud800"), which no UTF-8 encoder (Redis, the
        # tokenizer) accepts: refused here rather than failing deep inside as a 500.
        raise ApiError(400, f"{name} must be valid Unicode text (it contains a lone surrogate)")
    return text


def parse_search(fields: Fields, default_k: int) -> dict[str, Any]:
    """The /search fields as keyword arguments for RedisRecommender.recommend."""
    min_price = parse_optional_float(fields, "min_price", low=0)
    max_price = parse_optional_float(fields, "max_price", low=0)
    if min_price is not None and max_price is not None and min_price > max_price:
        raise ApiError(400, f"min_price ({min_price:g}) is greater than max_price ({max_price:g})")
    return {
        "query": parse_text(fields, "query", required=True),
        "k": parse_k(fields, default_k),
        "use_session": parse_bool(fields, "use_session"),
        "use_rerank": parse_bool(fields, "rerank"),
        "filters": {
            "category": parse_text(fields, "category", max_chars=200),
            "brand": parse_text(fields, "brand", max_chars=200),
            "min_price": min_price,
            "max_price": max_price,
            "min_rating": parse_optional_float(fields, "min_rating", low=0, high=5),
            "text_match": parse_text(fields, "text_match", max_chars=200),
            "in_stock_only": parse_bool(fields, "in_stock_only"),
        },
    }


# --- the application: what each endpoint does ------------------------------------------------


class QueryEmbeddingCache:
    """Recent query vectors, keyed by model and exact text: people repeat queries (and the page
    re-runs the last one after every click), and the model is the slow part of a search."""

    def __init__(self, maxsize: int = QUERY_CACHE_SIZE) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> np.ndarray | None:
        with self._lock:
            vector = self._items.get(key)
            if vector is not None:
                self._items.move_to_end(key)
            return vector

    def put(self, key: tuple[str, str], vector: np.ndarray) -> None:
        with self._lock:
            self._items[key] = vector
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)


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
    ) -> None:
        self.recommender = recommender
        self.embedder = embedder
        self.catalog = catalog
        self.default_k = default_k
        self.redis_description = redis_description
        self.query_cache = QueryEmbeddingCache()
        # One model call at a time: on a small machine concurrent calls only fight over cores.
        self._model_lock = threading.Lock()

    def embed(self, text: str) -> np.ndarray:
        with self._model_lock:
            return self.embedder.encode_one(text)

    def embed_query(self, text: str) -> tuple[np.ndarray, bool]:
        key = (self.embedder.model_name, text)
        vector = self.query_cache.get(key)
        if vector is not None:
            return vector, True
        vector = self.embed(text)
        self.query_cache.put(key, vector)
        return vector, False

    def seed(self) -> int:
        """Drop the index and its documents, recreate it, and load the catalog's vectors as they
        are (nothing is re-embedded)."""
        self.recommender.drop_index(delete_documents=True)
        self.recommender.create_index()
        return self.recommender.index_products(self.catalog["products"])

    def ensure_index(self) -> int:
        """--no-reset: keep what Redis has; seed only an empty index."""
        self.recommender.create_index()
        self.recommender.wait_until_indexed()
        count = self.recommender.count_indexed()
        return count if count else self.seed()

    def user_state(self, user_id: str) -> dict[str, Any]:
        features = self.recommender.get_user_features(user_id)
        recent_ids = self.recommender.recent_clicks(user_id)
        known = self.recommender.get_products(recent_ids)
        session = features["session_vec"]
        return {
            "user_id": user_id,
            "clicks": features["clicks"],
            "last_clicked_id": features["last_clicked_id"],
            "last_clicked_category": features["last_clicked_category"],
            "affinities": dict(sorted(features["affinities"].items(), key=lambda kv: (-kv[1], kv[0]))),
            "has_session_vec": session is not None,
            "session_vec_dim": int(session.shape[0]) if session is not None else 0,
            "recent_clicks": [{"id": pid, "name": known.get(pid, {}).get("name") or pid} for pid in recent_ids],
        }

    def state(self, user_id: str, fields: Fields) -> dict[str, Any]:
        info = self.recommender.index_info()
        return {
            "user": self.user_state(user_id),
            "index": {
                "num_docs": info["num_docs"],
                "indexing_failures": info["indexing_failures"],
                "vector_index_size_mb": info["vector_index_size_mb"],
                "index_name": self.recommender.index_name,
                "model": self.embedder.model_name,
                "embedding_backend": self.embedder.backend,
            },
            "products": self.recommender.list_products(limit=1000),
            "categories": self.recommender.list_categories(),
            "brands": self.recommender.list_brands(),
        }

    def search(self, user_id: str, fields: Fields) -> dict[str, Any]:
        request = parse_search(fields, self.default_k)
        started = time.perf_counter()
        query_vec, cached = self.embed_query(request["query"])
        embedded = time.perf_counter()
        try:
            result = self.recommender.recommend(
                query_vec,
                user_id=user_id,
                k=request["k"],
                use_session=request["use_session"],
                use_rerank=request["use_rerank"],
                **request["filters"],
            )
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return {
            "candidates": [c.to_dict() for c in result.candidates],
            "filter_clause": result.filter_clause,
            "used_session": result.used_session,
            "used_rerank": result.used_rerank,
            "embed_ms": round((embedded - started) * 1000, 3),
            "embed_cached": cached,
            "search_ms": round(result.search_ms, 3),
            "rerank_ms": round(result.rerank_ms, 3),
            "timing_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    def click(self, user_id: str, fields: Fields) -> dict[str, Any]:
        product_id = self._product_id(fields)
        try:
            result = self.recommender.record_click(user_id, product_id)
        except KeyError:
            raise ApiError(404, f"no product with id {product_id!r}") from None
        user = self.user_state(user_id)
        # The click is the newest recent click, whose name user_state has just looked up.
        name = next((c["name"] for c in user["recent_clicks"] if c["id"] == product_id), product_id)
        return {
            "category": result["category"],
            "affinity": result["affinity"],
            "clicks": result["clicks"],
            "last_clicked_id": result["last_clicked_id"],
            "name": name,
            "user": user,
        }

    def reset_user(self, user_id: str, fields: Fields) -> dict[str, Any]:
        self.recommender.reset_user(user_id)
        return {"ok": True}

    def reset_index(self, user_id: str, fields: Fields) -> dict[str, Any]:
        seeded = self.seed()
        self.recommender.reset_user(user_id)
        return {"seeded": seeded}

    def refresh_embedding(self, user_id: str, fields: Fields) -> dict[str, Any]:
        product_id = self._product_id(fields)
        text = parse_text(fields, "text", required=True, multiline=True)
        started = time.perf_counter()
        vector = self.embed(text)
        embed_ms = (time.perf_counter() - started) * 1000
        try:
            self.recommender.refresh_embedding(product_id, vector)
        except KeyError:
            raise ApiError(404, f"no product with id {product_id!r}") from None
        return {"product_id": product_id, "embed_ms": round(embed_ms, 3)}

    @staticmethod
    def _product_id(fields: Fields) -> str:
        product_id = parse_text(fields, "product_id", required=True, max_chars=128)
        problem = field_problem("id", product_id)
        if problem:
            raise ApiError(400, f"product_{problem}")
        return product_id


@dataclass(frozen=True)
class Route:
    method: str
    endpoint: Callable[[DemoApp, str, Fields], dict[str, Any]]


API_ROUTES: dict[str, Route] = {
    "/state": Route("GET", DemoApp.state),
    "/search": Route("POST", DemoApp.search),
    "/click": Route("POST", DemoApp.click),
    "/reset-user": Route("POST", DemoApp.reset_user),
    "/reset-index": Route("POST", DemoApp.reset_index),
    "/refresh-embedding": Route("POST", DemoApp.refresh_embedding),
}
