import math

import numpy as np
import pytest
import scipy.stats

from convopt_mlflow.stats import (
    Comparison,
    compare_all_pairs,
    compare_arms,
    compare_to_baseline,
    holm_bonferroni,
    minimum_detectable_effect,
)

from .conftest import binomial_band

ARM = np.array([3.1, 2.9, 3.4, 3.0, 3.2])
BASE = np.array([2.0, 2.2, 1.9, 2.1, 2.3])


def test_tests_agree_with_scipy():
    c = compare_arms(ARM, BASE, rng=0, paired=True)
    welch = scipy.stats.ttest_ind(ARM, BASE, equal_var=False)
    assert (c.welch_t, c.welch_p) == pytest.approx((welch.statistic, welch.pvalue))
    mwu = scipy.stats.mannwhitneyu(ARM, BASE, alternative="two-sided")
    assert (c.mannwhitney_u, c.mannwhitney_p) == pytest.approx((mwu.statistic, mwu.pvalue))
    paired = scipy.stats.ttest_rel(ARM, BASE)
    assert (c.paired_t, c.paired_t_p) == pytest.approx((paired.statistic, paired.pvalue))
    wilcoxon = scipy.stats.wilcoxon(ARM, BASE)
    assert (c.wilcoxon_w, c.wilcoxon_p) == pytest.approx((wilcoxon.statistic, wilcoxon.pvalue))


def test_exact_permutation_p_value_by_hand():
    # The arms are fully separated: of the C(10, 5) = 252 relabelings only the
    # observed one and its mirror are as extreme, so p = 2 / 252.
    c = compare_arms(ARM, BASE, rng=0)
    assert c.permutation_p == pytest.approx(2 / math.comb(10, 5))
    # paired: 2^5 sign flips, again two as extreme
    assert compare_arms(ARM, BASE, rng=0, paired=True).permutation_p == pytest.approx(2 / 2**5)


def test_effect_sizes_and_interval():
    c = compare_arms(ARM, BASE, rng=0)
    assert c.mean_difference == pytest.approx(ARM.mean() - BASE.mean())
    assert c.probability_of_improvement == 1.0
    assert c.hedges_g > 0
    low, high = c.difference_ci
    assert low <= c.mean_difference <= high and low > 0


def test_paired_interval_is_narrower_when_seeds_share_noise():
    seed_effect = np.random.default_rng(0).normal(0.0, 5.0, 8)
    arm, base = seed_effect + 1.0 + np.linspace(0, 0.1, 8), seed_effect
    unpaired = compare_arms(arm, base, rng=1).difference_ci
    paired = compare_arms(arm, base, rng=1, paired=True).difference_ci
    assert paired[1] - paired[0] < (unpaired[1] - unpaired[0]) / 10


def test_multi_task_tests_use_run_means():
    x = np.array([[1.0, 3.0], [2.0, 5.0], [4.0, 4.0]])
    y = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 0.0]])
    c = compare_arms(x, y, rng=0)
    assert c.welch_p == pytest.approx(scipy.stats.ttest_ind(x.mean(1), y.mean(1), equal_var=False).pvalue)


def test_power_fields():
    c = compare_arms(ARM, BASE, rng=0)
    assert c.mde == pytest.approx(minimum_detectable_effect(5))
    pooled = np.sqrt((ARM.var(ddof=1) + BASE.var(ddof=1)) / 2)
    assert c.mde_difference == pytest.approx(c.mde * pooled)


def test_primary_test_decides():
    c = compare_arms(ARM, BASE, rng=0, paired=True, primary="wilcoxon")
    assert c.p_value == c.wilcoxon_p == c.p_adjusted
    assert c.significant == (c.wilcoxon_p <= 0.05)
    with pytest.raises(ValueError, match="paired"):
        compare_arms(ARM, BASE, rng=0, primary="paired_t")
    with pytest.raises(ValueError, match="primary"):
        compare_arms(ARM, BASE, rng=0, primary="bayes")


