"""Backtests of an ensemble and of each of its members on the val and test splits.

Each member's action probabilities are computed once per split for every (decision bar,
held position) pair (:func:`~convopt_mlflow.env.rollout.policy_table`), shape
``(members, n_bars, n_levels, n_actions)``. Any combination is then a numpy operation on
that table followed by the same deterministic walk a single policy's backtest uses
(start flat, feed each position back into the next observation), so members and the
ensemble are scored on exactly the same decision bars as ``backtest_split``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..components.ensemble import (METHODS, EnsembleLearningFramework, combine_probabilities, disagreement_rate,
                                   mean_pairwise_correlation)
from ..env.rollout import follow_choices, policy_table
from ..evaluation import benchmark_metrics, equity_curve, trading_metrics
from ..evaluation.metrics import net_log_pnl, per_regime_metrics
from .evaluate import benchmark_positions, fit_market_oracle
from .reporting import SPLITS, oracle_fraction
from .market import Market, next_log_returns

SUMMARY_KEYS = ("sharpe", "max_drawdown", "total_return", "turnover")


@dataclass(frozen=True)
class SplitTables:
    """Member action probabilities over one split."""

    split: str
    bars: np.ndarray
    """int ``(n,)`` decision bars."""
    returns: np.ndarray
    """float ``(n,)`` the log return earned after each decision bar."""
    tables: np.ndarray
    """float ``(members, n, levels, actions)``."""
    levels: np.ndarray

    @property
    def flat(self) -> int:
        return int(np.flatnonzero(self.levels == 0.0)[0])

    def member_positions(self, i: int) -> np.ndarray:
        """Member ``i`` walked greedily (argmax), exactly as its own backtest."""
        return self.levels[follow_choices(self.tables[i].argmax(axis=-1), self.flat)].astype(np.float64)

    def ensemble_path(self, method: str, weights: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
        """``(positions, agreement)`` of the combined policy; agreement at the level actually held."""
        m, n, n_levels, n_actions = self.tables.shape
        actions, _, agreement = combine_probabilities(self.tables.reshape(m, n * n_levels, n_actions),
                                                      method, weights)
        taken = follow_choices(actions.reshape(n, n_levels), self.flat)
        held = np.concatenate([[self.flat], taken[:-1]]).astype(np.intp)
        agreement_held = agreement.reshape(n, n_levels)[np.arange(n), held]
        return self.levels[taken].astype(np.float64), agreement_held


def action_probabilities(policy: Any):
    """``obs (n, obs_size) -> probs (n, actions)`` of an SB3 ActorCriticPolicy."""

    def probs(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            dist = policy.get_distribution(torch.as_tensor(obs, dtype=torch.float32, device=policy.device))
            return dist.distribution.probs.cpu().numpy()

    return probs


def _decision_bars(market: Market, split: str) -> np.ndarray:
    start, stop = getattr(market.splits, split)
    return np.arange(max(start, market.cores[split].first_observable_bar), stop - 1)


def member_tables(policy: Any, market: Market) -> dict[str, np.ndarray]:
    """One member's action probabilities on every split, ``split -> (n, levels, actions)``: what
    :func:`split_tables` stacks, computed as soon as the member is in (while others still train)."""
    return {split: policy_table(market.cores[split], action_probabilities(policy), _decision_bars(market, split))
            for split in SPLITS}


def split_tables(policies: Sequence[Any], market: Market, split: str,
                 computed: Sequence[Mapping[str, np.ndarray] | None] | None = None) -> SplitTables:
    """The members' tables on ``split``; ``computed[k]`` (from :func:`member_tables`) is used for
    member k where given, the rest are computed here."""
    core = market.cores[split]
    bars = _decision_bars(market, split)
    tables = np.stack([computed[k][split] if computed is not None and computed[k] is not None
                       else policy_table(core, action_probabilities(p), bars) for k, p in enumerate(policies)])
    return SplitTables(split, bars, next_log_returns(market, bars), tables, core.position_levels)


@dataclass
class EnsembleReport:
    """Everything the ensemble run logs: flat metrics, equity curves per split, the decision."""

    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    timestamps: dict[str, Any] = field(default_factory=dict)
    decision: Any = None
    val_pnl: np.ndarray | None = None
    """``(bars,)`` per-bar net log PnL of the chosen combination on validation (the no-edge verdict's input)."""
    test_pnl: np.ndarray | None = None
    """``(bars,)`` the same on test (an A/B trial's ``ab/test_pnl.json``)."""
    periods_per_year: float = 1.0

    @property
    def val_sharpe(self) -> float:
        return self.metrics.get("backtest/val/sharpe", float("nan"))


def ensemble_edge(report: EnsembleReport, member_trials: Sequence[float]):
    """The deflated-Sharpe no-edge verdict on the combination's validation PnL
    (:mod:`convopt_mlflow.evaluation.edge`). The trials: every validation score the members' own
    selections looked at (``member_trials``, each a member's ``model/edge/n_trials``) and the
    combination methods the decision compared."""
    from ..evaluation.edge import edge_verdict

    periods_per_year = report.periods_per_year
    scale = np.sqrt(periods_per_year)
    return edge_verdict(report.val_pnl if report.val_pnl is not None else [],
                        int(sum(member_trials)) + len(METHODS),
                        trial_sharpes=[v / scale for v in report.decision.val_scores.values()],
                        periods_per_year=periods_per_year)


def split_benchmarks(market: Market, *, cost_bps: float, long_only: bool) -> dict[str, tuple[dict, dict]]:
    """``split -> (metrics, equity curves)`` of the benchmarks (buy-and-hold, flat, the oracles) on the
    members' decision bars: no member changes them, so the ensemble makes them while its last member trains."""
    oracle = fit_market_oracle(market, cost_bps=cost_bps, long_only=long_only)
    ppy, out = market.bars.periods_per_year, {}
    for split in SPLITS:
        bars = _decision_bars(market, split)
        returns = next_log_returns(market, bars)
        bench = benchmark_metrics(returns, cost_bps=cost_bps, periods_per_year=ppy)
        curves = {"buy_and_hold": equity_curve(np.ones_like(returns), returns, cost_bps=cost_bps),
                  "flat": equity_curve(np.zeros_like(returns), returns, cost_bps=cost_bps)}
        for name, oracle_pos in benchmark_positions(market, bars, rule=oracle).items():
            bench[name] = trading_metrics(oracle_pos, returns, cost_bps=cost_bps, periods_per_year=ppy)
            bench[name].update(_regime_metrics(market, bars, oracle_pos, returns, cost_bps=cost_bps))
            curves[name] = equity_curve(oracle_pos, returns, cost_bps=cost_bps)
        out[split] = (bench, curves)
    return out


def _regime_metrics(market: Market, bars: np.ndarray, positions: np.ndarray, returns: np.ndarray, *,
                    cost_bps: float) -> dict[str, float]:
    """``regime/<name>/<k>`` of a path on a synthetic market (each bar's true regime), as a single
    run's backtest logs them (:func:`~convopt_mlflow.training.evaluate.backtest_split`); {} elsewhere."""
    if market.regimes is None:
        return {}
    held = market.regimes[bars + 1]  # the bar each position is held over
    regimes = per_regime_metrics(positions, returns, held, cost_bps=cost_bps,
                                 periods_per_year=market.bars.periods_per_year)
    return {f"regime/{name}/{k}": float(v) for name, values in regimes.items() for k, v in values.items()}


def ensemble_report(framework: EnsembleLearningFramework, policies: Sequence[Any], indices: Sequence[int],
                    market: Market, *, cost_bps: float, long_only: bool,
                    computed: Sequence[Mapping[str, np.ndarray] | None] | None = None,
                    benchmarks: Mapping[str, tuple[dict, dict]] | None = None) -> EnsembleReport:
    """Choose the combination on val, then backtest the ensemble, each member and the benchmarks.

    ``indices`` are the members' plan indices (a failed member leaves a gap), used in metric keys;
    ``computed``: members' tables already computed (:func:`member_tables`), None where not;
    ``benchmarks``: :func:`split_benchmarks` already computed (with the same costs), None: computed here.
    """
    ppy = market.bars.periods_per_year
    tables = {split: split_tables(policies, market, split, computed) for split in SPLITS}
    walks = {split: [t.member_positions(k) for k in range(len(policies))] for split, t in tables.items()}

    def sharpe(positions: np.ndarray, t: SplitTables) -> float:
        return trading_metrics(positions, t.returns, cost_bps=cost_bps, periods_per_year=ppy)["sharpe"]

    val = tables["val"]
    member_val = walks["val"]
    val_returns = np.stack([net_log_pnl(p, val.returns, cost_bps=cost_bps) for p in member_val])
    decision = framework.decide([sharpe(p, val) for p in member_val], val_returns,
                                lambda method, w: sharpe(val.ensemble_path(method, w)[0], val))
    report = EnsembleReport(decision=decision, periods_per_year=ppy)
    out = report.metrics
    for method in METHODS:
        out[f"ensemble/val_score/{method}"] = decision.val_scores[method]
    for k, i in enumerate(indices):
        out[f"ensemble/weight/member_{i}"] = decision.weights[k]
    out["ensemble/members"] = float(len(indices))
    benchmarks = benchmarks or split_benchmarks(market, cost_bps=cost_bps, long_only=long_only)
    for split, t in tables.items():
        _split_report(report, t, walks[split], decision, indices, market, benchmarks[split], cost_bps=cost_bps)
    return report


def _split_report(report: EnsembleReport, t: SplitTables, walks: Sequence[np.ndarray], decision: Any,
                  indices: Sequence[int], market: Market, benchmarks: tuple[dict, dict], *, cost_bps: float) -> None:
    ppy, split, out = market.bars.periods_per_year, t.split, report.metrics
    positions, agreement = t.ensemble_path(decision.method, decision.weights)
    metrics = trading_metrics(positions, t.returns, cost_bps=cost_bps, periods_per_year=ppy)
    out.update({f"backtest/{split}/{k}": float(v) for k, v in metrics.items()})
    out.update({f"backtest/{split}/{k}": v for k, v in _regime_metrics(market, t.bars, positions, t.returns,
                                                                         cost_bps=cost_bps).items()})
    setattr(report, f"{split}_pnl", net_log_pnl(positions, t.returns, cost_bps=cost_bps))
    curves = {"ensemble": equity_curve(positions, t.returns, cost_bps=cost_bps)}
    member_metrics, member_returns = [], []
    for k, i in enumerate(indices):
        pos = walks[k]
        m = trading_metrics(pos, t.returns, cost_bps=cost_bps, periods_per_year=ppy)
        member_metrics.append(m)
        member_returns.append(net_log_pnl(pos, t.returns, cost_bps=cost_bps))
        out.update({f"member/{i}/backtest/{split}/{key}": float(m[key]) for key in SUMMARY_KEYS})
        curves[f"member_{i}"] = equity_curve(pos, t.returns, cost_bps=cost_bps)
    for key in ("sharpe", "max_drawdown"):
        values = [m[key] for m in member_metrics]
        out[f"ensemble/{split}/best_member_{key}"] = float(max(values) if key == "sharpe" else min(values))
        out[f"ensemble/{split}/mean_member_{key}"] = float(np.mean(values))
    out[f"ensemble/{split}/disagreement_rate"] = disagreement_rate(agreement)
    out[f"ensemble/{split}/mean_agreement"] = float(agreement.mean()) if agreement.size else 1.0
    out[f"ensemble/{split}/mean_return_correlation"] = float(mean_pairwise_correlation(np.stack(member_returns)).mean())
    bench = dict(benchmarks[0])
    curves.update(benchmarks[1])
    if "oracle" in bench:  # the true oracle (every synthetic market)
        out[f"backtest/{split}/oracle_fraction"] = oracle_fraction(metrics["sharpe"], bench["oracle"]["sharpe"])
    for name, values in bench.items():
        out.update({f"benchmark/{split}/{name}/{k}": float(v) for k, v in values.items()})
    index = market.bars.frame.index
    report.timestamps[split] = index[np.concatenate([t.bars[:1], t.bars + 1])] if len(t.bars) else index[:0]
    report.curves[split] = curves
