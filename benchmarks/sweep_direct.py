"""Sweep of the direct learner's cheap levers: validation fraction of the true oracle at bar milestones.

One process, no MLflow, the planted market (``synthetic:n_bars=300000,seed=11,signal_ic=0.05``)
as in ``bench_learning.py``. For every variant (a ``;``-separated list of ``key=value`` overrides
of the ``direct`` preset; ``#wd=<x>`` sets Adam's weight decay) and seed, the learner runs batch
by batch to each milestone. At each milestone the greedy policy of the current weights, and of an
exponential moving average of the weights (``--ema``, updated after every batch), is scored on
validation; the fraction is its Sharpe over the true oracle's (``benchmark/val/oracle/sharpe``).

    python benchmarks/sweep_direct.py --variants "" "direct.lr=3e-3" --seeds 1,2,3 \\
        --milestones 5000,10000,20000,40000 --out benchmarks/results/direct_sweep.json
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

DATA = "synthetic:n_bars=300000,seed=11,signal_ic=0.05"


def run_variant(variant: str, seed: int, milestones: list[int], ema_decay: float, market, data: str) -> list[dict]:
    import torch as th

    from convopt_mlflow.config import build_config
    from convopt_mlflow.training.evaluate import validation_scorer
    from convopt_mlflow.training.setup import load_market, make_env, make_model

    sets = [s for s in variant.split(";") if s and not s.startswith("#")]
    extras = dict(s[1:].split("=") for s in variant.split(";") if s.startswith("#"))
    cfg = build_config("direct", [f"data.source={data}", f"run.seed={seed}", *sets])
    if any(s.startswith("env.") for s in sets):  # the observation is built with the market: load it for this variant
        market = load_market(cfg)
    model = make_model(cfg, make_env(cfg, market))
    if "wd" in extras:
        for group in model.policy.optimizer.param_groups:
            group["weight_decay"] = float(extras["wd"])
    score = validation_scorer(market, cost_bps=cfg.env.cost_bps)
    averaged = copy.deepcopy(model.policy)
    rows, learn_s = [], 0.0
    for milestone in milestones:
        while model.num_timesteps < milestone:
            start = time.perf_counter()
            model.learn(1, reset_num_timesteps=False)  # one batch
            learn_s += time.perf_counter() - start
            with th.no_grad():
                for avg, cur in zip(averaged.parameters(), model.policy.parameters()):
                    avg.mul_(ema_decay).add_(cur, alpha=1 - ema_decay)
        rows.append({"variant": variant, "seed": seed, "milestone": milestone, "bars": model.num_timesteps,
                     "val_sharpe": score(model.policy)["score"], "val_sharpe_ema": score(averaged)["score"],
                     "learn_s": learn_s})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    from _common import machine_info, write_result

    from convopt_mlflow.config import build_config
    from convopt_mlflow.training.evaluate import backtest_split
    from convopt_mlflow.training.setup import load_market, make_env, make_model

    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", nargs="+", default=[""])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--milestones", default="5000,10000,20000,40000")
    parser.add_argument("--ema", type=float, default=0.9)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    milestones = [int(m) for m in args.milestones.split(",")]
    cfg = build_config("direct", [f"data.source={args.data}"])
    market = load_market(cfg)
    probe = make_model(cfg, make_env(cfg, market))
    oracle = backtest_split(probe.policy, market, "val", cost_bps=cfg.env.cost_bps)["benchmarks"]["oracle"]["sharpe"]
    rows = []
    for variant in args.variants:
        for seed in [int(s) for s in args.seeds.split(",")]:
            rows += run_variant(variant, seed, milestones, args.ema, market, args.data)
    summary = {}
    for variant in args.variants:
        summary[variant or "(defaults)"] = {
            str(m): {key: float(np.mean([r[key] for r in rows if r["variant"] == variant and r["milestone"] == m]) / oracle)
                     for key in ("val_sharpe", "val_sharpe_ema")} for m in milestones}
    for name, by_m in summary.items():
        print(f"{name:50s}", " ".join(f"{m}:{v['val_sharpe']:.3f}/{v['val_sharpe_ema']:.3f}" for m, v in by_m.items()))
    write_result({"data": args.data, "preset": "direct", "val_oracle_sharpe": oracle, "ema_decay": args.ema,
                  "milestones": milestones, "summary_val_fraction_mean": summary, "runs": rows,
                  "note": "current weights / EMA of weights; shared 2-core machine under load", "machine": machine_info()},
                 args.out)


if __name__ == "__main__":
    main()