def test_identical_arms_are_not_significant():
    c = compare_arms(BASE, BASE, rng=0, paired=True)
    assert not c.significant and c.probability_of_improvement == 0.5
    assert math.isnan(c.paired_t_p) and math.isnan(c.wilcoxon_p)


def test_family_is_holm_corrected():
    rng = np.random.default_rng(3)
    arms = {"base": rng.normal(0, 1, 6), "a": rng.normal(1.5, 1, 6), "b": rng.normal(0.5, 1, 6), "c": rng.normal(2, 1, 6)}
    family = compare_to_baseline(arms, "base", rng=0)
    assert [c.arm for c in family] == ["a", "b", "c"] and all(c.baseline == "base" for c in family)
    adjusted, reject = holm_bonferroni([c.p_value for c in family])
    assert [c.p_adjusted for c in family] == pytest.approx(adjusted)
    assert [c.significant for c in family] == reject.tolist()
    pairs = compare_all_pairs(arms, rng=0)
    assert len(pairs) == 6 and (pairs[0].arm, pairs[0].baseline) == ("base", "a")


def test_to_dict_and_reproducibility():
    first = compare_arms(ARM, BASE, rng=5)
    assert first == compare_arms(ARM, BASE, rng=np.random.default_rng(5))
    flat = first.to_dict()
    assert {"difference_ci_low", "difference_ci_high", "significant", "p_adjusted"} <= set(flat)
    assert isinstance(first, Comparison)


def test_bad_inputs():
    with pytest.raises(ValueError, match="baseline"):
        compare_to_baseline({"a": ARM}, "b", rng=0)
    with pytest.raises(ValueError, match="same"):
        compare_arms(ARM, BASE[:4], rng=0, paired=True)
    with pytest.raises(ValueError, match="tasks"):
        compare_arms(np.zeros((3, 2)), np.zeros((3, 1)), rng=0)


def test_welch_is_calibrated_on_aa_comparisons():
    # 4,000 A/A comparisons of 5 seeds x 3 folds per arm, reduced to run means as compare_arms does.
    simulations, alpha = 4000, 0.05
    scores = np.random.default_rng(2024).normal(0.0, 1.0, size=(simulations, 2, 5, 3))
    means = scores.mean(axis=3)
    p = scipy.stats.ttest_ind(means[:, 0], means[:, 1], axis=1, equal_var=False).pvalue
    low, high = binomial_band(simulations, alpha)
    assert low <= np.mean(p <= alpha) <= high
    # compare_arms computes those same p-values
    for i in range(5):
        assert compare_arms(scores[i, 0], scores[i, 1], rng=0, n_boot=10).welch_p == pytest.approx(p[i])


def test_holm_keeps_the_family_wise_error_on_aa_families():
    # Three A/A arms against one baseline: any rejection is a family-wise error.
    simulations, alpha = 4000, 0.05
    scores = np.random.default_rng(7).normal(size=(simulations, 4, 5))
    p = scipy.stats.ttest_ind(scores[:, 1:], scores[:, :1], axis=2, equal_var=False).pvalue
    any_rejected = np.array([holm_bonferroni(row, alpha)[1].any() for row in p])
    assert np.mean(any_rejected) <= binomial_band(simulations, alpha)[1]


def test_the_mde_of_a_holm_family_is_stated_at_the_family_level():
    rng = np.random.default_rng(3)
    arms = {"base": rng.normal(size=6), "a": rng.normal(size=6), "b": rng.normal(size=6), "c": rng.normal(size=6)}
    family = compare_to_baseline(arms, "base", rng=0, paired=True, primary="paired_t")
    for c in family:
        assert c.mde == pytest.approx(minimum_detectable_effect(6, paired=True, comparisons=3))
        spread = float(np.std(arms[c.arm] - arms["base"], ddof=1))
        assert c.mde_difference == pytest.approx(c.mde * spread)
    (alone,) = compare_to_baseline({"base": arms["base"], "a": arms["a"]}, "base", rng=0, paired=True)
    assert alone.mde == pytest.approx(minimum_detectable_effect(6, paired=True))
