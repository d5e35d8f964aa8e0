"""The cost-aware oracle of a planted-signal market: the ceiling a learner is measured against.

The oracle knows the planted signal ``z[t]`` (published at the close of bar t) and pays the
same cost as the agent. Its rule has one parameter, a threshold ``theta >= 0`` on ``|z|``:

    position[t] = sign(z[t])     if |z[t]| > theta      (long-only: 1 if z > theta, 0 if z < -theta)
    position[t] = position[t-1]  otherwise               (starting flat)

Expected edge grows with ``|z|`` while the cost of a flip is fixed, so a threshold trades
only when the edge beats the cost. ``theta`` is chosen on the *training* bars (highest
Sharpe), then applied unchanged to validation and test, like a learner would be.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import annualized_sharpe, net_log_pnl

__all__ = ["OracleRule", "fit_oracle", "threshold_positions"]

#: With at most this many distinct |z| values every one is tried; otherwise a quantile grid.
EXACT_CANDIDATES = 512
GRID_SIZE = 256


@dataclass(frozen=True)
class OracleRule:
    """A fitted threshold rule: ``theta`` and the training Sharpe that chose it."""

    theta: float
    train_sharpe: float
    long_only: bool = False

    def positions(self, signal: np.ndarray) -> np.ndarray:
        return threshold_positions(signal, self.theta, long_only=self.long_only)


def threshold_positions(signal: np.ndarray, theta: float, *, long_only: bool = False) -> np.ndarray:
    """Positions (float64, same shape as ``signal``) of the hysteresis rule above, vectorized.

    Example:
        >>> threshold_positions(np.array([0.1, 0.9, 0.2, -0.7, 0.3]), 0.5).tolist()
        [0.0, 1.0, 1.0, -1.0, -1.0]
    """
    signal = np.asarray(signal, dtype=np.float64).reshape(-1)
    if long_only:
        target = np.where(signal > theta, 1.0, np.where(signal < -theta, 0.0, np.nan))
    else:
        target = np.where(np.abs(signal) > theta, np.sign(signal), np.nan)
    decided = ~np.isnan(target)
    # forward-fill the last decision: index of the latest decided bar at or before t
    last = np.maximum.accumulate(np.where(decided, np.arange(signal.size), -1))
    return np.where(last >= 0, target[np.maximum(last, 0)], 0.0)


def fit_oracle(signal: np.ndarray, next_log_returns: np.ndarray, *, cost_bps: float,
               periods_per_year: float, long_only: bool = False) -> OracleRule:
    """Choose ``theta`` maximizing the Sharpe of the rule on these (training) bars.

    Args:
        signal: ``z[t]`` at each decision bar, float ``(n,)``.
        next_log_returns: ``log(close[t+1] / close[t])`` for each decision bar, ``(n,)``.
        cost_bps: cost per unit of position change, basis points.
        periods_per_year: bars per year (annualizes the Sharpe).
        long_only: positions {0, 1} instead of {-1, 0, 1}.

    Every distinct ``|z|`` (and 0) is tried when there are at most ``EXACT_CANDIDATES`` of them,
    otherwise ``GRID_SIZE`` quantiles of ``|z|``. Ties keep the smallest theta.
    """
    signal = np.asarray(signal, dtype=np.float64).reshape(-1)
    magnitude = np.abs(signal)
    distinct = np.unique(magnitude)
    if distinct.size <= EXACT_CANDIDATES:
        candidates = np.concatenate([[0.0], distinct])
    else:
        candidates = np.concatenate([[0.0], np.quantile(magnitude, np.linspace(0.0, 0.995, GRID_SIZE))])
    net_log_pnl(np.zeros_like(signal), next_log_returns, cost_bps=cost_bps)  # validates the inputs once
    rets = np.asarray(next_log_returns, dtype=np.float64)
    # what threshold_positions and net_log_pnl compute per theta, with the theta-free parts
    # hoisted: the same float operations in the same order, so the same Sharpe to the bit
    decision = np.append(signal > 0 if long_only else np.sign(signal), 0.0)  # [-1] = flat before any decision
    bars = np.arange(signal.size)
    cost = cost_bps * 1e-4
    best = OracleRule(0.0, -np.inf, long_only)
    for theta in np.unique(candidates):
        last = np.maximum.accumulate(np.where(magnitude > float(theta), bars, -1))
        positions = decision[last]
        pnl = positions * rets - cost * np.abs(np.diff(positions, prepend=0.0))
        sharpe = annualized_sharpe(pnl, periods_per_year)
        if sharpe > best.train_sharpe:
            best = OracleRule(float(theta), float(sharpe), long_only)
    return best

