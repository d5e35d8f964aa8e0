"""Counterfactual PPO against plain PPO: learn time per step, and validation Sharpe after a short budget.

One process, no MLflow: the market is loaded once (``synthetic:n_bars=300000,seed=11,signal_ic=0.05``,
the planted market, default env/PPO settings: n_envs 8, n_steps 256, batch 256, 10 epochs, 64x64 tanh,
1 torch thread). For every (preset, seed) it builds the env and the model as the coordinator does
(``make_env``, ``make_model``, ``attach_counterfactual``), times ``model.learn(T)`` alone
(perf_counter around it: rollouts + updates; no callbacks, SB3's default logger), then scores
the greedy policy on the validation split (``validation_scorer``, as in-training evaluation does)
and reports the two oracles' validation Sharpe next to it. With ``--rounds R`` the arms run R times,
interleaved, the order rotating each round (A B, B A, ...); ``ratio_learn_time`` is each later arm's
learn time over the first arm's within a round (median, min, max over rounds): on a shared machine
the load drifts, so only paired, interleaved ratios mean anything.

    python benchmarks/bench_counterfactual.py --arms baseline,counterfactual --seeds 0 --timesteps 20000 --rounds 3
    python benchmarks/bench_counterfactual.py --arms baseline-3e-5,counterfactual --seeds 0,1 --timesteps 30000
    python benchmarks/bench_counterfactual.py --arms baseline-3e-5,counterfactual@base_learning_rate=3e-5 --seeds 0,1 \
        --timesteps 30000

An arm is a preset, optionally with ``@key=value`` overrides.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

DATA = "synthetic:n_bars=300000,seed=11,signal_ic=0.05"


def main() -> None:
    from _common import machine_info, write_result

    from convopt_mlflow.config import build_config
    from convopt_mlflow.training.control import ComponentGuard
    from convopt_mlflow.training.counterfactual import attach_counterfactual
    from convopt_mlflow.training.evaluate import backtest_split, fit_market_oracle, validation_scorer
    from convopt_mlflow.training.setup import load_market, make_env, make_model

    parser = argparse.ArgumentParser()
    parser.add_argument("--arms", default="baseline,counterfactual")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--timesteps", type=int, default=20_000)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    market = None
    rows = []
    arms = args.arms.split(",")
    runs = [(r, seed, arms[(i + r) % len(arms)]) for r in range(args.rounds)
            for seed in [int(s) for s in args.seeds.split(",")] for i in range(len(arms))]
    for round_, seed, arm in runs:
        preset, *overrides = arm.split("@")  # e.g. counterfactual@base_learning_rate=3e-5
        cfg = build_config(preset, [f"data.source={args.data}", f"run.seed={seed}", *overrides])
        market = market or load_market(cfg)
        guard = ComponentGuard()
        model = make_model(cfg, make_env(cfg, market))
        attach_counterfactual(model, cfg, guard)
        start = time.perf_counter()
        model.learn(args.timesteps)
        learn_s = time.perf_counter() - start
        val = validation_scorer(market, cost_bps=cfg.env.cost_bps)(model.policy)
        rows.append({"round": round_, "arm": arm, "seed": seed, "steps": model.num_timesteps, "learn_s": learn_s,
                     "learn_us_per_step": 1e6 * learn_s / model.num_timesteps, "val_sharpe": val["score"],
                     "val_turnover": val.get("turnover"), "disabled": dict(guard.disabled)})
        print(rows[-1], flush=True)
    rule = fit_market_oracle(market, cost_bps=1.0, long_only=False)
    bench = backtest_split(model.policy, market, "val", cost_bps=1.0, oracle=rule)["benchmarks"]
    ratios = {}
    for arm in arms[1:]:
        paired = [next(r["learn_s"] for r in rows if r["arm"] == arm and r["round"] == k and r["seed"] == s)
                  / next(r["learn_s"] for r in rows if r["arm"] == arms[0] and r["round"] == k and r["seed"] == s)
                  for k in range(args.rounds) for s in {r["seed"] for r in rows}]
        ratios[arm] = {"median": statistics.median(paired), "min": min(paired), "max": max(paired), "n": len(paired)}
    doc = {"data": args.data, "timesteps": args.timesteps, "rounds": args.rounds, "ratio_learn_time": ratios,
           "runs": rows,
           "val_oracle_sharpe": bench["oracle"]["sharpe"], "val_signal_rule_sharpe": bench["signal_rule"]["sharpe"],
           "machine": machine_info()}
    print({k: v for k, v in doc.items() if k != "runs"})
    write_result(doc, args.out)


if __name__ == "__main__":
    main()
