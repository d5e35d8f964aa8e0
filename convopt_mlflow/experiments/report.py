"""The A/B report: per-arm summaries, paired comparisons, power, DSR, and the winner.

Pure: numpy and ``convopt_mlflow.stats`` over the trials' numbers; no Optuna, no MLflow.
The caller gathers the inputs (records, eval curves, test PnL) and logs the outputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.stats

from .. import stats
from .pairing import Pairing, describe_failures, failure_summary, paired_scores

__all__ = ["SECONDARY", "Winner", "analyze", "headline_metrics", "paired_scores", "sequential_look", "winner_of"]

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
    validation (``convopt.no_edge``), or when a failed cell makes it unregistrable under
    the study's failure rule (``refusal`` says why); such a model is never registered,
    whatever the test says.
    """

    arm: str
    run_ids: tuple[str, ...]
    seeds: tuple[int, ...]
    evidence: dict[str, Any]
    registrable: bool
    refusal: str = ""


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


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
            sequential: Mapping[str, Any] | None = None, rng: int = 0,
            failed: Sequence[Mapping[str, Any]] = (), on_failure: str = "refuse") -> dict[str, Any]:
    """Everything the report shows, as plain data (JSON-able).

    Args:
        records: one per COMPLETE trial: ``arm``, ``seed``, ``run_id``, ``value`` (primary
            metric), ``metrics`` (all of the run's), ``no_edge``.
        arms: arm names, the baseline first. metric: the primary metric's key.
        alpha: family-wise significance level (Holm across the arms compared with the baseline).
        planned_cells: arms x seeds the study planned. pnl: run id -> test net log PnL.
        sequential: the group-sequential rounds, when ``--sequential`` ran; its ``decisions``
            (per arm, at the stopping look) are the verdict, not a fixed-sample test after stopping.
        failed: one per given-up cell: ``arm``, ``seed``, ``reason``.
        on_failure: the study's rule for failed cells (:mod:`.pairing`).
    """
    pairing = paired_scores(records, arms, failed, rule=on_failure)
    scores, shared = pairing.scores, pairing.seeds
    failures = failure_summary(records, failed, arms, on_failure)
    baseline, others = arms[0], len(arms) - 1
    report: dict[str, Any] = {
        "metric": metric, "alpha": alpha, "baseline": baseline, "arms": list(arms), "seeds_compared": shared,
        "cells": {"planned": planned_cells, "complete": len(records), "failed": len(failed)}, "sequential": sequential,
        "failures": failures,
        "pairing": {"filled": [list(c) for c in pairing.filled], "fill_value": pairing.fill_value,
                    "dropped": [{"seed": s, "why": why} for s, why in pairing.dropped.items()]},
        "unregistrable": _unregistrable(failures, arms),
        "summaries": {}, "secondary": {}, "comparisons": [], "pairs": [], "winner": None, "dsr": None,
    }
    for arm in arms:
        values = [r for r in records if r["arm"] == arm]
        report["secondary"][arm] = {
            key: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"), "n": len(v)}
            for key in SECONDARY if (v := _finite([r["metrics"].get(key, float("nan")) for r in values]))}
        if len(shared) >= 2:
            report["summaries"][arm] = stats.summarize_arm(scores[arm], rng=rng).to_dict()
    note = _failure_note(failures, pairing, report["unregistrable"])
    if len(shared) < 2:
        report["verdict"] = (f"only {len(shared)} seed(s) can be compared in every arm; a comparison needs at least 2. "
                             f"Re-run the same command to resume the study.{note}")
        return report
    options = dict(paired=True, primary="paired_t", alpha=alpha)
    report["comparisons"] = [c.to_dict() for c in stats.compare_to_baseline(scores, baseline, rng=rng, **options)]
    report["pairs"] = [c.to_dict() for c in stats.compare_all_pairs(scores, rng=rng, **options)]
    report["mde"] = _mde(len(shared), alpha, others, sequential)
    best = max(arms, key=lambda a: float(np.mean(scores[a])))
    report["best_arm"] = best
    report["dsr"] = _dsr(arms, best, records, pnl or {})
    if sequential and sequential.get("decisions"):
        _apply_sequential(report, sequential["decisions"])
    winners = [c for c in report["comparisons"] if c["significant"] and c["mean_difference"] > 0]
    if winners:
        top = max(winners, key=lambda c: c["mean_difference"])
        report["winner"] = top["arm"]
        report["verdict"] = _win_sentence(top, baseline, metric, len(shared)) + note
    else:
        report["verdict"] = _no_win_sentence(report, baseline, metric, alpha) + note
    return report


def _unregistrable(failures: Mapping[str, Any], arms: Sequence[str]) -> dict[str, str]:
    """Under ``refuse``: each arm that may not be registered because of failed cells, and why."""
    if failures["rule"] != "refuse" or not failures["cells"]:
        return {}
    mine = {arm: [c for c in failures["cells"] if c["arm"] == arm] for arm in arms}
    out = {}
    for arm in arms[1:]:
        if mine[arm]:
            out[arm] = (f"{arm} failed {len(mine[arm])} cell(s) ({describe_failures(mine[arm])}); "
                        f"under --on-failure refuse an arm with a failed cell is never registered")
        elif mine[arms[0]]:
            out[arm] = (f"the baseline {arms[0]} failed {describe_failures(mine[arms[0]])}, so those pairs are "
                        f"missing from the comparison; under --on-failure refuse nothing compared with it is registered")
    return out


