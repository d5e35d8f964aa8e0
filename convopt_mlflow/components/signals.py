"""Small pure functions over 1-D metric series, used by the convergence monitor.

Every function takes a sequence of numbers shaped ``(n,)`` in time order (oldest
first), ignores non-finite entries, and never raises on empty input.

Examples:
    >>> slope([1.0, 2.0, 3.0])
    1.0
    >>> coefficient_of_variation([1.0, 1.0, 1.0])
    0.0
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

_TINY = 1e-12


def as_float(value: Any) -> float:
    """``float(value)``, or NaN when it cannot be converted (None, strings, arrays)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def finite(values: Sequence[float]) -> np.ndarray:
    """The finite entries of ``values`` as float64, shape ``(k,)``."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    return arr[np.isfinite(arr)]


def slope(values: Sequence[float], x: Sequence[float] | None = None) -> float:
    """Least-squares slope of ``values`` against ``x`` (default 0, 1, 2, ...).

    Units: units of ``values`` per unit of ``x`` (per update by default).
    Pairs with a non-finite member are dropped; fewer than two points, or
    constant ``x``, give 0.0.
    """
    y = np.asarray(values, dtype=np.float64).reshape(-1)
    xs = np.arange(y.size, dtype=np.float64) if x is None else np.asarray(x, dtype=np.float64).reshape(-1)
    keep = np.isfinite(y) & np.isfinite(xs)
    y, xs = y[keep], xs[keep]
    if y.size < 2:
        return 0.0
    dx = xs - xs.mean()
    denom = float(dx @ dx)
    if denom <= 0:
        return 0.0
    return float(dx @ (y - y.mean()) / denom)


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Population std divided by the mean absolute value, ``std(x) / mean(|x|)``.

    Using ``mean(|x|)`` instead of ``|mean(x)|`` keeps a flat series whose
    values hover around zero (PPO losses often do) from looking infinitely
    noisy. A series of (near) zeros has CV 0; fewer than two values give NaN.
    """
    arr = finite(values)
    if arr.size < 2:
        return math.nan
    spread = float(arr.std())
    scale = float(np.abs(arr).mean())
    if spread <= _TINY:
        return 0.0
    return spread / max(scale, _TINY)


def median(values: Sequence[float]) -> float:
    """Median of the finite entries; NaN when there are none."""
    arr = finite(values)
    return float(np.median(arr)) if arr.size else math.nan


def mean(values: Sequence[float]) -> float:
    """Mean of the finite entries; NaN when there are none."""
    arr = finite(values)
    return float(arr.mean()) if arr.size else math.nan


def clip01(value: float) -> float:
    """``value`` clipped to [0, 1]; non-finite values become 0.0."""
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0


def ratio(value: float, limit: float) -> float:
    """``value / limit`` for positive finite ``limit``, else 0.0 (how close to a threshold)."""
    if not (math.isfinite(value) and math.isfinite(limit)) or limit <= 0:
        return 0.0
    return value / limit
