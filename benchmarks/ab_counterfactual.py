"""Issue 18's goals through the A/B module: `direct`, `counterfactual` and `baseline-3e-5` on the planted market.

Two steps, so the study can be extended (same ``--root`` and study name: only new cells train):

    python benchmarks/ab_counterfactual.py run --seeds 5 --root /tmp/ab-cf
    python benchmarks/ab_counterfactual.py run --seeds 10 --root /tmp/ab-cf     # extends to 10 seeds
    python benchmarks/ab_counterfactual.py reference --seeds 1,2,3 --root /tmp/ab-cf  # baseline-3e-5 to 400k
    python benchmarks/ab_counterfactual.py collect --root /tmp/ab-cf \\
        --out benchmarks/results/ab_counterfactual.json --figure benchmarks/results/ab_counterfactual.html

``run`` is ``convopt ab-test --arms baseline-3e-5,direct,counterfactual --total-timesteps 200000``
on ``synthetic:n_bars=300000,seed=11,signal_ic=0.05`` with ``run.eval_freq=5000`` (the milestone
grid: each trial logs ``eval/score``, the validation Sharpe of its current weights, every 5,000
steps), deciding on ``backtest/test/sharpe`` with Holm (the module's defaults), nothing registered.

``collect`` reads the study back from MLflow: the module's report (``ab/report.json``), each trial's
``eval/score`` curve over ``benchmark/val/oracle/sharpe`` (validation fraction of the true oracle)
and its shipped model's ``backtest/test/oracle_fraction``. Sample efficiency: the steps each arm
needs for its validation fraction (linearly interpolated between evaluations) to reach
``baseline-3e-5``'s mean validation fraction at 400k steps. The reference is ``reference``'s runs:
``convopt train --preset baseline-3e-5 --total-timesteps 400000`` per seed, same market, same
code, ``eval/score`` (current weights) every 50,000 steps, into the same store (experiment
``<study>-reference``). The ratio is 400,000 / median(steps over seeds), with a 95% bootstrap
CI resampling the arm's seeds and the reference's seeds (a seed that never reaches it counts as inf).
A seed's steps are its *first* crossing, which flatters a noisy curve; ``mean_curve_steps`` is
the first crossing of the arm's mean curve over seeds, a steadier view.
(``benchmarks/results/learning_baseline_3e5_400k.json`` was measured with the splits from before the
holdout split: other validation bars, a true-oracle validation Sharpe of 6.63 rather than 6.83, so
it is not used.)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine_info, write_result
from bench_learning import mean_ci, steps_to_reach

DATA = "synthetic:n_bars=300000,seed=11,signal_ic=0.05"
ARMS = "baseline-3e-5,direct,counterfactual"
STUDY = "counterfactual-goals"
GRID = (6_144, 10_240, 20_480, 40_960, 81_920, 120_832, 161_792, 200_704)  # evaluation steps: 2,048-step rollouts and batches


def run(args: argparse.Namespace) -> None:
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
           "CONVOPT_CHECKPOINT_ROOT": str(root / "ckpt")}
    env.pop("MLFLOW_RUN_ID", None)
    cmd = ["convopt", "ab-test", "--arms", args.arms, "--seeds", str(args.seeds), "--total-timesteps",
           str(args.steps), "--data", args.data, "--study", args.study, "--storage", f"sqlite:///{root}/optuna.db",
           "--set", f"run.eval_freq={args.eval_freq}", "--set", "run.progress_bar=false", "--no-register"]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, env=env, check=True)


def reference(args: argparse.Namespace) -> None:
    root = Path(args.root)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
           "CONVOPT_CHECKPOINT_ROOT": str(root / "ckpt")}
    env.pop("MLFLOW_RUN_ID", None)
    for seed in args.seeds.split(","):
        cmd = ["convopt", "train", "--preset", "baseline-3e-5", "--data", args.data, "--total-timesteps",
               str(args.steps), "--seed", seed, "--experiment", f"{args.study}-reference", "--quiet",
               "--set", f"run.eval_freq={args.eval_freq}", "--set", "run.progress_bar=false"]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, env=env, check=True)


def _reference_finals(client, study: str) -> tuple[np.ndarray, int, list[dict]]:
    """Validation fraction of the true oracle at the last evaluation of each reference run."""
    experiment = client.get_experiment_by_name(f"{study}-reference")
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'") if experiment else []
    rows = []
    for r in runs:
        history = sorted((h.step, h.value) for h in client.get_metric_history(r.info.run_id, "eval/score"))
        oracle = r.data.metrics["benchmark/val/oracle/sharpe"]
        rows.append({"seed": int(r.data.params["run.seed"]), "run_id": r.info.run_id,
                     "curve": [{"step": s, "val_fraction": v / oracle} for s, v in history]})
    finals = np.array([row["curve"][-1]["val_fraction"] for row in rows])
    steps = int(np.median([row["curve"][-1]["step"] for row in rows])) if rows else 0
    return finals, steps, rows


def _median_ratio(base: np.ndarray, mine: np.ndarray, pick: np.ndarray) -> float:
    return float(np.median(base[pick]) / np.median(mine[pick]))


def _trials(client, study: str) -> list[dict]:
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              f"tags.`convopt.study` = '{study}' and tags.`convopt.role` = 'ab-trial'",
                              max_results=1000)
    out = []
    for r in runs:
        m = r.data.metrics
        oracle = m.get("benchmark/val/oracle/sharpe", float("nan"))  # none on real data
        history = sorted((h.step, h.value) for h in client.get_metric_history(r.info.run_id, "eval/score"))
        out.append({"preset": r.data.tags.get("convopt.arm"), "seed": int(r.data.tags["convopt.seed"]),
                    "status": r.info.status, "run_id": r.info.run_id,
                    "seconds": (r.info.end_time - r.info.start_time) / 1e3 if r.info.end_time else None,
                    "curve": [{"step": s, "val_sharpe": v, "val_oracle_sharpe": oracle} for s, v in history],
                    "test_sharpe": m.get("backtest/test/sharpe"), "val_sharpe": m.get("backtest/val/sharpe"),
                    "test_oracle_fraction": m.get("backtest/test/oracle_fraction"),
                    "val_oracle_fraction": m.get("backtest/val/oracle_fraction"),
                    "model_source": r.data.tags.get("convopt.model_source"),
                    "no_edge": r.data.tags.get("convopt.no_edge") == "true"})
    return out


def _at(curve: list[dict], step: int) -> float:
    steps = np.array([p["step"] for p in curve], dtype=float)
    values = np.array([p["val_sharpe"] / p["val_oracle_sharpe"] for p in curve])
    return float(np.interp(step, steps, values)) if len(steps) and step >= steps[0] else float("nan")


def efficiency(trials: list[dict], reference_finals: np.ndarray, reference_steps: int, *, n_boot: int = 10_000,
               seed: int = 0) -> dict:
    """Per arm: steps to reach the reference's mean final validation fraction, as reference_steps / median."""
    rng = np.random.default_rng(seed)
    target = float(reference_finals.mean())
    out = {"target_val_fraction": target, "reference_steps": reference_steps, "arms": {}}
    for arm in sorted({t["preset"] for t in trials}):
        curves = [t["curve"] for t in trials if t["preset"] == arm and t["status"] == "FINISHED" and t["curve"]]
        steps = np.array([steps_to_reach(c, target) for c in curves])
        boot = []
        for _ in range(n_boot):
            tgt = reference_finals[rng.integers(0, len(reference_finals), len(reference_finals))].mean()
            pick = rng.integers(0, len(curves), len(curves))
            boot.append(reference_steps / np.median([steps_to_reach(curves[i], tgt) for i in pick]))
        median = float(np.median(steps))
        grid = sorted({p["step"] for c in curves for p in c})  # the arm's evaluation steps (the same in every seed)
        mean_curve = [{"step": g, "val_sharpe": float(np.nanmean([_at(c, g) for c in curves])), "val_oracle_sharpe": 1.0}
                      for g in grid]
        out["arms"][arm] = {"steps": steps.tolist(), "median_steps": median, "ratio": reference_steps / median,
                            "mean_curve_steps": steps_to_reach(mean_curve, target),
                            "ratio_ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
                            "reached": int(np.isfinite(steps).sum()), "n": len(curves)}
    out["vs_baseline_arm"] = _paired_ratios(trials, target, rng, n_boot)
    return out


