"""Observation features, computed once per dataset, vectorized, strictly lookahead-free.

Every feature at bar t uses bars 0..t only (trailing windows, no full-sample
statistics), so changing any bar after t leaves features[:t+1] bit-identical.
With ``w = vol_window``, ``r[t] = log(close[t] / close[t-1])`` and
``vol[t] = sqrt(mean(r[t-w+1..t]^2))`` (RMS of the last w returns):

==============  ============================================  ==========================
name            definition                                    range
==============  ============================================  ==========================
return_z        r[t] / vol[t]                                 |x| <= sqrt(w)
vol_ratio       vol[t] / mean(vol over last 5w bars) - 1      [-1, 5w - 1], typically ~0
range_ratio     log(high/low)[t] / mean of it over w bars - 1 [-1, w - 1], typically ~0
momentum_m      sum(r over last m bars) / (vol[t] sqrt(m))    |x| <= sqrt(w), m = w // 4
volume_z        z-score of log1p(volume) over the last w bars |x| <= sqrt(w - 1)
feat_*          passed through unchanged                      the user's responsibility
regime_*        P(trend), P(mean_reversion), P(neutral) from  [0, 1], sum 1
                the last 2*64+7 returns (optional, below)
ctx_*           trailing autocorrelation, vol ratio and each  see data/context.py
                ``feat_*``'s recent IC (optional, below)
==============  ============================================  ==========================

The ``regime_*`` columns (``regime_features=True``, config ``env.regime_features``) are
:class:`~convopt_mlflow.components.trend_detector.TrendDetector`'s probabilities, placed after
every other column; with them the warm-up is at least the detector's.
The ``ctx_*`` columns (``context_features=True``, config ``env.context_features``) are
:func:`~convopt_mlflow.data.context.context_columns`, placed last; with them the warm-up is at
least :func:`~convopt_mlflow.data.context.context_warmup`.

Because the window includes the current bar, every ratio is bounded even when
volatility is tiny. ``volume_z`` exists only when the frame has a volume column
that is not constant (a schema decision over the whole frame; the values
themselves are trailing).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from convopt_mlflow.components.trend_detector import TrendDetector
from convopt_mlflow.data.context import (  # noqa: F401
    context_columns, context_warmup, uses_context_ewm, uses_context_features, uses_context_momentum,
)
from convopt_mlflow.errors import ConfigError

#: Columns added by ``regime_features=True``: the trend / mean-reversion detector's probabilities.
REGIME_FEATURES = ("regime_trend", "regime_mean_reversion", "regime_neutral")

#: The volatility level is compared with its mean over this many vol windows.
VOL_TREND_WINDOWS = 5
_EPS = 1e-12


@dataclass(frozen=True, eq=False)
class Features:
    """Per-bar observation features.

    Attributes:
        values: ``float32[n_bars, n_features]``; rows before ``warmup`` are 0.
        names: the ``n_features`` column names, in order.
        warmup: first bar index at which every feature is valid.
        log_returns: ``float64[n_bars]``, ``r[t] = log(close[t] / close[t-1])``, ``r[0] = 0``.

    Examples:
        >>> from convopt_mlflow.data.synthetic import generate_market
        >>> features = compute_features(generate_market(500, seed=1).frame, vol_window=20)
        >>> features.values.shape, features.warmup
        ((500, 5), 119)
    """

    values: np.ndarray
    names: list[str]
    warmup: int
    log_returns: np.ndarray

    @property
    def n_features(self) -> int:
        return len(self.names)


def uses_regime_features(names: Sequence[str]) -> bool:
    """Whether feature ``names`` (a model's, a market's) include the regime probabilities."""
    return REGIME_FEATURES[0] in names


def regime_columns(log_returns: np.ndarray) -> np.ndarray:
    """float64 ``(n, 3)``: the :data:`REGIME_FEATURES` at each bar, from log returns of bars <= t."""
    return TrendDetector().probabilities(log_returns)


def compute_features(frame: pd.DataFrame, *, vol_window: int = 20, volume_z: bool | None = None,
                     regime_features: bool = False, context_features: bool = False,
                     context_momentum: bool = False, context_ewm: bool = False) -> Features:
    """Compute the features of a canonical bar frame (see :func:`validate_frame`).

    Args:
        frame: bars with float columns open, high, low, close, optional volume
            and ``feat_*`` columns; prices positive and finite.
        vol_window: trailing window in bars for volatility, range and volume
            statistics (>= 4).
        volume_z: whether to compute ``volume_z``; None decides from the frame (a volume
            column that is not constant). A segment of a longer frame passes the whole
            frame's decision, so both have the same columns.
        regime_features: append the :data:`REGIME_FEATURES` columns (and extend the warm-up
            to the detector's).
        context_features: append the ``ctx_*`` columns of :mod:`convopt_mlflow.data.context`
            (and extend the warm-up to theirs).
        context_momentum: with ``context_features``, include their ``ctx_momentum_M`` columns.
        context_ewm: with ``context_features``, include their ``ctx_ewm_H`` columns.

    Raises:
        ConfigError: if ``vol_window`` is invalid or the frame has no more bars
            than the warmup.
    """
    if isinstance(vol_window, bool) or not isinstance(vol_window, (int, np.integer)) or vol_window < 4:
        raise ConfigError(f"vol_window must be an integer of at least 4, got {vol_window!r}")
    w = int(vol_window)
    long_window = VOL_TREND_WINDOWS * w
    momentum_bars = w // 4
    warmup = w + long_window - 1
    if regime_features:
        warmup = max(warmup, TrendDetector().warmup)
    if context_features:
        warmup = max(warmup, context_warmup())
    n_bars = len(frame)
    if n_bars <= warmup:
        raise ConfigError(f"features with vol_window={w} need more than {warmup} bars, got {n_bars}")

    close = frame["close"].to_numpy(dtype=np.float64)
    log_returns = np.zeros(n_bars)
    log_returns[1:] = np.diff(np.log(close))
    returns = pd.Series(log_returns)
    returns.iloc[0] = np.nan  # r[0] is not a real return: windows touching it are invalid
    vol = np.sqrt(returns.pow(2).rolling(w).mean())

    bar_range = pd.Series(np.log(frame["high"].to_numpy(dtype=np.float64) / frame["low"].to_numpy(dtype=np.float64)))
    columns = {
        "return_z": returns / (vol + _EPS),
        "vol_ratio": vol / (vol.rolling(long_window).mean() + _EPS) - 1.0,
        "range_ratio": bar_range / (bar_range.rolling(w).mean() + _EPS) - 1.0,
        f"momentum_{momentum_bars}": returns.rolling(momentum_bars).sum() / (vol * np.sqrt(momentum_bars) + _EPS),
    }
    if "volume" in frame.columns and volume_z is not False:
        volume = frame["volume"].to_numpy(dtype=np.float64)
        if volume_z or (volume.size and np.ptp(volume) > 0):
            log_volume = pd.Series(np.log1p(volume))
            window = log_volume.rolling(w)
            columns["volume_z"] = (log_volume - window.mean()) / (window.std(ddof=0) + _EPS)
    for name in frame.columns:
        if str(name).startswith("feat_"):
            columns[str(name)] = frame[name].to_numpy(dtype=np.float64)
    if regime_features:
        columns.update(zip(REGIME_FEATURES, regime_columns(log_returns).T))
    if context_features:
        columns.update(context_columns(log_returns, {c: columns[c] for c in columns if c.startswith("feat_")},
                                       momentum=context_momentum, ewm=context_ewm))

    values = np.empty((n_bars, len(columns)), dtype=np.float32)
    for j, column in enumerate(columns.values()):
        values[:, j] = np.asarray(column, dtype=np.float64)
    values[:warmup] = 0.0
    if not np.isfinite(values).all():
        bad = np.argwhere(~np.isfinite(values))[0]
        raise ValueError(f"feature {list(columns)[bad[1]]!r} is not finite at bar {bad[0]}; validate the frame first")
    return Features(values=values, names=list(columns), warmup=warmup, log_returns=log_returns)


OBSERVATIONS = ("multiscale", "window")


def multiscale_features(features: Features, history: int) -> Features:
    """Trailing means of every feature over 1, 2, 4, ... bars up to ``history`` bars.

    A compact summary of the last ``history`` bars: ``F * k`` values per bar instead of the
    ``F * history`` of raw lagged copies, with ``k = len(multiscale_windows(history))``.
    Column ``{name}@{m}`` at bar t is ``mean(feature[t-m+1 .. t])``, so it stays
    lookahead-free. The warm-up grows by ``history - 1`` bars; rows before it are 0.

    Examples:
        >>> from convopt_mlflow.data.synthetic import generate_market
        >>> base = compute_features(generate_market(500, seed=1).frame, vol_window=20)
        >>> summary = multiscale_features(base, 16)
        >>> summary.values.shape, summary.warmup, summary.names[:2]
        ((500, 25), 134, ['return_z@1', 'return_z@2'])
    """
    scales = multiscale_windows(history)
    n_bars, n_features = features.values.shape
    warmup = features.warmup + max(scales) - 1
    if n_bars <= warmup:
        raise ConfigError(f"a {history}-bar multiscale observation needs more than {warmup} bars, got {n_bars}")
    # cumulative sums from the warm-up on (earlier rows are placeholder zeros), in float64
    sums = np.zeros((n_bars + 1, n_features))
    np.cumsum(features.values[features.warmup:], axis=0, dtype=np.float64, out=sums[features.warmup + 1:])
    values = np.zeros((n_bars, n_features * len(scales)), dtype=np.float32)
    for j, m in enumerate(scales):
        # columns are grouped by feature: name@1, name@2, ..., name@history; rows warmup.. as slices
        values[warmup:, j::len(scales)] = (sums[warmup + 1:] - sums[warmup + 1 - m:n_bars + 1 - m]) / m
    names = [f"{name}@{m}" for name in features.names for m in scales]
    return Features(values=values, names=names, warmup=warmup, log_returns=features.log_returns)


def multiscale_windows(history: int) -> tuple[int, ...]:
    """``(1, 2, 4, ..., history)``: powers of two below ``history``, then ``history`` itself."""
    if isinstance(history, bool) or not isinstance(history, (int, np.integer)) or history < 1:
        raise ConfigError(f"history must be a positive integer, got {history!r}")
    scales = [1 << i for i in range(int(history).bit_length()) if (1 << i) < history]
    return tuple(scales + [int(history)])


@dataclass(frozen=True, eq=False)
class Observation:
    """What an env observes: ``features`` read ``window`` bars at a time, built from ``base_names``."""

    features: Features
    window: int
    base_names: list[str]


def observation_features(frame: pd.DataFrame, *, vol_window: int, observation: str, history: int,
                         volume_z: bool | None = None, regime_features: bool = False,
                         context_features: bool = False, context_momentum: bool = False,
                         context_ewm: bool = False) -> Observation:
    """The features an env observes and the window (bars) the env reads of them.

    ``observation="multiscale"``: :func:`multiscale_features` over ``history`` bars, read
    one bar at a time (window 1). ``"window"``: the raw features, ``history`` lagged bars.
    The training env and the logged model both build their observations here.
    ``volume_z``, ``regime_features``, ``context_features``, ``context_momentum``, ``context_ewm``: see
    :func:`compute_features`.
    """
    if observation not in OBSERVATIONS:
        raise ConfigError(f"observation must be one of {', '.join(OBSERVATIONS)}, got {observation!r}")
    features = compute_features(frame, vol_window=vol_window, volume_z=volume_z, regime_features=regime_features,
                                context_features=context_features, context_momentum=context_momentum,
                                context_ewm=context_ewm)
    if observation == "window":
        return Observation(features, int(history), list(features.names))
    return Observation(multiscale_features(features, int(history)), 1, list(features.names))


def plain_observation_warmup(vol_window: int, *, observation: str, history: int) -> int:
    """The warm-up (bars) of the observation without the optional ``regime_*`` / ``ctx_*`` sets.

    Runs split their bars from here whatever optional sets they observe, so arms that differ only in
    those sets are validated and tested on the same bars (their train split starts at their own warm-up).
    """
    warmup = int(vol_window) * (1 + VOL_TREND_WINDOWS) - 1
    return warmup + (int(history) - 1 if observation == "multiscale" else 0)


def observation_size(n_base_features: int, *, observation: str, history: int) -> int:
    """Values per observation: the features read over the window, plus the position."""
    if observation == "window":
        return history * n_base_features + 1
    return len(multiscale_windows(history)) * n_base_features + 1


def segment_observation_values(bars: np.ndarray, columns: Sequence[str], *, vol_window: int, observation: str,
                               history: int, volume_z: bool, regime_features: bool = False,
                               context_features: bool = False, context_momentum: bool = False,
                               context_ewm: bool = False) -> np.ndarray:
    """The observed feature values of a short segment of bars, in numpy (float32 ``(T, F)``).

    The same definitions as :func:`observation_features` (a test holds them equal), without
    pandas' per-call overhead: about 0.5 ms for a 400-bar segment instead of about 7 ms.
    Used to recompute the features of one augmented episode. ``bars`` is float64 ``(T, C)``
    with the frame's ``columns`` (open, high, low, close, optional volume, ``feat_*``);
    ``volume_z`` is the whole frame's decision. Rows before the warm-up are 0.
    """
    data = {str(c): np.asarray(bars[:, j], dtype=np.float64) for j, c in enumerate(columns)}
    w = int(vol_window)
    long_window, momentum_bars = VOL_TREND_WINDOWS * w, w // 4
    warmup = max(w + long_window - 1, TrendDetector().warmup if regime_features else 0,
                 context_warmup() if context_features else 0)
    n_bars = bars.shape[0]
    if n_bars <= warmup:
        raise ConfigError(f"features with vol_window={w} need more than {warmup} bars, got {n_bars}")
    returns = np.empty(n_bars)
    returns[0] = np.nan
    returns[1:] = np.diff(np.log(data["close"]))
    vol = np.sqrt(_rolling_mean(returns**2, w))
    bar_range = np.log(data["high"] / data["low"])
    columns_out = [returns / (vol + _EPS), vol / (_rolling_mean(vol, long_window) + _EPS) - 1.0,
                   bar_range / (_rolling_mean(bar_range, w) + _EPS) - 1.0,
                   _rolling_mean(returns, momentum_bars) * momentum_bars / (vol * np.sqrt(momentum_bars) + _EPS)]
    if volume_z and "volume" in data:
        log_volume = np.log1p(data["volume"])
        mean = _rolling_mean(log_volume, w)
        std = _rolling_std(log_volume, w)
        columns_out.append((log_volume - mean) / (std + _EPS))
    columns_out += [data[c] for c in data if c.startswith("feat_")]
    if regime_features:
        columns_out += list(regime_columns(np.nan_to_num(returns)).T)
    if context_features:
        columns_out += list(context_columns(np.nan_to_num(returns), {c: data[c] for c in data
                                                                     if c.startswith("feat_")},
                                                    momentum=context_momentum, ewm=context_ewm).values())
    values = np.column_stack(columns_out).astype(np.float32)
    values[:warmup] = 0.0
    base = Features(values=values, names=[str(i) for i in range(values.shape[1])], warmup=warmup,
                    log_returns=np.nan_to_num(returns))
    if observation == "window":
        return base.values
    return multiscale_features(base, int(history)).values


def _rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` values; NaN before the first full window (as pandas)."""
    out = np.full(x.size, np.nan)
    if x.size >= window:
        out[window - 1:] = sliding_window_view(x, window).mean(axis=1)
    return out


def _rolling_std(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing population std (ddof 0) over ``window`` values; NaN before the first full window."""
    out = np.full(x.size, np.nan)
    if x.size >= window:
        out[window - 1:] = sliding_window_view(x, window).std(axis=1)
    return out