def _failure_note(failures: Mapping[str, Any], pairing: Pairing, unregistrable: Mapping[str, str]) -> str:
    if not failures["cells"]:
        return ""
    rates = ", ".join(f"{arm} {100 * r:.0f}%" for arm, r in failures["rate"].items() if r > 0)
    note = f" Failed cells: {describe_failures(failures['cells'])}; failure rate {rates}."
    if pairing.rule == "worst":
        return note + (f" Under --on-failure worst each failed cell scores the study's worst observed value "
                       f"({pairing.fill_value:.4g}), so its pairs are kept.") if pairing.filled else note
    left = ", ".join(str(s) for s in pairing.dropped)
    return note + (f" Under --on-failure refuse, seed(s) {left} are left out of the comparison and "
                   f"{', '.join(unregistrable) or 'no arm'} cannot be registered.")


def _mde(n: int, alpha: float, comparisons: int, sequential: Mapping[str, Any] | None) -> dict[str, Any]:
    """The power statement at the level the verdict uses (Holm's first step, alpha / k)."""
    out = {"power": 0.8, "alpha": alpha, "n_pairs": n, "comparisons": comparisons, "level": alpha / comparisons,
           "method": f"Holm over {comparisons} comparison(s): computed at alpha / {comparisons}, Holm's first step, "
                     f"so each arm's power under Holm is at least 80%"}
    if sequential and sequential.get("looks"):
        # the planned design: rejecting at the final look's boundary alone has this power, so the
        # group-sequential test (which also rejects earlier) has at least as much without futility stops
        final, looks = sequential["alpha_per_comparison"], list(sequential["looks"])
        level = float(2.0 * scipy.stats.norm.sf(stats.t_boundaries(looks, final)[-1]))
        out.update(n_pairs=looks[-1], level=level,
                   method=(f"group-sequential, alpha / {comparisons} per comparison: computed at the final look's "
                           f"boundary (level {level:.3g}, {looks[-1]} seeds), a lower bound on the design's power "
                           f"without futility stops"))
    out["standardized"] = stats.minimum_detectable_effect(out["n_pairs"], alpha=out["level"], paired=True)
    return out


def _apply_sequential(report: dict[str, Any], decisions: Mapping[str, Mapping[str, Any]]) -> None:
    """The sequential test's decision at the stopping look is the comparison's significance (never undone)."""
    for c in report["comparisons"]:
        d = decisions.get(c["arm"], {"decision": "accept"})
        c["sequential"] = dict(d)
        c["significant"] = d["decision"] == "reject"
        c["p_adjusted"] = float("nan")  # no fixed-sample Holm p-value decides a sequential study
        if c["significant"] and np.sign(d["z"]) != np.sign(c["mean_difference"]):
            c["significant"] = False  # defensive: the direction is the sequential statistic's


def _win_sentence(top: Mapping[str, Any], baseline: str, metric: str, n: int) -> str:
    head = (f"{top['arm']} beats {baseline} on {metric}: mean difference {top['mean_difference']:.4g} "
            f"(95% CI {top['difference_ci_low']:.4g} to {top['difference_ci_high']:.4g}), ")
    seq = top.get("sequential")
    if seq:
        return head + (f"group-sequential test at look {seq['look']} ({seq['n']} paired seeds): |z| = "
                       f"{abs(seq['z']):.3g} >= boundary {seq['boundary']:.3g}, Hedges' g = {top['hedges_g']:.3g}, "
                       f"n = {seq['n']} paired seeds.")
    return head + (f"Holm-adjusted p = {top['p_adjusted']:.3g}, Hedges' g = {top['hedges_g']:.3g}, "
                   f"n = {n} paired seeds.")


def _no_win_sentence(report: Mapping[str, Any], baseline: str, metric: str, alpha: float) -> str:
    m = report["mde"]  # in metric units: the verdict-level MDE times each arm's sd of differences
    worst = max(m["standardized"] * c["mde_difference"] / c["mde"] if c["mde"] > 0 else float("nan")
                for c in report["comparisons"])
    worse = [c["arm"] for c in report["comparisons"] if c["significant"]]  # significant, and below the baseline
    rule = "group-sequential, Bonferroni over the arms" if report.get("sequential") else "Holm-corrected"
    head = (f"no arm beats {baseline} significantly on {metric} at alpha = {alpha} ({rule}; "
            f"significantly worse: {', '.join(worse)})" if worse else
            f"no arm differs significantly from {baseline} on {metric} at alpha = {alpha} ({rule})")
    return (f"{head}. With {m['n_pairs']} paired seeds, at the level of this verdict ({m['comparisons']} "
            f"comparison(s), each at {m['level']:.3g}), the test detects, with 80% power, "
            f"a standardized effect of d_z = {m['standardized']:.3g} "
            f"(about {worst:.3g} in {metric}); smaller effects could have been missed.")


