"""The four lists a user is shown, orchestrated: a typed query (recommend), the feed (for_you),
"more like this" (similar) and popular. Each reads what it needs of the user, fetches a pool of
candidates (retrieval.py), re-scores it with ranking.py's pure math, diversifies it and says
what produced it, along one path: _answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy.typing as npt

from ranking import (
    Candidate,
    RankingConfig,
    Recommendation,
    Source,
    UserFeatures,
    Vector,
    Why,
    blend_query,
    boost_category,
    boost_understood_category,
    check_unit_interval,
    cosine_distance,
    faded_affinities,
    finite_number,
    fuse_text_scores,
    maximal_marginal_relevance,
    negative_weight,
    personalise_within_tiers,
    rescore_by_affinity,
    score_order,
    session_is_live,
    session_weight,
)
from recengine.errors import ProductNotFoundError
from recengine.intent import Ignored, Understood, Vocabulary, names_a_product, understand, words_of
from recengine.layout import EMBEDDING_FIELD, KeyLayout, bytes_to_vector, checked_vector
from recengine.query import NO_FILTERS, SearchFilters
from recengine.replies import candidate_from_row, text
from recengine.results import CandidatePool, UserContext
from recengine.retrieval import Retrieval
from recengine.store import Store
from recengine.users import UserReads
from recengine.validation import MAX_K, check_k, check_product_id

# Re-orders a pool's candidates (which the request owns: they may be changed in place); the new
# order, and whether an affinity changed a score (Recommendation.used_rerank).
Rescore = Callable[[list[Candidate]], tuple[list[Candidate], bool]]


# How long the catalogue's brands and categories are trusted before they are read again: a
# product added with a new brand is understood within this many seconds.
VOCABULARY_TTL_S = 30.0


@dataclass(eq=False)
class VocabularyCache:
    """The catalogue's vocabulary, read at most once per VOCABULARY_TTL_S (one pipelined
    round trip), shared by every request of a recommender."""

    read: Callable[[], Vocabulary]
    _value: Vocabulary | None = None
    _read_at: float = -VOCABULARY_TTL_S
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self) -> Vocabulary:
        now = time.monotonic()
        with self._lock:
            if self._value is None or now - self._read_at >= VOCABULARY_TTL_S:
                self._value, self._read_at = self.read(), now
            return self._value


def _as_found(candidates: list[Candidate]) -> tuple[list[Candidate], bool]:
    return candidates, False


@dataclass(frozen=True)
class _Search:
    """One KNN answer to give: whose vector, how many to fetch and show, who is left out, the
    request's part of `why`, and how the pool is re-ordered. `uncounted` ids are left out without
    being reported as excluded (similar()'s own product)."""

    source: Source
    vector: Vector
    filters: SearchFilters
    k: int
    pool_size: int
    diversity: float
    excluded: frozenset[str]
    why: Why
    rescore: Rescore = _as_found
    uncounted: frozenset[str] = frozenset()


@dataclass(eq=False)
class Feeds:
    """recommend, for_you, similar and popular over one recommender's data."""

    store: Store
    keys: KeyLayout
    retrieval: Retrieval
    users: UserReads
    config: RankingConfig
    clock: Callable[[], float]
    vector_dim: int
    vocabulary: VocabularyCache

    def recommend(
        self,
        query_vec: npt.ArrayLike,
        user_id: str | None,
        k: int,
        filters: SearchFilters | None,
        use_session: bool,
        use_rerank: bool,
        exclude_clicked: bool,
        diversity: float,
        query_text: str | None = None,
        understand_query: bool = True,
    ) -> Recommendation:
        k, filters, diversity = check_k(k), filters or NO_FILTERS, check_unit_interval("diversity", diversity)
        now = float(self.clock())
        query = checked_vector(query_vec, self.vector_dim)
        context = self.users.context(user_id, exclude_clicked) if user_id is not None else None
        features = context.features if context else UserFeatures()
        session = session_weight(features, self.config, now) if use_session else 0.0
        negative = negative_weight(features, self.config, now) if use_session else 0.0
        if query_text is not None:
            return self._typed(
                query, query_text, understand_query, filters, k, diversity, context, session, negative,
                use_rerank, now,
            )  # fmt: skip
        return self._rank(
            _Search(
                source="query",
                vector=blend_query(query, features.session_vec, features.negative_vec, session, negative),
                filters=filters,
                k=k,
                pool_size=self._pool_size(k, use_rerank, diversity),
                diversity=diversity,
                excluded=context.excluded if context else frozenset(),
                why=Why(
                    session_weight=round(session, 6) if session else None,
                    negative_weight=round(negative, 6) if negative else None,
                ),
                rescore=self._by_affinity(context, now) if use_rerank and context is not None else _as_found,
            )
        )

    def _typed(
        self,
        query: Vector,
        query_text: str,
        understand_query: bool,
        filters: SearchFilters,
        k: int,
        diversity: float,
        context: UserContext | None,
        session: float,
        negative: float,
        use_rerank: bool,
        now: float,
    ) -> Recommendation:
        """A typed query: its words understood (facets as filters, a category as a boost), BM25
        over its remaining words fused with the KNN, and personalisation bounded by the query's
        own relevance when the query names a kind of product (see ranking.personalise_within_tiers).

        Both KNNs (the query's own, and the query blended with the session) and the BM25 search
        go in one round trip; which KNN frames the list is decided by what the words matched. A
        query that names no product (a vague one) is personalised as before: the session blends
        in and the affinities re-rank freely."""
        if understand_query:
            understood = understand(query_text, self.vocabulary.get())
        else:
            understood = Understood(terms=words_of(query_text))
        filters = _with_understood(filters, understood)
        blended = blend_query(query, context.features.session_vec if context else None,
                              context.features.negative_vec if context else None, session, negative)  # fmt: skip
        personal = bool(session or negative)
        vectors = [query, blended] if personal else [query]
        want = self._pool_size(k, True, diversity)
        excluded = context.excluded if context else frozenset()
        filter_clause = filters.clause()
        started = time.perf_counter()
        pools, hits = self.retrieval.typed(vectors, filter_clause, understood.terms, want, excluded)
        searched = time.perf_counter()
        hit_names = [text(raw.get("name")) for raw in hits.rows.values()]
        specific = bool(understood.brand or understood.category) or names_a_product(understood.terms, hit_names)
        framed = specific or not personal
        pool, vector = (pools[0], query) if framed else (pools[-1], blended)
        known = {c.id for c in pool.candidates}
        for pid, raw in hits.rows.items():
            if pid not in known:
                candidate = candidate_from_row(pid, raw)
                stored = bytes_to_vector(raw.get(EMBEDDING_FIELD), self.vector_dim)
                candidate.vector_distance = candidate.score = cosine_distance(vector, stored)
                candidate.why.vector_distance = round(candidate.vector_distance, 6)
                pool.candidates.append(candidate)
                pool.vectors[pid] = stored
        fuse_text_scores(pool.candidates, hits.scores, self.config.text_weight)
        boost_understood_category(pool.candidates, understood.category, self.config.understood_category_boost)
        pool.candidates.sort(key=score_order)
        changed = False
        if use_rerank and context is not None:
            affinities = faded_affinities(context.features, self.config, now)
            tier = self.config.typed_query_tier if specific else None
            changed = personalise_within_tiers(pool.candidates, affinities, self.config.affinity_weight, tier)
        why = Why(
            session_weight=None if framed or not session else round(session, 6),
            negative_weight=None if framed or not negative else round(negative, 6),
        )
        answer = self._answer("query", filter_clause, pool, k, diversity, why, changed, started, searched)
        return replace(answer, understood=understood.to_dict())

    def for_you(
        self, user_id: str, k: int, filters: SearchFilters | None, exclude_clicked: bool, diversity: float
    ) -> Recommendation:
        k, filters, diversity = check_k(k), filters or NO_FILTERS, check_unit_interval("diversity", diversity)
        now = float(self.clock())
        context = self.users.context(user_id, exclude_clicked)
        features = context.features
        if not session_is_live(features, self.config, now):
            return self._popular(k, filters, context, now, diversity)
        negative = negative_weight(features, self.config, now)
        return self._rank(
            _Search(
                source="session",
                vector=blend_query(None, features.session_vec, features.negative_vec, 1.0, negative),
                filters=filters,
                k=k,
                pool_size=self._pool_size(k, True, diversity),
                diversity=diversity,
                excluded=context.excluded,
                why=Why(
                    session_weight=round(session_weight(features, self.config, now), 6),
                    negative_weight=round(negative, 6) if negative else None,
                ),
                rescore=self._by_affinity(context, now),
            )
        )

    def similar(
        self,
        product_id: str,
        k: int,
        filters: SearchFilters | None,
        same_category_boost: float | None,
        user_id: str | None,
        exclude_clicked: bool,
        diversity: float,
    ) -> Recommendation:
        k, filters, diversity = check_k(k), filters or NO_FILTERS, check_unit_interval("diversity", diversity)
        boost = (
            self.config.same_category_boost
            if same_category_boost is None
            else finite_number("same_category_boost", same_category_boost)
        )
        if boost is None or boost < 0:
            raise ValueError(f"same_category_boost must be at least 0, got {same_category_boost!r}")
        vector, category, context = self._product_and_user(product_id, user_id, exclude_clicked)
        return self._rank(
            _Search(
                source="similar",
                vector=vector,
                filters=filters,
                k=k,
                pool_size=self._pool_size(k, bool(boost), diversity),
                diversity=diversity,
                excluded=(context.excluded if context else frozenset()) | {product_id},
                why=Why(),
                rescore=lambda candidates: (boost_category(candidates, category, boost), False),
                uncounted=frozenset({product_id}),
            )
        )

    def _product_and_user(
        self, product_id: str, user_id: str | None, exclude_clicked: bool
    ) -> tuple[Vector, str, UserContext | None]:
        """The product's stored vector and category and the user's context: independent reads,
        one round trip. ProductNotFoundError, or ValueError for a product without a vector."""
        key = self.keys.product(check_product_id(product_id))
        pipe = self.store.pipeline()
        pipe.hmget(key, [EMBEDDING_FIELD, "category"])
        if user_id is not None:
            self.users.queue_context(pipe, user_id, exclude_clicked)
        replies = self.store.execute(pipe)
        blob, category = replies[0]
        vector = bytes_to_vector(blob if isinstance(blob, bytes) else None, self.vector_dim)
        if vector is None:
            if not self.store.primary.exists(key):
                raise ProductNotFoundError(product_id)
            raise ValueError(f"product {product_id!r} has no valid {self.vector_dim}-d embedding to compare with")
        context = self.users.context_from(user_id, replies[1:], exclude_clicked) if user_id is not None else None
        return vector, text(category), context

    def popular(self, k: int, filters: SearchFilters | None, user_id: str | None) -> Recommendation:
        k = check_k(k)
        context = self.users.context(user_id, exclude_clicked=False) if user_id is not None else None
        return self._popular(k, filters or NO_FILTERS, context, float(self.clock()), 0.0)

    # one path for every answer

    def _by_affinity(self, context: UserContext, now: float) -> Rescore:
        def rescore(candidates: list[Candidate]) -> tuple[list[Candidate], bool]:
            affinities = faded_affinities(context.features, self.config, now)
            # The candidates were built from this request's reply: re-scored in place, not copied.
            changed = rescore_by_affinity(candidates, affinities, self.config.affinity_weight)
            candidates.sort(key=score_order)
            return candidates, changed

        return rescore

    def _pool_size(self, k: int, reordered: bool, diversity: float) -> int:
        return min(k * self.config.overfetch, MAX_K) if reordered or diversity else k

    def _rank(self, search: _Search) -> Recommendation:
        filter_clause = search.filters.clause()
        started = time.perf_counter()
        pool = self.retrieval.nearest(
            search.vector, filter_clause, search.pool_size, search.excluded, with_vectors=search.diversity > 0
        )
        searched = time.perf_counter()
        pool.candidates, changed = search.rescore(pool.candidates)
        pool.left_out -= search.uncounted
        return self._answer(
            search.source, filter_clause, pool, search.k, search.diversity, search.why, changed, started, searched
        )

    def _popular(
        self, k: int, filters: SearchFilters, context: UserContext | None, now: float, diversity: float
    ) -> Recommendation:
        filter_clause = filters.clause()
        excluded = context.excluded if context else frozenset()
        started = time.perf_counter()
        want = self._pool_size(k, False, diversity)
        pool = self.retrieval.most_popular(filter_clause, want, excluded, now, diversity > 0)
        source: Source = "popular" if pool.candidates else "rating"
        if len(pool.candidates) < want:
            chosen = {c.id for c in pool.candidates}
            pool.extend(self.retrieval.top_rated(filter_clause, want - len(chosen), excluded, chosen, diversity > 0))
        return self._answer(source, filter_clause, pool, k, diversity, Why(), False, started, None)

    def _answer(
        self,
        source: Source,
        filter_clause: str,
        pool: CandidatePool,
        k: int,
        diversity: float,
        why: Why,
        used_rerank: bool,
        started: float,
        searched: float | None,
    ) -> Recommendation:
        """Stamp the request's part of `why` on every candidate, diversify, cut to k, and say what
        produced the list. Time from `started` to `searched` is the search's, the rest the
        re-ranking's (all of it the search's without `searched`)."""
        why.excluded_count = len(pool.left_out)
        shown = self._finish(pool.candidates, pool.vectors, k, diversity, why)
        finished = time.perf_counter()
        return Recommendation(
            candidates=shown,
            source=source,
            filter_clause=filter_clause,
            used_session=bool(why.session_weight),
            used_rerank=used_rerank,
            session_weight=why.session_weight or 0.0,
            excluded_count=len(pool.left_out),
            exhausted=pool.exhausted and len(shown) < k,
            search_ms=((finished if searched is None else searched) - started) * 1000,
            rerank_ms=0.0 if searched is None else (finished - searched) * 1000,
        )

    @staticmethod
    def _finish(
        candidates: list[Candidate], vectors: dict[str, Vector | None], k: int, diversity: float, why: Why
    ) -> list[Candidate]:
        """The candidates are this request's own (built from its replies), so they are stamped
        in place."""
        stamp = [(name, value) for name, value in vars(why).items() if value is not None]
        for candidate in candidates:
            for name, value in stamp:
                setattr(candidate.why, name, value)
        if diversity:
            return maximal_marginal_relevance(candidates, [vectors.get(c.id) for c in candidates], k, diversity)
        return candidates[:k]


def _with_understood(filters: SearchFilters, understood: Understood) -> SearchFilters:
    """The request's filters with the understood facets filled in where the request left them
    open: an explicit filter always wins, and the understood value it overrides is moved to
    `ignored`. The category is a boost, never a filter (see intent.py)."""
    chosen: dict[str, object] = {}
    for name in ("brand", "min_price", "max_price", "min_rating"):
        value = getattr(understood, name)
        if value is None:
            continue
        if getattr(filters, name) is None:
            chosen[name] = value
        else:
            understood.ignored.append(Ignored(understood.matched.get(name, str(value)), f"the request's {name} wins"))
            setattr(understood, name, None)
    if understood.in_stock_only:
        chosen["in_stock_only"] = True
    if not chosen:
        return filters
    merged = replace(filters, **chosen)  # type: ignore[arg-type]
    if merged.min_price is not None and merged.max_price is not None and merged.min_price > merged.max_price:
        understood.ignored.append(Ignored("price", "the understood price contradicts the request's"))
        understood.min_price = understood.max_price = None
        return replace(merged, min_price=filters.min_price, max_price=filters.max_price)
    return merged
