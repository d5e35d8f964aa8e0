"""Benchmark: what every single-model component together costs (`full` without its ensemble)
over `baseline` at the same budget: wall time and peak RSS.

Each (arm, round) is a fresh Python process (so peak RSS is that arm's own: ``ru_maxrss`` of
the child), running ``coordinator.train`` on the same data, seed and budget into its own temp
sqlite MLflow store. Arms are interleaved and their order alternates every round. Reported per
arm: the learn phase (``model.learn``, timed by a callback), the whole ``train()`` call (set-up
such as curriculum window scoring and regime labelling, final backtests and model logging
included) and peak RSS; then the paired ratios full/baseline per round, median [min, max].

    python benchmarks/bench_full_overhead.py --timesteps 100000 --rounds 3 --out benchmarks/results/full_overhead.json

Budget (DESIGN.md): full minus ensemble <= 15% wall and <= 10% peak RSS over baseline.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

ARMS = {"baseline": ("baseline", []), "full-1": ("everything", ["ensemble_size=1"])}  # every component (the old full)

CHILD = r"""
import json, os, resource, sys, tempfile, time
from stable_baselines3.common.callbacks import BaseCallback
preset, overrides, data, steps = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
tmp = tempfile.mkdtemp(prefix="bench-full-")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
from convopt_mlflow.config import build_config
from convopt_mlflow.training.coordinator import train

class Timer(BaseCallback):
    def _on_step(self): return True
    def _on_training_start(self): self.t0 = time.perf_counter()
    def _on_training_end(self): self.learn = time.perf_counter() - self.t0

cfg = build_config(preset, [f"data.source={data}", f"run.total_timesteps={steps}", "run.progress_bar=false",
                            *overrides])
timer = Timer()
start = time.perf_counter()
result = train(cfg, preset=preset, extra_callbacks=[timer], checkpoint_root=f"{tmp}/ckpt")
total = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps({"status": result.status, "learn_s": timer.learn, "total_s": total, "peak_rss_mib": rss}))
"""


def run_arm(arm: str, data: str, steps: int) -> dict:
    preset, overrides = ARMS[arm]
    out = subprocess.run([sys.executable, "-c", CHILD, preset, json.dumps(overrides), data, str(steps)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def paired(rounds: list[dict], key: str) -> dict:
    ratios = [r["full-1"][key] / r["baseline"][key] for r in rounds]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "rounds": ratios}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", default="synthetic:n_bars=300000,seed=11,signal_ic=0.05")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rounds = []
    for i in range(args.rounds):
        order = list(ARMS) if i % 2 == 0 else list(ARMS)[::-1]
        rounds.append({arm: run_arm(arm, args.data, args.timesteps) for arm in order})
        print(json.dumps(rounds[-1]))
    summary = {key: paired(rounds, key) for key in ("learn_s", "total_s", "peak_rss_mib")}
    for key, row in summary.items():
        print(f"full-1 / baseline {key}: {row['median']:.3f} [{row['min']:.3f}, {row['max']:.3f}]")
    write_result({"benchmark": "full_overhead", "timesteps": args.timesteps, "data": args.data,
                  "machine": machine_info(), "rounds": rounds, "full_vs_baseline": summary}, args.out)


if __name__ == "__main__":
    main()