def winner_of(report: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> Winner | None:
    """The arm that beat the baseline after correction, with its runs and evidence; None if none did."""
    arm = report.get("winner")
    if not arm:
        return None
    comparison = next(c for c in report["comparisons"] if c["arm"] == arm)
    seq = comparison.get("sequential")
    seeds = report["seeds_compared"][:seq["n"]] if seq else report["seeds_compared"]
    mine = [r for r in records if r["arm"] == arm and int(r["seed"]) in set(seeds)]
    dsr = report.get("dsr") or {}
    k = len(report["comparisons"])
    failures = report.get("failures") or {"rule": "refuse", "cells": []}
    evidence = {"test": (f"group-sequential O'Brien-Fleming t boundaries (Bonferroni over {k}), look {seq['look']}"
                         if seq else f"{comparison['primary']} (Holm over {k})"),
                "baseline": report["baseline"], "metric": report["metric"], "p_value": comparison["p_value"],
                "p_adjusted": comparison["p_adjusted"], "hedges_g": comparison["hedges_g"],
                "mean_difference": comparison["mean_difference"], "ci_low": comparison["difference_ci_low"],
                "ci_high": comparison["difference_ci_high"], "n": len(mine),
                "p_improvement": comparison["probability_of_improvement"],
                "dsr": dsr.get("dsr") if dsr.get("arm") == arm else None,
                "on_failure": failures["rule"],
                "failed_cells": [c for c in failures["cells"] if c["arm"] in (arm, report["baseline"])]}
    if seq:
        evidence.update(z=seq["z"], boundary=seq["boundary"], look=seq["look"])
    no_edge = [r["run_id"] for r in mine if r.get("no_edge")]
    evidence["no_edge_runs"] = no_edge
    # validation scores the seed models' selections looked at (the ensemble's no-edge verdict counts them)
    evidence["edge_trials"] = [float(r.get("metrics", {}).get("model/edge/n_trials", 1.0)) for r in mine]
    refusal = (report.get("unregistrable") or {}).get(arm, "")
    return Winner(arm, tuple(r["run_id"] for r in mine), tuple(int(r["seed"]) for r in mine), evidence,
                  registrable=not no_edge and not refusal, refusal=refusal)


def sequential_look(decided: Mapping[str, Mapping[str, Any]], records: Sequence[Mapping[str, Any]],
                    failed: Sequence[Mapping[str, Any]], *, arms: Sequence[str], looks: Sequence[int], n: int,
                    alpha: float, rule: str = "refuse") -> dict[str, dict[str, Any]]:
    """Decisions after the look at ``n`` seeds: ``decided`` plus the arms whose test stopped now.

    An arm in ``decided`` keeps its decision whatever the later seeds say: an interim
    rejection or futility stop is never revisited. Each other arm's seed-paired differences
    (failed cells under ``rule``, :func:`.pairing.paired_scores`) go to
    :func:`~convopt_mlflow.stats.sequential_test` at ``alpha`` (already split over the arms).

    Example:
        >>> base = [{"arm": "b", "seed": s, "value": 0.0} for s in range(3)]
        >>> lr = [{"arm": "lr", "seed": s, "value": v} for s, v in enumerate([5.0, 5.1, 4.9])]
        >>> sequential_look({}, base + lr, [], arms=["b", "lr"], looks=[3, 5], n=3, alpha=0.05)["lr"]["decision"]
        'reject'
        >>> sequential_look({"lr": {"decision": "reject"}}, base, [], arms=["b", "lr"], looks=[3, 5], n=5,
        ...                 alpha=0.05)["lr"]["decision"]
        'reject'
    """
    out = {arm: dict(d) for arm, d in decided.items()}
    for arm in (a for a in arms[1:] if a not in decided):
        pairing = paired_scores(records, [arms[0], arm], failed, rule=rule)
        diffs = pairing.scores[arm] - pairing.scores[arms[0]]  # seed-paired: common random numbers
        if len(diffs) >= looks[0]:
            result = stats.sequential_test(diffs[:n], looks, alpha=alpha)
            if result.decision != "continue":
                out[arm] = {"decision": result.decision, "look": result.look, "n": result.n, "z": result.z,
                            "boundary": result.boundary}
    return out


def headline_metrics(report: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, float]:
    """Parent-run metrics: ``ab/<arm>/mean`` ..., ``ab/<arm>/p_value``, ``ab/mde``, ``ab/winner/dsr``.

    ``keys`` maps arm name -> metric-safe key.
    """
    out: dict[str, float] = {"ab/cells_complete": report["cells"]["complete"],
                             "ab/cells_planned": report["cells"]["planned"],
                             "ab/cells_failed": report["cells"].get("failed", 0)}
    for arm, rate in (report.get("failures") or {}).get("rate", {}).items():
        out[f"ab/{keys[arm]}/failure_rate"] = rate
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
