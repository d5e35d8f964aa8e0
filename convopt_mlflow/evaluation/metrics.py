"""Backtest metrics for a sequence of trading decisions (pure numpy).

Conventions, shared by every function here:

- ``positions[i]`` is the position held over bar ``i``, decided at the close of
  bar ``i - 1`` (+1 long, -1 short, 0 flat; fractional sizes are allowed).
- ``next_log_returns[i]`` is the log return of the price over that same bar,
  ``log(close[i + 1] / close[i])``, i.e. the return the decision is paid on.
- Costs are charged in basis points of the traded size:
  ``cost_bps * 1e-4 * |positions[i] - positions[i - 1]|``, with
  ``positions[-1] = initial_position`` (flat by default, so the first bar pays
  for entering the market).
- The per-bar net log PnL is ``positions[i] * next_log_returns[i]`` minus that
  cost, and equity is ``exp(cumsum(net log pnl))`` starting at 1.0.

Ratios (Sharpe, Sortino) are computed on the per-bar **net log PnL** and
annualised by ``sqrt(periods_per_year)`` (e.g. 252 for daily bars, 24 * 365 =
8760 for hourly FX bars traded around the clock). Every metric is a finite
float for any finite input; degenerate cases (no variance, no drawdown, never
in the market) give 0 rather than NaN or inf.

Example:
    >>> import numpy as np
    >>> m = trading_metrics(np.array([1.0, 1.0, -1.0, 0.0]),
    ...                     np.array([0.01, -0.02, 0.03, 0.04]),
    ...                     cost_bps=10.0, periods_per_year=252)
    >>> round(m["turnover"], 6), round(m["win_rate"], 6)
    (1.0, 0.333333)
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "TRADING_METRIC_KEYS",
    "benchmark_metrics",
    "equity_curve",
    "net_log_pnl",
    "trading_metrics",
]

#: Keys of the dict returned by :func:`trading_metrics`, in a stable order.
TRADING_METRIC_KEYS: tuple[str, ...] = (
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "win_rate",
    "turnover",
    "total_return",
    "exposure",
    "n_bars",
)

_FLOAT_MAX = float(np.finfo(np.float64).max)
# Largest exponent whose exp() is still a finite float64 (about 709.78).
_MAX_EXPONENT = math.log(_FLOAT_MAX)


def net_log_pnl(
    positions: np.ndarray,
    next_log_returns: np.ndarray,
    *,
    cost_bps: float,
    initial_position: float = 0.0,
) -> np.ndarray:
    """Per-decision net log PnL.

    Args:
        positions: shape ``(n,)``, position held over each bar (units of notional).
        next_log_returns: shape ``(n,)``, log return of the bar each position is held over.
        cost_bps: transaction cost in basis points per unit of position traded (>= 0).
        initial_position: position held before the first bar.

    Returns:
        shape ``(n,)`` float64: ``positions * next_log_returns - cost_bps * 1e-4 * |Δposition|``.

    Raises:
        ValueError: on shape mismatch, empty or non-finite input, a negative cost,
            or a PnL too large for float64.
    """
    pos, rets = _validate(positions, next_log_returns, cost_bps, initial_position)
    trades = np.abs(np.diff(pos, prepend=float(initial_position)))
    with np.errstate(over="ignore", invalid="ignore"):
        pnl = pos * rets - cost_bps * 1e-4 * trades
    if not np.isfinite(pnl).all():
        raise ValueError("net log PnL overflowed: positions * next_log_returns is not representable")
    return pnl


def equity_curve(
    positions: np.ndarray,
    next_log_returns: np.ndarray,
    *,
    cost_bps: float,
    initial_position: float = 0.0,
) -> np.ndarray:
    """Equity after each bar, starting at 1.0.

    Returns:
        shape ``(n + 1,)`` float64: ``[1, exp(cumsum(net_log_pnl))]``; element ``i``
        is equity before bar ``i`` (element ``n`` after the last bar).
    """
    pnl = net_log_pnl(positions, next_log_returns, cost_bps=cost_bps, initial_position=initial_position)
    log_equity = np.concatenate(([0.0], np.cumsum(pnl)))
    return np.exp(np.minimum(log_equity, _MAX_EXPONENT))


def trading_metrics(
    positions: np.ndarray,
    next_log_returns: np.ndarray,
    *,
    cost_bps: float,
    periods_per_year: float,
    initial_position: float = 0.0,
) -> dict[str, float]:
    """Summary metrics of a backtest.

    Args:
        positions: shape ``(n,)``, see the module conventions.
        next_log_returns: shape ``(n,)``.
        cost_bps: cost in basis points per unit traded.
        periods_per_year: bars per year, used to annualise (> 0).
        initial_position: position held before the first bar.

    Returns:
        A dict with the keys of :data:`TRADING_METRIC_KEYS`, all finite floats:

        - ``sharpe``: ``mean / std * sqrt(periods_per_year)`` of per-bar net log
          PnL, sample std (ddof=1); 0 when the PnL is constant or ``n == 1``.
        - ``sortino``: ``mean / downside_deviation * sqrt(periods_per_year)``, with
          ``downside_deviation = sqrt(mean(min(pnl, 0) ** 2))`` over all bars
          (target 0); 0 when no bar loses.
        - ``max_drawdown``: largest fall from a running peak of equity, as a
          positive fraction of that peak (equity starts at 1.0, which counts as a peak).
        - ``calmar``: annualised return ``exp(mean(pnl) * periods_per_year) - 1``
          divided by ``max_drawdown``; 0 when there is no drawdown.
        - ``win_rate``: among bars with a non-zero position, the fraction whose net
          PnL is > 0; 0 if the strategy is never in the market.
        - ``turnover``: mean ``|Δposition|`` per bar (the entry from
          ``initial_position`` counts).
        - ``total_return``: ``exp(sum(pnl)) - 1``.
        - ``exposure``: mean ``|position|``.
        - ``n_bars``: ``n``.

        Values that would overflow (only for absurd inputs) are clipped to the
        largest finite float.
    """
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"periods_per_year must be a finite number > 0, got {periods_per_year!r}")
    pnl = net_log_pnl(positions, next_log_returns, cost_bps=cost_bps, initial_position=initial_position)
    pos = np.asarray(positions, dtype=np.float64)
    n = pnl.size
    annualiser = math.sqrt(periods_per_year)
    mean = float(np.mean(pnl))

    sharpe = annualized_sharpe(pnl, periods_per_year)

    sortino = 0.0
    downside = float(np.sqrt(np.mean(np.minimum(pnl, 0.0) ** 2)))
    if downside > 0:
        sortino = mean / downside * annualiser

    max_dd = _max_drawdown(pnl)
    calmar = 0.0
    if max_dd > 0:
        calmar = _expm1(mean * periods_per_year) / max_dd

    in_market = pos != 0
    win_rate = float(np.mean(pnl[in_market] > 0)) if in_market.any() else 0.0
    turnover = float(np.mean(np.abs(np.diff(pos, prepend=float(initial_position)))))

    metrics = {
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown": max_dd,
        "calmar": calmar,
        "win_rate": win_rate,
        "turnover": turnover,
        "total_return": _expm1(float(np.sum(pnl))),
        "exposure": float(np.mean(np.abs(pos))),
        "n_bars": float(n),
    }
    return {key: _clip(metrics[key]) for key in TRADING_METRIC_KEYS}


REGIME_NAMES = ("trend", "mean_reversion", "high_vol")
"""Names of the synthetic markets' regimes 0, 1, 2 (see ``data/synthetic.py``)."""


