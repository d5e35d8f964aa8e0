"""Sharpe-ratio inference: PSR, DSR (Bailey & Lopez de Prado) and a paired difference test.

Units: every Sharpe ratio here is *per period* (mean / std of per-bar returns,
not annualized); multiply by ``sqrt(periods_per_year)`` only for display.
``returns`` are per-period returns shaped ``(periods,)``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.special
from numpy.typing import ArrayLike

from convopt_mlflow.stats._validation import as_returns

EULER_MASCHERONI = 0.5772156649015329


def sharpe_ratio(returns: ArrayLike) -> float:
    """Per-period Sharpe ratio ``mean / std`` (``ddof=1``) of ``returns`` ``(periods,)``.

    Examples:
        >>> round(sharpe_ratio([0.01, -0.005, 0.02, 0.0]), 4)
        0.5637
    """
    r = as_returns(returns, min_obs=2)
    std = r.std(ddof=1)
    if std == 0.0:
        raise ValueError("returns have zero variance; the Sharpe ratio is undefined")
    return float(r.mean() / std)


def _psr(sharpe: float, periods: int, skew: float, kurtosis: float, benchmark: float) -> float:
    """PSR from moments; ``kurtosis`` is Pearson's (3 for a normal), not excess."""
    variance = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if variance <= 0.0:
        raise ValueError("the moments give a non-positive Sharpe variance; too few or too extreme returns")
    return float(scipy.special.ndtr((sharpe - benchmark) * np.sqrt(periods - 1) / np.sqrt(variance)))


def _skew_kurtosis(r: np.ndarray) -> tuple[float, float]:
    """``scipy.stats.skew(r)`` and ``scipy.stats.kurtosis(r, fisher=False)`` (``bias=True``), the same
    operations in the same order, so the same floats, without importing ``scipy.stats`` (0.5-0.8 s of
    every training run's start, for these two numbers). NaN for (nearly) constant ``r``, as scipy."""
    mean = r.mean()
    centred = r - mean
    squared = centred**2
    m2, m3, m4 = squared.mean(), (squared * centred).mean(), (squared**2).mean()
    if m2 <= (np.finfo(m2.dtype).eps * mean) ** 2:
        return float("nan"), float("nan")
    return float(m3 / m2**1.5), float(m4 / m2**2.0)


def _moments(r: np.ndarray) -> tuple[float, int, float, float]:
    return (sharpe_ratio(r), r.size, *_skew_kurtosis(r))


def probabilistic_sharpe_ratio(returns: ArrayLike, benchmark: float = 0.0) -> float:
    r"""Probability that the true per-period Sharpe exceeds ``benchmark`` (Bailey & Lopez de Prado 2012).

    ``PSR = Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2))``
    with ``SR`` the sample per-period Sharpe (``ddof=1``), ``T`` the number of
    periods, ``g3`` the sample skewness and ``g4`` the sample (Pearson, non-excess)
    kurtosis, both the plain moment estimators (``scipy.stats.skew``/``kurtosis``
    with ``bias=True``).

    Args:
        returns: ``(periods,)`` per-period returns, at least 3.
        benchmark: ``SR*``, a per-period Sharpe ratio.

    Examples:
        >>> r = [0.01, -0.005, 0.02, 0.0, 0.012, -0.002, 0.007, 0.004]
        >>> round(probabilistic_sharpe_ratio(r), 3)
        0.975
    """
    r = as_returns(returns)
    sharpe, periods, skew, kurtosis = _moments(r)
    return _psr(sharpe, periods, skew, kurtosis, benchmark)


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    r"""Expected maximum of ``n_trials`` Sharpe ratios under a zero true Sharpe.

    ``SR0 = sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e)))``,
    with ``gamma`` the Euler-Mascheroni constant and ``V`` the variance of the
    trials' Sharpe ratios (per-period units, as the result). The example is the
    paper's (2014): 100 trials whose annualized Sharpes vary by 0.5, 250 bars a year.

    Examples:
        >>> round(expected_max_sharpe(100, 0.5 / 250), 4)
        0.1132
    """
    if n_trials < 2:
        raise ValueError(f"n_trials must be at least 2; got {n_trials}")
    if sharpe_variance < 0.0:
        raise ValueError(f"sharpe_variance must be non-negative; got {sharpe_variance}")
    quantiles = scipy.special.ndtri([1.0 - 1.0 / n_trials, 1.0 - 1.0 / (n_trials * np.e)])  # norm.ppf
    return float(np.sqrt(sharpe_variance) * ((1.0 - EULER_MASCHERONI) * quantiles[0] + EULER_MASCHERONI * quantiles[1]))


