"""An ensemble of 3 members on 2 workers against one member's run, wall time, before and after.

Each measurement is one whole ``python`` process (imports included) started with
``PYTHONPATH`` pointing at one checkout of the code, in a fresh temporary sqlite MLflow store:

- ``ensemble``: ``train_ensemble_run`` of the ``ensemble`` preset (3 members, ``ensemble.workers=2``);
- ``single``: one member's run, ``coordinator.train`` with member 0's config (what one member
  trains: ``ensemble_size=1``, one torch thread) as a standalone run.

The goal (issue 20): ensemble wall <= 1.7 x single wall. ``--code label=PATH`` may be given
several times (e.g. ``old=/tmp/old48 new=.``); the checkouts are measured one after the other,
``--rounds`` times each (default 1: the machine is shared).

    python benchmarks/bench_ensemble_workers.py --code old=/tmp/old48 --code new=. --steps 20000 \\
        --out benchmarks/results/ensemble_workers.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

DATA = "synthetic:n_bars=300000,seed=11,signal_ic=0.05"
GOAL = 1.7


def _config(data: str, steps: int, seed: int):
    from convopt_mlflow.config import build_config

    return build_config("ensemble", {"data.source": data, "run.seed": str(seed), "run.total_timesteps": str(steps),
                                     "run.progress_bar": "false", "ensemble.workers": "2",
                                     "ensemble.register": "false"})


def child(kind: str, data: str, steps: int, seed: int) -> dict:
    """Runs inside the measured process; returns what it saw."""
    start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix=f"bench-ensw-{kind}-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    cfg = _config(data, steps, seed)
    if kind == "ensemble":
        from convopt_mlflow.training.ensemble import train_ensemble_run

        result = train_ensemble_run(cfg, preset="ensemble", checkpoint_root=f"{tmp}/ckpt")
    else:
        from convopt_mlflow.components.ensemble import EnsembleLearningFramework
        from convopt_mlflow.training.coordinator import train
        from convopt_mlflow.training.ensemble import diversity_config, member_config

        plans = EnsembleLearningFramework(cfg.ensemble_size, diversity_config(cfg), seed=cfg.run.seed,
                                          min_members=cfg.ensemble.min_members).initialize_models()
        result = train(member_config(cfg, plans[0]), preset="ensemble", checkpoint_root=f"{tmp}/ckpt")
    return {"status": result.status, "reason": result.reason, "in_process_wall_s": time.perf_counter() - start}


def measure(path: str, kind: str, data: str, steps: int, seed: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(path).resolve())}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--data", data, "--steps", str(steps), "--seed", str(seed)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{kind} at {path} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_s": round(wall, 2), **seen}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=("ensemble", "single"))
    ap.add_argument("--code", action="append", default=[], help="label=PATH of a checkout (repeatable)")
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.data, args.steps, args.seed)))
        return 0
    codes = dict(item.split("=", 1) for item in (args.code or ["new=."]))
    results, load_before = {}, os.getloadavg()
    for label, path in codes.items():
        rounds = []
        for _ in range(args.rounds):
            single = measure(path, "single", args.data, args.steps, args.seed)
            ensemble = measure(path, "ensemble", args.data, args.steps, args.seed)
            rounds.append({"single": single, "ensemble": ensemble,
                           "ratio": round(ensemble["wall_s"] / single["wall_s"], 3)})
            print(label, json.dumps(rounds[-1]), flush=True)
        ratios = [r["ratio"] for r in rounds]
        results[label] = {"path": path, "rounds": rounds, "ratio_min": min(ratios), "ratio_max": max(ratios),
                          "goal_met": max(ratios) <= GOAL}
    doc = {"benchmark": "ensemble_workers", "goal": f"ensemble of 3 on 2 workers <= {GOAL}x one member's run (wall)",
           "data": args.data, "steps": args.steps, "seed": args.seed, "rounds": args.rounds,
           "measures": "whole-process wall time (imports included), fresh sqlite MLflow store per process",
           "results": results, "load_avg_1_5_15": {"before": load_before, "after": os.getloadavg()},
           "machine": machine_info()}
    write_result(doc, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
