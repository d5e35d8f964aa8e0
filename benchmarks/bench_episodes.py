"""Benchmark: what curriculum and augmentation cost the training env, with no PPO around it.

Env-steps/s with random actions (drawn before timing) at the default training size
(n_envs=8, episode_length=256, multiscale 32-bar observation) on a synthetic market, for:

- ``plain``: the ``TradingVecEnv`` every baseline run uses (untouched by these components);
- ``slots``: ``AugmentedVecEnv`` with nothing augmented (the per-episode slot copy only);
- ``augment``: the ``augment`` preset's probabilities (noise 0.3, time warp 0.2, dropout 0.1);
- ``augment_all``: every episode recomputed (noise probability 1);
- ``curriculum``: the plain env drawing starts from the first stage's pool.

Also the one-off cost of scoring every window for the curriculum. Prints one JSON line.

    python benchmarks/bench_episodes.py [--n-bars 300000] [--seconds 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info  # noqa: E402

from convopt_mlflow.config import build_config  # noqa: E402
from convopt_mlflow.env import TradingVecEnv  # noqa: E402
from convopt_mlflow.env.augmented import AugmentedVecEnv  # noqa: E402
from convopt_mlflow.training.augment import augmented_env, build_augmentation  # noqa: E402
from convopt_mlflow.training.curriculum import build_curriculum, pool_sampler, start_curriculum  # noqa: E402
from convopt_mlflow.training.control import ComponentGuard  # noqa: E402
from convopt_mlflow.training.setup import load_market  # noqa: E402


def steps_per_second(env, actions: np.ndarray, seconds: float) -> float:
    env.reset()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for a in actions:
            env.step(a)
        done += len(actions)
    return done * env.num_envs / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-bars", type=int, default=300_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    data = f"data.source=synthetic:n_bars={args.n_bars},seed=11,signal_ic=0.05"
    cfg = build_config("augment", [data, "curriculum_enabled=true"])
    market = load_market(cfg)
    core = market.cores["train"]
    started = time.perf_counter()
    guard = ComponentGuard()
    curriculum = start_curriculum(build_curriculum(cfg), cfg, market, None, guard)
    scoring = time.perf_counter() - started
    every = build_config("augment", [data, "noise_injection_prob=1"])
    envs = {
        "plain": lambda: TradingVecEnv(core, 8, seed=0),
        "slots": lambda: AugmentedVecEnv(core, 8, seed=0),
        "augment": lambda: augmented_env(cfg, market, build_augmentation(cfg)),
        "augment_all": lambda: augmented_env(every, market, build_augmentation(every)),
        "curriculum": lambda: TradingVecEnv(core, 8, seed=0, start_sampler=pool_sampler(curriculum.curriculum.pool)),
    }
    actions = np.random.default_rng(0).integers(0, 3, (4096, 8))
    rates: dict[str, list[float]] = {name: [] for name in envs}
    for _ in range(args.repeats):  # interleaved, so load on the shared machine hits all alike
        for name, make in envs.items():
            rates[name].append(steps_per_second(make(), actions, args.seconds))
    median = {name: statistics.median(v) for name, v in rates.items()}
    print(json.dumps({"benchmark": "episodes", "n_bars": args.n_bars, "curriculum_scoring_s": round(scoring, 3),
                      "steps_per_s": {k: round(v) for k, v in median.items()},
                      "relative_to_plain": {k: round(v / median["plain"], 3) for k, v in median.items()},
                      "machine": machine_info()}))


if __name__ == "__main__":
    main()
