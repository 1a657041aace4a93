"""Fetching candidates: the KNN pool of a vector (with exclusions kept out and the pool kept
full), the most popular products, and the highest rated as a fallback. Each returns a
CandidatePool; ordering them for the user is the ranking's job (feeds.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ranking import Vector, cosine_distance, decayed_popularity
from recengine import query
from recengine.layout import EMBEDDING_FIELD, SCORE_FIELD, KeyLayout, VectorFormat
from recengine.reload import follow_serving, queue_serving
from recengine.replies import RawRow, candidate_from_row, hybrid_rows, number, raw_rows, scored_rows, text
from recengine.results import CandidatePool
from recengine.store import Store
from recengine.validation import MAX_K


@dataclass(eq=False)
class Retrieval:
    """The searches behind every list, and popularity's counts."""

    store: Store
    keys: KeyLayout
    vectors: VectorFormat
    ef_runtime: int | None
    hybrid_policy: str | None
    popularity_half_life_s: float
    # How a typed query's text and vector searches are fused: FT.HYBRID where the server has it
    # (detected once by the recommender), else KNN and BM25 pipelined. One path per capability.
    text_fusion: query.TextFusion = "pipelined"
    text_weight: float = 0.1

    def __post_init__(self) -> None:
        self._fused = self._fused_on_server if self.text_fusion == "ft.hybrid" else self._fused_pipelined

    def _search(self, command: query.Command) -> list[RawRow]:
        """Rows of a search, keyed by product id."""
        return [(self.keys.product_id(key), raw) for key, raw in raw_rows(self.store.search(command))]

    def _pool(self, rows: Sequence[RawRow], left_out: set[str], exhausted: bool) -> CandidatePool:
        return CandidatePool(
            candidates=[candidate_from_row(pid, raw) for pid, raw in rows],
            vectors={pid: self.vectors.decode(raw.get(EMBEDDING_FIELD)) for pid, raw in rows},
            left_out=left_out,
            exhausted=exhausted,
        )

    # nearest neighbours

    def _knn_command(self, vector: Vector, filter_clause: str, n: int, fields: Sequence[str]) -> query.Command:
        blob = self.vectors.encode(vector)
        return query.knn_search_command(
            self.keys.index_name, filter_clause, blob, n, fields, self.ef_runtime, self.hybrid_policy
        )

    def _knn_rows(self, vector: Vector, filter_clause: str, n: int, fields: Sequence[str]) -> list[RawRow]:
        return self._search(self._knn_command(vector, filter_clause, n, fields))

    def nearest(
        self, vector: Vector, filter_clause: str, want: int, excluded: frozenset[str], with_vectors: bool
    ) -> CandidatePool:
        """At least `want` candidates that are not excluded, closest first, when that many pass
        the filter; exhausted when fewer do.

        Without exclusions this is one FT.SEARCH. Exclusions cannot be expressed in FT.SEARCH
        (RediSearch has no "not these keys"), so they are dropped afterwards: the first search
        asks for `want` plus up to `want` more rows (what a user clicked tends to lie near what
        they are shown), with their fields, which is usually enough: one round trip, as without
        exclusions. Only when exclusions ate into that does a second ask for want + |excluded|
        ids and distances (always enough, since at most |excluded| rows can be excluded), and the
        fields of the kept ones the first did not bring come in one pipelined round trip: fetching
        every field of hundreds of rows only to drop them costs more (bench/feedback.py).
        """
        fields = query.returned_fields(with_vectors)
        n = self._first_ask(want, excluded)
        rows = self._knn_rows(vector, filter_clause, n, fields)
        return self._nearest_from(rows, n, vector, filter_clause, want, excluded, fields)

    @staticmethod
    def _first_ask(want: int, excluded: frozenset[str]) -> int:
        return min(want + min(len(excluded), want), MAX_K)

    def _nearest_from(
        self,
        rows: list[RawRow],
        n: int,
        vector: Vector,
        filter_clause: str,
        want: int,
        excluded: frozenset[str],
        fields: Sequence[str],
    ) -> CandidatePool:
        """nearest()'s pool from the rows of its first search (asked for n), searching again
        when exclusions ate into them."""
        kept = [(pid, raw) for pid, raw in rows if pid not in excluded]
        exhausted = len(rows) < n
        enough = min(want + len(excluded), MAX_K)
        if len(kept) < want and not exhausted and n < enough:
            have = dict(kept)
            rows = self._knn_rows(vector, filter_clause, enough, ())
            exhausted = len(rows) < enough
            scores = [(pid, raw[SCORE_FIELD]) for pid, raw in rows if pid not in excluded][:want]
            stored = self._product_fields([pid for pid, _ in scores if pid not in have], fields)
            kept = [
                (pid, have[pid] if pid in have else {**stored[pid], SCORE_FIELD: score})
                for pid, score in scores
                if pid in have or pid in stored
            ]
        kept = kept[:want]
        left_out = {pid for pid, _ in rows if pid in excluded}
        return self._pool(kept, left_out, exhausted and len(kept) < want)

    def among(
        self,
        vector: Vector | None,
        filter_clause: str,
        product_ids: Sequence[str],
        excluded: frozenset[str],
        with_vectors: bool,
    ) -> CandidatePool:
        """Which of the given products pass the filter and are not excluded, in the order given,
        in one FT.SEARCH over those products only; with a vector, each with its distance to it
        (how far a product bought together lies from the one asked about)."""
        wanted = [pid for pid in product_ids if pid not in excluded]
        if not wanted:
            return self._among_from(product_ids, excluded, [])
        command = self._among_command(vector, filter_clause, wanted, with_vectors)
        return self._among_from(product_ids, excluded, self._search(command))

    def _among_command(
        self, vector: Vector | None, filter_clause: str, wanted: Sequence[str], with_vectors: bool
    ) -> query.Command:
        keys = [self.keys.product(pid) for pid in wanted]
        if vector is None:
            return query.in_keys_search_command(self.keys.index_name, filter_clause, keys, with_vectors)
        blob = self.vectors.encode(vector)
        fields = query.returned_fields(with_vectors)
        return query.knn_in_keys_search_command(self.keys.index_name, filter_clause, blob, keys, fields)

    def _among_from(self, product_ids: Sequence[str], excluded: frozenset[str], rows: list[RawRow]) -> CandidatePool:
        order = {pid: i for i, pid in enumerate(product_ids)}
        rows = sorted(rows, key=lambda row: order.get(row[0], len(order)))
        return self._pool(rows, {pid for pid in product_ids if pid in excluded}, exhausted=False)

    def nearest_and_among(
        self,
        vector: Vector,
        filter_clause: str,
        want: int,
        product_ids: Sequence[str],
        excluded: frozenset[str],
        with_vectors: bool,
    ) -> tuple[CandidatePool, CandidatePool]:
        """nearest() and among() of the same vector, both searches in one round trip (what the
        blend asks for every answer)."""
        fields = query.returned_fields(with_vectors)
        n = self._first_ask(want, excluded)
        wanted = [pid for pid in product_ids if pid not in excluded]
        commands = [self._knn_command(vector, filter_clause, n, fields)]
        if wanted:
            commands.append(self._among_command(vector, filter_clause, wanted, with_vectors))
        replies = self.store.search_many(commands)
        rows = [[(self.keys.product_id(key), raw) for key, raw in raw_rows(reply)] for reply in replies]
        content = self._nearest_from(rows[0], n, vector, filter_clause, want, excluded, fields)
        return content, self._among_from(product_ids, excluded, rows[1] if wanted else [])

    def _product_fields(self, product_ids: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Raw fields of the given products from where the search ran; products that vanished
        meanwhile are left out."""
        replies = self.store.read_hashes([self.keys.product(pid) for pid in product_ids], names)
        return {
            pid: {name: value for name, value in zip(names, values, strict=True) if value is not None}
            for pid, values in zip(product_ids, replies, strict=True)
            if any(value is not None for value in values)
        }

    # popularity

    def popularity_scores(self, count: int, now: float) -> tuple[list[tuple[str, float]], int]:
        """The `count` most popular (id, decayed count), and how many products have any."""
        zset, epoch_key = self.keys.popularity()
        pipe = self.store.pipeline()
        pipe.zrevrange(zset, 0, count - 1, withscores=True)
        pipe.get(epoch_key)
        pipe.zcard(zset)
        queue_serving(pipe, self.keys)  # the INKEYS that follows names keys of the serving generation
        top, epoch, total, serving = self.store.execute(pipe)
        follow_serving(self.keys, serving)
        epoch_s = number(epoch, default=now)
        half_life = self.popularity_half_life_s
        return [(text(pid), decayed_popularity(score, now, epoch_s, half_life)) for pid, score in top], int(total)

    def most_popular(
        self, filter_clause: str, want: int, excluded: frozenset[str], now: float, with_vectors: bool
    ) -> CandidatePool:
        """Up to `want` clicked products passing the filter, most popular first (ties by id),
        each with its decayed count in why.popularity. The most popular are asked in growing
        numbers until enough pass the filter and exclusions, or every clicked product was."""
        count = min(max(want * 4, 64), MAX_K)
        left_out: set[str] = set()
        while True:
            scores, total = self.popularity_scores(count, now)
            if not scores:
                return CandidatePool(left_out=left_out)
            by_id = dict(scores)
            command = query.in_keys_search_command(
                self.keys.index_name, filter_clause, [self.keys.product(pid) for pid, _ in scores], with_vectors
            )
            rows = self._search(command)
            kept = [(pid, raw) for pid, raw in rows if pid not in excluded]
            left_out = {pid for pid, _ in rows if pid in excluded}
            if len(kept) >= want or count >= total or count >= MAX_K:
                kept.sort(key=lambda row: (-by_id.get(row[0], 0.0), row[0]))
                pool = self._pool(kept[:want], left_out, exhausted=False)
                for candidate in pool.candidates:
                    candidate.why.popularity = round(by_id.get(candidate.id, 0.0), 6)
                return pool
            count = min(count * 4, MAX_K)

    def top_rated(
        self, filter_clause: str, want: int, excluded: frozenset[str], chosen: set[str], with_vectors: bool
    ) -> CandidatePool:
        """The highest rated products passing the filter, minus the excluded ones and the ones
        already chosen."""
        n = min(want + len(excluded) + len(chosen), MAX_K)
        rows = self._search(query.top_rated_search_command(self.keys.index_name, filter_clause, n, with_vectors))
        # Redis returns rating ties in no fixed order: ties go by id, so a feed is the same twice.
        rows.sort(key=lambda row: (-number(row[1].get("rating")), row[0]))
        kept = [(pid, raw) for pid, raw in rows if pid not in excluded and pid not in chosen][:want]
        return self._pool(kept, {pid for pid, _ in rows if pid in excluded}, len(rows) < n)

    # a typed query: KNN and BM25 in one round trip

    def typed(
        self,
        vectors: Sequence[Vector],
        filter_clause: str,
        terms: Sequence[str],
        want: int,
        excluded: frozenset[str],
        marked: frozenset[str] = frozenset(),
        with_vectors: bool = False,
    ) -> tuple[list[CandidatePool], TextHits]:
        """The KNN pool of each vector (the query's own, and the query blended with the session
        when there is one) and the products whose name or description match the words (BM25),
        in one round trip (text_fusion says how). Excluded products are dropped from each;
        `marked` ones (dismissed: the ranking marks them down) are kept, beside `want` others (at
        most `want` more rows are asked for, as nearest() does in its first round trip).

        Text matches always come with their vectors (their distance to the query is computed
        here, BM25 has none); the KNN rows only `with_vectors` (MMR needs them): each vector is
        a kilobyte or more a row for Redis to send and this client to parse."""
        n = min(want + min(len(excluded) + len(marked), want), MAX_K)
        fields = query.returned_fields(with_vectors)
        if terms:
            nearest, matched = self._fused(vectors, filter_clause, terms, n, fields)
        else:
            nearest, matched = self._rows_of(self.store.search_many(
                [self._knn_command(vector, filter_clause, n, fields) for vector in vectors]
            )), []  # fmt: skip
        pools = [
            self._pool(
                kept_rows(rows, excluded, marked, want), {pid for pid, _ in rows if pid in excluded}, len(rows) < n
            )
            for rows in nearest
        ]
        hits = TextHits()
        for pid, score, raw in matched:
            if pid not in excluded:
                hits.scores[pid] = score
                hits.rows[pid] = raw
        return pools, hits

    def _rows_of(self, replies: Sequence[Any]) -> list[list[RawRow]]:
        return [[(self.keys.product_id(key), raw) for key, raw in raw_rows(reply)] for reply in replies]

    def _fused_pipelined(
        self, vectors: Sequence[Vector], filter_clause: str, terms: Sequence[str], n: int, fields: Sequence[str]
    ) -> tuple[list[list[RawRow]], list[ScoredRow]]:
        """Each vector's KNN and one BM25 search, pipelined: every server with Search has them."""
        commands = [self._knn_command(vector, filter_clause, n, fields) for vector in vectors]
        commands.append(
            query.bm25_search_command(self.keys.index_name, filter_clause, terms, n, query.returned_fields(True))
        )
        replies = self.store.search_many(commands)
        matched = [(self.keys.product_id(key), score, raw) for key, score, raw in scored_rows(replies[-1])]
        return self._rows_of(replies[:-1]), matched

    def _fused_on_server(
        self, vectors: Sequence[Vector], filter_clause: str, terms: Sequence[str], n: int, fields: Sequence[str]
    ) -> tuple[list[list[RawRow]], list[ScoredRow]]:
        """FT.HYBRID for the query's own vector (its rows: the n nearest and the n best text
        matches), the other vectors' KNN pipelined beside it. Each row's distance is computed
        from its loaded vector (so its rows always carry one), so the rows are ranked as the
        pipelined path's are."""
        own = vectors[0]
        command = query.ft_hybrid_command(
            self.keys.index_name, filter_clause, terms, self.vectors.encode(own), n, query.returned_fields(True),
            self.text_weight, self.ef_runtime,
        )  # fmt: skip
        replies = self.store.search_many(
            [command, *(self._knn_command(vector, filter_clause, n, fields) for vector in vectors[1:])]
        )
        rows = []
        for key, raw in hybrid_rows(replies[0]):
            raw[SCORE_FIELD] = cosine_distance(own, self.vectors.decode(raw.get(EMBEDDING_FIELD)))
            rows.append((self.keys.product_id(key), raw))
        nearest = sorted(rows, key=lambda row: (row[1][SCORE_FIELD], row[0]))[:n]
        matched = [(pid, score, raw) for pid, raw in rows if (score := number(raw.get(query.HYBRID_TEXT_SCORE))) > 0]
        return [nearest, *self._rows_of(replies[1:])], matched


def kept_rows(rows: Sequence[RawRow], excluded: frozenset[str], marked: frozenset[str], want: int) -> list[RawRow]:
    """The rows, best first, without the excluded ones, up to `want` that are not marked; the
    marked ones met on the way are kept besides."""
    kept: list[RawRow] = []
    plain = 0
    for pid, raw in rows:
        if pid in excluded:
            continue
        if pid not in marked:
            if plain == want:
                break
            plain += 1
        kept.append((pid, raw))
    return kept


# A text match: product id, its BM25 score and its raw fields.
ScoredRow = tuple[str, float, dict[str, Any]]


@dataclass
class TextHits:
    """A BM25 search's matches: score and raw fields by product id."""

    scores: dict[str, float] = field(default_factory=dict)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
