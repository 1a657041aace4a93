"""A/B experiments without Redis: deterministic bucketing, the experiment file's checks, the
report's statistics against values worked out by hand, and the metrics' endpoint labels."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from demo_server import endpoint_label
from recengine.ab_report import build_report
from recengine.ab_stats import compare_rates, rate_over_units, users_per_arm
from recengine.experiments import CONFIG_FIELDS, ExperimentFileError, bucket_point, parse_experiment
from recengine.impressions import Impression, Outcome

TWO_ARMS: dict[str, Any] = {
    "name": "exp-1",
    "arms": [
        {"name": "a", "share": 0.5, "config": {}},
        {"name": "b", "share": 0.5, "config": {"session_weight": 0.0}},
    ],
}


def test_a_users_bucket_is_fixed_by_the_experiment_and_user_alone() -> None:
    """SHA-256, not Python's salted hash(): the same point in every process and run."""
    assert bucket_point("exp-1", "alice") == bucket_point("exp-1", "alice")
    assert bucket_point("exp-1", "alice") != bucket_point("exp-2", "alice")
    assert (
        bucket_point("exp-1", "alice")
        == int.from_bytes(__import__("hashlib").sha256(b"exp-1\x00alice").digest()[:8], "big") / 2.0**64
    )


def test_arms_get_their_shares_and_experiments_deal_independently() -> None:
    experiment = parse_experiment({**TWO_ARMS, "arms": [{**TWO_ARMS["arms"][0], "share": 0.2},
                                                         {**TWO_ARMS["arms"][1], "share": 0.8}]})  # fmt: skip
    users = [f"u{n}" for n in range(20000)]
    counts = Counter(experiment.arm_for(user).name for user in users)
    assert abs(counts["a"] / len(users) - 0.2) < 0.015
    other = parse_experiment({**TWO_ARMS, "name": "exp-2"})
    both = Counter((experiment.arm_for(u).name, other.arm_for(u).name) for u in users)
    # independent deals: b's half of exp-2 takes a fifth of exp-1's a, as of its b
    assert abs(both[("a", "b")] / counts["a"] - 0.5) < 0.03


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"arms": [{**TWO_ARMS["arms"][0], "share": 0.7}, TWO_ARMS["arms"][1]]}, "must sum to 1, got 1.2"),
        ({"arms": [TWO_ARMS["arms"][0], {**TWO_ARMS["arms"][1], "name": "a"}]}, "repeated: ['a']"),
        ({"arms": [TWO_ARMS["arms"][0], {**TWO_ARMS["arms"][1], "config": {"weight": 1}}]}, "unknown RankingConfig"),
        ({"arms": [TWO_ARMS["arms"][0], {**TWO_ARMS["arms"][1], "config": {"session_weight": 2}}]}, "between 0 and 1"),
        ({"arms": [TWO_ARMS["arms"][0]]}, "at least two arms"),
        ({"name": "has space"}, "the experiment's name must be"),
        ({"min_users_per_arm": 0}, "min_users_per_arm"),
        ({"colour": "red"}, "unknown key(s) ['colour']"),
    ],
)
def test_a_bad_experiment_is_refused_with_what_to_fix(change: dict[str, Any], words: str) -> None:
    with pytest.raises(ExperimentFileError) as refused:
        parse_experiment({**TWO_ARMS, **change})
    assert words in str(refused.value)


@given(st.lists(st.integers(min_value=1, max_value=1000), min_size=2, max_size=6))
def test_shares_that_sum_to_one_are_taken_and_others_refused(weights: list[int]) -> None:
    total = sum(weights)
    arms: list[dict[str, Any]] = [{"name": f"arm{n}", "share": w / total, "config": {}} for n, w in enumerate(weights)]
    if abs(math.fsum(a["share"] for a in arms) - 1) <= 1e-9:
        experiment = parse_experiment({"name": "h", "arms": arms})
        assert [arm.name for arm in experiment.arms] == [a["name"] for a in arms]
    skewed = [*arms[:-1], {**arms[-1], "share": arms[-1]["share"] * 0.5}]
    with pytest.raises(ExperimentFileError, match="must sum to 1"):
        parse_experiment({"name": "h", "arms": skewed})


