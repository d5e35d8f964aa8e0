"""Benchmark: what the meta controller costs, wall time and peak RSS, at the same budget.

Each arm is one ``coordinator.train`` run in its own fresh process (so ``ru_maxrss`` is that run's peak)
against a temporary sqlite store, on the bundled EURUSD data by default:

- ``meta``: the ``meta`` preset;
- ``meta-off``: the same preset with ``meta_enabled=false`` (the fair comparison: same entropy bonus);
- ``lr``: the ``lr`` preset.

Rounds run every arm once, in an order that rotates from round to round. Wall time is the ``train()``
call; ``label_s`` is the one-off regime labelling of the train split and ``callback_s`` the time spent in
``MetaCallback._on_update`` over the run (both part of the ``meta`` wall time). On a shared machine the
wall-time spread between identical runs can exceed the effect; ``label_s + callback_s`` is the direct cost.

    python benchmarks/bench_meta_cost.py --timesteps 50000 --repeats 2 --out benchmarks/results/meta_cost.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

ARMS = {"meta": ("meta", {}), "meta-off": ("meta", {"meta_enabled": "false"}), "lr": ("lr", {})}

_CHILD = r"""
import json, os, resource, sys, time
from convopt_mlflow.config import build_config
from convopt_mlflow.training import meta as meta_glue
from convopt_mlflow.training.coordinator import train
preset, overrides = sys.argv[1], json.loads(sys.argv[2])
label = {"s": 0.0}
original = meta_glue.label_train_split
def timed(*args, **kwargs):
    start = time.perf_counter()
    try:
        return original(*args, **kwargs)
    finally:
        label["s"] += time.perf_counter() - start
meta_glue.label_train_split = timed
import convopt_mlflow.training.coordinator as coordinator
coordinator.label_train_split = timed
hook = {"s": 0.0, "calls": 0}
on_update = meta_glue.MetaCallback._on_update
def timed_update(self):
    start = time.perf_counter()
    try:
        return on_update(self)
    finally:
        hook["s"] += time.perf_counter() - start
        hook["calls"] += 1
meta_glue.MetaCallback._on_update = timed_update
cfg = build_config(preset, overrides)
start = time.perf_counter()
result = train(cfg, preset=preset, checkpoint_root=os.path.join(os.getcwd(), "ckpt"))
wall = time.perf_counter() - start
print(json.dumps({"status": result.status, "wall_s": wall, "label_s": label["s"], "callback_s": hook["s"],
                  "callback_calls": hook["calls"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_arm(name: str, args) -> dict:
    preset, extra = ARMS[name]
    overrides = {"run.total_timesteps": str(args.timesteps), "run.progress_bar": "false",
                 "data.source": args.data, **extra}
    with tempfile.TemporaryDirectory() as tmp:
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "PATH": "/usr/bin:/bin"}
        import os

        env = {**os.environ, **env}
        env.pop("MLFLOW_RUN_ID", None)
        out = subprocess.run([sys.executable, "-c", _CHILD, preset, json.dumps(overrides)], cwd=tmp, env=env,
                             capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return {"arm": name, **row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", default="eurusd-1h")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    names = args.arms.split(",")
    rows = []
    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            rows.append(run_arm(name, args))
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for name in names:
        group = [x for x in rows if x["arm"] == name]
        summary[name] = {"wall_s_median": float(np.median([x["wall_s"] for x in group])),
                         "peak_rss_mb_median": float(np.median([x["peak_rss_mb"] for x in group])),
                         "label_s_median": float(np.median([x["label_s"] for x in group])),
                         "callback_s_median": float(np.median([x["callback_s"] for x in group]))}
    off = summary.get("meta-off")
    for name in [n for n in ("meta", "lr") if n in summary and off]:
        summary[name]["wall_vs_meta_off"] = summary[name]["wall_s_median"] / off["wall_s_median"] - 1
        summary[name]["rss_vs_meta_off"] = summary[name]["peak_rss_mb_median"] / off["peak_rss_mb_median"] - 1
    print(json.dumps(summary, indent=1))
    write_result({"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info(),
                  "summary": summary, "runs": rows}, args.out)


if __name__ == "__main__":
    main()
