"""Benchmark: wall time of the learn phase of ``baseline``, ``curriculum`` and ``augment`` runs.

Each arm is a full ``coordinator.train`` run (real MLflow in a temp sqlite store) on the
planted-signal market with in-training evaluation off; a callback times ``learn()`` from
``_on_training_start`` to ``_on_training_end``. Arms are interleaved and the order rotates
each round. Prints one JSON line with the median learn seconds per arm and the ratio to baseline.

    python benchmarks/bench_episodes_training.py [--timesteps 30000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from stable_baselines3.common.callbacks import BaseCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info  # noqa: E402

from convopt_mlflow.config import build_config  # noqa: E402
from convopt_mlflow.training.coordinator import train  # noqa: E402

ARMS = ("baseline", "curriculum", "augment")


class LearnTimer(BaseCallback):
    per_step = False

    def _on_training_start(self) -> None:
        self.started = time.perf_counter()

    def _on_training_end(self) -> None:
        self.seconds = time.perf_counter() - self.started

    def _on_step(self) -> bool:
        return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default="synthetic:n_bars=300000,seed=11,signal_ic=0.05")
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="bench-episodes-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for round_ in range(args.repeats):
        for arm in ARMS[round_ % len(ARMS):] + ARMS[:round_ % len(ARMS)]:
            cfg = build_config(arm, {"data.source": args.data, "run.total_timesteps": str(args.timesteps),
                                     "run.eval_freq": str(10**9), "run.checkpoint_freq": "0",
                                     "run.progress_bar": "false"})
            timer = LearnTimer()
            train(cfg, preset=arm, extra_callbacks=[timer], checkpoint_root=f"{tmp}/checkpoints")
            seconds[arm].append(timer.seconds)
    median = {arm: statistics.median(v) for arm, v in seconds.items()}
    print(json.dumps({"benchmark": "episodes_training", "timesteps": args.timesteps, "seconds": seconds,
                      "median_learn_s": median,
                      "ratio_to_baseline": {a: round(m / median["baseline"], 3) for a, m in median.items()},
                      "machine": machine_info()}))


if __name__ == "__main__":
    main()
