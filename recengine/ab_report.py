"""The report of GET /report (and bench/ab_simulation.py): click-through and conversion by list
source and arm over a window, and with an experiment, each arm against the control with 95 %
intervals and a z-test, or "not enough data yet" below the experiment's minimum of users."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recengine.ab_stats import Comparison, Rate, compare_rates, rate_over_units
from recengine.experiments import Experiment
from recengine.impressions import GroupTally, Impression, Outcome, tally


def rate_dict(rate: Rate) -> dict[str, Any]:
    low, high = rate.ci95
    return {"rate": round(rate.rate, 6), "ci95": [round(low, 6), round(high, 6)], "successes": rate.successes}


def comparison_dict(comparison: Comparison) -> dict[str, Any]:
    low, high = comparison.ci95
    return {
        "difference": round(comparison.difference, 6),
        "ci95": [round(low, 6), round(high, 6)],
        "z": round(comparison.z, 4),
        "p_value": round(comparison.p_value, 6),
        "significant": comparison.significant,
    }


@dataclass(frozen=True)
class GroupRates:
    users: int
    impressions: int
    ctr: Rate
    conversion: Rate

    @classmethod
    def of(cls, group: GroupTally) -> GroupRates:
        ctr = rate_over_units(group.clicks())
        return cls(len(group.users), ctr.trials, ctr, rate_over_units(group.conversions()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "impressions": self.impressions,
            "ctr": rate_dict(self.ctr),
            "conversion": rate_dict(self.conversion),
        }


def build_report(
    impressions: Sequence[Impression], outcomes: Sequence[Outcome], window_s: float, experiment: Experiment | None
) -> dict[str, Any]:
    """The report as JSON-ready data (docs/openapi.json's Report)."""
    by_source, by_arm = tally(impressions, outcomes)
    report: dict[str, Any] = {
        "window_s": window_s,
        "impressions": len(impressions),
        "groups": [
            {"source": source, "arm": arm, **GroupRates.of(group).to_dict()}
            for (source, arm), group in sorted(by_source.items())
        ],
    }
    if experiment is not None:
        report["experiment"] = experiment_report(experiment, by_arm)
    return report


def experiment_report(experiment: Experiment, by_arm: dict[str, GroupTally]) -> dict[str, Any]:
    """Each arm's rates; each arm after the first against the first, once every arm has the
    experiment's minimum of users (before that, comparisons say why there are none)."""
    rates = {arm.name: GroupRates.of(by_arm.get(arm.name, GroupTally())) for arm in experiment.arms}
    short = [f"{name} has {r.users}" for name, r in rates.items() if r.users < experiment.min_users_per_arm]
    control = experiment.arms[0].name
    answer: dict[str, Any] = {
        "name": experiment.name,
        "control": control,
        "min_users_per_arm": experiment.min_users_per_arm,
        "arms": [{"arm": name, **r.to_dict()} for name, r in rates.items()],
    }
    if short:
        answer["status"] = (
            f"not enough data yet: every arm needs {experiment.min_users_per_arm} users ({'; '.join(short)})"
        )
        answer["comparisons"] = []
        return answer
    answer["status"] = "ok"
    answer["comparisons"] = [
        {
            "arm": arm.name,
            "ctr": comparison_dict(compare_rates(rates[control].ctr, rates[arm.name].ctr)),
            "conversion": comparison_dict(compare_rates(rates[control].conversion, rates[arm.name].conversion)),
        }
        for arm in experiment.arms[1:]
    ]
    return answer
