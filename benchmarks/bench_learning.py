"""Learning curves on the planted-signal market, as a fraction of the cost-aware oracle.

Each (preset, seed) is a full ``coordinator.train`` run (real MLflow in a temp sqlite store,
the preset's own defaults) up to the largest milestone. At every milestone a callback walks
the greedy policy over the validation and test splits and records its Sharpe, its turnover
and the oracle's Sharpe over the same bars. At the end it reads what the run shipped
(``run.final_model``) and whether that model beats flat on validation.

    python benchmarks/bench_learning.py --seeds 1,2,3,4,5 --out benchmarks/results/learning.json \\
        --figure benchmarks/results/learning.html

The CI of each mean is a t-interval over seeds (95%).
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
                    "test_oracle_fraction": m.get("backtest/test/oracle_fraction")},
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


def figure(runs: list[dict], path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("validation Sharpe / oracle", "test Sharpe / oracle"))
    for preset in sorted({r["preset"] for r in runs}):
        for r in (r for r in runs if r["preset"] == preset):
            for col, split in ((1, "val"), (2, "test")):
                fig.add_trace(go.Scatter(
                    x=[p["step"] for p in r["curve"]],
                    y=[p[f"{split}_sharpe"] / p[f"{split}_oracle_sharpe"] for p in r["curve"]],
                    mode="lines+markers", name=f"{preset} s{r['seed']}", legendgroup=preset,
                    showlegend=col == 1), row=1, col=col)
    for col in (1, 2):
        fig.update_xaxes(title_text="environment steps", row=1, col=col)
        fig.update_yaxes(title_text="fraction of oracle Sharpe", row=1, col=col)
    fig.update_layout(title="Learning curves on the planted-signal market", template="plotly_white")
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
    doc = {"benchmark": "learning", "data": args.data, "milestones": milestones, "overrides": overrides,
           "machine": machine_info(), "wall_seconds": time.perf_counter() - started, "summary": summary, "runs": runs}
    write_result(doc, args.out)
    if args.figure:
        figure(runs, args.figure)


if __name__ == "__main__":
    main()
