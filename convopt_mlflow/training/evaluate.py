"""Deterministic out-of-sample evaluation of an SB3 policy on a split."""
from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from typing import Any, Callable

import numpy as np
import torch

from ..env import deterministic_positions
from ..evaluation import benchmark_metrics, equity_curve, trading_metrics
from ..evaluation.metrics import annualized_sharpe, net_log_pnl, per_regime_metrics
from ..evaluation.oracle import OracleRule, fit_oracle
from ..recurrent import is_recurrent
from .oracle_cache import cached_rule
from .market import Market, next_log_returns


#: A run evaluates on validation at least this many times when its budget allows it.
MIN_EVALUATIONS = 4


def effective_eval_freq(eval_freq: int, total_timesteps: int, rollout_steps: int) -> int:
    """The validation cadence a run uses, in environment steps (0: no evaluation).

    ``run.eval_freq`` (25,000 by default) gives a short run no evaluation at all, so no
    ``eval/*`` curve, ``ab/eval_auc`` or ``ab/steps_to_edge``. When it would give fewer than
    :data:`MIN_EVALUATIONS` evaluations, the cadence shrinks to a quarter of the budget,
    rounded down to whole rollouts (``rollout_steps = n_steps * n_envs``, evaluations
    happen between updates) and never below one rollout. Only the default cadence scales: a
    cadence the user chose (any other value) is kept as given.

    >>> effective_eval_freq(25_000, 100_000, 2048), effective_eval_freq(25_000, 20_000, 2048)
    (25000, 4096)
    >>> effective_eval_freq(1024, 2048, 256)  # chosen by the user: kept
    1024
    """
    from ..config.tree import RunConfig

    if eval_freq <= 0 or eval_freq * MIN_EVALUATIONS <= total_timesteps or eval_freq != RunConfig.eval_freq:
        return eval_freq
    rollout = max(int(rollout_steps), 1)
    return max(rollout, total_timesteps // MIN_EVALUATIONS // rollout * rollout)


def greedy_actions(policy: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Map an observation batch to the most probable action (no SB3 ``predict`` overhead)."""

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            dist = policy.get_distribution(torch.as_tensor(obs, dtype=torch.float32, device=policy.device))
            return dist.distribution.probs.argmax(dim=-1).cpu().numpy()

    return act


def _walk(policy: Any, market: Market, split: str, *, cost_bps: float):
    """The greedy policy's positions on ``split``, the returns they earn, and their metrics.

    One walk per (split, weights): the last :data:`KEPT_WALKS` walks of each split's core are kept,
    so the final model's validation score and the validation backtest that follows share one walk,
    and so do the in-training evaluation of the best checkpoint's weights and the final selection's
    (which scores the last update and the best checkpoint, then takes the chosen one's PnL).
    """
    core = market.cores[split]
    key = (_fingerprint(policy), cost_bps, getattr(market.splits, split))
    kept = _WALKS.get(id(core))
    if kept is not None and kept[0]() is core and key[0] is not None and key in kept[1]:
        kept[1].move_to_end(key)
        path, returns, metrics = kept[1][key]
        return path, returns, dict(metrics)
    if is_recurrent(policy):  # its LSTM state carried bar by bar from the split's first decision bar
        from .recurrent import recurrent_positions

        path = recurrent_positions(policy, core, getattr(market.splits, split))
    else:
        path = deterministic_positions(core, greedy_actions(policy), getattr(market.splits, split))
    returns = next_log_returns(market, path.bars)
    metrics = trading_metrics(path.positions, returns, cost_bps=cost_bps,
                              periods_per_year=market.bars.periods_per_year)
    if key[0] is not None:
        if kept is None or kept[0]() is not core:
            kept = _WALKS[id(core)] = (weakref.ref(core, lambda _, k=id(core): _WALKS.pop(k, None)), OrderedDict())
        kept[1][key] = (path, returns, dict(metrics))
        while len(kept[1]) > KEPT_WALKS:
            kept[1].popitem(last=False)
    return path, returns, metrics


def walk_split(policy: Any, market: Market, split: str, *, cost_bps: float) -> tuple[Any, np.ndarray]:
    """The greedy policy's :class:`~convopt_mlflow.env.rollout.PositionPath` on ``split`` and the
    next-bar log returns of its decision bars; the walk a backtest of the same weights on this
    market just made is reused, not repeated."""
    path, returns, _ = _walk(policy, market, split, cost_bps=cost_bps)
    return path, returns


#: Walks kept per core (the least recently used goes first): enough for a run of 4 to 6 evaluations,
#: whose best one the final selection scores again. A split's walk holds three arrays of
#: its bars (about 1 MB for the 45,000 validation bars of a 300,000-bar market).
KEPT_WALKS = 8
#: id(core) -> (weak reference to the core, {(weights digest, cost, bar range): (path, returns, metrics)})
_WALKS: dict[int, tuple] = {}


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
    ppy, returns = market.bars.periods_per_year, next_log_returns(market, bars)
    return cached_rule(lambda: fit_oracle(signal[bars], returns, cost_bps=cost_bps, periods_per_year=ppy,
                                          long_only=long_only),
                       signal=signal[bars], next_log_returns=returns,
                       settings={"cost_bps": float(cost_bps), "periods_per_year": float(ppy), "long_only": bool(long_only)})


def benchmark_positions(market: Market, bars: np.ndarray, rule: OracleRule | None = None) -> dict[str, np.ndarray]:
    """The oracles' positions on decision ``bars`` (a contiguous walk starting flat), by benchmark name.

    ``oracle``: the true oracle, the causal optimum of expected net PnL knowing the synthetic market's
    state (:mod:`~convopt_mlflow.evaluation.true_oracle`); every synthetic market has it (at the env's
    cost). ``signal_rule``: the threshold ``rule`` on the planted signal, when given. Real data: none.
    """
    out: dict[str, np.ndarray] = {}
    if rule is not None:
        out["signal_rule"] = rule.positions(market.planted_signal[bars])
    positions = market.oracle_positions(bars)
    if positions is not None:
        out["oracle"] = positions
    return out


def backtest_split(policy: Any, market: Market, split: str, *, cost_bps: float,
                   oracle: OracleRule | None = None) -> dict[str, Any]:
    """Positions, metrics, benchmarks and equity curves of the greedy policy on ``split``.

    On a synthetic market the benchmarks and curves include the true ``oracle`` and, with the
    fitted threshold rule ``oracle`` (argument), the ``signal_rule``, walked over the same decision
    bars; ``per_regime`` then holds the policy's (and the oracles') metrics per regime.
    """
    path, returns, metrics = _walk(policy, market, split, cost_bps=cost_bps)
    ppy = market.bars.periods_per_year
    bench = benchmark_metrics(returns, cost_bps=cost_bps, periods_per_year=ppy)
    curves = {
        "policy": equity_curve(path.positions, returns, cost_bps=cost_bps),
        "buy_and_hold": equity_curve(np.ones_like(returns), returns, cost_bps=cost_bps),
        "flat": equity_curve(np.zeros_like(returns), returns, cost_bps=cost_bps),
    }
    oracles = benchmark_positions(market, path.bars, rule=oracle)
    for name, positions in oracles.items():
        bench[name] = trading_metrics(positions, returns, cost_bps=cost_bps, periods_per_year=ppy)
        curves[name] = equity_curve(positions, returns, cost_bps=cost_bps)
    per_regime = {}
    if market.regimes is not None:  # a synthetic market: how the policy (and oracles) did in each regime
        held = market.regimes[path.bars + 1]  # the bar each position is held over
        for name, positions in {"policy": path.positions, **oracles}.items():
            per_regime[name] = per_regime_metrics(positions, returns, held, cost_bps=cost_bps, periods_per_year=ppy)
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


def validation_pnl(policy: Any, market: Market, *, cost_bps: float) -> np.ndarray:
    """``(bars,)`` per-bar net log PnL of the greedy policy on validation (the score's walk, reused)."""
    path, returns, _ = _walk(policy, market, "val", cost_bps=cost_bps)
    return net_log_pnl(path.positions, returns, cost_bps=cost_bps)


def stratum_scores(policy: Any, market: Market, codes: np.ndarray, names: tuple[str, ...], *,
                   cost_bps: float) -> dict[str, float]:
    """``{"score_<name>": Sharpe}`` of the greedy validation walk restricted to the bars of each stratum.

    ``codes[b]`` (int, indexed by absolute bar) is the stratum of bar b; a position is grouped by the
    bar it is held over. The PnL is computed over the whole walk first (a trade's cost falls where
    it is made). Strata with fewer than 2 validation bars are left out. Reuses the walk the
    validation score just made (same weights: cached).
    """
    path, returns, _ = _walk(policy, market, "val", cost_bps=cost_bps)
    pnl = net_log_pnl(path.positions, returns, cost_bps=cost_bps)
    held = np.asarray(codes)[path.bars + 1]
    out = {}
    for k, name in enumerate(names):
        part = pnl[held == k]
        if part.size >= 2:
            out[f"score_{name}"] = annualized_sharpe(part, market.bars.periods_per_year)
    return out
