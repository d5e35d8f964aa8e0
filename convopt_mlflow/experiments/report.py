"""The A/B report: per-arm summaries, paired comparisons, power, DSR, and the winner.

Pure: numpy and ``convopt_mlflow.stats`` over the trials' numbers; no Optuna, no MLflow.
The caller gathers the inputs (records, eval curves, test PnL) and logs the outputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .. import stats

#: Secondary metrics summarized per arm: key in the trial's metrics -> label.
SECONDARY = {
    "backtest/test/sharpe": "test Sharpe", "backtest/test/total_return": "test total return",
    "backtest/test/max_drawdown": "test max drawdown", "ab/eval_auc": "eval AUC (mean val score)",
    "ab/steps_to_edge": "steps to beat flat", "ab/wall_time_s": "wall time (s)", "ab/peak_rss_mb": "peak RSS (MB)",
}


@dataclass(frozen=True)
class Winner:
    """The registration hook: the arm that beat the baseline, its trials' runs and the evidence.

    ``registrable`` is False when any of its seed models found no edge over flat on
    validation (``convopt.no_edge``); such a model is never registered, whatever the test says.
    """

    arm: str
    run_ids: tuple[str, ...]
    seeds: tuple[int, ...]
    evidence: dict[str, Any]
    registrable: bool


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def paired_scores(records: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> tuple[dict[str, np.ndarray], list[int]]:
    """``{arm: (seeds,)}`` primary scores over the seeds every arm completed (common random numbers)."""
    by_arm: dict[str, dict[int, float]] = {arm: {} for arm in arms}
    for r in records:
        by_arm[r["arm"]][int(r["seed"])] = float(r["value"])
    shared = sorted(set.intersection(*(set(v) for v in by_arm.values())))
    return {arm: np.array([by_arm[arm][s] for s in shared]) for arm in arms}, shared


def _dsr(arms: Sequence[str], best: str, records: Sequence[Mapping[str, Any]],
         pnl: Mapping[str, np.ndarray]) -> dict[str, float] | None:
    """DSR of the best arm's seed-averaged test PnL, deflated for the number of arms tried."""
    portfolios = {}
    for arm in arms:
        series = [pnl[r["run_id"]] for r in records if r["arm"] == arm and r["run_id"] in pnl]
        if series and len({len(s) for s in series}) == 1:
            portfolios[arm] = np.mean(series, axis=0)
    if best not in portfolios or len(portfolios) < 2 or any(np.std(p) == 0 for p in portfolios.values()):
        return None
    sharpes = [stats.sharpe_ratio(p) for p in portfolios.values()]
    out = {"arm": best, "n_trials": len(arms), "sharpe_per_bar": stats.sharpe_ratio(portfolios[best]),
           "psr": stats.probabilistic_sharpe_ratio(portfolios[best]),
           "dsr": stats.deflated_sharpe_ratio(portfolios[best], sharpes, n_trials=len(arms))}
    if arms[0] in portfolios and best != arms[0]:
        diff = stats.sharpe_difference_test(portfolios[best], portfolios[arms[0]])
        out.update({"sharpe_difference_z": diff.z, "sharpe_difference_p": diff.p_value})
    return out


