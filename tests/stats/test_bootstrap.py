import numpy as np
import pytest

from convopt_mlflow.stats._bootstrap import percentile_interval, resample, run_indices


def test_resampling_is_stratified_by_task():
    scores = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    replicates = resample(scores, run_indices(3, 2, 500, np.random.default_rng(0)))
    assert replicates.shape == (500, 3, 2)
    assert set(np.unique(replicates[:, :, 0])) <= {1.0, 2.0, 3.0}
    assert set(np.unique(replicates[:, :, 1])) <= {10.0, 20.0, 30.0}


def test_tasks_are_resampled_independently():
    indices = run_indices(5, 2, 200, np.random.default_rng(0))
    assert not np.array_equal(indices[:, :, 0], indices[:, :, 1])


def test_percentile_interval():
    assert percentile_interval(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0))
