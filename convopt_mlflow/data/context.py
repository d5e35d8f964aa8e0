"""Context features: trailing, lookahead-free statistics of what flips a signal's sign.

A regime market's published signal (and the return's own autocorrelation) can change sign with
a regime the agent does not see. Rather than detect one mechanism's regimes, these columns
measure, over trailing windows of ``W`` bars, the evidence any mechanism leaves in the data:

=============================  =================================================================  ============
name                           definition at bar t (``r`` log returns, ``s`` a ``feat_*`` column)  range
=============================  =================================================================  ============
ctx_autocorr_W                 corr(r[u-1], r[u]) over u = t-W+1..t (lag-1 autocorrelation)        [-1, 1]
ctx_vol_ratio_W1_W2            rms(r over W1 bars) / rms(r over W2 bars) - 1, W1 < W2              [-1, sqrt(W2/W1) - 1]
ctx_return_W                   r[t] / rms(r over W bars) * ctx_autocorr_W * sqrt(W)                the last return, signed
                                                                                                   by its recent lag-1 IC
ctx_momentum_M                 sum(r over M bars) / (rms(r over M bars) * sqrt(M))                 [-sqrt(M), sqrt(M)],
                                                                                                   the trailing drift's
                                                                                                   z-score
ctx_ewm_H                      sum_k w_k r[t-k] / (rms(r over 256 bars) * sqrt(sum_k w_k^2)),      the filtered drift's
                               w_k = 2^(-k/H), k = 0..255 (an exponentially weighted mean, cut     z-score
                               at the longest context window)
ctx_ic_{s}_W                   corr(s[u-1], r[u]) over u = t-W+1..t (the signal's recent IC)       [-1, 1]
ctx_signed_{s}_W               s[t] * ctx_ic_{s}_W * sqrt(W) (the signal read with the sign and    the signal, signed
                               z-score of its recent IC)
=============================  =================================================================  ============

for ``W`` in :data:`CONTEXT_WINDOWS` (``W1, W2`` consecutive windows), ``M`` in
:data:`MOMENTUM_WINDOWS` and ``H`` in :data:`EWM_HALF_LIVES`; the ``ctx_momentum_M`` columns only with
``momentum=True`` (``env.context_momentum``), the ``ctx_ewm_H`` columns only with ``ewm=True``
(``env.context_ewm``); a model rebuilds each set when its feature names hold it (see
:func:`uses_context_momentum`, :func:`uses_context_ewm`), so models saved without them keep their own
columns. The exponential weights stop at ``max(CONTEXT_WINDOWS)`` bars, so each value, like every
other column, is a function of its own window only (no recursion from the start of the series). Each window
holds bars ``<= t`` only and each sum is taken over the window's own values (no running cumulative sum), so
the same bars give bit-identical values whatever segment of the series they are computed in:
the training env, an augmented episode and the pyfunc at predict time agree exactly. The
warm-up is ``max(CONTEXT_WINDOWS) + 1`` bars (the first return and one lag).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["CONTEXT_WINDOWS", "MOMENTUM_WINDOWS", "EWM_HALF_LIVES", "CONTEXT_PREFIX", "context_columns",
           "context_warmup", "uses_context_features", "uses_context_momentum", "uses_context_ewm"]

#: Trailing windows (bars) of the context statistics.
CONTEXT_WINDOWS = (64, 256)
#: Trailing windows (bars) of the ``ctx_momentum_M`` columns (each within ``max(CONTEXT_WINDOWS)``).
MOMENTUM_WINDOWS = (32, 64, 256)
#: Half-lives (bars) of the ``ctx_ewm_H`` columns: a geometric ladder, not fitted to any market.
EWM_HALF_LIVES = (4, 16, 64)
#: Prefix of every context column's name.
CONTEXT_PREFIX = "ctx_"
_EPS = 1e-12
_CHUNK = 4096


def context_warmup() -> int:
    """First bar at which every context column is valid."""
    return max(CONTEXT_WINDOWS) + 1


def uses_context_features(names: Sequence[str]) -> bool:
    """Whether feature ``names`` (a model's, a market's) include the context columns."""
    return any(str(name).startswith(CONTEXT_PREFIX) for name in names)


def uses_context_momentum(names: Sequence[str]) -> bool:
    """Whether feature ``names`` include the ``ctx_momentum_M`` columns (``env.context_momentum``)."""
    return any(str(name).startswith(f"{CONTEXT_PREFIX}momentum_") for name in names)


def uses_context_ewm(names: Sequence[str]) -> bool:
    """Whether feature ``names`` include the ``ctx_ewm_H`` columns (``env.context_ewm``)."""
    return any(str(name).startswith(f"{CONTEXT_PREFIX}ewm_") for name in names)


def context_columns(log_returns: np.ndarray, signals: Mapping[str, np.ndarray], *,
                    momentum: bool = False, ewm: bool = False) -> dict[str, np.ndarray]:
    """The context columns (float64, NaN before their window fills), in a fixed order.

    Args:
        log_returns: ``float[n]``, ``r[t] = log(close[t] / close[t-1])``; ``r[0]`` is ignored.
        signals: the ``feat_*`` columns by name, each ``float[n]``, published at the close of bar t.
        momentum: append the ``ctx_momentum_M`` columns (after the vol ratio, before the signals').
        ewm: append the ``ctx_ewm_H`` columns (after the momentum ones, before the signals').

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> columns = context_columns(rng.normal(size=600), {"feat_x": rng.normal(size=600)})
        >>> list(columns)[:3], bool(np.isnan(columns["ctx_autocorr_64"][64]))
        (['ctx_autocorr_64', 'ctx_return_64', 'ctx_autocorr_256'], True)
    """
    r = np.array(log_returns, dtype=np.float64)
    r[0] = np.nan
    lagged_r = _lag(r)
    out: dict[str, np.ndarray] = {}
    rms = {}
    for w in CONTEXT_WINDOWS:
        rms[w] = np.sqrt(_window_sum(r * r, w) / w)
        autocorr = _rolling_corr(lagged_r, r, w)
        out[f"{CONTEXT_PREFIX}autocorr_{w}"] = autocorr
        out[f"{CONTEXT_PREFIX}return_{w}"] = r / (rms[w] + _EPS) * autocorr * np.sqrt(w)
    for short, long in zip(CONTEXT_WINDOWS, CONTEXT_WINDOWS[1:]):
        out[f"{CONTEXT_PREFIX}vol_ratio_{short}_{long}"] = rms[short] / (rms[long] + _EPS) - 1.0
    if momentum:
        for m in MOMENTUM_WINDOWS:
            total, energy = _window_sum(r, m), _window_sum(r * r, m)
            out[f"{CONTEXT_PREFIX}momentum_{m}"] = total / (np.sqrt(energy / m) * np.sqrt(m) + _EPS)
    if ewm:
        span = max(CONTEXT_WINDOWS)
        for h in EWM_HALF_LIVES:
            weights = 0.5 ** (np.arange(span)[::-1] / h)  # oldest bar first, as in each sliding window
            out[f"{CONTEXT_PREFIX}ewm_{h}"] = _window_dot(r, weights) / (rms[span] * np.sqrt((weights ** 2).sum())
                                                                         + _EPS)
    for name, values in signals.items():
        signal = np.asarray(values, dtype=np.float64)
        tag = str(name)[len("feat_"):] if str(name).startswith("feat_") else str(name)
        for w in CONTEXT_WINDOWS:
            ic = _rolling_corr(_lag(signal), r, w)
            out[f"{CONTEXT_PREFIX}ic_{tag}_{w}"] = ic
            out[f"{CONTEXT_PREFIX}signed_{tag}_{w}"] = signal * ic * np.sqrt(w)
    return out


def _lag(x: np.ndarray) -> np.ndarray:
    lagged = np.empty_like(x)
    lagged[0] = np.nan
    lagged[1:] = x[:-1]
    return lagged


def _window_sum(x: np.ndarray, window: int) -> np.ndarray:
    """Sum of ``x[t-window+1..t]``, each window summed on its own (NaN before it fills)."""
    out = np.full(x.size, np.nan)
    if x.size >= window:
        out[window - 1:] = sliding_window_view(x, window).sum(axis=1)
    return out


def _window_dot(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum_j weights[j] * x[t-len(weights)+1+j]``, each window on its own (NaN before it fills).

    Summed row by row in chunks (numpy's own summation of each window, no BLAS kernel whose order could
    depend on where a row lies in memory), so a bar's value is the same in any segment that holds its window.
    """
    out = np.full(x.size, np.nan)
    if x.size >= weights.size:
        view = sliding_window_view(x, weights.size)
        for lo in range(0, view.shape[0], _CHUNK):
            out[weights.size - 1 + lo: weights.size - 1 + lo + _CHUNK] = (view[lo:lo + _CHUNK] * weights).sum(axis=1)
    return out


def _rolling_corr(x: np.ndarray, y: np.ndarray, window: int) -> np.ndarray:
    """Pearson correlation of the pairs ``(x[u], y[u])`` over ``u = t-window+1..t``; 0 if either is constant."""
    n = float(window)
    sx, sy = _window_sum(x, window), _window_sum(y, window)
    sxx, syy, sxy = _window_sum(x * x, window), _window_sum(y * y, window), _window_sum(x * y, window)
    cov = sxy - sx * sy / n
    var_x = np.maximum(sxx - sx * sx / n, 0.0)
    var_y = np.maximum(syy - sy * sy / n, 0.0)
    denom = np.sqrt(var_x * var_y)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(denom > _EPS * n, cov / np.where(denom > 0, denom, 1.0), 0.0)
    corr = np.where(np.isnan(sx) | np.isnan(sy), np.nan, corr)
    return np.clip(corr, -1.0, 1.0)