def _paired_ratios(trials: list[dict], target: float, rng: np.random.Generator, n_boot: int,
                   baseline: str = "baseline-3e-5") -> dict:
    """median(baseline steps) / median(arm steps) to the same target over the seeds both ran, with a
    paired seed-bootstrap 95% CI: how much sooner than the baseline arm of the same study."""
    by = {(t["preset"], t["seed"]): steps_to_reach(t["curve"], target) for t in trials
          if t["status"] == "FINISHED" and t["curve"]}
    out = {}
    for arm in sorted({a for a, _ in by} - {baseline}):
        seeds = sorted(s for a, s in by if a == arm and (baseline, s) in by)
        base = np.array([by[(baseline, s)] for s in seeds])
        mine = np.array([by[(arm, s)] for s in seeds])
        boot = [_median_ratio(base, mine, rng.integers(0, len(seeds), len(seeds))) for _ in range(n_boot)]
        out[arm] = {"seeds": seeds, "baseline_steps": base.tolist(), "steps": mine.tolist(),
                    "ratio": _median_ratio(base, mine, np.arange(len(seeds))),
                    "ratio_ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]}
    return out


def collect(args: argparse.Namespace) -> None:
    from mlflow.tracking import MlflowClient

    root = Path(args.root)
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    trials = _trials(client, args.study)
    (parent,) = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                   f"tags.`convopt.study` = '{args.study}' and tags.`convopt.role` = 'ab-parent'")
    with tempfile.TemporaryDirectory() as tmp:
        report = json.loads(Path(client.download_artifacts(parent.info.run_id, "ab/report.json", tmp)).read_text())
    ref_finals, ref_steps, ref_rows = _reference_finals(client, args.study)
    arms = sorted({t["preset"] for t in trials})
    done = {a: [t for t in trials if t["preset"] == a and t["status"] == "FINISHED"] for a in arms}
    summary = {a: {"n": len(ts), "test_sharpe": mean_ci([t["test_sharpe"] for t in ts]),
                   "test_oracle_fraction": mean_ci([t["test_oracle_fraction"] for t in ts]),
                   "val_oracle_fraction_shipped": mean_ci([t["val_oracle_fraction"] for t in ts]),
                   "seconds": mean_ci([t["seconds"] for t in ts]), "no_edge_runs": sum(t["no_edge"] for t in ts),
                   "val_fraction_curve": {str(s): mean_ci([_at(t["curve"], s) for t in ts]) for s in GRID}}
               for a, ts in done.items()}
    doc = {"data": args.data, "study": args.study, "arms": arms, "metric": report.get("metric"),
           "report": report, "summary": summary,
           "sample_efficiency": efficiency(trials, ref_finals, ref_steps) if len(ref_finals) else None,
           "reference": {"preset": "baseline-3e-5", "steps": ref_steps, "val_fraction_final": mean_ci(ref_finals),
                         "runs": ref_rows},
           "trials": trials, "machine": machine_info(),
           "note": "shared 2-core machine under load: seconds are upper bounds"}
    write_result(doc, Path(args.out))
    if args.figure and len(ref_finals):
        figure(done, ref_finals, Path(args.figure))
    for a in arms:
        s = summary[a]
        print(a, "n", s["n"], "test_sharpe", round(s["test_sharpe"]["mean"], 3), "no_edge", s["no_edge_runs"],
              "test_frac", round(s["test_oracle_fraction"]["mean"], 3),
              {k: round(v["mean"], 3) for k, v in s["val_fraction_curve"].items()})
    print(json.dumps(doc["sample_efficiency"], indent=1)[:2000])
    for c in report.get("comparisons", []):
        print({k: c.get(k) for k in ("arm", "mean_difference", "difference_ci_low", "difference_ci_high", "p_value",
                                      "p_adjusted", "significant", "hedges_g")})
    print(report.get("verdict"))


