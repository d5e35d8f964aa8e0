"""Chronological train/val/test splits, as bar-index ranges.

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


def walk_forward_test_fractions(
    n_bars: int,
    folds: int,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    embargo_bars: int = 0,
    start: int = 0,
) -> list[float]:
    """``test_fraction`` of each walk-forward fold, oldest first; the last is ``test_fraction`` itself.

    Fold ``k`` of ``folds`` is :func:`chronological_splits` with the returned fraction: its
    validation range is the ``k``-th of ``folds`` consecutive, embargo-separated blocks of
    ``floor(val_fraction * usable)`` bars that end where the real validation split ends, and
    it trains on every bar before its block (an anchored, expanding window). Everything after
    a fold's validation block is its "test" range, never trained on.

    Example:
        >>> fractions = walk_forward_test_fractions(1000, 3, embargo_bars=10)
        >>> [chronological_splits(1000, embargo_bars=10, test_fraction=f).val for f in fractions]
        [(370, 520), (530, 680), (690, 840)]

    Raises:
        ConfigError: fewer than 1 fold, or too few bars for the oldest fold to train on.
    """
    usable = _usable(n_bars, start, embargo_bars)
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 1:
        raise ConfigError(f"folds must be a positive integer, got {folds!r}")
    base = chronological_splits(n_bars, val_fraction=val_fraction, test_fraction=test_fraction,
                                embargo_bars=embargo_bars, start=start)
    n_val, n_test = base.val[1] - base.val[0], base.test[1] - base.test[0]
    fractions = [(n_test + (folds - 1 - k) * (n_val + embargo_bars) + 0.5) / usable for k in range(folds - 1)]
    oldest = usable - 2 * embargo_bars - n_val - (n_test + (folds - 1) * (n_val + embargo_bars))
    if oldest <= 0:
        raise ConfigError(f"{folds} walk-forward folds of {n_val} validation bars leave the oldest fold no training "
                          f"bars ({n_bars - start} bars); use fewer folds or more data")
    return fractions + [float(test_fraction)]
