import numpy as np
import pytest
import scipy.stats

from convopt_mlflow.stats import minimum_detectable_effect, t_test_power

from .conftest import binomial_band

SIMULATIONS = 4000


def test_no_effect_has_power_alpha():
    assert t_test_power(0.0, 5) == pytest.approx(0.05)
    assert t_test_power(0.0, 8, alpha=0.01, paired=True) == pytest.approx(0.01)


def test_power_grows_with_effect_and_runs():
    assert t_test_power(0.5, 10) < t_test_power(1.0, 10) < t_test_power(1.0, 20)
    assert t_test_power(-1.0, 10) == pytest.approx(t_test_power(1.0, 10))


def test_large_sample_agrees_with_normal_approximation():
    # n = 2000 per arm: power ~ Phi(d sqrt(n/2) - 1.96)
    d, n = 0.1, 2000
    expected = scipy.stats.norm.sf(1.959964 - d * np.sqrt(n / 2)) + scipy.stats.norm.cdf(-1.959964 - d * np.sqrt(n / 2))
    assert t_test_power(d, n) == pytest.approx(expected, abs=2e-3)


@pytest.mark.parametrize("effect, runs", [(1.0, 10), (1.5, 5), (0.8, 20)])
def test_power_matches_monte_carlo_on_a_planted_effect(effect, runs):
    rng = np.random.default_rng(12)
    arm = rng.normal(effect, 1.0, size=(SIMULATIONS, runs))
    baseline = rng.normal(0.0, 1.0, size=(SIMULATIONS, runs))
    rejected = scipy.stats.ttest_ind(arm, baseline, axis=1, equal_var=False).pvalue < 0.05
    low, high = binomial_band(SIMULATIONS, t_test_power(effect, runs))
    # Welch loses a little power to the pooled test at tiny n; allow that one-sidedly.
    assert low - 0.02 <= rejected.mean() <= high


def test_paired_power_matches_monte_carlo():
    rng = np.random.default_rng(13)
    differences = rng.normal(0.8, 1.0, size=(SIMULATIONS, 8))
    rejected = scipy.stats.ttest_1samp(differences, 0.0, axis=1).pvalue < 0.05
    low, high = binomial_band(SIMULATIONS, t_test_power(0.8, 8, paired=True))
    assert low <= rejected.mean() <= high


def test_unequal_arms():
    # noncentrality uses 1/sqrt(1/4 + 1/12) and df = 14
    critical = scipy.stats.t.ppf(0.975, 14)
    delta = 1.2 / np.sqrt(1 / 4 + 1 / 12)
    expected = scipy.stats.nct.sf(critical, 14, delta) + scipy.stats.nct.cdf(-critical, 14, delta)
    assert t_test_power(1.2, 4, n_other=12) == pytest.approx(expected)


def test_minimum_detectable_effect_inverts_power():
    for runs in (3, 5, 10, 30):
        d = minimum_detectable_effect(runs)
        assert t_test_power(d, runs) == pytest.approx(0.8, abs=1e-8)
    assert minimum_detectable_effect(5, power=0.9) > minimum_detectable_effect(5)
    assert minimum_detectable_effect(5, paired=True) != minimum_detectable_effect(5)


@pytest.mark.parametrize("kwargs", [{"n_per_arm": 1}, {"n_per_arm": 5, "power": 0.01}, {"n_per_arm": 5, "alpha": 1.0}])
def test_bad_designs(kwargs):
    with pytest.raises(ValueError):
        minimum_detectable_effect(**kwargs)


def _holm_power(rng, effect, seeds, arms=3, effects_in=1, simulations=20_000, alpha=0.05):
    """P(Holm rejects arm 0 vs the baseline) when ``effects_in`` arms have paired effect ``effect`` (d_z)."""
    baseline = rng.normal(size=(simulations, 1, seeds))
    scores = rng.normal(size=(simulations, arms, seeds))
    scores[:, :effects_in] += effect * np.sqrt(2.0)  # sd of an arm-minus-baseline difference is sqrt(2)
    p = scipy.stats.ttest_rel(scores, baseline, axis=2).pvalue
    order = np.argsort(p, axis=1)
    stepped = np.minimum(1.0, (arms - np.arange(arms)) * np.take_along_axis(p, order, axis=1))
    adjusted = np.empty_like(p)
    np.put_along_axis(adjusted, order, np.maximum.accumulate(stepped, axis=1), axis=1)
    return float(np.mean(adjusted[:, 0] <= alpha))


@pytest.mark.parametrize("seeds", [5, 10])
def test_the_claimed_mde_has_80_percent_power_under_holm_over_three_arms(seeds):
    # the A/B verdict is Holm over 3 arms vs one baseline; the MDE it states must hold at that level
    rng = np.random.default_rng(seeds)
    claimed = minimum_detectable_effect(seeds, paired=True, comparisons=3)
    assert _holm_power(rng, claimed, seeds) >= 0.78  # the other two arms null: the worst case
    assert _holm_power(rng, claimed, seeds, effects_in=3) >= 0.78
    # at the unadjusted alpha the claim fails (about 52% and 60%): what the old report said
    assert _holm_power(rng, minimum_detectable_effect(seeds, paired=True), seeds) < 0.65


def test_comparisons_run_the_test_at_alpha_over_k():
    assert t_test_power(1.0, 8, paired=True, comparisons=4) == pytest.approx(t_test_power(1.0, 8, paired=True, alpha=0.0125))
    assert t_test_power(0.0, 8, paired=True, comparisons=5) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="comparisons"):
        t_test_power(1.0, 8, comparisons=0)
