"""Benchmark: what the regime-aware parts cost, as a share of learn time, in one ``regime`` run.

One ``coordinator.train`` run of the ``regime`` preset in a fresh process, against a temporary sqlite store
and an empty label cache (so the one-off BOCPD labelling is paid, as on a market's first run). Timers
wrap every regime-aware part:

- ``label_s``: BOCPD over the train split (``label_train_split``), one-off;
- ``strata_s``: ``build_strata`` (BOCPD continued over validation, the trend detector, the start pools), one-off;
- ``trend_s``: every ``TrendDetector.probabilities`` call: the observation features ``env.regime_features``
  (once per market, again in the backtests' pyfunc-equal rebuild if any) and the strata's labels;
- ``callback_s``: ``MetaCallback`` (training start + every update: block choice, env restarts, logging);
- ``scores_s``: the per-stratum validation Sharpes added to every evaluation.

``direct_s`` is their total with nested calls counted once (the strata call the trend detector, the
callback's first block scores the untrained policy). The regime features' share of *training* time (a
wider observation) is not in it.

``learn_s`` is the time inside SB3's ``learn()`` (training only); ``train_s`` the whole ``train()`` call
(setup, learning, finalization with backtests). The machine is shared: timings are upper bounds.

    python benchmarks/bench_regime_cost.py --timesteps 50000 --out benchmarks/results/regime_cost.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

_CHILD = r"""
import json, os, sys, time
from convopt_mlflow.config import build_config
from convopt_mlflow.components import trend_detector
from convopt_mlflow.training import meta as glue
import convopt_mlflow.training.coordinator as coordinator
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
preset, overrides = sys.argv[1], json.loads(sys.argv[2])
spent, stack = {"direct_s": 0.0}, []
def timed(name, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        top = name != "learn_s" and not stack  # direct_s: regime-aware time, nested calls counted once
        if name != "learn_s":
            stack.append(name)
        try:
            return fn(*args, **kwargs)
        finally:
            if name != "learn_s":
                stack.pop()
            took = time.perf_counter() - start
            spent[name] = spent.get(name, 0.0) + took
            if top:
                spent["direct_s"] += took
    return wrapper
coordinator.label_train_split = timed("label_s", coordinator.label_train_split)
coordinator.build_strata = timed("strata_s", coordinator.build_strata)
glue.stratum_scores = timed("scores_s", glue.stratum_scores)
trend_detector.TrendDetector.probabilities = timed("trend_s", trend_detector.TrendDetector.probabilities)
glue.MetaCallback._on_update = timed("callback_s", glue.MetaCallback._on_update)
glue.MetaCallback._on_training_start = timed("callback_s", glue.MetaCallback._on_training_start)
OnPolicyAlgorithm.learn = timed("learn_s", OnPolicyAlgorithm.learn)
cfg = build_config(preset, overrides)
start = time.perf_counter()
result = coordinator.train(cfg, preset=preset, checkpoint_root=os.path.join(os.getcwd(), "ckpt"))
print(json.dumps({"status": result.status, "train_s": time.perf_counter() - start, **spent}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=50_000)
    parser.add_argument("--preset", default="regime")
    parser.add_argument("--data", default="synthetic:n_bars=300000,seed=11,signal_ic=0.05,signal_regimes=1:-1:0")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    overrides = {"run.total_timesteps": str(args.timesteps), "run.progress_bar": "false", "data.source": args.data}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "CONVOPT_CACHE_DIR": f"{tmp}/cache"}
        env.pop("MLFLOW_RUN_ID", None)
        out = subprocess.run([sys.executable, "-c", _CHILD, args.preset, json.dumps(overrides)], cwd=tmp, env=env,
                             capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    row = json.loads(out.stdout.strip().splitlines()[-1])
    one_off = row.get("label_s", 0) + row.get("strata_s", 0)
    direct = row["direct_s"]
    summary = {"one_off_s": one_off, "direct_s": direct, "learn_s": row.get("learn_s"),
               "share_of_learn": direct / row["learn_s"] if row.get("learn_s") else None,
               "steps_per_s": args.timesteps / row["learn_s"] if row.get("learn_s") else None}
    print(json.dumps({**row, **summary}, indent=1))
    write_result({"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info(),
                  "run": row, "summary": summary}, args.out)


if __name__ == "__main__":
    main()
