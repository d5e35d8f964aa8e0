"""Splits against hand-computed boundaries."""
from __future__ import annotations

import pytest

from convopt_mlflow.data import Splits, chronological_splits
from convopt_mlflow.errors import ConfigError


def test_chronological_defaults():
    assert chronological_splits(1000) == Splits(train=(0, 700), val=(700, 850), test=(850, 1000))


def test_chronological_with_embargo_and_start():
    # usable 1000 - 100 = 900: val = test = floor(0.15 * 900) = 135; train = 900 - 270 - 2 * 10 = 610.
    assert chronological_splits(1000, embargo_bars=10, start=100) == Splits(
        train=(100, 710), val=(720, 855), test=(865, 1000))


def test_chronological_floors_fractions():
    # floor(0.1 * 1001) = 100, floor(0.2 * 1001) = 200, train = 1001 - 300 - 6 = 695.
    assert chronological_splits(1001, val_fraction=0.1, test_fraction=0.2, embargo_bars=3) == Splits(
        train=(0, 695), val=(698, 798), test=(801, 1001))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_bars": 6}, "val split is empty"),  # floor(0.15 * 6) = 0 bars of validation
        ({"n_bars": 100, "embargo_bars": 40}, "train split is empty"),
        ({"n_bars": 100, "val_fraction": 0.0}, "val_fraction"),
        ({"n_bars": 100, "test_fraction": 1.0}, "test_fraction"),
        ({"n_bars": 100, "start": 100}, "start=100"),
        ({"n_bars": 100, "embargo_bars": -1}, "embargo_bars"),
    ],
)
def test_chronological_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        chronological_splits(**kwargs)




def test_walk_forward_folds_validate_on_consecutive_embargoed_blocks_ending_at_the_configured_split():
    from convopt_mlflow.data.splits import walk_forward_test_fractions

    for n_bars, start, embargo, folds in ((1000, 0, 10, 3), (6225, 57, 24, 5), (3001, 13, 0, 4)):
        fractions = walk_forward_test_fractions(n_bars, folds, val_fraction=0.08, test_fraction=0.15,
                                                embargo_bars=embargo, start=start)
        splits = [chronological_splits(n_bars, val_fraction=0.08, test_fraction=f, embargo_bars=embargo, start=start)
                  for f in fractions]
        assert splits[-1] == chronological_splits(n_bars, val_fraction=0.08, test_fraction=0.15,
                                                  embargo_bars=embargo, start=start)
        for older, newer in zip(splits, splits[1:]):
            assert older.val[1] + embargo == newer.val[0]  # consecutive blocks, an embargo apart
            assert older.val[1] - older.val[0] == newer.val[1] - newer.val[0]
            assert older.train == (start, older.val[0] - embargo)  # anchored, expanding window


def test_too_many_walk_forward_folds_are_refused():
    from convopt_mlflow.data.splits import walk_forward_test_fractions

    with pytest.raises(ConfigError, match="use fewer folds"):
        walk_forward_test_fractions(1000, 6, val_fraction=0.15, embargo_bars=10)
