"""The direct learner: validation Sharpe after N bars drawn, and learn time per bar against PPO per step.

One process, no MLflow: the market is loaded once (``synthetic:n_bars=300000,seed=11,signal_ic=0.05``,
the planted market; default env settings, cost 1 bp). For every seed it builds the env and the
model as the coordinator does (``make_env``, ``make_model`` with the ``direct`` preset: 64-bar
windows, 16 per batch, 10 passes, Adam 1e-3, 64x64 tanh, 1 torch thread) and calls
``model.learn`` up to each milestone (bars drawn, rounded up to whole 1,024-bar batches). At each
milestone it scores the greedy policy of the *current* weights on the validation split
(``validation_scorer``, as in-training evaluation does: no best-checkpoint selection). The true
oracle's and the signal rule's validation Sharpe are reported next to it (``backtest_split``'s
benchmarks, the numbers a run logs as ``benchmark/val/oracle/sharpe`` and
``benchmark/val/signal_rule/sharpe``).

Learn time: perf_counter around each ``model.learn`` call (draws + updates, no callbacks),
per bar drawn; and the ``baseline`` preset (plain PPO, same net, same thread count) for
``--ppo-steps`` env steps, per step, in the same process before and after the direct runs.

    python benchmarks/bench_direct.py --seeds 0,1 --milestones 10000,25000,50000 --out benchmarks/results/direct.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

DATA = "synthetic:n_bars=300000,seed=11,signal_ic=0.05"


def main() -> None:
    from _common import machine_info, write_result

    from convopt_mlflow.config import build_config
    from convopt_mlflow.training.evaluate import backtest_split, fit_market_oracle, validation_scorer
    from convopt_mlflow.training.setup import load_market, make_env, make_model

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--milestones", default="10000,25000,50000")
    parser.add_argument("--ppo-steps", type=int, default=8192)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--set", action="append", default=[], help="extra config override key=value")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    milestones = [int(m) for m in args.milestones.split(",")]
    market, rows, ppo_times = None, [], []

    def time_ppo() -> None:  # plain PPO (``baseline``), bracketing the direct runs: the load drifts
        ppo_cfg = build_config("baseline", [f"data.source={args.data}", "run.seed=0"])
        ppo = make_model(ppo_cfg, make_env(ppo_cfg, market))
        start = time.perf_counter()
        ppo.learn(args.ppo_steps)
        learn_s = time.perf_counter() - start
        ppo_times.append({"steps": ppo.num_timesteps, "learn_s": learn_s,
                          "learn_us_per_step": 1e6 * learn_s / ppo.num_timesteps})
        print(ppo_times[-1], flush=True)

    for seed in [int(s) for s in args.seeds.split(",")]:
        cfg = build_config("direct", [f"data.source={args.data}", f"run.seed={seed}", *args.set])
        if market is None:
            market = load_market(cfg)
            time_ppo()
        score = validation_scorer(market, cost_bps=cfg.env.cost_bps)
        model = make_model(cfg, make_env(cfg, market))
        learn_s = 0.0
        for milestone in milestones:
            start = time.perf_counter()
            model.learn(milestone - model.num_timesteps, reset_num_timesteps=False)
            learn_s += time.perf_counter() - start
            val = score(model.policy)
            rows.append({"seed": seed, "milestone": milestone, "bars_drawn": model.num_timesteps,
                         "val_sharpe": val["score"], "val_turnover": val.get("turnover"),
                         "learn_s": learn_s, "learn_us_per_bar": 1e6 * learn_s / model.num_timesteps})
            print(rows[-1], flush=True)
    rule = fit_market_oracle(market, cost_bps=cfg.env.cost_bps, long_only=cfg.env.long_only)
    bench = backtest_split(model.policy, market, "val", cost_bps=cfg.env.cost_bps, oracle=rule)["benchmarks"]
    time_ppo()
    ppo_us = sum(t["learn_us_per_step"] for t in ppo_times) / len(ppo_times)
    direct_us = [r["learn_us_per_bar"] for r in rows if r["milestone"] == milestones[-1]]
    doc = {"data": args.data, "preset": "direct", "overrides": args.set, "milestones": milestones,
           "selection": "current weights at each milestone (no best-checkpoint selection)",
           "benchmark_val_sharpe": {name: bench[name]["sharpe"] for name in ("oracle", "signal_rule") if name in bench},
           "runs": rows,
           "ppo_baseline": {"before_and_after": ppo_times, "mean_learn_us_per_step": ppo_us},
           "ratio_learn_time_per_sample": [d / ppo_us for d in direct_us],
           "note": "shared 2-core machine under load from other jobs: times are indicative; PPO is timed before "
                   "and after the direct runs in the same process and the ratio uses the mean of the two",
           "machine": machine_info()}
    print(doc["benchmark_val_sharpe"], doc["ppo_baseline"], doc["ratio_learn_time_per_sample"])
    write_result(doc, args.out)


if __name__ == "__main__":
    main()
