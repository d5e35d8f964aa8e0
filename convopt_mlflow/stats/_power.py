"""Power and minimum detectable effect of two-sided t tests (noncentral t).

Effects are standardized: Cohen's ``d = (mu_x - mu_y) / sigma`` for two arms
with a common ``sigma``, or ``d_z = mean(diff) / sd(diff)`` for paired seeds.
The two-sample formula is the pooled t test's. With equal variances Welch's
test has nearly the same power (a Monte Carlo check finds about 3 points less
at 5 runs per arm and d = 1.5, under 1 point from 10 runs), so it stands for both.

Several comparisons. An A/B verdict compares ``k`` arms with one baseline and
corrects with Holm. ``comparisons=k`` computes power and the MDE at ``alpha / k``,
the level of Holm's first (strictest) step. Holm rejects every hypothesis that
Bonferroni at ``alpha / k`` rejects, so this is a lower bound on each comparison's
power under Holm, whatever the other arms' effects: "80% power at d_z = X" then
holds for every arm at once, not only when it is compared alone (a simulation with
a baseline and 3 arms, 20,000 studies each, finds 80.0% and 80.3% at the claimed X
with 5 and 10 seeds when the other two arms are null, 92% and 89% when all three have
the effect; at the unadjusted alpha the old claim held only 52% and 60%).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.optimize
import scipy.stats

from convopt_mlflow.stats._validation import check_probability


def _design(n_per_arm: int, n_other: int | None, paired: bool) -> tuple[int, float]:
    """Degrees of freedom and the factor turning ``d`` into the noncentrality."""
    if paired:
        if n_other is not None and n_other != n_per_arm:
            raise ValueError("a paired design has one n: the number of shared seeds")
        if n_per_arm < 2:
            raise ValueError(f"a paired t test needs at least 2 pairs; got {n_per_arm}")
        return n_per_arm - 1, float(np.sqrt(n_per_arm))
    other = n_per_arm if n_other is None else n_other
    if n_per_arm < 2 or other < 2:
        raise ValueError(f"a two-sample t test needs at least 2 runs per arm; got {n_per_arm} and {other}")
    return n_per_arm + other - 2, float(1.0 / np.sqrt(1.0 / n_per_arm + 1.0 / other))


def t_test_power(
    effect_size: float,
    n_per_arm: int,
    *,
    alpha: float = 0.05,
    n_other: int | None = None,
    paired: bool = False,
    comparisons: int = 1,
) -> float:
    """Power of the two-sided t test at level ``alpha`` for a true standardized effect.

    Two samples: ``df = n_x + n_y - 2`` and noncentrality
    ``delta = d / sqrt(1/n_x + 1/n_y)``; paired: ``df = n - 1`` and
    ``delta = d_z sqrt(n)``. Power is ``P(|T'| > t_{1-alpha/2, df})`` with
    ``T'`` noncentral t (``scipy.stats.nct``).

    Args:
        effect_size: ``d`` (or ``d_z`` when ``paired``), unitless.
        n_per_arm: runs in arm X (pairs when ``paired``).
        alpha: two-sided significance level.
        n_other: runs in arm Y; defaults to ``n_per_arm``.
        paired: power of the paired t test on per-seed differences.
        comparisons: the size of the Holm family; the test is run at ``alpha / comparisons``
            (Holm's first step, a lower bound on the power under Holm).

    Examples:
        >>> round(t_test_power(1.0, 20), 3)
        0.869
        >>> round(t_test_power(0.0, 5), 3)
        0.05
    """
    check_probability(alpha, "alpha")
    level = alpha / _family(comparisons)
    df, scale = _design(n_per_arm, n_other, paired)
    critical = scipy.stats.t.ppf(1.0 - level / 2.0, df)
    delta = effect_size * scale
    upper, lower = scipy.stats.nct.sf(critical, df, delta), scipy.stats.nct.cdf(-critical, df, delta)
    # scipy's noncentral t returns NaN for a far tail at tiny df (e.g. paired n=2); that tail is ~0
    return float(np.nan_to_num(upper, nan=0.0) + np.nan_to_num(lower, nan=0.0))


def _family(comparisons: int) -> int:
    if int(comparisons) != comparisons or comparisons < 1:
        raise ValueError(f"comparisons must be a whole number >= 1; got {comparisons}")
    return int(comparisons)


@lru_cache(maxsize=256)
def _mde(n_per_arm: int, n_other: int | None, paired: bool, power: float, alpha: float, comparisons: int) -> float:
    def shortfall(d: float) -> float:
        return t_test_power(d, n_per_arm, alpha=alpha, n_other=n_other, paired=paired, comparisons=comparisons) - power

    high = 1.0
    while shortfall(high) < 0.0:
        high *= 2.0
    return float(scipy.optimize.brentq(shortfall, 0.0, high, xtol=1e-10))


def minimum_detectable_effect(
    n_per_arm: int,
    *,
    power: float = 0.8,
    alpha: float = 0.05,
    n_other: int | None = None,
    paired: bool = False,
    comparisons: int = 1,
) -> float:
    """Smallest standardized effect the two-sided t test detects with probability ``power``.

    Solves ``t_test_power(d, ...) == power`` for ``d > 0``. Report it with every
    "no significant difference": effects below it could easily have been missed.

    Args:
        n_per_arm: as for :func:`t_test_power`.
        n_other: as for :func:`t_test_power`.
        paired: as for :func:`t_test_power`.
        alpha: as for :func:`t_test_power`.
        comparisons: as for :func:`t_test_power`; with ``comparisons=k`` the MDE holds at the
            level of a Holm verdict over ``k`` comparisons (computed at ``alpha / k``, Holm's
            first step: conservative).
        power: target power, e.g. 0.8.

    Examples:
        >>> d = minimum_detectable_effect(5)
        >>> round(d, 3), round(t_test_power(d, 5), 3)
        (2.024, 0.8)
        >>> round(minimum_detectable_effect(5, paired=True, comparisons=3), 3)
        2.292
    """
    check_probability(power, "power")
    check_probability(alpha, "alpha")
    if power <= alpha:
        raise ValueError(f"power must exceed alpha; got power={power}, alpha={alpha}")
    return _mde(int(n_per_arm), None if n_other is None else int(n_other), bool(paired), float(power), float(alpha),
                _family(comparisons))
