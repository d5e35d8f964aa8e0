"""Splits against hand-computed boundaries."""
from __future__ import annotations

import pytest

from convopt_mlflow.data import Splits, chronological_splits
from convopt_mlflow.errors import ConfigError


def test_chronological_defaults_reserve_a_holdout_tail_of_a_tenth():
    # val = test = 150, holdout = 100, train = 1000 - 400 = 600.
    assert chronological_splits(1000) == Splits(train=(0, 600), val=(600, 750), test=(750, 900),
                                                holdout=(900, 1000))


def test_chronological_with_embargo_and_start():
    # usable 900: val = test = 135, holdout = 90; train = 900 - 360 - 3 * 10 = 510.
    assert chronological_splits(1000, embargo_bars=10, start=100) == Splits(
        train=(100, 610), val=(620, 755), test=(765, 900), holdout=(910, 1000))


def test_chronological_without_holdout_is_the_three_way_split():
    # usable 1000 - 100 = 900: val = test = floor(0.15 * 900) = 135; train = 900 - 270 - 2 * 10 = 610.
    assert chronological_splits(1000, embargo_bars=10, start=100, holdout_fraction=0.0) == Splits(
        train=(100, 710), val=(720, 855), test=(865, 1000), holdout=None)


def test_chronological_floors_fractions():
    # floor(0.1 * 1001) = 100, floor(0.2 * 1001) = 200, floor(0.12 * 1001) = 120, train = 1001 - 420 - 9 = 572.
    assert chronological_splits(1001, val_fraction=0.1, test_fraction=0.2, holdout_fraction=0.12,
                                embargo_bars=3) == Splits(train=(0, 572), val=(575, 675), test=(678, 878),
                                                          holdout=(881, 1001))


def test_too_few_bars_for_the_holdout_is_refused_not_dropped():
    # floor(0.15 * 9) = 1 bar of val and test, floor(0.1 * 9) = 0 bars of holdout
    with pytest.raises(ConfigError, match="holdout split is empty"):
        chronological_splits(9)
    assert chronological_splits(9, holdout_fraction=0.0).holdout is None


def test_split_boundaries_record_indices_and_timestamps():
    import pandas as pd

    from convopt_mlflow.data.splits import split_boundaries

    times = pd.date_range("2024-01-01", periods=1000, freq="h")
    record = split_boundaries(chronological_splits(1000, embargo_bars=10), times, embargo_bars=10, digest="d")
    assert record["digest"] == "d" and record["n_bars"] == 1000 and record["embargo_bars"] == 10
    assert record["splits"]["val"] == {"start": 580, "stop": 730, "bars": 150, "first": times[580].isoformat(),
                                       "last": times[729].isoformat()}
    assert record["splits"]["holdout"]["start"] == 900 and record["splits"]["holdout"]["last"] == times[-1].isoformat()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_bars": 6}, "val split is empty"),  # floor(0.15 * 6) = 0 bars of validation
        ({"n_bars": 100, "embargo_bars": 40}, "train split is empty"),
        ({"n_bars": 100, "val_fraction": 0.0}, "val_fraction"),
        ({"n_bars": 100, "test_fraction": 1.0}, "test_fraction"),
        ({"n_bars": 100, "holdout_fraction": -0.1}, "holdout_fraction"),
        ({"n_bars": 100, "start": 100}, "start=100"),
        ({"n_bars": 100, "embargo_bars": -1}, "embargo_bars"),
    ],
)
def test_chronological_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        chronological_splits(**kwargs)




def test_walk_forward_folds_validate_on_consecutive_embargoed_blocks_ending_at_the_configured_split():
    from convopt_mlflow.data.splits import walk_forward_test_fractions

    for n_bars, start, embargo, folds, holdout in ((1000, 0, 10, 3, 0.1), (6225, 57, 24, 5, 0.1),
                                                   (3001, 13, 0, 4, 0.15), (1000, 0, 10, 3, 0.0)):
        fractions = walk_forward_test_fractions(n_bars, folds, val_fraction=0.08, test_fraction=0.15,
                                                holdout_fraction=holdout, embargo_bars=embargo, start=start)
        splits = [chronological_splits(n_bars, val_fraction=0.08, test_fraction=f, holdout_fraction=holdout,
                                       embargo_bars=embargo, start=start) for f in fractions]
        assert splits[-1] == chronological_splits(n_bars, val_fraction=0.08, test_fraction=0.15,
                                                  holdout_fraction=holdout, embargo_bars=embargo, start=start)
        assert all(s.holdout == splits[-1].holdout for s in splits)  # no fold touches the holdout
        for older, newer in zip(splits, splits[1:]):
            assert older.val[1] + embargo == newer.val[0]  # consecutive blocks, an embargo apart
            assert older.val[1] - older.val[0] == newer.val[1] - newer.val[0]
            assert older.train == (start, older.val[0] - embargo)  # anchored, expanding window


def test_too_many_walk_forward_folds_are_refused():
    from convopt_mlflow.data.splits import walk_forward_test_fractions

    with pytest.raises(ConfigError, match="use fewer folds"):
        walk_forward_test_fractions(1000, 6, val_fraction=0.15, embargo_bars=10)
