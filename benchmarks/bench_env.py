"""Benchmark: env-steps/s of TradingVecEnv against its two reference points.

(a) n_envs=8: ``TradingVecEnv`` vs SB3 ``DummyVecEnv`` over the single-env twin ``TradingEnv``.
(b) n_envs in {256, 1024}: ``TradingVecEnv`` vs a minimal numpy stepping loop over the same
    arrays (the same strided window gather, the reward arithmetic, a lock-step auto-reset
    and a fresh observation array per step; no infos, no checks).

Random actions are drawn before timing. Each contender runs ``--repeats`` interleaved
timed blocks; the median env-steps/s is reported. Prints one JSON line; exits 1 when a
budget is missed.

Budgets (DESIGN.md): vec env >= 2.5x DummyVecEnv at n=8, >= 50% of the minimal loop at n>=256.

    python benchmarks/bench_env.py [--window 32] [--features 8] [--episode-length 512] [--seconds 0.4]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Callable

import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv

from convopt_mlflow.env import MarketCore, TradingEnv, TradingVecEnv

N_SMALL, N_LARGE = 8, (256, 1024)
BUDGET_VS_DUMMY, BUDGET_VS_MINIMAL = 2.5, 0.5


def make_core(args: argparse.Namespace) -> MarketCore:
    rng = np.random.default_rng(args.seed)
    features = rng.standard_normal((args.n_bars, args.features)).astype(np.float32)
    log_returns = rng.standard_normal(args.n_bars) * 1e-3
    return MarketCore(features, log_returns, window=args.window, episode_length=args.episode_length, cost_bps=1.0)


def vec_env_runner(core: MarketCore, n: int, actions: np.ndarray) -> Callable[[int], None]:
    venv = TradingVecEnv(core, n, seed=0)
    venv.reset()

    def run(steps: int) -> None:
        step = venv.step
        for i in range(steps):
            step(actions[i % len(actions)])

    return run


def dummy_runner(core: MarketCore, n: int, actions: np.ndarray) -> Callable[[int], None]:
    venv = DummyVecEnv([lambda: TradingEnv(core) for _ in range(n)])
    venv.seed(0)
    venv.reset()

    def run(steps: int) -> None:
        step = venv.step
        for i in range(steps):
            step(actions[i % len(actions)])

    return run


def minimal_runner(core: MarketCore, n: int, actions: np.ndarray) -> Callable[[int], None]:
    """The least a numpy env can do per step, written as a bare loop."""
    rng = np.random.default_rng(0)
    windows, log_returns, levels = core.windows, core.log_returns, core.position_levels
    cost, wf, obs_size, length = core.cost_rate, core.window_size, core.observation_size, core.episode_length
    lo, hi = core.start_bounds
    back = core.window - 1
    state = {"t": rng.integers(lo, hi + 1, n), "pos": np.zeros(n), "k": 0}

    def run(steps: int) -> None:
        t, pos, k = state["t"], state["pos"], state["k"]
        for i in range(steps):
            new = levels[actions[i % len(actions)]]
            reward = new * log_returns[t + 1] - cost * np.abs(new - pos)  # noqa: F841
            pos = new
            t += 1
            k += 1
            if k == length:
                t = rng.integers(lo, hi + 1, n)
                pos = np.zeros(n)
                k = 0
            obs = np.empty((n, obs_size), dtype=np.float32)
            obs[:, :wf] = windows[t - back]
            obs[:, wf] = pos
        state.update(t=t, pos=pos, k=k)

    return run


def compare(runners: dict[str, Callable[[int], None]], steps: int, repeats: int, n: int) -> dict[str, float]:
    """Median env-steps/s of each runner over ``repeats`` interleaved blocks of ``steps``."""
    for run in runners.values():
        run(max(1, steps // 10))  # warm up caches and allocator
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            started = time.perf_counter()
            run(steps)
            rates[name].append(steps * n / (time.perf_counter() - started))
    return {name: statistics.median(r) for name, r in rates.items()}


def calibrate(run: Callable[[int], None], seconds: float) -> int:
    """Steps for one block of about ``seconds``."""
    steps = 64
    while True:
        started = time.perf_counter()
        run(steps)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds / 4:
            return max(64, int(steps * seconds / elapsed))
        steps *= 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-bars", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--episode-length", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=0.4, help="wall seconds per timed block")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    core = make_core(args)
    rng = np.random.default_rng(args.seed)
    result: dict = {
        "config": {k: v for k, v in vars(args).items()} | {"observation_size": core.observation_size},
    }
    ok = True

    actions = rng.integers(0, core.n_actions, size=(4096, N_SMALL))
    runners = {"vec_env": vec_env_runner(core, N_SMALL, actions), "dummy_vec_env": dummy_runner(core, N_SMALL, actions)}
    steps = calibrate(runners["dummy_vec_env"], args.seconds)
    rates = compare(runners, steps, args.repeats, N_SMALL)
    ratio = rates["vec_env"] / rates["dummy_vec_env"]
    ok &= ratio >= BUDGET_VS_DUMMY
    result[f"n{N_SMALL}"] = {
        "vec_env_sps": round(rates["vec_env"]),
        "dummy_vec_env_sps": round(rates["dummy_vec_env"]),
        "ratio": round(ratio, 2),
        "budget": BUDGET_VS_DUMMY,
    }

    for n in N_LARGE:
        actions = rng.integers(0, core.n_actions, size=(1024, n))
        runners = {"vec_env": vec_env_runner(core, n, actions), "minimal_loop": minimal_runner(core, n, actions)}
        steps = calibrate(runners["minimal_loop"], args.seconds)
        rates = compare(runners, steps, args.repeats, n)
        ratio = rates["vec_env"] / rates["minimal_loop"]
        ok &= ratio >= BUDGET_VS_MINIMAL
        result[f"n{n}"] = {
            "vec_env_sps": round(rates["vec_env"]),
            "minimal_loop_sps": round(rates["minimal_loop"]),
            "ratio": round(ratio, 3),
            "budget": BUDGET_VS_MINIMAL,
        }
    result["within_budget"] = bool(ok)
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