def per_regime_metrics(positions: np.ndarray, next_log_returns: np.ndarray, regimes: np.ndarray, *,
                       cost_bps: float, periods_per_year: float) -> dict[str, dict[str, float]]:
    """Sharpe, mean PnL per bar and share of bars of a backtest, split by the regime of each bar.

    The PnL is computed over the whole path first (so a trade's cost falls on the bar it is made
    in), then grouped: ``regimes[i]`` (int, ``(n,)``) is the regime of the bar position ``i`` is
    held over. Regimes with fewer than 2 bars are left out.

    Example:
        >>> out = per_regime_metrics(np.ones(4), np.array([.01, .02, -.01, -.02]), np.array([0, 0, 1, 1]),
        ...                          cost_bps=0.0, periods_per_year=1.0)
        >>> sorted(out), round(out["trend"]["mean_pnl"], 3), out["trend"]["share"]
        (['mean_reversion', 'trend'], 0.015, 0.5)
    """
    pnl = net_log_pnl(positions, next_log_returns, cost_bps=cost_bps)
    regimes = np.asarray(regimes).reshape(-1)
    if regimes.shape != pnl.shape:
        raise ValueError(f"regimes has shape {regimes.shape}, positions {pnl.shape}")
    out = {}
    for k in np.unique(regimes):
        part = pnl[regimes == k]
        if part.size < 2:
            continue
        name = REGIME_NAMES[int(k)] if 0 <= int(k) < len(REGIME_NAMES) else f"regime_{int(k)}"
        out[name] = {"sharpe": annualized_sharpe(part, periods_per_year), "mean_pnl": float(part.mean()),
                     "share": part.size / pnl.size}
    return out