def deflated_sharpe_ratio(returns: ArrayLike, trial_sharpes: ArrayLike, n_trials: int | None = None) -> float:
    """PSR of the selected strategy against the Sharpe expected from luck alone (Bailey & Lopez de Prado 2014).

    ``DSR = PSR(SR0)`` with ``SR0 = expected_max_sharpe(N, var(trial_sharpes, ddof=1))``.
    Use it for a winner picked among many trials (e.g. an Optuna study): a DSR
    above 0.95 says the winner's Sharpe is unlikely to be a selection artefact.

    Args:
        returns: ``(periods,)`` per-period returns of the selected strategy.
        trial_sharpes: ``(trials,)`` per-period Sharpe ratios of all trials tried,
            the winner included, on the same periods.
        n_trials: effective number of independent trials ``N``; defaults to
            ``len(trial_sharpes)`` (pass fewer when trials are strongly correlated).

    Examples:
        >>> r = np.random.default_rng(0).normal(0.15, 1.0, 1000)
        >>> trials = np.random.default_rng(1).normal(0.0, 0.03, 50)
        >>> round(probabilistic_sharpe_ratio(r), 3), round(deflated_sharpe_ratio(r, trials), 3)
        (0.999, 0.914)
    """
    r = as_returns(returns)
    sharpes = np.asarray(trial_sharpes, dtype=float)
    if sharpes.ndim != 1 or sharpes.size < 2 or not np.all(np.isfinite(sharpes)):
        raise ValueError("trial_sharpes must be a finite 1-D array of at least 2 Sharpe ratios")
    benchmark = expected_max_sharpe(sharpes.size if n_trials is None else n_trials, float(sharpes.var(ddof=1)))
    sharpe, periods, skew, kurtosis = _moments(r)
    return _psr(sharpe, periods, skew, kurtosis, benchmark)


@dataclass(frozen=True)
class SharpeDifference:
    """Result of :func:`sharpe_difference_test`: per-period Sharpes, ``z`` and two-sided ``p_value``."""

    sharpe_a: float
    sharpe_b: float
    correlation: float
    z: float
    p_value: float

    def to_dict(self) -> dict[str, float]:
        """Flat ``{name: number}`` view."""
        return asdict(self)


def sharpe_difference_test(returns_a: ArrayLike, returns_b: ArrayLike) -> SharpeDifference:
    r"""Jobson-Korkie test, with Memmel's (2003) correction, of equal Sharpe ratios on one period.

    For paired per-period returns of two arms trading the same bars,
    ``Var(SR_a - SR_b) ~ (2 (1 - rho) + (SR_a^2 + SR_b^2 - 2 SR_a SR_b rho^2) / 2) / T``
    with ``rho`` the correlation of the returns, and ``z = (SR_a - SR_b) / sqrt(Var)``
    is compared with a standard normal. It assumes iid (roughly normal) returns;
    no HAC adjustment for autocorrelation.

    Args:
        returns_a: ``(periods,)`` returns.
        returns_b: ``(periods,)`` returns over the same periods.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> common = rng.normal(0.0, 1.0, 500)
        >>> a = common + rng.normal(0.3, 1.0, 500)
        >>> b = common + rng.normal(0.0, 1.0, 500)
        >>> result = sharpe_difference_test(a, b)
        >>> result.z > 2, result.p_value < 0.05
        (True, True)
    """
    a = as_returns(returns_a, name="returns_a")
    b = as_returns(returns_b, name="returns_b")
    if a.size != b.size:
        raise ValueError(f"returns_a and returns_b must cover the same periods; got {a.size} and {b.size}")
    sharpe_a, sharpe_b = sharpe_ratio(a), sharpe_ratio(b)
    rho = float(np.corrcoef(a, b)[0, 1])
    variance = (2.0 * (1.0 - rho) + 0.5 * (sharpe_a**2 + sharpe_b**2 - 2.0 * sharpe_a * sharpe_b * rho**2)) / a.size
    if variance <= 0.0:
        z = 0.0 if sharpe_a == sharpe_b else float(np.sign(sharpe_a - sharpe_b) * np.inf)
    else:
        z = (sharpe_a - sharpe_b) / np.sqrt(variance)
    return SharpeDifference(sharpe_a, sharpe_b, rho, float(z), float(2.0 * scipy.special.ndtr(-abs(z))))
