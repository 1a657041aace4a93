"""The ranking, with no Redis in it: its settings (RankingConfig), its inputs (a user's
signals, UserFeatures) and outputs (Candidate, Why, Recommendation), how the signals fade with
time, how they move a query, and how candidates are re-scored, diversified and explained.

recommender.py fetches candidates and user state from Redis and hands them here; everything in
this module is a pure function of its arguments (time is passed in, never read), so every rule
can be tested on small hand-made inputs and the benchmarks can replay it.

Scores follow the index's orientation: lower is better, starting from the cosine distance that
FT.SEARCH returns (0 = identical, 2 = opposite).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
# What produced a list: a typed query, the feed's session vector, decayed click counts, the
# highest rated (nothing clicked yet), a product's neighbours, or (the feed without a live
# session) what was bought together with the user's recent products.
Source = Literal["query", "session", "popular", "rating", "similar", "co_occurrence"]
_Copied = TypeVar("_Copied")


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    """A dataclass's field names, looked up once per class (to_dict runs for every result)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def shallow_copy(obj: _Copied) -> _Copied:
    """A copy sharing the field values, as copy.copy makes, at a quarter of dataclasses.replace's
    cost (no __init__ call, no per-field checks): a search copies every candidate it re-scores."""
    copied = object.__new__(type(obj))
    copied.__dict__.update(obj.__dict__)
    return copied


@dataclass
class Why:
    """The terms that produced one candidate's place in a list; None means "played no part".

    affinity_bonus lowers the score (a liked category), affinity_penalty raises it (a dismissed
    one); category_boost is similar()'s same-category preference; mmr_penalty is the redundancy
    term maximal marginal relevance charged when it picked the item; popularity is the decayed
    click count of popular results; text_bonus is what the words' BM25 match took off the
    score of a typed query, relevance_rank its place by the query alone (before personalisation),
    which bounds how far personalisation may move it; dismissed_penalty is what a product the user
    dismissed pays in a typed query, which still shows it (a feed, popular and similar() leave it
    out); excluded_count belongs to the request and is repeated here so that one card can say
    everything about itself.

    With the crowd's signal (similar() and for_you() with signal co_occurrence or blend):
    signal says what put the item in the list ("content", "co_occurrence", or "blend" for both),
    co_count how often it was bought together (in purchases, faded to now) with together_with,
    and reason says it in words ("bought together with p012 (14 times)", "looks like p012").
    """

    vector_distance: float | None = None
    affinity_bonus: float | None = None
    affinity_penalty: float | None = None
    session_weight: float | None = None
    negative_weight: float | None = None
    category_boost: float | None = None
    mmr_penalty: float | None = None
    popularity: float | None = None
    excluded_count: int | None = None
    text_bonus: float | None = None
    relevance_rank: int | None = None
    dismissed_penalty: float | None = None
    co_count: float | None = None
    together_with: str | None = None
    signal: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, float | int | str]:
        """The terms that played a part (None fields are left out), JSON-ready."""
        return {name: value for name in _field_names(type(self)) if (value := getattr(self, name)) is not None}


@dataclass
class Candidate:
    """One product in a result list. Mutable, like the reference's: code written for it sets
    `score` in its own re-rankers."""

    id: str
    name: str
    description: str
    category: str
    brand: str
    price: float
    rating: float
    in_stock: bool
    vector_distance: float | None  # None where no vector was compared (popular, top rated)
    score: float
    why: Why = field(default_factory=Why)

    def to_dict(self) -> dict[str, Any]:
        """Every field, at full precision (the reference rounds the distance and score to 4
        places, which can show different scores as equal), with `why` as its to_dict().

        Field by field rather than dataclasses.asdict, which deep-copies every value: the values
        are strings and numbers, and asdict made this the slowest step of a search's answer."""
        shown = {name: getattr(self, name) for name in _field_names(type(self))}
        shown["why"] = self.why.to_dict()
        return shown


# --- time ---------------------------------------------------------------------------------------


