"""Deterministic out-of-sample evaluation of an SB3 policy on a split."""
from __future__ import annotations

import hashlib
import weakref
from typing import Any, Callable

import numpy as np
import torch

from ..env import deterministic_positions
from ..evaluation import benchmark_metrics, equity_curve, trading_metrics
from ..evaluation.metrics import per_regime_metrics
from ..evaluation.oracle import OracleRule, fit_oracle
from .setup import Market, next_log_returns


def greedy_actions(policy: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Map an observation batch to the most probable action (no SB3 ``predict`` overhead)."""

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            dist = policy.get_distribution(torch.as_tensor(obs, dtype=torch.float32, device=policy.device))
            return dist.distribution.probs.argmax(dim=-1).cpu().numpy()

    return act


def _walk(policy: Any, market: Market, split: str, *, cost_bps: float):
    """The greedy policy's positions on ``split``, the returns they earn, and their metrics.

    One walk per (split, weights): the last walk of each split's core is kept, so the final
    model's validation score and the validation backtest that follows share one walk.
    """
    core = market.cores[split]
    key = (_fingerprint(policy), cost_bps, getattr(market.splits, split))
    kept = _LAST_WALK.get(id(core))
    if kept is not None and kept[0]() is core and kept[1] == key and key[0] is not None:
        path, returns, metrics = kept[2]
        return path, returns, dict(metrics)
    path = deterministic_positions(core, greedy_actions(policy), getattr(market.splits, split))
    returns = next_log_returns(market, path.bars)
    metrics = trading_metrics(path.positions, returns, cost_bps=cost_bps,
                              periods_per_year=market.bars.periods_per_year)
    _LAST_WALK[id(core)] = (weakref.ref(core, lambda _, k=id(core): _LAST_WALK.pop(k, None)), key,
                            (path, returns, dict(metrics)))
    return path, returns, metrics


#: id(core) -> (weak reference to the core, (weights digest, cost, bar range), (path, returns, metrics))
_LAST_WALK: dict[int, tuple] = {}


def _fingerprint(policy: Any) -> str | None:
    """A digest of the policy's weights (None: not a torch module, never reused)."""
    state = getattr(policy, "state_dict", None)
    if state is None:
        return None
    digest = hashlib.sha256()
    for name, tensor in state().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def fit_market_oracle(market: Market, *, cost_bps: float, long_only: bool) -> OracleRule | None:
    """The cost-aware oracle of a planted-signal market, its threshold fitted on the train split.

    None when the market has no planted signal (real data, or ``signal_ic=0``).
    """
    signal = market.planted_signal
    if signal is None:
        return None
    core = market.cores["train"]
    start, stop = market.splits.train
    bars = np.arange(max(start, core.first_observable_bar), stop - 1)
    return fit_oracle(signal[bars], next_log_returns(market, bars), cost_bps=cost_bps,
                      periods_per_year=market.bars.periods_per_year, long_only=long_only)


def backtest_split(policy: Any, market: Market, split: str, *, cost_bps: float,
                   oracle: OracleRule | None = None) -> dict[str, Any]:
    """Positions, metrics, benchmarks and equity curves of the greedy policy on ``split``.

    With ``oracle``, the benchmarks and curves include it, walked over the same decision bars.
    On a synthetic market ``per_regime`` holds the policy's (and the oracle's) metrics per regime.
    """
    path, returns, metrics = _walk(policy, market, split, cost_bps=cost_bps)
    ppy = market.bars.periods_per_year
    bench = benchmark_metrics(returns, cost_bps=cost_bps, periods_per_year=ppy)
    curves = {
        "policy": equity_curve(path.positions, returns, cost_bps=cost_bps),
        "buy_and_hold": equity_curve(np.ones_like(returns), returns, cost_bps=cost_bps),
        "flat": equity_curve(np.zeros_like(returns), returns, cost_bps=cost_bps),
    }
    oracle_positions = None if oracle is None else oracle.positions(market.planted_signal[path.bars])  # once
    if oracle is not None:
        bench["oracle"] = trading_metrics(oracle_positions, returns, cost_bps=cost_bps, periods_per_year=ppy)
        curves["oracle"] = equity_curve(oracle_positions, returns, cost_bps=cost_bps)
    if market.regimes is not None:  # a synthetic market: how the policy (and oracle) did in each regime
        held = market.regimes[path.bars + 1]  # the bar each position is held over
        per_regime = {"policy": per_regime_metrics(path.positions, returns, held, cost_bps=cost_bps,
                                                   periods_per_year=ppy)}
        if oracle is not None:
            per_regime["oracle"] = per_regime_metrics(oracle_positions, returns,
                                                      held, cost_bps=cost_bps, periods_per_year=ppy)
    else:
        per_regime = {}
    index = market.bars.frame.index
    timestamps = index[np.concatenate([path.bars[:1], path.bars + 1])] if len(path.bars) else index[:0]
    return {"metrics": metrics, "benchmarks": bench, "curves": curves, "timestamps": timestamps, "path": path,
            "per_regime": per_regime}


def validation_scorer(market: Market, *, cost_bps: float) -> Callable[[Any], dict[str, float]]:
    """``evaluate(policy) -> {"score": val Sharpe, ...}`` for in-training evaluation."""

    def evaluate(policy: Any) -> dict[str, float]:
        _, _, metrics = _walk(policy, market, "val", cost_bps=cost_bps)  # no curves or benchmarks needed
        return {"score": metrics["sharpe"], **{k: v for k, v in metrics.items() if k != "n_bars"}}

    return evaluate
