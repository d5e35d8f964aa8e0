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