def decay_factor(age_s: float | None, half_life_s: float | None) -> float:
    """How much of a signal is left after `age_s` seconds: 1 when fresh, 1/2 after one half-life.

    An unknown age (state written by a port that keeps no timestamps) counts as fresh, and a
    half-life of None or 0 turns fading off. A clock that went backwards counts as no time.
    """
    if age_s is None or not half_life_s:
        return 1.0
    return float(0.5 ** (max(age_s, 0.0) / half_life_s))


# --- checked numbers, settings and typed values ------------------------------------------


def finite_number(name: str, value: Any) -> float | None:
    """A finite float from a number-like value; None stays None. ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number")
    return number


def check_unit_interval(name: str, value: Any) -> float:
    number = finite_number(name, value)
    if number is None or not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
    return number


@dataclass(frozen=True)
class RankingConfig:
    """How user signals shape results. The defaults are the ones bench/quality.py chose (see
    README, "Quality"); each can be changed per recommender.

    session_weight: share of the session vector in the blended query (fresh session).
    negative_weight: how strongly the dismissed-items vector pushes the query away.
    ewma_alpha: weight of a new click (or dismissal) in its running vector.
    affinity_weight: scale of the log-shaped category-affinity term in rerank.
    affinity_step / dismiss_step: how much a click raises, and a dismissal lowers, an affinity.
    overfetch: candidates fetched per result shown, so rerank, exclusions and MMR have a pool.
    session_half_life_s: the session and negative vectors fade with time since they were last
    updated; affinity_half_life_s, the same for affinities (longer: tastes outlast sessions).
    popularity_half_life_s: a click this long ago counts half in popular().
    popularity_window_s: a user's clicks on one product count once for popularity per window
    (so that one user cannot put a product at the top of everyone's feed by clicking it again).
    same_category_boost: similar()'s default preference for the product's own category.
    text_weight: a typed query's score is vector_distance − text_weight·(BM25 / the best BM25).
    understood_category_boost: taken off the score of products in a category the query names.
    typed_query_tier: for a query that names a kind of product, personalisation re-orders only
    within runs of this many results by the query's own relevance (1: not at all).
    dismissed_penalty: added to the score of a product the user dismissed when a typed query
    finds it: it goes to the bottom of its tier for a specific query, and below what was not
    dismissed for a vague one (a feed, popular and similar() leave dismissed products out).
    """

    session_weight: float = 0.3
    negative_weight: float = 0.3
    ewma_alpha: float = 0.4
    affinity_weight: float = 0.15
    affinity_step: float = 1.0
    dismiss_step: float = 1.0
    overfetch: int = 3
    session_half_life_s: float = 1800.0
    affinity_half_life_s: float = 7 * 86400.0
    popularity_half_life_s: float = 7 * 86400.0
    popularity_window_s: float = 86400.0
    same_category_boost: float = 0.1
    text_weight: float = 0.1
    understood_category_boost: float = 0.2
    typed_query_tier: int = 3
    dismissed_penalty: float = 1.0

    def __post_init__(self) -> None:
        for name in ("session_weight", "ewma_alpha"):
            check_unit_interval(name, getattr(self, name))
        if self.ewma_alpha == 0:
            raise ValueError("ewma_alpha must be greater than 0: a click must count")
        for name in (
            "negative_weight", "affinity_weight", "affinity_step", "dismiss_step", "same_category_boost",
            "text_weight", "understood_category_boost", "dismissed_penalty",
        ):  # fmt: skip
            value = finite_number(name, getattr(self, name))
            if value is None or value < 0:
                raise ValueError(f"{name} must be a number of at least 0, got {getattr(self, name)!r}")
        for name in ("session_half_life_s", "affinity_half_life_s", "popularity_half_life_s", "popularity_window_s"):
            value = finite_number(name, getattr(self, name))
            if value is None or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {getattr(self, name)!r}")
        if not isinstance(self.overfetch, int) or isinstance(self.overfetch, bool) or not 1 <= self.overfetch <= 100:
            raise ValueError(f"overfetch must be a whole number from 1 to 100, got {self.overfetch!r}")
        tier = self.typed_query_tier
        if not isinstance(tier, int) or isinstance(tier, bool) or not 1 <= tier <= 1000:
            raise ValueError(f"typed_query_tier must be a whole number from 1 to 1000, got {tier!r}")


class DictResult(dict[str, Any]):
    """Typed results that are also the plain dicts the reference returns, so that code written for
    it works unchanged: it reads `result["clicks"]`, adds keys (the reference's server does
    `info["index_name"] = ...`) and hands results to json.dumps, which takes dicts only.

    The dict is filled from the fields once, when the result is made; the attributes stay as
    they were made (keys added or changed later are the caller's, not the result's). Printed,
    a result reads as the reference's dict does."""

    def __post_init__(self) -> None:
        dict.update(self, {f.name: getattr(self, f.name) for f in fields(self)})  # type: ignore[arg-type]

    def __hash__(self) -> int:  # type: ignore[override]
        return id(self)


@dataclass(frozen=True, eq=False, repr=False)
class UserFeatures(DictResult):
    """A user's signals as stored, with the time each was last updated (None when unknown, e.g.
    written by a port that keeps no timestamps). Fading is applied by the caller at read time."""

    session_vec: Vector | None = None
    affinities: dict[str, float] = field(default_factory=dict)
    clicks: int = 0
    last_clicked_id: str | None = None
    last_clicked_category: str | None = None
    negative_vec: Vector | None = None
    session_at: float | None = None
    negative_at: float | None = None
    affinity_at: float | None = None


@dataclass(frozen=True)
class Recommendation:
    """One answer and what produced it, so a caller (the demo page) can show its work.

    source: "query" (a typed query), "session" (the feed, from the session vector), "popular"
    (decayed click counts), "rating" (nothing clicked yet anywhere: highest rated), "similar", or
    "co_occurrence" (the feed without a live session: bought together with recent products).
    signal: for similar() and for_you(), the signal asked for (content, co_occurrence, blend).
    used_rerank: an affinity changed at least one score. session_weight: the session's share of
    the query after fading (0 when unused). excluded_count: products left out because the user
    dismissed or (with exclude_clicked) clicked them. exhausted: fewer than k came back because
    fewer than k products pass the filters and exclusions. understood: what query understanding
    read in a typed query's text, and whether it named a kind of product (`specific`: then
    personalisation re-ordered only within relevance tiers).
    """

    candidates: list[Candidate]
    source: Source
    filter_clause: str
    used_session: bool = False
    used_rerank: bool = False
    session_weight: float = 0.0
    excluded_count: int = 0
    exhausted: bool = False
    search_ms: float = 0.0
    rerank_ms: float = 0.0
    # A typed query's understood facets, words and what was ignored (None: no text was given).
    understood: Mapping[str, Any] | None = None
    signal: str | None = None


# --- fading: what a user's signals weigh now ---------------------------------------------------

# Below this fraction of its fresh weight a faded session no longer drives the feed (about
# four half-lives): the user is treated as new and sees what is popular.
MIN_FEED_SESSION_FACTOR = 1 / 16


def _age(since: float | None, now: float) -> float | None:
    return None if since is None else now - since


def faded_affinities(features: UserFeatures, config: RankingConfig, now: float) -> dict[str, float]:
    """The affinities as rerank sees them at `now`: faded by time since they last moved."""
    fade = decay_factor(_age(features.affinity_at, now), config.affinity_half_life_s)
    return {category: value * fade for category, value in features.affinities.items()}


def session_fade(features: UserFeatures, config: RankingConfig, now: float) -> float:
    """How much of a fresh session's weight is left at `now` (1 when fresh or timeless)."""
    return decay_factor(_age(features.session_at, now), config.session_half_life_s)


def session_weight(features: UserFeatures, config: RankingConfig, now: float) -> float:
    """The session's share of the query at `now`: config.session_weight, halved per half-life
    since the session last moved; 0 without a session."""
    return config.session_weight * session_fade(features, config, now) if features.session_vec is not None else 0.0


def negative_weight(features: UserFeatures, config: RankingConfig, now: float) -> float:
    """How hard the dismissed-items vector pushes at `now`: it fades like the session."""
    if features.negative_vec is None:
        return 0.0
    return config.negative_weight * decay_factor(_age(features.negative_at, now), config.session_half_life_s)


def session_is_live(features: UserFeatures, config: RankingConfig, now: float) -> bool:
    """Whether the session still drives the feed at `now`."""
    return features.session_vec is not None and session_fade(features, config, now) >= MIN_FEED_SESSION_FACTOR


def session_fades_in_s(features: UserFeatures, config: RankingConfig, now: float) -> float | None:
    """Seconds until the session stops driving the feed unless the user clicks again; None
    without a session, 0 when it already has."""
    if features.session_vec is None:
        return None
    fade = session_fade(features, config, now)
    if fade <= MIN_FEED_SESSION_FACTOR:
        return 0.0
    return round(config.session_half_life_s * math.log2(fade / MIN_FEED_SESSION_FACTOR), 1)


# --- vectors ------------------------------------------------------------------------------------


def normalize_rows(vectors: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """L2-normalise each row as float32; an all-zero row stays zero instead of becoming NaN."""
    array = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    return (array / np.where(norms == 0, 1, norms)).astype(np.float32)


# --- moving the query ---------------------------------------------------------------------------


def blend_query(
    query_vec: Vector | None,
    session_vec: Vector | None,
    negative_vec: Vector | None,
    session_weight: float,
    negative_weight: float,
) -> Vector:
    """normalize((1 - w_s)·query + w_s·session − w_n·negative), the vector the KNN searches with.

    The query keeps the lead and the session steers; what the user dismissed pushes the other way
    (Qdrant's "average vector" recommendation strategy, on our stored vectors). With no query the
    session itself is the query (the feed). Weights arrive already faded by time. Should the
    arithmetic cancel out to a zero vector, the unmodified query (or session) is kept.
    """
    if not 0.0 <= session_weight <= 1.0:
        raise ValueError(f"session_weight must be between 0 and 1, got {session_weight}")
    if negative_weight < 0.0:
        raise ValueError(f"negative_weight must not be negative, got {negative_weight}")
    if query_vec is None:
        if session_vec is None:
            raise ValueError("blend_query needs a query vector or a session vector")
        base = np.asarray(session_vec, dtype=np.float32)
        mixed = base.copy()
    else:
        base = np.asarray(query_vec, dtype=np.float32)
        mixed = base.copy()
        if session_vec is not None and session_weight > 0:
            mixed = (1.0 - session_weight) * base + session_weight * np.asarray(session_vec, dtype=np.float32)
    if negative_vec is not None and negative_weight > 0:
        mixed = mixed - negative_weight * np.asarray(negative_vec, dtype=np.float32)
    if not np.any(mixed) or not np.all(np.isfinite(mixed)):
        mixed = base
    return normalize_rows(mixed)


# --- re-scoring ---------------------------------------------------------------------------------


def affinity_term(affinity: float, affinity_weight: float) -> float:
    """The score change a category affinity earns: log1p(|a|)·weight, negative (better) for a
    liked category and positive (worse) for one the user dismissed more than clicked.

    The logarithm gives repeated clicks diminishing returns, so one dominant category cannot
    swamp the vector signal; a positive affinity gives exactly the reference's bonus.
    """
    if not math.isfinite(affinity) or affinity == 0 or affinity_weight <= 0:
        return 0.0
    return -math.copysign(math.log1p(abs(affinity)), affinity) * affinity_weight


def score_order(candidate: Candidate) -> tuple[float, float, str]:
    """The order of every ranked list: score, then distance, then id, so results are deterministic."""
    return candidate.score, _distance_or_score(candidate), candidate.id


def _distance_or_score(candidate: Candidate) -> float:
    """The candidate's distance; its score where it has none (a popular or top-rated one)."""
    return candidate.score if candidate.vector_distance is None else candidate.vector_distance


def rescore_by_affinity(
    candidates: Iterable[Candidate], affinities: Mapping[str, float], affinity_weight: float
) -> bool:
    """rerank's scoring (score = vector_distance + affinity_term, the term recorded in why), done
    in place on candidates the caller owns, without sorting; whether any score changed. The
    recommender uses it on the candidates it has just built, which nobody else holds."""
    changed = False
    for candidate in candidates:
        term = affinity_term(affinities.get(candidate.category, 0.0), affinity_weight)
        if term < 0:
            candidate.why.affinity_bonus = -term
        elif term > 0:
            candidate.why.affinity_penalty = term
        changed = changed or term != 0
        candidate.score = _distance_or_score(candidate) + term
    return changed


def rerank(
    candidates: Iterable[Candidate],
    affinities: Mapping[str, float],
    affinity_weight: float = 0.15,
    k: int | None = None,
) -> tuple[list[Candidate], bool]:
    """Re-score by category affinity (score = vector_distance + affinity_term) and re-sort.

    Returns the new list (copies; the inputs are untouched) and whether any score changed, which
    is what "re-ranked" means to a caller. Ties keep distance order, then id, so results are
    deterministic. Pass more candidates than you show, and `k` to cut after sorting: an item just
    outside the first k by distance can then be pulled in.
    """
    rescored = [shallow_copy(candidate) for candidate in candidates]
    for candidate in rescored:
        candidate.why = shallow_copy(candidate.why)
    changed = rescore_by_affinity(rescored, affinities, affinity_weight)
    rescored.sort(key=score_order)
    return (rescored if k is None else rescored[:k]), changed


def boost_category(candidates: Iterable[Candidate], category: str, boost: float) -> list[Candidate]:
    """similar()'s preference for the product's own category: `boost` is subtracted from the
    distance of same-category candidates, then the list is re-sorted. Shoppers on a parka's page
    expect jackets, while plain KNN also finds sleeping bags that share "down, warm"."""
    boosted = []
    for candidate in candidates:
        if boost and candidate.category == category:
            candidate = shallow_copy(candidate)
            candidate.why = shallow_copy(candidate.why)
            candidate.why.category_boost = boost
            candidate.score -= boost
        boosted.append(candidate)
    boosted.sort(key=score_order)
    return boosted


def maximal_marginal_relevance(
    candidates: Sequence[Candidate], vectors: Sequence[Vector | None], k: int, diversity: float
) -> list[Candidate]:
    """Pick k of the candidates (already sorted by score) by MMR: each step takes the one that
    maximises (1 − λ)·relevance − λ·(its highest cosine to anything already picked), with
    relevance = −score. λ = `diversity`: 0 keeps the score order, 1 only avoids repeats.

    The redundancy term charged at pick time is recorded as why.mmr_penalty. A candidate without
    a stored vector cannot be compared and counts as unlike everything.
    """
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be between 0 and 1, got {diversity}")
    if diversity == 0 or len(candidates) <= 1:
        return list(candidates[:k])
    dim = next((len(v) for v in vectors if v is not None), 0)
    matrix = normalize_rows(np.stack([v if v is not None else np.zeros(dim, np.float32) for v in vectors]))
    similarity = matrix @ matrix.T
    relevance = np.array([-c.score for c in candidates], dtype=np.float64)
    remaining = list(range(len(candidates)))
    max_similarity = np.full(len(candidates), -np.inf)
    picked: list[Candidate] = []
    while remaining and len(picked) < k:
        redundancy = np.where(np.isfinite(max_similarity[remaining]), max_similarity[remaining], 0.0)
        objective = (1.0 - diversity) * relevance[remaining] - diversity * redundancy
        best = remaining[int(np.argmax(objective))]
        penalty = float(diversity * max(max_similarity[best], 0.0)) if picked else 0.0
        chosen = shallow_copy(candidates[best])
        chosen.why = shallow_copy(chosen.why)
        chosen.why.mmr_penalty = round(penalty, 6)
        picked.append(chosen)
        remaining.remove(best)
        max_similarity = np.maximum(max_similarity, similarity[best])
    return picked


def intra_list_similarity(vectors: Sequence[Vector]) -> float:
    """Mean pairwise cosine of a list's vectors: how alike the shown items are (lower = more
    diverse). Used by the benchmarks to show what diversity does."""
    if len(vectors) < 2:
        return 0.0
    matrix = normalize_rows(np.stack(vectors))
    similarity = matrix @ matrix.T
    n = len(vectors)
    return float((similarity.sum() - np.trace(similarity)) / (n * (n - 1)))


# --- a typed query: text and vector fused, personalisation bounded by relevance ------------------


def cosine_distance(query: Vector, vector: Vector | None) -> float:
    """The index's COSINE distance (1 − cosine) for a product the KNN did not bring; 2 without a
    vector (the farthest)."""
    if vector is None:
        return 2.0
    norm = float(np.linalg.norm(query) * np.linalg.norm(vector))
    return 1.0 - float(np.dot(query, vector)) / norm if norm else 2.0


def fuse_text_scores(candidates: Iterable[Candidate], text_scores: Mapping[str, float], text_weight: float) -> None:
    """Weighted-sum fusion, in place: score = vector_distance − text_weight·(BM25 / best BM25),
    the bonus recorded in why.text_bonus. Normalising by the best match keeps the bonus within
    [0, text_weight], on the distance's own scale, whatever BM25's range for this query."""
    best = max(text_scores.values(), default=0.0)
    for candidate in candidates:
        candidate.score = _distance_or_score(candidate)
        matched = text_scores.get(candidate.id, 0.0)
        if best > 0 and matched > 0 and text_weight > 0:
            bonus = text_weight * matched / best
            candidate.score -= bonus
            candidate.why.text_bonus = round(bonus, 6)


def boost_understood_category(candidates: Iterable[Candidate], category: str | None, boost: float) -> None:
    """A category the query names lowers its products' scores by `boost`, in place (why.category_boost)."""
    if category is None or boost <= 0:
        return
    for candidate in candidates:
        if candidate.category == category:
            candidate.score -= boost
            candidate.why.category_boost = boost


def personalise_within_tiers(
    candidates: list[Candidate],
    affinities: Mapping[str, float],
    affinity_weight: float,
    tier: int | None,
    dismissed: Collection[str] = (),
    dismissed_penalty: float = 0.0,
) -> bool:
    """Personalise a typed query's list, in place, without letting it override the query.

    The candidates arrive sorted by the query's relevance; each keeps that place in
    why.relevance_rank. The affinity term (a bonus for liked categories, a penalty for dismissed
    ones) is added to every score and shown in why, as for the feed, and so is
    `dismissed_penalty` for each product the user dismissed (why.dismissed_penalty): a typed
    query still finds what was dismissed while looking for something else. With `tier` the list
    is then sorted by (relevance_rank // tier, score): a result moves only within its run of
    `tier`, so a dismissal marks a product or a category down without hiding it from a query
    that asks for it. None: sorted by score alone. Whether an affinity changed any score."""
    changed = False
    for rank, candidate in enumerate(candidates):
        candidate.why.relevance_rank = rank
        term = affinity_term(affinities.get(candidate.category, 0.0), affinity_weight)
        if term < 0:
            candidate.why.affinity_bonus = -term
        elif term > 0:
            candidate.why.affinity_penalty = term
        candidate.score += term
        changed = changed or term != 0
        if dismissed_penalty > 0 and candidate.id in dismissed:
            candidate.score += dismissed_penalty
            candidate.why.dismissed_penalty = dismissed_penalty
    if tier is None:
        candidates.sort(key=score_order)
    else:
        candidates.sort(key=lambda c: (c.why.relevance_rank // tier, *score_order(c)))  # type: ignore[operator]
    return changed


# --- popularity ---------------------------------------------------------------------------------

# A click one half-life ago counts half. Redis keeps, per product, the sum of 2^((t − epoch)/h)
# over its clicks: a click's weight grows with time instead of every stored count shrinking, so
# one ZINCRBY records a click and ZREVRANGE ranks by decayed count without touching other
# members. Multiplying by 2^(−(now − epoch)/h) at read time turns a sum back into a count. The
# exponent is kept below this many half-lives by rebasing the epoch (see recommender.py).
POPULARITY_REBASE_HALF_LIVES = 64.0


def decayed_popularity(stored: float, now_s: float, epoch_s: float, half_life_s: float) -> float:
    """A stored popularity sum as a decayed click count at `now_s` (1.0 = one click just now)."""
    return float(stored * 2.0 ** (-(now_s - epoch_s) / half_life_s))
