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


