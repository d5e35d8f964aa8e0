"""Splits and walk-forward folds against hand-computed boundaries."""
from __future__ import annotations

import pytest

from convopt_mlflow.data import Splits, chronological_splits, walk_forward_folds
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


def test_walk_forward_expanding():
    # test_bars = 1000 // 5 = 200; tests tile [200, 1000); trains end 10 bars before each test.
    assert walk_forward_folds(1000, n_folds=4, embargo_bars=10) == [
        ((0, 190), (200, 400)),
        ((0, 390), (400, 600)),
        ((0, 590), (600, 800)),
        ((0, 790), (800, 1000)),
    ]


def test_walk_forward_rolling_with_explicit_test_bars_and_start():
    # tests: 1003 - 3 * 150 = 553 onwards; first train [50, 543) is 493 bars, kept for every fold.
    assert walk_forward_folds(1003, n_folds=3, test_bars=150, embargo_bars=10, start=50, expanding=False) == [
        ((50, 543), (553, 703)),
        ((200, 693), (703, 853)),
        ((350, 843), (853, 1003)),
    ]


def test_walk_forward_errors():
    with pytest.raises(ConfigError, match="no training bars"):
        walk_forward_folds(100, n_folds=2, test_bars=50)
    with pytest.raises(ConfigError, match="n_folds"):
        walk_forward_folds(100, n_folds=0)
    with pytest.raises(ConfigError, match="test_bars"):
        walk_forward_folds(100, n_folds=2, test_bars=0)
    with pytest.raises(ConfigError, match="test_bars"):
        walk_forward_folds(2, n_folds=2)  # 2 // 3 = 0 test bars