def figure(done: dict, ref_finals: np.ndarray, path: Path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for arm, ts in done.items():
        stats = [mean_ci([_at(t["curve"], s) for t in ts]) for s in GRID]
        fig.add_trace(go.Scatter(x=list(GRID), y=[s["mean"] for s in stats], mode="lines+markers",
                                 error_y={"type": "data", "symmetric": False,
                                          "array": [s["ci95"][1] - s["mean"] for s in stats],
                                          "arrayminus": [s["mean"] - s["ci95"][0] for s in stats]},
                                 name=f"{arm} ({len(ts)} seeds, 95% CI)"))
    fig.add_hline(y=float(ref_finals.mean()), line_dash="dash",
                  annotation_text=f"baseline-3e-5 at 400k steps (validation, {len(ref_finals)} seeds)")
    fig.update_layout(title="Validation Sharpe / true oracle (current weights) on the planted market",
                      xaxis_title="steps (bars drawn)", yaxis_title="fraction of the true oracle",
                      xaxis_type="log", template="plotly_white")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs="cdn")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "reference", "collect"):
        p = sub.add_parser(name)
        p.add_argument("--root", required=True)
        p.add_argument("--study", default=STUDY)
        p.add_argument("--data", default=DATA)
    sub.choices["run"].add_argument("--seeds", type=int, default=5)
    sub.choices["run"].add_argument("--arms", default=ARMS)
    sub.choices["run"].add_argument("--steps", type=int, default=200_000)
    sub.choices["run"].add_argument("--eval-freq", type=int, default=5_000)
    sub.choices["reference"].add_argument("--seeds", default="1,2,3")
    sub.choices["reference"].add_argument("--steps", type=int, default=400_000)
    sub.choices["reference"].add_argument("--eval-freq", type=int, default=50_000)
    sub.choices["collect"].add_argument("--out", required=True)
    sub.choices["collect"].add_argument("--figure", default=None)
    args = parser.parse_args(argv)
    {"run": run, "reference": reference, "collect": collect}[args.command](args)


if __name__ == "__main__":
    main()
