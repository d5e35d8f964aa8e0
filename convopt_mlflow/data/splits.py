"""Chronological train/val/test splits and walk-forward folds, as bar-index ranges.

Every range is half-open ``(start, stop)`` over bar indices. An embargo of
``embargo_bars`` bars separates consecutive ranges so that windows and
episodes near a boundary cannot see the other side.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convopt_mlflow.errors import ConfigError

Range = tuple[int, int]


@dataclass(frozen=True)
class Splits:
    """Train, validation and test bar ranges, in time order, each ``(start, stop)``.

    Example:
        >>> chronological_splits(1000, embargo_bars=10)
        Splits(train=(0, 680), val=(690, 840), test=(850, 1000))
    """

    train: Range
    val: Range
    test: Range


def chronological_splits(
    n_bars: int,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    embargo_bars: int = 0,
    start: int = 0,
) -> Splits:
    """Split bars ``start..n_bars`` into train, embargo, val, embargo, test.

    The val and test sizes are ``floor(fraction * (n_bars - start))`` bars; the
    test range ends at ``n_bars``; train takes what is left after both
    embargoes.

    Raises:
        ConfigError: on a bad argument or if any split would be empty.
    """
    usable = _usable(n_bars, start, embargo_bars)
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < float(fraction) < 1.0:
            raise ConfigError(f"{name} must be in (0, 1), got {fraction!r}")
    n_val = _floor(val_fraction * usable)
    n_test = _floor(test_fraction * usable)
    n_train = usable - n_val - n_test - 2 * embargo_bars
    for name, size in (("train", n_train), ("val", n_val), ("test", n_test)):
        if size <= 0:
            raise ConfigError(
                f"the {name} split is empty: {n_bars - start} bars with val_fraction={val_fraction}, "
                f"test_fraction={test_fraction}, embargo_bars={embargo_bars}"
            )
    train = (start, start + n_train)
    val = (train[1] + embargo_bars, train[1] + embargo_bars + n_val)
    test = (val[1] + embargo_bars, n_bars)
    return Splits(train=train, val=val, test=test)


def walk_forward_folds(
    n_bars: int,
    *,
    n_folds: int,
    test_bars: int | None = None,
    embargo_bars: int = 0,
    start: int = 0,
    expanding: bool = True,
) -> list[tuple[Range, Range]]:
    """Walk-forward ``(train, test)`` folds whose test blocks tile the end of the data.

    Fold i tests on ``[n_bars - (n_folds - i) * test_bars, ...)`` for
    ``test_bars`` bars. Its train range ends ``embargo_bars`` before its test
    block and starts at ``start`` (``expanding=True``) or keeps the first
    fold's train length (``expanding=False``, a rolling window).
    ``test_bars`` defaults to ``(n_bars - start) // (n_folds + 1)``.

    Example:
        >>> walk_forward_folds(1000, n_folds=2, embargo_bars=10)
        [((0, 324), (334, 667)), ((0, 657), (667, 1000))]

    Raises:
        ConfigError: on a bad argument or if a train or test range would be empty.
    """
    usable = _usable(n_bars, start, embargo_bars)
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 1:
        raise ConfigError(f"n_folds must be a positive integer, got {n_folds!r}")
    if test_bars is None:
        test_bars = usable // (n_folds + 1)
    if isinstance(test_bars, bool) or not isinstance(test_bars, (int, np.integer)) or test_bars < 1:
        raise ConfigError(f"test_bars must be a positive integer, got {test_bars!r}")
    first_test = n_bars - n_folds * test_bars
    train_bars = first_test - embargo_bars - start
    if train_bars <= 0:
        raise ConfigError(
            f"walk-forward leaves no training bars: {usable} bars, n_folds={n_folds}, "
            f"test_bars={test_bars}, embargo_bars={embargo_bars}"
        )
    folds = []
    for i in range(n_folds):
        test = (first_test + i * test_bars, first_test + (i + 1) * test_bars)
        train_stop = test[0] - embargo_bars
        train = (start if expanding else train_stop - train_bars, train_stop)
        folds.append((train, test))
    return folds


def _usable(n_bars: int, start: int, embargo_bars: int) -> int:
    for name, value in (("n_bars", n_bars), ("start", start), ("embargo_bars", embargo_bars)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    if start >= n_bars:
        raise ConfigError(f"start={start} leaves no bars out of n_bars={n_bars}")
    return int(n_bars) - int(start)


def _floor(x: float) -> int:
    # A small tolerance so that 0.15 * 1000 counts as 150 even if it rounds to 149.999...
    return int(np.floor(x + 1e-9))