def analyze(records: Sequence[Mapping[str, Any]], *, arms: Sequence[str], metric: str, alpha: float,
            planned_cells: int, pnl: Mapping[str, np.ndarray] | None = None,
            sequential: Mapping[str, Any] | None = None, rng: int = 0) -> dict[str, Any]:
    """Everything the report shows, as plain data (JSON-able).

    Args:
        records: one per COMPLETE trial: ``arm``, ``seed``, ``run_id``, ``value`` (primary
            metric), ``metrics`` (all of the run's), ``no_edge``.
        arms: arm names, the baseline first. metric: the primary metric's key.
        alpha: family-wise significance level (Holm across the arms compared with the baseline).
        planned_cells: arms x seeds the study planned. pnl: run id -> test net log PnL.
        sequential: the group-sequential rounds, when ``--sequential`` ran.
    """
    scores, shared = paired_scores(records, arms)
    baseline = arms[0]
    report: dict[str, Any] = {
        "metric": metric, "alpha": alpha, "baseline": baseline, "arms": list(arms), "seeds_compared": shared,
        "cells": {"planned": planned_cells, "complete": len(records)}, "sequential": sequential,
        "summaries": {}, "secondary": {}, "comparisons": [], "pairs": [], "winner": None, "dsr": None,
    }
    for arm in arms:
        values = [r for r in records if r["arm"] == arm]
        report["secondary"][arm] = {
            key: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"), "n": len(v)}
            for key in SECONDARY if (v := _finite([r["metrics"].get(key, float("nan")) for r in values]))}
        if len(shared) >= 2:
            report["summaries"][arm] = stats.summarize_arm(scores[arm], rng=rng).to_dict()
    if len(shared) < 2:
        report["verdict"] = (f"only {len(shared)} seed(s) completed in every arm; a comparison needs at least 2. "
                             f"Re-run the same command to resume the study.")
        return report
    options = dict(paired=True, primary="paired_t", alpha=alpha)
    report["comparisons"] = [c.to_dict() for c in stats.compare_to_baseline(scores, baseline, rng=rng, **options)]
    report["pairs"] = [c.to_dict() for c in stats.compare_all_pairs(scores, rng=rng, **options)]
    report["mde"] = {"standardized": stats.minimum_detectable_effect(len(shared), alpha=alpha, paired=True),
                     "power": 0.8, "alpha": alpha, "n_pairs": len(shared)}
    best = max(arms, key=lambda a: float(np.mean(scores[a])))
    report["best_arm"] = best
    report["dsr"] = _dsr(arms, best, records, pnl or {})
    winners = [c for c in report["comparisons"] if c["significant"] and c["mean_difference"] > 0]
    if winners:
        top = max(winners, key=lambda c: c["mean_difference"])
        report["winner"] = top["arm"]
        report["verdict"] = (f"{top['arm']} beats {baseline} on {metric}: mean difference {top['mean_difference']:.4g} "
                             f"(95% CI {top['difference_ci_low']:.4g} to {top['difference_ci_high']:.4g}), "
                             f"Holm-adjusted p = {top['p_adjusted']:.3g}, Hedges' g = {top['hedges_g']:.3g}, "
                             f"n = {len(shared)} paired seeds.")
    else:
        worst = max(c["mde_difference"] for c in report["comparisons"])
        worse = [c["arm"] for c in report["comparisons"] if c["significant"]]  # significant, and below the baseline
        head = (f"no arm beats {baseline} significantly on {metric} at alpha = {alpha} (Holm-corrected; "
                f"significantly worse: {', '.join(worse)})" if worse else
                f"no arm differs significantly from {baseline} on {metric} at alpha = {alpha} (Holm-corrected)")
        report["verdict"] = (f"{head}. With {len(shared)} paired seeds the test detects, with 80% power, "
                             f"a standardized effect of d_z = {report['mde']['standardized']:.3g} "
                             f"(about {worst:.3g} in {metric}); smaller effects could have been missed.")
    return report


def winner_of(report: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> Winner | None:
    """The arm that beat the baseline after correction, with its runs and evidence; None if none did."""
    arm = report.get("winner")
    if not arm:
        return None
    comparison = next(c for c in report["comparisons"] if c["arm"] == arm)
    mine = [r for r in records if r["arm"] == arm and int(r["seed"]) in set(report["seeds_compared"])]
    dsr = report.get("dsr") or {}
    evidence = {"test": f"{comparison['primary']} (Holm over {len(report['comparisons'])})",
                "baseline": report["baseline"], "metric": report["metric"], "p_value": comparison["p_value"],
                "p_adjusted": comparison["p_adjusted"], "hedges_g": comparison["hedges_g"],
                "mean_difference": comparison["mean_difference"], "ci_low": comparison["difference_ci_low"],
                "ci_high": comparison["difference_ci_high"], "n": len(mine),
                "p_improvement": comparison["probability_of_improvement"],
                "dsr": dsr.get("dsr") if dsr.get("arm") == arm else None}
    no_edge = [r["run_id"] for r in mine if r.get("no_edge")]
    evidence["no_edge_runs"] = no_edge
    return Winner(arm, tuple(r["run_id"] for r in mine), tuple(int(r["seed"]) for r in mine), evidence,
                  registrable=not no_edge)


def headline_metrics(report: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, float]:
    """Parent-run metrics: ``ab/<arm>/mean`` ..., ``ab/<arm>/p_value``, ``ab/mde``, ``ab/winner/dsr``.

    ``keys`` maps arm name -> metric-safe key.
    """
    out: dict[str, float] = {"ab/cells_complete": report["cells"]["complete"],
                             "ab/cells_planned": report["cells"]["planned"]}
    for arm, summary in report["summaries"].items():
        for name in ("mean", "median", "iqm", "std", "mean_ci_low", "mean_ci_high", "n"):
            out[f"ab/{keys[arm]}/{name}"] = summary[name]
    for c in report["comparisons"]:
        key = keys[c["arm"]]
        out.update({f"ab/{key}/p_value": c["p_value"], f"ab/{key}/p_adjusted": c["p_adjusted"],
                    f"ab/{key}/hedges_g": c["hedges_g"], f"ab/{key}/p_improvement": c["probability_of_improvement"],
                    f"ab/{key}/mean_difference": c["mean_difference"], f"ab/{key}/significant": float(c["significant"]),
                    f"ab/{key}/mde_difference": c["mde_difference"]})
    if "mde" in report:
        out["ab/mde"] = report["mde"]["standardized"]
    if report.get("dsr"):
        out["ab/best/dsr"] = report["dsr"]["dsr"]
        out["ab/best/psr"] = report["dsr"]["psr"]
    out["ab/significant"] = float(bool(report.get("winner")))
    if report.get("sequential"):
        out["ab/compute_saved"] = report["sequential"]["compute_saved"]
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}
