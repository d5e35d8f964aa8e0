"""Benchmark: learn time per environment step of the recurrent (LSTM) policy against the MLP baseline,
and the cost of its bar-by-bar backtest walk.

Both train with the ``baseline`` preset's PPO settings (8 envs x 256 steps, batch 256, 10 epochs,
64x64 MLP, one torch thread) on ``synthetic:n_bars=20000,seed=5,signal_regimes=1:-1:0``; the
recurrent arm adds ``recurrent.enabled=true`` with ``--lstm`` units (RecurrentPPO, MlpLstmPolicy).
Each arm learns ``--steps`` steps once (after a one-rollout warm-up that is not timed); the wall
time of ``model.learn`` is divided by the steps. The backtest walk is timed on the validation split
(``training.evaluate.backtest_split`` of the trained policy). On a shared machine read the times as
upper bounds.

    nice -n 10 python benchmarks/bench_recurrent.py --out benchmarks/results/recurrent.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from _common import machine_info, write_result  # noqa: E402

from convopt_mlflow.config import build_config  # noqa: E402
from convopt_mlflow.training.evaluate import backtest_split  # noqa: E402
from convopt_mlflow.training.setup import load_market, make_env, make_model  # noqa: E402

DATA = "synthetic:n_bars=20000,seed=5,signal_regimes=1:-1:0"


def arm(recurrent: bool, steps: int, lstm: int, seed: int) -> dict:
    values = {"data.source": DATA, "run.seed": str(seed), "run.progress_bar": "false"}
    if recurrent:
        values.update({"recurrent.enabled": "true", "recurrent.lstm_hidden_size": str(lstm)})
    cfg = build_config("baseline", values)
    market = load_market(cfg)
    model = make_model(cfg, make_env(cfg, market))
    rollout = cfg.ppo.n_steps * cfg.env.n_envs
    model.learn(rollout)  # warm-up: first rollout and update (allocations, lazy imports)
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    learn_s = time.perf_counter() - start
    start = time.perf_counter()
    result = backtest_split(model.policy, market, "val", cost_bps=cfg.env.cost_bps)
    walk_s = time.perf_counter() - start
    bars = int(result["path"].bars.size)
    return {"arm": "recurrent" if recurrent else "baseline", "lstm_hidden_size": lstm if recurrent else 0,
            "steps": steps, "learn_seconds": learn_s, "us_per_step": 1e6 * learn_s / steps,
            "backtest_bars": bars, "backtest_seconds": walk_s, "backtest_us_per_bar": 1e6 * walk_s / bars,
            "parameters": sum(p.numel() for p in model.policy.parameters())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=16384)
    parser.add_argument("--lstm", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows = [arm(False, args.steps, args.lstm, args.seed), arm(True, args.steps, args.lstm, args.seed)]
    rows[1]["learn_time_ratio"] = rows[1]["us_per_step"] / rows[0]["us_per_step"]
    for row in rows:
        print(f"{row['arm']:>9} lstm={row['lstm_hidden_size']:<3} {row['us_per_step']:8.1f} µs/step  "
              f"backtest {row['backtest_us_per_bar']:8.1f} µs/bar over {row['backtest_bars']} bars  "
              f"params {row['parameters']}")
    doc = {"benchmark": "recurrent", "data": DATA, "rows": rows, "machine": machine_info()}
    write_result(doc, args.out)
    return doc


if __name__ == "__main__":
    main()
