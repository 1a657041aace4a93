"""The statistics of an A/B report, without Redis: a rate with its 95 % confidence interval, two
rates compared with a two-proportion z-test, and the users per arm a test needs.

The rates are per impression (the share of lists shown that got a click, or a conversion), but
users, not impressions, are dealt to arms, and one user's impressions are not independent (a
shopper who likes the list clicks round after round). Treating impressions as independent
would make the intervals too narrow and an A/A test "find" differences far more often than 5 %.
So the variance of a rate is the delta method's over users (Deng et al., "Applying the Delta
Method in Metric Analytics", 2018): with one impression per user it is exactly the binomial
p(1 - p)/n, and the test the textbook's unpooled two-proportion z-test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

ALPHA = 0.05
Z_95 = NormalDist().inv_cdf(1 - ALPHA / 2)  # 1.959964...


@dataclass(frozen=True)
class Rate:
    """successes / trials over `units` users, with the delta method's standard error."""

    units: int
    trials: int
    successes: int
    rate: float
    standard_error: float

    @property
    def ci95(self) -> tuple[float, float]:
        half = Z_95 * self.standard_error
        return max(0.0, self.rate - half), min(1.0, self.rate + half)

    @property
    def unit_variance(self) -> float:
        """The variance one user adds (standard_error² × units): what a power calculation needs."""
        return self.standard_error**2 * self.units


def rate_over_units(per_unit: Sequence[tuple[int, int]]) -> Rate:
    """The rate of (trials, successes) pairs, one per user, and its standard error: the delta
    method's Var(X̄/N̄) ≈ (s_x² - 2R s_xn + R² s_n²) / (U N̄²), population moments."""
    units = len(per_unit)
    trials = sum(n for n, _ in per_unit)
    successes = sum(x for _, x in per_unit)
    if units == 0 or trials == 0:
        return Rate(units, trials, successes, 0.0, 0.0)
    rate = successes / trials
    mean_n = trials / units
    mean_x = successes / units
    var_n = sum((n - mean_n) ** 2 for n, _ in per_unit) / units
    var_x = sum((x - mean_x) ** 2 for _, x in per_unit) / units
    cov = sum((n - mean_n) * (x - mean_x) for n, x in per_unit) / units
    variance = max(0.0, var_x - 2 * rate * cov + rate**2 * var_n) / (units * mean_n**2)
    return Rate(units, trials, successes, rate, math.sqrt(variance))


@dataclass(frozen=True)
class Comparison:
    """treatment - control: the difference, its 95 % interval, z and the two-sided p-value."""

    difference: float
    ci95: tuple[float, float]
    z: float
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def compare_rates(control: Rate, treatment: Rate) -> Comparison:
    """The two-proportion z-test (unpooled: each arm's own variance) of treatment against control."""
    difference = treatment.rate - control.rate
    error = math.hypot(control.standard_error, treatment.standard_error)
    # Both arms without variance (all or no successes): equal is no evidence, unequal is certain.
    z = difference / error if error else (math.copysign(math.inf, difference) if difference else 0.0)
    p_value = math.erfc(abs(z) / math.sqrt(2))
    return Comparison(difference, (difference - Z_95 * error, difference + Z_95 * error), z, p_value)


def users_per_arm(control_variance: float, treatment_variance: float, difference: float, power: float = 0.8) -> int:
    """Users each arm needs for the z-test to find `difference` with this power at α = 0.05:
    n = (z_{1-α/2} + z_power)² (σ_a² + σ_b²) / δ², σ² each arm's variance per user."""
    if difference == 0:
        raise ValueError("a difference of 0 cannot be found at any sample size")
    z_power = NormalDist().inv_cdf(power)
    return math.ceil((Z_95 + z_power) ** 2 * (control_variance + treatment_variance) / difference**2)
