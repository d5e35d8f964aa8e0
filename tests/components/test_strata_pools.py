"""start_pools computes the window majorities of the starts it groups only (not of every bar): the same pools."""
import numpy as np
import pytest

from convopt_mlflow.components.strata import STRATA, start_pools, window_majority


def _pools_over_every_bar(codes, bounds, length):
    """start_pools as it was: the majority of every window of the market, then the starts' ones."""
    low, high = bounds
    majority = window_majority(codes, length)
    starts = np.arange(low, min(high + 1, majority.size))
    labels = majority[starts]
    return {name: starts[labels == k] for k, name in enumerate(STRATA)}


@pytest.mark.parametrize("bounds, length", [((0, 900), 50), ((120, 700), 64), ((300, 990), 40), ((0, 2000), 10),
                                            ((980, 999), 30), ((500, 400), 20)])
def test_same_pools_as_the_majority_of_every_window(bounds, length):
    rng = np.random.default_rng(sum(bounds) + length)
    codes = np.repeat(rng.integers(0, len(STRATA), 80), rng.integers(1, 30, 80))[:1000].astype(np.int8)
    got, expected = start_pools(codes, bounds, length), _pools_over_every_bar(codes, bounds, length)
    assert list(got) == list(expected)
    for name in STRATA:
        assert np.array_equal(got[name], expected[name]) and got[name].dtype == expected[name].dtype
