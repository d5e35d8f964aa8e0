import numpy as np
import pytest
import scipy.stats

from convopt_mlflow.stats import ArmSummary, iqm, summarize_arm


def test_iqm_trims_a_quarter_each_side():
    # 8 scores: drop 2 lowest and 2 highest, mean of 3, 4, 5, 6.
    assert iqm([1, 2, 3, 4, 5, 6, 7, 100]) == 4.5
    # (runs, tasks) is flattened: the same 8 values in a (4, 2) matrix.
    assert iqm(np.array([[1, 100], [2, 7], [3, 6], [4, 5]])) == 4.5
    # 10 scores: int(0.25 * 10) = 2 dropped each side -> mean(2..7) = 4.5.
    assert iqm([-50, 1, 2, 3, 4, 5, 6, 7, 8, 90]) == pytest.approx(4.5)


def test_iqm_matches_scipy_trim_mean():
    scores = np.random.default_rng(0).normal(size=(7, 3))
    assert iqm(scores) == pytest.approx(scipy.stats.trim_mean(scores.ravel(), 0.25))


def test_point_estimates():
    scores = np.array([[1.0, 4.0], [2.0, 8.0], [3.0, 6.0]])
    summary = summarize_arm(scores, rng=0)
    assert (summary.n, summary.runs, summary.tasks) == (3, 3, 2)
    assert summary.mean == pytest.approx(4.0)
    assert summary.median == pytest.approx(3.5)
    assert summary.iqm == pytest.approx(3.75)  # int(1.5) = 1 cut each side: mean(2, 3, 4, 6)
    assert summary.std == pytest.approx(np.std([1, 4, 2, 8, 3, 6], ddof=1))


def test_intervals_bracket_the_estimates_and_are_reproducible():
    scores = np.random.default_rng(1).normal(10.0, 2.0, size=(10, 3))
    first = summarize_arm(scores, rng=7)
    assert first == summarize_arm(scores, rng=np.random.default_rng(7))
    for name in ("mean", "median", "iqm", "std"):
        low, high = getattr(first, f"{name}_ci")
        assert low <= getattr(first, name) <= high


def test_mean_interval_close_to_normal_theory():
    scores = np.random.default_rng(2).normal(0.0, 1.0, size=400)
    low, high = summarize_arm(scores, rng=0, n_boot=4000).mean_ci
    half_width = 1.96 * scores.std(ddof=1) / np.sqrt(scores.size)
    assert high - low == pytest.approx(2 * half_width, rel=0.1)


def test_one_dimensional_is_one_task():
    a = summarize_arm([1.0, 2.0, 4.0], rng=0)
    b = summarize_arm([[1.0], [2.0], [4.0]], rng=0)
    assert a == b and a.tasks == 1


def test_to_dict_is_flat():
    flat = summarize_arm([1.0, 2.0, 4.0], rng=0).to_dict()
    assert flat["n"] == 3 and {"mean_ci_low", "mean_ci_high", "iqm_ci_low", "std_ci_high"} <= set(flat)
    assert all(isinstance(value, (int, float)) for value in flat.values())


def test_frozen():
    summary = summarize_arm([1.0, 2.0], rng=0)
    assert isinstance(summary, ArmSummary)
    with pytest.raises(AttributeError):
        summary.mean = 0.0


@pytest.mark.parametrize("scores", [[1.0], [[1.0, np.nan], [2.0, 3.0]], np.zeros((2, 2, 2))])
def test_bad_scores_are_rejected(scores):
    with pytest.raises(ValueError):
        summarize_arm(scores, rng=0)


def test_rng_must_be_injected():
    with pytest.raises(TypeError):
        summarize_arm([1.0, 2.0], rng=None)
