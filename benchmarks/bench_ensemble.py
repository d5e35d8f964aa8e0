"""The ensemble against its members: out-of-sample quality and wall time.

For each dataset and seed, one ``convopt`` ensemble run (``--preset``, default ``ensemble``:
3 members trained in parallel child runs, real MLflow in a temp sqlite store) is read back:

- the ensemble's val and test Sharpe and test max drawdown;
- the *best member*, chosen by validation Sharpe (as one would pick a single model), and its test numbers;
- the *mean member* (the expected single model).

Differences ensemble - best member and ensemble - mean member come with 95% bootstrap CIs
over seeds (paired: same seed, same data; ``np.random.default_rng(0)``).

Wall time: on the first seed the ensemble is also run with ``ensemble.workers=1``
(sequential members) and one single model (``ensemble_size=1``) is trained, giving the
ensemble's cost against n x single and the parallel speed-up.

    python benchmarks/bench_ensemble.py --seeds 1,2,3 --steps 100000 --out benchmarks/results/ensemble.json
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

DATASETS = ("synthetic:n_bars=300000,seed=11,signal_ic=0.05", "eurusd-1h")


def run_ensemble(preset: str, data: str, seed: int, steps: int, overrides: dict[str, str]) -> dict:
    from mlflow.tracking import MlflowClient

    from convopt_mlflow.config import build_config
    from convopt_mlflow.training.ensemble import train_ensemble_run

    tmp = tempfile.mkdtemp(prefix="bench-ensemble-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    cfg = build_config(preset, {"data.source": data, "run.seed": str(seed), "run.total_timesteps": str(steps),
                                "run.progress_bar": "false", **overrides})
    start = time.perf_counter()
    result = train_ensemble_run(cfg, preset=preset, checkpoint_root=f"{tmp}/ckpt")
    wall = time.perf_counter() - start
    run = MlflowClient().get_run(result.run_id)
    m = run.data.metrics
    members = sorted({int(k.split("/")[1]) for k in m if k.startswith("member/")})
    member = {i: {s: m[f"member/{i}/backtest/{s}"] for s in ("val/sharpe", "test/sharpe", "test/max_drawdown")}
              for i in members}
    best = max(members, key=lambda i: member[i]["val/sharpe"])
    return {"status": result.status, "wall_s": wall, "members": member, "best_member": best,
            "method": run.data.tags.get("convopt.ensemble.method"), "ensemble": {s: m.get(f"backtest/{s}") for s in
                                                  ("val/sharpe", "test/sharpe", "test/max_drawdown")},
            "oracle_test_sharpe": m.get("benchmark/test/oracle/sharpe"),
            "disagreement_val": m.get("ensemble/val/disagreement_rate"),
            "return_correlation_val": m.get("ensemble/val/mean_return_correlation")}


def run_single(preset: str, data: str, seed: int, steps: int, overrides: dict[str, str]) -> float:
    from convopt_mlflow.config import build_config
    from convopt_mlflow.training.coordinator import train

    tmp = tempfile.mkdtemp(prefix="bench-single-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    cfg = build_config(preset, {"data.source": data, "run.seed": str(seed), "run.total_timesteps": str(steps),
                                "run.progress_bar": "false", "ensemble_size": "1", "ppo.torch_threads": "1",
                                **overrides})
    start = time.perf_counter()
    train(cfg, preset=preset, checkpoint_root=f"{tmp}/ckpt")
    return time.perf_counter() - start


def paired_ci(diffs: list[float], rng: np.random.Generator, n_boot: int = 10_000) -> dict:
    d = np.asarray(diffs, dtype=float)
    means = rng.choice(d, size=(n_boot, d.size), replace=True).mean(axis=1)
    return {"mean": float(d.mean()), "ci95": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))],
            "n": int(d.size)}


def summarize(runs: list[dict]) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for key in ("val/sharpe", "test/sharpe", "test/max_drawdown"):
        ens = [r["ensemble"][key] for r in runs]
        best = [r["members"][r["best_member"]][key] for r in runs]
        mean = [float(np.mean([v[key] for v in r["members"].values()])) for r in runs]
        out[key] = {"ensemble": ens, "best_member": best, "mean_member": mean,
                    "ensemble_minus_best": paired_ci([e - b for e, b in zip(ens, best)], rng),
                    "ensemble_minus_mean": paired_ci([e - b for e, b in zip(ens, mean)], rng)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--preset", default="ensemble")
    parser.add_argument("--data", default=";".join(DATASETS), help="datasets separated by ';'")
    parser.add_argument("--set", default="", help="extra overrides k=v;k=v")
    parser.add_argument("--no-timing", action="store_true", help="skip the sequential and single-model runs")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = dict(kv.split("=", 1) for kv in args.set.split(";") if kv)
    doc: dict = {"machine": machine_info(), "steps": args.steps, "preset": args.preset, "seeds": seeds,
                 "overrides": overrides, "datasets": {}}
    for data in args.data.split(";"):
        runs = []
        for seed in seeds:
            runs.append(run_ensemble(args.preset, data, seed, args.steps, {"ensemble.workers": "2", **overrides}))
            print(data, seed, runs[-1]["ensemble"], f"{runs[-1]['wall_s']:.0f}s", flush=True)
        entry = {"runs": runs, "summary": summarize(runs)}
        if not args.no_timing:
            seq = run_ensemble(args.preset, data, seeds[0], args.steps, {"ensemble.workers": "1", **overrides})
            single = run_single(args.preset, data, seeds[0], args.steps, overrides)
            n = len(runs[0]["members"])
            entry["timing"] = {"parallel_s": runs[0]["wall_s"], "sequential_s": seq["wall_s"], "single_s": single,
                               "members": n, "parallel_over_n_single": runs[0]["wall_s"] / (n * single),
                               "sequential_over_n_single": seq["wall_s"] / (n * single),
                               "speedup": seq["wall_s"] / runs[0]["wall_s"]}
            print(data, entry["timing"], flush=True)
        doc["datasets"][data] = entry
    write_result(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
