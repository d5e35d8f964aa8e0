"""Learning curves on the planted-signal market, as a fraction of the cost-aware oracle.

Each (preset, seed) is a full ``coordinator.train`` run (real MLflow in a temp sqlite store,
the preset's own defaults) up to the largest milestone. At every milestone a callback walks
the greedy policy over the validation and test splits and records its Sharpe, its turnover
and the oracle's Sharpe over the same bars. At the end it reads what the run shipped
(``run.final_model``) and whether that model beats flat on validation.

    python benchmarks/bench_learning.py --seeds 1,2,3,4,5 --out benchmarks/results/learning.json \\
        --figure benchmarks/results/learning.html

The CI of each mean is a t-interval over seeds (95%). Presets that train an ensemble
(``ensemble_size`` > 1, e.g. ``full``) are measured as one model with the same settings: the
curves follow one policy per seed, so every arm spends the same environment steps.
``sample_efficiency`` in the result: the steps each preset needs to reach ``--reference``'s final
mean validation score, as a ratio with a seed-bootstrap CI.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

DEFAULT_DATA = "synthetic:n_bars=300000,seed=11,signal_ic=0.05"


def run_one(preset: str, seed: int, data: str, milestones: list[int], overrides: dict[str, str]) -> dict:
    import os

    import mlflow
    from stable_baselines3.common.callbacks import BaseCallback

    from convopt_mlflow.config import build_config
    from convopt_mlflow.training.coordinator import train
    from convopt_mlflow.training.evaluate import backtest_split, fit_market_oracle
    from convopt_mlflow.training.setup import load_market

    tmp = tempfile.mkdtemp(prefix="bench-learning-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    values = {"data.source": data, "run.seed": str(seed), "run.total_timesteps": str(max(milestones)),
              "run.progress_bar": "false", **overrides}
    cfg = build_config(preset, values)
    if cfg.ensemble_size > 1:  # the curves follow one policy: an ensemble preset is measured as its single model
        cfg = build_config(preset, {**values, "ensemble_size": "1"})
    market = load_market(cfg)
    oracle = fit_market_oracle(market, cost_bps=cfg.env.cost_bps, long_only=cfg.env.long_only)
    curve: list[dict] = []

    class Milestones(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_start(self) -> None:
            while len(curve) < len(milestones) and self.model.num_timesteps >= milestones[len(curve)]:
                row = {"step": milestones[len(curve)], "at": int(self.model.num_timesteps)}
                for split in ("val", "test"):
                    result = backtest_split(self.model.policy, market, split, cost_bps=cfg.env.cost_bps, oracle=oracle)
                    row[f"{split}_sharpe"] = result["metrics"]["sharpe"]
                    row[f"{split}_turnover"] = result["metrics"]["turnover"]
                    oracle_metrics = result["benchmarks"].get("oracle")  # none on real data
                    row[f"{split}_oracle_sharpe"] = oracle_metrics["sharpe"] if oracle_metrics else float("nan")
                curve.append(row)

        def _on_training_end(self) -> None:
            self._on_rollout_start()

    started = time.perf_counter()
    result = train(cfg, preset=preset, extra_callbacks=[Milestones()], checkpoint_root=f"{tmp}/checkpoints")
    run = mlflow.tracking.MlflowClient().get_run(result.run_id)
    m, tags = run.data.metrics, run.data.tags
    return {
        "preset": preset, "seed": seed, "status": result.status, "seconds": time.perf_counter() - started,
        "curve": curve,
        "shipped": {"source": tags.get("convopt.model_source"), "step": int(tags.get("convopt.model_step", -1)),
                    "no_edge": tags.get("convopt.no_edge"), "val_sharpe": m.get("backtest/val/sharpe"),
                    "test_sharpe": m.get("backtest/test/sharpe"), "test_turnover": m.get("backtest/test/turnover"),
                    "val_oracle_fraction": m.get("backtest/val/oracle_fraction"),
                    "test_oracle_fraction": m.get("backtest/test/oracle_fraction"),
                    "regimes": {name: {"sharpe": m.get(f"backtest/test/regime/{name}/sharpe"),
                                       "oracle_sharpe": m.get(f"benchmark/test/oracle/regime/{name}/sharpe")}
                                for name in ("trend", "mean_reversion", "high_vol")
                                if f"backtest/test/regime/{name}/sharpe" in m}},
    }


def mean_ci(values: list[float]) -> dict:
    from scipy import stats

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"mean": float("nan"), "ci95": [float("nan"), float("nan")], "n": 0}
    mean = float(x.mean())
    if x.size < 2:
        return {"mean": mean, "ci95": [mean, mean], "n": int(x.size)}
    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": int(x.size)}


def summarize(runs: list[dict], milestones: list[int]) -> dict:
    summary: dict = {}
    for preset in sorted({r["preset"] for r in runs}):
        mine = [r for r in runs if r["preset"] == preset and r["status"] == "FINISHED"]
        rows = {}
        for i, step in enumerate(milestones):
            points = [r["curve"][i] for r in mine if len(r["curve"]) > i]
            rows[step] = {
                key: mean_ci([p[f"{split}_sharpe"] / p[f"{split}_oracle_sharpe"] for p in points])
                for split, key in (("val", "val_fraction"), ("test", "test_fraction"))
            } | {"val_sharpe": mean_ci([p["val_sharpe"] for p in points]),
                 "test_sharpe": mean_ci([p["test_sharpe"] for p in points]),
                 "test_turnover": mean_ci([p["test_turnover"] for p in points]),
                 "test_oracle_sharpe": mean_ci([p["test_oracle_sharpe"] for p in points])}
        shipped = [r["shipped"] for r in mine]
        summary[preset] = {"milestones": rows,
                           "shipped_test_fraction": mean_ci([s["test_oracle_fraction"] or float("nan") for s in shipped]),
                           "shipped_test_sharpe": mean_ci([s["test_sharpe"] for s in shipped]),
                           "shipped_val_sharpe": mean_ci([s["val_sharpe"] for s in shipped]),
                           "shipped_val_sharpe_min": min(s["val_sharpe"] for s in shipped) if shipped else None,
                           "no_edge_runs": sum(s["no_edge"] == "true" for s in shipped)}
    return summary


def steps_to_reach(curve: list[dict], target: float, key: str = "val") -> float:
    """First step at which the ``key`` Sharpe / oracle reaches ``target``, linearly interpolated
    between milestones (the first milestone if already there; inf if never)."""
    steps = [p["step"] for p in curve]
    values = [p[f"{key}_sharpe"] / p[f"{key}_oracle_sharpe"] for p in curve]
    for i, (step, value) in enumerate(zip(steps, values)):
        if value >= target:
            if i == 0:
                return float(step)
            before, prior = steps[i - 1], values[i - 1]
            return float(before + (step - before) * (target - prior) / (value - prior))
    return float("inf")


def sample_efficiency(runs: list[dict], reference: str, *, key: str = "val", n_boot: int = 10_000,
                      seed: int = 0, target: float | None = None) -> dict:
    """Timesteps each preset needs to reach ``reference``'s final mean score, as a ratio.

    The target is the reference preset's mean ``key`` Sharpe / oracle at its last milestone,
    or ``target`` when given (e.g. 0.9 of the oracle on test).
    Per seed, the steps to reach it; the ratio is median(reference steps) / median(preset steps)
    (> 1: the preset needs fewer steps), with a 95% bootstrap CI resampling seeds (paired when
    both arms ran the same seeds). A seed that never reaches the target counts as inf steps.
    """
    ref = {r["seed"]: r for r in runs if r["preset"] == reference and r["status"] == "FINISHED" and r["curve"]}
    if not ref:
        return {}
    finals = [r["curve"][-1][f"{key}_sharpe"] / r["curve"][-1][f"{key}_oracle_sharpe"] for r in ref.values()]
    target = float(np.mean(finals)) if target is None else float(target)
    rng = np.random.default_rng(seed)
    out = {"reference": reference, "target_fraction": target, "key": key, "presets": {}}
    for preset in sorted({r["preset"] for r in runs}):
        mine = {r["seed"]: r for r in runs if r["preset"] == preset and r["status"] == "FINISHED" and r["curve"]}
        seeds = sorted(set(mine) & set(ref))
        if not seeds:
            continue
        a = np.array([steps_to_reach(ref[s]["curve"], target, key) for s in seeds])
        b = np.array([steps_to_reach(mine[s]["curve"], target, key) for s in seeds])
        ratio = _ratio(a, b)
        idx = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
        boot = np.array([_ratio(a[i], b[i]) for i in idx])
        out["presets"][preset] = {
            "seeds": seeds, "steps": b.tolist(), "reference_steps": a.tolist(), "ratio": ratio,
            "ratio_ci95": [float(np.nanpercentile(boot, 2.5, method="lower")),
                           float(np.nanpercentile(boot, 97.5, method="higher"))],
            "reached": int(np.isfinite(b).sum())}
    return out


def _ratio(reference_steps: np.ndarray, steps: np.ndarray) -> float:
    top, bottom = np.median(reference_steps), np.median(steps)
    if np.isinf(top) and np.isinf(bottom):
        return float("nan")
    if np.isinf(bottom):
        return 0.0
    return float("inf") if np.isinf(top) else float(top / bottom)


def per_regime(runs: list[dict]) -> dict:
    """Mean shipped test Sharpe per regime, agent and oracle, per preset (synthetic markets only)."""
    out: dict = {}
    for preset in sorted({r["preset"] for r in runs}):
        rows = [r["shipped"].get("regimes") or {} for r in runs if r["preset"] == preset]
        names = sorted({k for row in rows for k in row})
        out[preset] = {name: {who: mean_ci([row[name][who] for row in rows if name in row])
                              for who in ("sharpe", "oracle_sharpe")} for name in names}
    return out


def figure(runs: list[dict], path: Path, title: str = "Learning curves on the planted-signal market") -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("validation Sharpe / oracle", "test Sharpe / oracle"))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    for n, preset in enumerate(sorted({r["preset"] for r in runs})):
        mine = [r for r in runs if r["preset"] == preset and r["curve"]]
        color = palette[n % len(palette)]
        steps = [p["step"] for p in mine[0]["curve"]]
        for col, split in ((1, "val"), (2, "test")):
            stats = [mean_ci([r["curve"][i][f"{split}_sharpe"] / r["curve"][i][f"{split}_oracle_sharpe"]
                              for r in mine if len(r["curve"]) > i]) for i in range(len(steps))]
            low, high = [st["ci95"][0] for st in stats], [st["ci95"][1] for st in stats]
            fig.add_trace(go.Scatter(x=steps + steps[::-1], y=high + low[::-1], fill="toself", line={"width": 0},
                                     fillcolor=color, opacity=0.15, hoverinfo="skip", showlegend=False,
                                     legendgroup=preset), row=1, col=col)
            fig.add_trace(go.Scatter(x=steps, y=[st["mean"] for st in stats], mode="lines+markers",
                                     line={"color": color}, name=f"{preset} (mean of {len(mine)} seeds, 95% CI)",
                                     legendgroup=preset, showlegend=col == 1), row=1, col=col)
    for col in (1, 2):
        fig.update_xaxes(title_text="environment steps", row=1, col=col)
        fig.update_yaxes(title_text="fraction of oracle Sharpe", row=1, col=col)
    fig.update_layout(title=title, template="plotly_white")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs="cdn")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="baseline,baseline-3e-5")
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--milestones", default="50000,100000,200000,400000")
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--set", action="append", default=[], help="extra key=value config overrides")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--reference", default="baseline", help="preset whose final score sets the efficiency target")
    parser.add_argument("--title", default="Learning curves on the planted-signal market")
    args = parser.parse_args(argv)
    milestones = sorted(int(x) for x in args.milestones.split(","))
    overrides = dict(item.split("=", 1) for item in args.set)
    jobs = [(p, int(s), args.data, milestones, overrides)
            for s in args.seeds.split(",") for p in args.presets.split(",")]
    started = time.perf_counter()
    runs: list[dict] = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for future in as_completed([pool.submit(run_one, *job) for job in jobs]):
            runs.append(future.result())
            if args.out:  # partial results survive an interrupted benchmark
                write_result({"benchmark": "learning", "partial": True, "runs": runs}, args.out)
    summary = summarize(runs, milestones)
    for preset, rows in summary.items():
        print(f"\n{preset}: shipped test Sharpe {rows['shipped_test_sharpe']['mean']:.2f} "
              f"{np.round(rows['shipped_test_sharpe']['ci95'], 2).tolist()}, test/oracle {rows['shipped_test_fraction']['mean']:.2f} "
              f"{np.round(rows['shipped_test_fraction']['ci95'], 2).tolist()}, "
              f"min shipped val Sharpe {rows['shipped_val_sharpe_min']:.2f}, no-edge runs {rows['no_edge_runs']}")
        for step, row in rows["milestones"].items():
            print(f"  {step:>7}: val/oracle {row['val_fraction']['mean']:.2f} "
                  f"test/oracle {row['test_fraction']['mean']:.2f} {np.round(row['test_fraction']['ci95'], 2).tolist()} "
                  f"val Sharpe {row['val_sharpe']['mean']:.2f} test Sharpe {row['test_sharpe']['mean']:.2f} "
                  f"turnover {row['test_turnover']['mean']:.3f}")
    efficiency = sample_efficiency(runs, args.reference)
    oracle_90 = sample_efficiency(runs, args.reference, key="test", target=0.9)
    oracle_90_val = sample_efficiency(runs, args.reference, key="val", target=0.9)
    for eff, what in ((efficiency, f"{args.reference}'s final val/oracle"), (oracle_90, "test/oracle"),
                      (oracle_90_val, "val/oracle")):
        for preset, row in eff.get("presets", {}).items():
            print(f"steps to reach {what} {eff['target_fraction']:.2f}: {preset} "
                  f"{row['steps']} -> ratio {row['ratio']:.2f} {np.round(row['ratio_ci95'], 2).tolist()}")
    regimes = per_regime(runs)
    doc = {"benchmark": "learning", "data": args.data, "milestones": milestones, "overrides": overrides,
           "machine": machine_info(), "wall_seconds": time.perf_counter() - started, "summary": summary,
           "sample_efficiency": efficiency, "steps_to_90pct_oracle_test": oracle_90,
           "steps_to_90pct_oracle_val": oracle_90_val, "per_regime": regimes,
           "runs": runs}
    write_result(doc, args.out)
    if args.figure:
        figure(runs, args.figure, args.title)


if __name__ == "__main__":
    main()