def annualized_sharpe(pnl: np.ndarray, periods_per_year: float) -> float:
    """``mean / std * sqrt(periods_per_year)`` of per-bar net log PnL ``(n,)``, sample std
    (ddof=1); 0 when the PnL is constant or ``n == 1`` (the ``sharpe`` of :func:`trading_metrics`)."""
    if pnl.size < 2 or not np.ptp(pnl) > 0:
        return 0.0
    std = float(np.std(pnl, ddof=1))
    return float(np.mean(pnl)) / std * math.sqrt(periods_per_year) if std > 0 else 0.0


def benchmark_metrics(
    next_log_returns: np.ndarray,
    *,
    cost_bps: float,
    periods_per_year: float,
) -> dict[str, dict[str, float]]:
    """Metrics of the two reference strategies over the same bars.

    Returns:
        ``{"buy_and_hold": ..., "flat": ...}``, each a :func:`trading_metrics`
        dict. Buy-and-hold holds +1 on every bar and starts flat, so it pays one
        entry cost on the first bar (no exit cost); flat never trades.
    """
    rets = np.asarray(next_log_returns, dtype=np.float64)
    strategies = {"buy_and_hold": np.ones_like(rets), "flat": np.zeros_like(rets)}
    return {
        name: trading_metrics(pos, rets, cost_bps=cost_bps, periods_per_year=periods_per_year)
        for name, pos in strategies.items()
    }


def _validate(
    positions: np.ndarray, next_log_returns: np.ndarray, cost_bps: float, initial_position: float
) -> tuple[np.ndarray, np.ndarray]:
    pos = np.asarray(positions, dtype=np.float64)
    rets = np.asarray(next_log_returns, dtype=np.float64)
    if pos.ndim != 1 or rets.ndim != 1 or pos.shape != rets.shape:
        raise ValueError(
            f"positions and next_log_returns must both have shape (n,), got {pos.shape} and {rets.shape}"
        )
    if pos.size == 0:
        raise ValueError("a backtest needs at least one bar, got n=0")
    if not (np.isfinite(pos).all() and np.isfinite(rets).all()):
        raise ValueError("positions and next_log_returns must be finite (found NaN or inf)")
    if not (math.isfinite(cost_bps) and cost_bps >= 0):
        raise ValueError(f"cost_bps must be a finite number >= 0, got {cost_bps!r}")
    if not math.isfinite(initial_position):
        raise ValueError(f"initial_position must be finite, got {initial_position!r}")
    return pos, rets


def _max_drawdown(pnl: np.ndarray) -> float:
    """Max drawdown as a positive fraction, computed in log space so it cannot overflow."""
    log_equity = np.concatenate(([0.0], np.cumsum(pnl)))
    log_drawdown = np.maximum.accumulate(log_equity) - log_equity  # >= 0
    return float(-np.expm1(-np.max(log_drawdown)))


def _expm1(exponent: float) -> float:
    """``exp(x) - 1`` that saturates at the largest float instead of overflowing."""
    return float(np.expm1(min(exponent, _MAX_EXPONENT)))


def _clip(value: float) -> float:
    return float(np.clip(value, -_FLOAT_MAX, _FLOAT_MAX))
