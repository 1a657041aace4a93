"""The ranking math on small hand-made inputs: no Redis, no model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ranking import (
    Candidate,
    RankingConfig,
    UserFeatures,
    Why,
    affinity_term,
    blend_query,
    boost_category,
    decay_factor,
    decayed_popularity,
    faded_affinities,
    maximal_marginal_relevance,
    negative_weight,
    normalize_rows,
    rerank,
    rescore_by_affinity,
    score_order,
    session_fades_in_s,
    session_is_live,
    session_weight,
)

HOUR = 3600.0
CONFIG = RankingConfig(session_half_life_s=HOUR, affinity_half_life_s=2 * HOUR)


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def candidate(pid: str, distance: float, category: str = "c") -> Candidate:
    return Candidate(pid, pid, "", category, "b", 1.0, 4.0, True, distance, distance, Why(vector_distance=distance))


# Components far from float32 underflow, or exactly 0.
finite = st.floats(min_value=-100, max_value=100).filter(lambda x: x == 0 or abs(x) > 1e-3)


# --- vectors ------------------------------------------------------------------------------------


def test_normalize_rows_gives_unit_rows_and_keeps_zero_rows_zero() -> None:
    rows = normalize_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert rows.dtype == np.float32
    assert rows.tolist() == [[pytest.approx(0.6), pytest.approx(0.8)], [0.0, 0.0]]


@given(st.lists(finite, min_size=2, max_size=8).filter(lambda v: np.linalg.norm(v) > 1e-3))
def test_a_normalised_row_has_length_one(values: list[float]) -> None:
    assert np.linalg.norm(normalize_rows(np.asarray(values))) == pytest.approx(1.0, abs=1e-5)


# --- blending the query ---------------------------------------------------------------------------


def test_blend_without_session_or_negative_is_the_query_normalised() -> None:
    assert blend_query(np.array([2.0, 0.0], np.float32), None, None, 0.3, 0.3).tolist() == [1.0, 0.0]


def test_blend_mixes_query_and_session_by_weight() -> None:
    blended = blend_query(unit(1, 0), unit(0, 1), None, 0.25, 0.0)
    assert blended.tolist() == pytest.approx(unit(0.75, 0.25).tolist())


def test_the_negative_vector_pushes_the_query_away() -> None:
    blended = blend_query(unit(1, 1), None, unit(0, 1), 0.0, 0.5)
    assert blended[0] > blended[1]
    assert float(blended @ unit(0, 1)) < float(unit(1, 1) @ unit(0, 1))


def test_without_a_query_the_session_is_the_query() -> None:
    assert blend_query(None, unit(0, 1), None, 1.0, 0.0).tolist() == pytest.approx([0.0, 1.0])


def test_a_blend_that_cancels_out_keeps_the_query() -> None:
    assert blend_query(unit(1, 0), None, unit(1, 0), 0.0, 1.0).tolist() == pytest.approx([1.0, 0.0])


@pytest.mark.parametrize(("session", "negative"), [(-0.1, 0.0), (1.1, 0.0), (0.5, -0.1)])
def test_blend_weights_out_of_range_are_value_errors(session: float, negative: float) -> None:
    with pytest.raises(ValueError):
        blend_query(unit(1, 0), unit(0, 1), unit(0, 1), session, negative)


def test_blend_needs_a_query_or_a_session() -> None:
    with pytest.raises(ValueError, match="query vector or a session"):
        blend_query(None, None, None, 0.3, 0.0)


@given(st.lists(finite, min_size=3, max_size=3), st.lists(finite, min_size=3, max_size=3), st.floats(0, 1))
def test_a_blend_is_a_unit_vector_or_the_zero_query(query: list[float], session: list[float], weight: float) -> None:
    blended = blend_query(np.asarray(query, np.float32), np.asarray(session, np.float32), None, weight, 0.0)
    assert np.all(np.isfinite(blended))
    assert np.linalg.norm(blended) == pytest.approx(1.0, abs=1e-4) or not np.any(query)


# --- fading ---------------------------------------------------------------------------------------


def test_decay_halves_per_half_life_and_ignores_unknown_ages() -> None:
    assert decay_factor(0.0, HOUR) == 1.0
    assert decay_factor(HOUR, HOUR) == 0.5
    assert decay_factor(2 * HOUR, HOUR) == 0.25
    assert decay_factor(None, HOUR) == 1.0
    assert decay_factor(HOUR, None) == 1.0
    assert decay_factor(-HOUR, HOUR) == 1.0  # a clock that went backwards: no time


@given(st.floats(0, 1e6), st.floats(0, 1e6), st.floats(1, 1e6))
def test_decay_over_two_spans_is_the_product_of_each(first: float, second: float, half_life: float) -> None:
    assert decay_factor(first + second, half_life) == pytest.approx(
        decay_factor(first, half_life) * decay_factor(second, half_life), rel=1e-9, abs=1e-300
    )


def test_affinities_fade_with_their_own_half_life() -> None:
    features = UserFeatures(affinities={"bags": 4.0, "shoes": -2.0}, affinity_at=1000.0)
    assert faded_affinities(features, CONFIG, 1000.0 + 2 * HOUR) == {"bags": 2.0, "shoes": -1.0}


def test_a_session_weighs_less_as_it_ages_and_stops_driving_the_feed_after_four_half_lives() -> None:
    features = UserFeatures(session_vec=unit(1, 0), session_at=0.0)
    assert session_weight(features, CONFIG, 0.0) == CONFIG.session_weight
    assert session_weight(features, CONFIG, HOUR) == pytest.approx(CONFIG.session_weight / 2)
    assert session_is_live(features, CONFIG, 4 * HOUR - 1)
    assert not session_is_live(features, CONFIG, 4 * HOUR + 1)
    assert session_fades_in_s(features, CONFIG, HOUR) == pytest.approx(3 * HOUR)
    assert session_fades_in_s(features, CONFIG, 5 * HOUR) == 0.0


def test_no_session_weighs_nothing() -> None:
    features = UserFeatures()
    assert session_weight(features, CONFIG, 0.0) == 0.0
    assert negative_weight(features, CONFIG, 0.0) == 0.0
    assert session_fades_in_s(features, CONFIG, 0.0) is None
    assert not session_is_live(features, CONFIG, 0.0)


def test_the_negative_vector_fades_like_the_session() -> None:
    features = UserFeatures(negative_vec=unit(0, 1), negative_at=0.0)
    assert negative_weight(features, CONFIG, HOUR) == pytest.approx(CONFIG.negative_weight / 2)


def test_popularity_decays_by_half_per_half_life() -> None:
    assert decayed_popularity(1.0, 0.0, 0.0, HOUR) == 1.0
    assert decayed_popularity(4.0, 2 * HOUR, 0.0, HOUR) == 1.0


# --- re-scoring -----------------------------------------------------------------------------------


@given(st.floats(-1e6, 1e6), st.floats(0.001, 10))
def test_an_affinity_term_rewards_liked_and_penalises_dismissed_categories(affinity: float, weight: float) -> None:
    term = affinity_term(affinity, weight)
    assert math.copysign(1, -term) == math.copysign(1, affinity) or term == 0
    assert abs(term) == pytest.approx(math.log1p(abs(affinity)) * weight)


def test_affinity_terms_that_play_no_part_are_zero() -> None:
    assert affinity_term(0.0, 0.15) == 0.0
    assert affinity_term(3.0, 0.0) == 0.0
    assert affinity_term(math.nan, 0.15) == 0.0


def test_rescore_by_affinity_changes_scores_in_place_and_records_why() -> None:
    pool = [candidate("a", 0.2, "liked"), candidate("b", 0.1, "dismissed"), candidate("c", 0.3, "other")]
    assert rescore_by_affinity(pool, {"liked": 1.0, "dismissed": -1.0}, 0.15)
    assert pool[0].score == pytest.approx(0.2 - math.log1p(1) * 0.15)
    assert pool[0].why.affinity_bonus == pytest.approx(math.log1p(1) * 0.15)
    assert pool[1].why.affinity_penalty == pytest.approx(math.log1p(1) * 0.15)
    assert pool[2].score == 0.3 and pool[2].why.affinity_bonus is None
    assert not rescore_by_affinity([candidate("d", 0.1)], {}, 0.15)


def test_rerank_returns_sorted_copies_and_leaves_the_inputs_alone() -> None:
    pool = [candidate("a", 0.10, "x"), candidate("b", 0.12, "y")]
    ranked, changed = rerank(pool, {"y": 5.0}, 0.15)
    assert changed and [c.id for c in ranked] == ["b", "a"]
    assert pool[1].score == 0.12 and pool[1].why.affinity_bonus is None
    assert rerank(pool, {"y": 5.0}, 0.15, k=1)[0] == [ranked[0]]


def test_ties_go_by_distance_then_id() -> None:
    pool = [candidate("b", 0.1), candidate("a", 0.1), candidate("c", 0.05)]
    pool[2].score = 0.1
    assert [c.id for c in sorted(pool, key=score_order)] == ["c", "a", "b"]


def test_boost_category_prefers_the_products_own_category_without_touching_inputs() -> None:
    pool = [candidate("a", 0.10, "sleeping bags"), candidate("b", 0.15, "jackets")]
    boosted = boost_category(pool, "jackets", 0.1)
    assert [c.id for c in boosted] == ["b", "a"]
    assert boosted[0].score == pytest.approx(0.05) and boosted[0].why.category_boost == 0.1
    assert pool[1].score == 0.15 and pool[1].why.category_boost is None
    assert [c.id for c in boost_category(pool, "jackets", 0.0)] == ["a", "b"]


# --- diversity ------------------------------------------------------------------------------------


def test_mmr_without_diversity_keeps_the_score_order() -> None:
    pool = [candidate("a", 0.1), candidate("b", 0.2), candidate("c", 0.3)]
    vectors = [unit(1, 0), unit(1, 0), unit(0, 1)]
    assert [c.id for c in maximal_marginal_relevance(pool, vectors, 2, 0.0)] == ["a", "b"]


def test_mmr_skips_a_near_duplicate_and_records_the_penalty() -> None:
    pool = [candidate("a", 0.1), candidate("a-twin", 0.11), candidate("other", 0.3)]
    vectors = [unit(1, 0), unit(1, 0.01), unit(0, 1)]
    picked = maximal_marginal_relevance(pool, vectors, 2, 0.5)
    assert [c.id for c in picked] == ["a", "other"]
    assert picked[0].why.mmr_penalty == 0.0 and picked[1].why.mmr_penalty == 0.0
    assert pool[0].why.mmr_penalty is None  # copies


def test_mmr_counts_a_candidate_without_a_vector_as_unlike_everything() -> None:
    pool = [candidate("a", 0.1), candidate("b", 0.2), candidate("c", 0.3)]
    picked = maximal_marginal_relevance(pool, [unit(1, 0), unit(1, 0), None], 2, 0.9)
    assert [c.id for c in picked] == ["a", "c"]


@given(st.integers(1, 6), st.floats(0, 1))
def test_mmr_picks_k_distinct_candidates(k: int, diversity: float) -> None:
    rng = np.random.default_rng(k)
    pool = [candidate(f"p{i}", 0.1 * i) for i in range(5)]
    vectors = list(normalize_rows(rng.standard_normal((5, 4))))
    picked = maximal_marginal_relevance(pool, vectors, k, diversity)
    assert len(picked) == min(k, 5) and len({c.id for c in picked}) == len(picked)


def test_mmr_diversity_out_of_range_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        maximal_marginal_relevance([candidate("a", 0.1)], [unit(1, 0)], 1, 1.5)
