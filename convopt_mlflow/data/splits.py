"""Chronological train/val/test/holdout splits, as bar-index ranges.

Every range is half-open ``(start, stop)`` over bar indices. An embargo of
``embargo_bars`` bars separates consecutive ranges so that windows and
episodes near a boundary cannot see the other side.

Each split serves one kind of decision, and no decision uses bars that an earlier
one selected on:

========  ==========================================================================
train     learning
val       checkpoint selection, in-training adaptation (curriculum, bandits, early
          stop, interventions), tuning
test      A/B verdicts
holdout   promotion only (the ``champion`` alias); a reserved tail
========  ==========================================================================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from convopt_mlflow.errors import ConfigError

Range = tuple[int, int]

#: Default share of bars in the holdout tail; promotion evaluates on it and nothing else does.
HOLDOUT_FRACTION = 0.10
#: The split names, in time order.
SPLIT_NAMES = ("train", "val", "test", "holdout")


@dataclass(frozen=True)
class Splits:
    """Train, validation, test and holdout bar ranges, in time order, each ``(start, stop)``.

    ``holdout`` is None when the config reserves no holdout (``data.holdout_fraction=0``);
    such a run records ``convopt.splits.holdout=none`` and cannot be promoted on a holdout.

    Example:
        >>> chronological_splits(1000, embargo_bars=10)
        Splits(train=(0, 570), val=(580, 730), test=(740, 890), holdout=(900, 1000))
    """

    train: Range
    val: Range
    test: Range
    holdout: Range | None = None

    def ranges(self) -> dict[str, Range]:
        """The splits that exist, by name, in time order."""
        return {name: getattr(self, name) for name in SPLIT_NAMES if getattr(self, name) is not None}


def chronological_splits(
    n_bars: int,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    holdout_fraction: float = HOLDOUT_FRACTION,
    embargo_bars: int = 0,
    start: int = 0,
) -> Splits:
    """Split bars ``start..n_bars`` into train, embargo, val, embargo, test, embargo, holdout.

    The val, test and holdout sizes are ``floor(fraction * (n_bars - start))`` bars; the
    last split (the holdout, or the test when ``holdout_fraction`` is 0) ends at
    ``n_bars``; train takes what is left after the embargoes.

    Raises:
        ConfigError: on a bad argument or if any split would be empty (too few bars for a
            holdout of ``holdout_fraction`` is refused, never silently dropped).
    """
    usable = _usable(n_bars, start, embargo_bars)
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < float(fraction) < 1.0:
            raise ConfigError(f"{name} must be in (0, 1), got {fraction!r}")
    if not 0.0 <= float(holdout_fraction) < 1.0:
        raise ConfigError(f"holdout_fraction must be in [0, 1), got {holdout_fraction!r}")
    n_val = _floor(val_fraction * usable)
    n_test = _floor(test_fraction * usable)
    n_holdout = _floor(holdout_fraction * usable)
    gaps = 3 if holdout_fraction > 0 else 2
    n_train = usable - n_val - n_test - n_holdout - gaps * embargo_bars
    sizes = [("train", n_train), ("val", n_val), ("test", n_test)]
    if holdout_fraction > 0:
        sizes.append(("holdout", n_holdout))
    for name, size in sizes:
        if size <= 0:
            raise ConfigError(
                f"the {name} split is empty: {n_bars - start} bars with val_fraction={val_fraction}, "
                f"test_fraction={test_fraction}, holdout_fraction={holdout_fraction}, embargo_bars={embargo_bars}"
            )
    train = (start, start + n_train)
    val = (train[1] + embargo_bars, train[1] + embargo_bars + n_val)
    if holdout_fraction == 0:
        return Splits(train=train, val=val, test=(val[1] + embargo_bars, n_bars))
    test = (val[1] + embargo_bars, val[1] + embargo_bars + n_test)
    return Splits(train=train, val=val, test=test, holdout=(test[1] + embargo_bars, n_bars))


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
    holdout_fraction: float = HOLDOUT_FRACTION,
    embargo_bars: int = 0,
    start: int = 0,
) -> list[float]:
    """``test_fraction`` of each walk-forward fold, oldest first; the last is ``test_fraction`` itself.

    Fold ``k`` of ``folds`` is :func:`chronological_splits` with the returned fraction: its
    validation range is the ``k``-th of ``folds`` consecutive, embargo-separated blocks of
    ``floor(val_fraction * usable)`` bars that end where the real validation split ends, and
    it trains on every bar before its block (an anchored, expanding window). Everything after
    a fold's validation block is its "test" range, never trained on. The holdout tail of
    ``holdout_fraction`` is the same in every fold: no fold trains or validates on it.

    Example:
        >>> fractions = walk_forward_test_fractions(1000, 3, embargo_bars=10)
        >>> [chronological_splits(1000, embargo_bars=10, test_fraction=f).val for f in fractions]
        [(260, 410), (420, 570), (580, 730)]

    Raises:
        ConfigError: fewer than 1 fold, or too few bars for the oldest fold to train on.
    """
    usable = _usable(n_bars, start, embargo_bars)
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 1:
        raise ConfigError(f"folds must be a positive integer, got {folds!r}")
    base = chronological_splits(n_bars, val_fraction=val_fraction, test_fraction=test_fraction,
                                holdout_fraction=holdout_fraction, embargo_bars=embargo_bars, start=start)
    n_val, n_test = base.val[1] - base.val[0], base.test[1] - base.test[0]
    fractions = [(n_test + (folds - 1 - k) * (n_val + embargo_bars) + 0.5) / usable for k in range(folds - 1)]
    reserved = 0 if base.holdout is None else base.holdout[1] - base.holdout[0] + embargo_bars
    oldest = usable - 2 * embargo_bars - reserved - n_val - (n_test + (folds - 1) * (n_val + embargo_bars))
    if oldest <= 0:
        raise ConfigError(f"{folds} walk-forward folds of {n_val} validation bars leave the oldest fold no training "
                          f"bars ({n_bars - start} bars after the test and holdout splits); use fewer folds, a smaller "
                          f"val_fraction or more data")
    return fractions + [float(test_fraction)]


def split_boundaries(splits: Splits, timestamps: Sequence[Any], *, embargo_bars: int, digest: str) -> dict[str, Any]:
    """What a run records about its splits (``splits.json``): bar indices and timestamps.

    Args:
        splits: the run's splits.
        timestamps: the bars' timestamps, one per bar (e.g. ``bars.frame.index``).
        embargo_bars: the gap between consecutive splits.
        digest: the content digest of the bars the indices refer to.

    Returns:
        ``{"digest", "n_bars", "embargo_bars", "splits": {name: {"start", "stop", "bars",
        "first", "last"}}}``: ``start``/``stop`` half-open bar indices, ``first``/``last``
        the ISO timestamps of the first and last bar in the split. A missing holdout is
        ``"holdout": None``.

    Example:
        >>> import pandas as pd
        >>> times = pd.date_range("2024-01-01", periods=100, freq="h")
        >>> record = split_boundaries(chronological_splits(100), times, embargo_bars=0, digest="abc")
        >>> record["splits"]["holdout"]
        {'start': 90, 'stop': 100, 'bars': 10, 'first': '2024-01-04T18:00:00', 'last': '2024-01-05T03:00:00'}
    """
    out: dict[str, Any] = {}
    for name in SPLIT_NAMES:
        bounds = getattr(splits, name)
        if bounds is None:
            out[name] = None
            continue
        start, stop = int(bounds[0]), int(bounds[1])
        out[name] = {"start": start, "stop": stop, "bars": stop - start,
                     "first": _iso(timestamps[start]), "last": _iso(timestamps[stop - 1])}
    return {"digest": digest, "n_bars": len(timestamps), "embargo_bars": int(embargo_bars), "splits": out}


def _iso(timestamp: Any) -> str:
    return timestamp.isoformat() if hasattr(timestamp, "isoformat") else str(timestamp)


def overlap(a: Range, b: Range) -> Range | None:
    """The bars two half-open ranges share, or None.

    Example:
        >>> overlap((0, 10), (5, 20)), overlap((0, 10), (10, 20))
        ((5, 10), None)
    """
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if lo < hi else None
