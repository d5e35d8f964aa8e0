import numpy as np
import pytest
import scipy.stats

from convopt_mlflow.stats import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    sharpe_difference_test,
    sharpe_ratio,
)
from convopt_mlflow.stats._sharpe import _psr

from .conftest import binomial_band

RETURNS = np.array([0.01, -0.005, 0.02, 0.0, 0.012, -0.002, 0.007, 0.004, -0.011, 0.015])


def _by_hand(r, benchmark):
    """PSR written out from raw moments, independent of the module."""
    sr = r.mean() / r.std(ddof=1)
    centred = r - r.mean()
    m2, m3, m4 = (centred**2).mean(), (centred**3).mean(), (centred**4).mean()
    skew, kurt = m3 / m2**1.5, m4 / m2**2
    z = (sr - benchmark) * np.sqrt(r.size - 1) / np.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    return scipy.stats.norm.cdf(z)


def test_sharpe_ratio_is_per_period():
    assert sharpe_ratio(RETURNS) == pytest.approx(RETURNS.mean() / RETURNS.std(ddof=1))


@pytest.mark.parametrize("sr_star", [0.0, 0.1, -0.2])
def test_psr_matches_the_formula(sr_star):
    assert probabilistic_sharpe_ratio(RETURNS, sr_star) == pytest.approx(_by_hand(RETURNS, sr_star))


def test_psr_worked_example_from_moments():
    # Normal returns (skew 0, kurtosis 3): PSR = Phi(SR sqrt(T - 1) / sqrt(1 + SR^2 / 2))
    assert _psr(0.1, 101, 0.0, 3.0, 0.0) == pytest.approx(scipy.stats.norm.cdf(0.1 * 10 / np.sqrt(1.005)))


def test_expected_max_sharpe_and_dsr_reproduce_the_paper():
    # Bailey & Lopez de Prado (2014), worked example: annualized SR 2.5 over 1,250 daily
    # bars, skew -3, kurtosis 10, N = 100 trials with annualized Sharpe variance 0.5.
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=1e-4)
    assert _psr(2.5 / np.sqrt(250), 1250, -3.0, 10.0, sr0) == pytest.approx(0.9004, abs=1e-4)


def test_dsr_is_psr_against_the_expected_maximum():
    trials = np.array([0.05, -0.1, 0.2, 0.0, 0.12, 0.3])
    gamma = 0.5772156649015329
    n = trials.size
    sr0 = np.sqrt(trials.var(ddof=1)) * (
        (1 - gamma) * scipy.stats.norm.ppf(1 - 1 / n) + gamma * scipy.stats.norm.ppf(1 - 1 / (n * np.e))
    )
    assert deflated_sharpe_ratio(RETURNS, trials) == pytest.approx(_by_hand(RETURNS, sr0))
    assert deflated_sharpe_ratio(RETURNS, trials) < probabilistic_sharpe_ratio(RETURNS)
    assert deflated_sharpe_ratio(RETURNS, trials, n_trials=2) > deflated_sharpe_ratio(RETURNS, trials)


def test_sharpe_difference_matches_memmel_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.1, 1.0, 300), rng.normal(0.0, 1.0, 300)
    sa, sb = a.mean() / a.std(ddof=1), b.mean() / b.std(ddof=1)
    rho = np.corrcoef(a, b)[0, 1]
    var = (2 * (1 - rho) + 0.5 * (sa**2 + sb**2 - 2 * sa * sb * rho**2)) / 300
    result = sharpe_difference_test(a, b)
    assert result.z == pytest.approx((sa - sb) / np.sqrt(var))
    assert result.p_value == pytest.approx(2 * scipy.stats.norm.sf(abs(result.z)))
    assert sharpe_difference_test(b, a).z == pytest.approx(-result.z)


def test_identical_series_do_not_differ():
    result = sharpe_difference_test(RETURNS, RETURNS)
    assert result.z == 0.0 and result.p_value == 1.0


def test_sharpe_difference_is_calibrated_under_the_null():
    # 2,000 pairs of correlated normal return series with equal true Sharpe.
    simulations, periods, alpha = 2000, 250, 0.05
    rng = np.random.default_rng(11)
    common = rng.normal(size=(simulations, periods))
    a = 0.05 + 0.7 * common + 0.7 * rng.normal(size=(simulations, periods))
    b = 0.05 + 0.7 * common + 0.7 * rng.normal(size=(simulations, periods))
    p = np.array([sharpe_difference_test(x, y).p_value for x, y in zip(a, b)])
    low, high = binomial_band(simulations, alpha)
    assert low <= np.mean(p <= alpha) <= high


def test_bad_inputs():
    with pytest.raises(ValueError):
        sharpe_ratio([0.01, 0.01, 0.01])
    with pytest.raises(ValueError):
        sharpe_difference_test(RETURNS, RETURNS[:5])
    with pytest.raises(ValueError):
        deflated_sharpe_ratio(RETURNS, [0.1])


def test_moments_are_scipy_stats_float_for_float():
    """PSR's skew and kurtosis, computed without importing scipy.stats, equal scipy's exactly."""
    from convopt_mlflow.stats._sharpe import _skew_kurtosis

    rng = np.random.default_rng(7)
    for i in range(200):
        r = rng.standard_t(3, size=int(rng.integers(3, 3000))) * rng.uniform(1e-5, 1.0) + rng.normal() * (i % 3)
        assert _skew_kurtosis(r) == (float(scipy.stats.skew(r)), float(scipy.stats.kurtosis(r, fisher=False)))
    assert all(np.isnan(v) for v in _skew_kurtosis(np.full(10, 0.3)))


def test_a_training_import_does_not_load_scipy_stats():
    import subprocess
    import sys

    code = ("import sys, convopt_mlflow.training.coordinator, convopt_mlflow.stats as s\n"
            "s.probabilistic_sharpe_ratio([0.01, -0.005, 0.02, 0.0, 0.012])\n"
            "print('scipy.stats' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
