import numpy as np
import pytest
import scipy.stats

from convopt_mlflow.stats import hedges_g, probability_of_improvement


def test_hedges_g_hand_example():
    # means 4 and 2; variances 4 and 1; pooled = (2*4 + 2*1) / 4 = 2.5
    # d = 2 / sqrt(2.5); J = 1 - 3 / (4*6 - 9) = 0.8
    assert hedges_g([2, 4, 6], [1, 2, 3]) == pytest.approx(0.8 * 2 / np.sqrt(2.5))
    assert hedges_g([1, 2, 3], [2, 4, 6]) == pytest.approx(-0.8 * 2 / np.sqrt(2.5))


def test_hedges_g_uses_run_means_over_tasks():
    # run means are [2, 4, 6] and [1, 2, 3]
    x = np.array([[1.0, 3.0], [4.0, 4.0], [5.0, 7.0]])
    y = np.array([[1.0, 1.0], [2.0, 2.0], [2.0, 4.0]])
    assert hedges_g(x, y) == pytest.approx(hedges_g([2, 4, 6], [1, 2, 3]))


def test_hedges_g_undefined_without_spread():
    assert np.isnan(hedges_g([1.0, 1.0], [1.0, 1.0]))


def test_probability_of_improvement_hand_example():
    x = np.array([[1, 5], [2, 6], [3, 7]])
    y = np.array([[2, 5], [2, 4], [0, 8]])
    # task 0: 5 wins + 2 ties of 9 pairs -> 6/9; task 1: 5 wins + 1 tie -> 5.5/9
    assert probability_of_improvement(x, y) == pytest.approx((6 / 9 + 5.5 / 9) / 2)


def test_probability_of_improvement_matches_mann_whitney():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(6, 3)).astype(float)  # small integers: many ties
    y = rng.integers(0, 4, size=(4, 3)).astype(float)
    expected = np.mean([
        scipy.stats.mannwhitneyu(x[:, m], y[:, m], alternative="greater").statistic / (6 * 4) for m in range(3)
    ])
    assert probability_of_improvement(x, y) == pytest.approx(expected)


def test_probability_of_improvement_symmetry():
    x, y = [1.0, 2.0, 3.0], [1.5, 2.0, 0.0]
    assert probability_of_improvement(x, y) + probability_of_improvement(y, x) == pytest.approx(1.0)
    assert probability_of_improvement(x, x) == 0.5


def test_task_counts_must_match():
    with pytest.raises(ValueError, match="tasks"):
        probability_of_improvement(np.zeros((3, 2)), np.zeros((3, 3)))
