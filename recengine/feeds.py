"""The four lists a user is shown, orchestrated: a typed query (recommend), the feed (for_you),
"more like this" (similar) and popular. Each reads what it needs of the user, fetches a pool of
candidates (retrieval.py), re-scores it with ranking.py's pure math, diversifies it and says
what produced it, along one path: _answer.

similar() and for_you() take a signal: "content" (the KNN of a vector, as always),
"co_occurrence" (what was bought together, co_occurrence.py) or "blend" (both, mixed by the
evidence each product has: blend.py). The counted products pass the same filters and
exclusions as the rest, in one FT.SEARCH over those products only.
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
from recengine.blend import Blended, Signal, blend, check_signal, ranked_counts, reason, summed_counts
from recengine.catalog_schema import stored_category
from recengine.co_occurrence import CoOccurrence, Neighbour
from recengine.errors import ProductNotFoundError
from recengine.intent import Ignored, Understood, Vocabulary, names_a_product, understand, words_of
from recengine.layout import EMBEDDING_FIELD, WINDOW_FIELD, KeyLayout, VectorFormat, checked_vector
from recengine.query import NO_FILTERS, SearchFilters
from recengine.reload import follow_serving, queue_serving
from recengine.replies import candidate_from_row, text
from recengine.results import CandidatePool, UserContext
from recengine.retrieval import Retrieval
from recengine.store import Store
from recengine.users import UserReads
from recengine.validation import MAX_K, check_k, check_product_id

# The feed sums the neighbours of this many of the user's most recent products. On Online
# Retail's returning customers (bench/crowd.py's feed task, as imported) recall@20 was 0.055 with
# 5, 0.062 with 15 and 0.063 with 32: past 16, more reads buy little.
FEED_SOURCES = 16
# Neighbours read per product: enough for a page after filters and exclusions take their share.
NEIGHBOURS_READ = 50

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
    """One answer to give: whose vector, how many to fetch and show, who is left out, the
    request's part of `why`, and how the pool is re-ordered. `uncounted` ids are left out without
    being reported as excluded (similar()'s own product); `signal` is the one asked for."""

    source: Source
    vector: Vector | None  # None: the feed without a live session, ranked by counts alone
    filters: SearchFilters
    k: int
    pool_size: int
    diversity: float
    excluded: frozenset[str]
    why: Why
    rescore: Rescore = _as_found
    uncounted: frozenset[str] = frozenset()
    signal: Signal | None = None


@dataclass(eq=False)
class Feeds:
    """recommend, for_you, similar and popular over one recommender's data."""

    store: Store
    keys: KeyLayout
    retrieval: Retrieval
    users: UserReads
    co_occurrence: CoOccurrence
    config: RankingConfig
    clock: Callable[[], float]
    vectors: VectorFormat
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
        query = checked_vector(query_vec, self.vectors.dim)
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
        What the user dismissed stays a candidate, marked down (why.dismissed_penalty): a search
        for something else finds it again; only the seen ones (exclude_clicked) are left out.

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
        filter_clause = filters.clause()
        started = time.perf_counter()
        pools, hits = self.retrieval.typed(
            vectors, filter_clause, understood.terms, want,
            context.seen if context else frozenset(), context.dismissed if context else frozenset(),
            with_vectors=diversity > 0,
        )  # fmt: skip
        searched = time.perf_counter()
        hit_names = [text(raw.get("name")) for raw in hits.rows.values()]
        specific = bool(understood.brand or understood.category) or names_a_product(understood.terms, hit_names)
        framed = specific or not personal
        pool, vector = (pools[0], query) if framed else (pools[-1], blended)
        known = {c.id for c in pool.candidates}
        for pid, raw in hits.rows.items():
            if pid not in known:
                candidate = candidate_from_row(pid, raw)
                stored = self.vectors.decode(raw.get(EMBEDDING_FIELD))
                candidate.vector_distance = candidate.score = cosine_distance(vector, stored)
                candidate.why.vector_distance = round(candidate.vector_distance, 6)
                pool.candidates.append(candidate)
                pool.vectors[pid] = stored
        fuse_text_scores(pool.candidates, hits.scores, self.config.text_weight)
        boost_understood_category(pool.candidates, understood.category, self.config.understood_category_boost)
        pool.candidates.sort(key=score_order)
        changed = False
        if context is not None and (use_rerank or context.dismissed):
            affinities = faded_affinities(context.features, self.config, now) if use_rerank else {}
            changed = personalise_within_tiers(
                pool.candidates, affinities, self.config.affinity_weight,
                self.config.typed_query_tier if specific else None, context.dismissed, self.config.dismissed_penalty,
            )  # fmt: skip
        why = Why(
            session_weight=None if framed or not session else round(session, 6),
            negative_weight=None if framed or not negative else round(negative, 6),
        )
        answer = self._answer("query", filter_clause, pool, k, diversity, why, changed, started, searched)
        return replace(answer, understood={**understood.to_dict(), "specific": specific})

    def for_you(
        self,
        user_id: str,
        k: int,
        filters: SearchFilters | None,
        exclude_clicked: bool,
        diversity: float,
        signal: Signal,
    ) -> Recommendation:
        k, filters, diversity = check_k(k), filters or NO_FILTERS, check_unit_interval("diversity", diversity)
        signal = check_signal(signal)
        now = float(self.clock())
        pipe = self.store.pipeline()
        self.users.queue_context(pipe, user_id, exclude_clicked)
        if signal != "content":
            pipe.hget(self.keys.user(user_id).features, WINDOW_FIELD)
        replies = self.store.execute(pipe)
        context = self.users.context_from(user_id, replies[: len(replies) - (signal != "content")], exclude_clicked)
        features = context.features
        live = session_is_live(features, self.config, now) and signal != "co_occurrence"
        counts: dict[str, float] = {}
        contributors: dict[str, str] = {}
        if signal != "content":
            recent = list(dict.fromkeys(e.product_id for e in self.co_occurrence.window_from(replies[-1])))
            counts, contributors = self._summed_neighbours(recent[:FEED_SOURCES], now)
        if not live and not counts:
            return self._popular(k, filters, context, now, diversity, signal)
        negative = negative_weight(features, self.config, now)
        search = _Search(
            source="session" if live else "co_occurrence",
            vector=blend_query(None, features.session_vec, features.negative_vec, 1.0, negative) if live else None,
            filters=filters,
            k=k,
            pool_size=self._pool_size(k, True, diversity),
            diversity=diversity,
            excluded=context.excluded,
            why=Why(
                session_weight=round(session_weight(features, self.config, now), 6) if live else None,
                negative_weight=round(negative, 6) if negative and live else None,
            ),
            rescore=self._by_affinity(context, now),
            signal=signal,
        )
        if signal == "content":
            return self._rank(search)
        return self._crowd(search, counts, contributors, None, live, now)

    def _summed_neighbours(self, sources: list[str], now: float) -> tuple[dict[str, float], dict[str, str]]:
        """The neighbours of several products, counts summed (one round trip)."""
        if not sources:
            return {}, {}
        pipe = self.store.pipeline()
        for product_id in sources:
            self.co_occurrence.queue_neighbours(pipe, product_id, NEIGHBOURS_READ)
        replies = self.store.execute(pipe)
        per_source = [
            (
                source,
                {n.product_id: n.count for n in self.co_occurrence.neighbours_from(replies[2 * i : 2 * i + 2], now)},
            )
            for i, source in enumerate(sources)
        ]
        counts, contributors = summed_counts(per_source)
        for source in sources:  # what the user had is no neighbour of what they had
            counts.pop(source, None)
        return counts, contributors

    def similar(
        self,
        product_id: str,
        k: int,
        filters: SearchFilters | None,
        same_category_boost: float | None,
        user_id: str | None,
        exclude_clicked: bool,
        diversity: float,
        signal: Signal,
    ) -> Recommendation:
        k, filters, diversity = check_k(k), filters or NO_FILTERS, check_unit_interval("diversity", diversity)
        signal = check_signal(signal)
        boost = (
            self.config.same_category_boost
            if same_category_boost is None
            else finite_number("same_category_boost", same_category_boost)
        )
        if boost is None or boost < 0:
            raise ValueError(f"same_category_boost must be at least 0, got {same_category_boost!r}")
        now = float(self.clock())
        vector, category, context, neighbours = self._product_and_user(
            product_id, user_id, exclude_clicked, signal != "content", now
        )
        search = _Search(
            source="similar",
            vector=vector,
            filters=filters,
            k=k,
            pool_size=self._pool_size(k, bool(boost) or signal == "blend", diversity),
            diversity=diversity,
            excluded=(context.excluded if context else frozenset()) | {product_id},
            why=Why(),
            rescore=lambda candidates: (boost_category(candidates, category, boost), False),
            uncounted=frozenset({product_id}),
            signal=signal,
        )
        if signal == "content":
            return self._rank(search)
        counts = {n.product_id: n.count for n in neighbours if n.product_id != product_id}
        return self._crowd(search, counts, {}, product_id, True, now)

    def _product_and_user(
        self, product_id: str, user_id: str | None, exclude_clicked: bool, with_neighbours: bool, now: float
    ) -> tuple[Vector, str, UserContext | None, list[Neighbour]]:
        """The product's stored vector and category, the user's context and (when asked) the
        product's counted neighbours: independent reads, one round trip. ProductNotFoundError,
        or ValueError for a product without a vector."""
        check_product_id(product_id)
        while True:
            key = self.keys.product(product_id)
            pipe = self.store.pipeline()
            queue_serving(pipe, self.keys)  # a reload may have moved the catalogue: same round trip
            pipe.hmget(key, [EMBEDDING_FIELD, "category"])
            if with_neighbours:
                self.co_occurrence.queue_neighbours(pipe, product_id, NEIGHBOURS_READ)
            if user_id is not None:
                self.users.queue_context(pipe, user_id, exclude_clicked)
            serving, *replies = self.store.execute(pipe)
            if not follow_serving(self.keys, serving):
                break
        blob, category = replies[0]
        vector = self.vectors.decode(blob if isinstance(blob, bytes) else None)
        if vector is None:
            if not self.store.primary.exists(key):
                raise ProductNotFoundError(product_id)
            raise ValueError(f"product {product_id!r} has no valid {self.vectors.dim}-d embedding to compare with")
        neighbours = self.co_occurrence.neighbours_from(replies[1:3], now) if with_neighbours else []
        user_replies = replies[3:] if with_neighbours else replies[1:]
        context = self.users.context_from(user_id, user_replies, exclude_clicked) if user_id is not None else None
        return vector, stored_category(text(category)), context, neighbours

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
        return self._content_answer(search, filter_clause, self._content_pool(search, filter_clause), started)

    def _content_answer(
        self, search: _Search, filter_clause: str, pool: CandidatePool, started: float
    ) -> Recommendation:
        """The KNN pool re-scored and answered; with a signal asked for, each says "content"."""
        searched = time.perf_counter()
        pool.candidates, changed = search.rescore(pool.candidates)
        pool.left_out -= search.uncounted
        if search.signal is not None:
            for candidate in pool.candidates:
                candidate.why.signal = "content"
                candidate.why.reason = reason(Blended(candidate.id, 0.0, None, 0, None), self._asked_about(search))
        return self._answer(
            search.source, filter_clause, pool, search.k, search.diversity, search.why, changed, started, searched,
            search.signal,
        )  # fmt: skip

    def _content_pool(self, search: _Search, filter_clause: str) -> CandidatePool:
        if search.vector is None:
            raise ValueError("a nearest-neighbour answer needs a vector")
        return self.retrieval.nearest(
            search.vector, filter_clause, search.pool_size, search.excluded, with_vectors=search.diversity > 0
        )

    @staticmethod
    def _asked_about(search: _Search) -> str | None:
        """similar()'s product (its one uncounted id); None for the feed."""
        return next(iter(search.uncounted), None)

    def _crowd(
        self,
        search: _Search,
        counts: dict[str, float],
        contributors: dict[str, str],
        asked_about: str | None,
        with_content: bool,
        now: float,
    ) -> Recommendation:
        """An answer from the crowd's counts, alone (signal co_occurrence, or the feed without a
        live session) or blended with the content pool (blend.py). The counted products pass the
        filters and exclusions in one FT.SEARCH over them; with no counted product left, blend
        is the content answer as it is (the cold start)."""
        filter_clause = search.filters.clause()
        started = time.perf_counter()
        with_vectors = search.diversity > 0
        counted_ids = [pid for pid, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
        counted_ids = counted_ids[:NEIGHBOURS_READ]
        blending = with_content and search.signal == "blend"
        if blending and search.vector is not None:
            content, counted = self.retrieval.nearest_and_among(
                search.vector, filter_clause, search.pool_size, counted_ids, search.excluded, with_vectors
            )
        else:
            content = CandidatePool()
            counted = self.retrieval.among(search.vector, filter_clause, counted_ids, search.excluded, with_vectors)
        passing = {c.id: counts[c.id] for c in counted.candidates}
        if blending and not passing:  # nothing counted passes: the content answer as it is
            return self._content_answer(search, filter_clause, content, started)
        searched = time.perf_counter()
        content.candidates, changed = search.rescore(content.candidates)
        if blending:
            order = blend(
                passing, [c.id for c in content.candidates], self.co_occurrence.config.evidence_prior, contributors
            )
        else:
            order = [replace(item, together_with=contributors.get(item.product_id)) for item in ranked_counts(passing)]
        by_id = {c.id: c for c in counted.candidates} | {c.id: c for c in content.candidates}
        ranked = []
        for item in order:
            candidate = by_id[item.product_id]
            candidate.score = -item.score
            why = candidate.why
            why.co_count = round(item.co_count, 4) if item.co_count is not None else None
            why.together_with = (item.together_with or asked_about) if item.co_count is not None else None
            why.signal = (
                "blend"
                if item.co_count is not None and item.content_rank is not None
                else ("co_occurrence" if item.co_count is not None else "content")
            )
            why.reason = reason(item, asked_about)
            ranked.append(candidate)
        pool = CandidatePool(
            candidates=ranked,
            vectors=counted.vectors | content.vectors,
            left_out=(counted.left_out | content.left_out) - search.uncounted,
            exhausted=content.exhausted if blending else True,
        )
        if not with_content and len(ranked) < search.k and asked_about is None:
            # the feed without a live session: what is popular fills what the counts leave
            chosen = frozenset(c.id for c in ranked)
            top_up, _ = self._popular_pool(
                filter_clause, search.k - len(ranked), search.excluded | chosen, now, with_vectors
            )
            top_up.left_out -= chosen
            pool.extend(top_up)
        return self._answer(
            search.source, filter_clause, pool, search.k, search.diversity, search.why, changed, started, searched,
            search.signal,
        )  # fmt: skip

    def _popular(
        self,
        k: int,
        filters: SearchFilters,
        context: UserContext | None,
        now: float,
        diversity: float,
        signal: Signal | None = None,
    ) -> Recommendation:
        filter_clause = filters.clause()
        excluded = context.excluded if context else frozenset()
        started = time.perf_counter()
        want = self._pool_size(k, False, diversity)
        pool, source = self._popular_pool(filter_clause, want, excluded, now, diversity > 0)
        return self._answer(source, filter_clause, pool, k, diversity, Why(), False, started, None, signal)

    def _popular_pool(
        self, filter_clause: str, want: int, excluded: frozenset[str], now: float, with_vectors: bool
    ) -> tuple[CandidatePool, Source]:
        """The most popular products, the highest rated filling what they leave; the source
        says which led ("rating" when nothing was popular)."""
        pool = self.retrieval.most_popular(filter_clause, want, excluded, now, with_vectors)
        source: Source = "popular" if pool.candidates else "rating"
        if len(pool.candidates) < want:
            chosen = {c.id for c in pool.candidates}
            pool.extend(self.retrieval.top_rated(filter_clause, want - len(chosen), excluded, chosen, with_vectors))
        return pool, source

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
        signal: Signal | None = None,
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
            signal=signal,
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
    low, high = chosen.get("min_price", filters.min_price), chosen.get("max_price", filters.max_price)
    if isinstance(low, float | int) and isinstance(high, float | int) and low > high:
        # checked before the filters are built, which refuse min > max: the request's price wins
        understood.ignored.append(Ignored("price", "the understood price contradicts the request's"))
        understood.min_price = understood.max_price = None
        chosen.pop("min_price", None)
        chosen.pop("max_price", None)
    return replace(filters, **chosen) if chosen else filters  # type: ignore[arg-type]