@given(st.dictionaries(st.text(min_size=1, max_size=12), st.floats(0, 1), max_size=3))
def test_only_ranking_config_fields_are_taken(config: dict[str, float]) -> None:
    arms = [{"name": "a", "share": 0.5, "config": {}}, {"name": "b", "share": 0.5, "config": config}]
    unknown = set(config) - set(CONFIG_FIELDS)
    if unknown:
        with pytest.raises(ExperimentFileError, match="unknown RankingConfig"):
            parse_experiment({"name": "h", "arms": arms})


def bernoulli(successes: int, total: int) -> list[tuple[int, int]]:
    return [(1, 1)] * successes + [(1, 0)] * (total - successes)


def test_one_impression_per_user_is_the_textbook_two_proportion_test() -> None:
    """200/1000 against 250/1000: SE = sqrt(.2 × .8 / 1000), z = .05 / sqrt(.16/1000 + .1875/1000)
    = 2.6822, two-sided p = 0.00731 (scipy.stats.norm.sf(2.6822) × 2); n for 80 % power = 1091."""
    control, treatment = rate_over_units(bernoulli(200, 1000)), rate_over_units(bernoulli(250, 1000))
    assert control.standard_error == pytest.approx(math.sqrt(0.2 * 0.8 / 1000))
    assert control.ci95 == pytest.approx((0.2 - 1.959964 * 0.0126491, 0.2 + 1.959964 * 0.0126491), abs=1e-6)
    comparison = compare_rates(control, treatment)
    assert comparison.z == pytest.approx(2.682209, abs=1e-5)
    assert comparison.p_value == pytest.approx(0.0073138, abs=1e-6)
    assert comparison.significant
    assert users_per_arm(control.unit_variance, treatment.unit_variance, 0.05) == 1091


def test_a_users_impressions_count_as_one_unit() -> None:
    """Ten users who click all of their 10 impressions and ten who click none: the rate is 0.5
    over 200 impressions, but the evidence is 20 users' worth (SE 0.5/sqrt(20), not 0.5/sqrt(200))."""
    rate = rate_over_units([(10, 10)] * 10 + [(10, 0)] * 10)
    assert rate.rate == 0.5
    assert rate.standard_error == pytest.approx(0.5 / math.sqrt(20))


def test_no_difference_without_variance_is_no_evidence() -> None:
    same = rate_over_units(bernoulli(0, 50))
    assert compare_rates(same, same).p_value == 1.0


def test_the_report_says_not_enough_data_below_the_minimum() -> None:
    experiment = parse_experiment({**TWO_ARMS, "min_users_per_arm": 3})
    users = [f"u{n}" for n in range(4)]
    shown = [
        Impression(f"{n + 1}-0", user, "search", experiment.arm_for(user).name, ("p1",)) for n, user in enumerate(users)
    ]
    clicks = [Outcome(shown[0].rec_id, shown[0].user_id, "search", shown[0].arm, "click", "p1")]
    report = build_report(shown, clicks, 60, experiment)
    assert report["experiment"]["status"].startswith("not enough data yet: every arm needs 3 users")
    assert report["experiment"]["comparisons"] == []
    assert sum(group["ctr"]["successes"] for group in report["groups"]) == 1


@pytest.mark.parametrize(
    ("path", "label"),
    [("/search", "/search"), ("/metrics", "/metrics"), ("/static/app.js", "/static"), ("/alice-secret", "other"),
     ("/healthz", "/healthz")],
)  # fmt: skip
def test_endpoint_labels_are_routes_never_a_clients_path(path: str, label: str) -> None:
    assert endpoint_label(path) == label
