"""Benchmark: what the regime-aware parts cost, as a share of learn time, in one stratified-meta run.

One ``coordinator.train`` run of ``baseline`` with the stratified meta controller and the regime features
(``STRATIFIED``: what the ``regime`` preset was before it became the context-features direct learner) in a fresh process, against a temporary sqlite store
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
(setup, learning, finalization with backtests). Every timer is read twice: wall time (``*_s``) and the
process's CPU time (``*_cpu_s``, ``time.process_time``: all its threads, so torch's intra-op threads
count in ``learn_cpu_s``). The summary gives the share both ways; on a shared machine the CPU share
is the steadier one (wall time of either side stretches with the other processes). The machine is
shared: timings are upper bounds. ``--profile PATH`` writes cProfile's top functions of the
regime-aware parts (not of learning).

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
import cProfile, io, json, os, pstats, sys, time
from convopt_mlflow.config import build_config
from convopt_mlflow.components import trend_detector
from convopt_mlflow.training import meta as glue
import convopt_mlflow.training.coordinator as coordinator
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
preset, overrides, profile_to = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
spent, stack = {"direct_s": 0.0, "direct_cpu_s": 0.0}, []
profiler = cProfile.Profile() if profile_to else None
def timed(name, fn):
    cpu_name = name[:-2] + "_cpu_s"
    def wrapper(*args, **kwargs):
        start, start_cpu = time.perf_counter(), time.process_time()
        top = name != "learn_s" and not stack  # direct_s: regime-aware time, nested calls counted once
        if name != "learn_s":
            stack.append(name)
            if top and profiler:
                profiler.enable()
        try:
            return fn(*args, **kwargs)
        finally:
            if name != "learn_s":
                stack.pop()
                if top and profiler:
                    profiler.disable()
            took, took_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            spent[name] = spent.get(name, 0.0) + took
            spent[cpu_name] = spent.get(cpu_name, 0.0) + took_cpu
            if top:
                spent["direct_s"] += took
                spent["direct_cpu_s"] += took_cpu
    return wrapper
coordinator.label_train_split = timed("label_s", coordinator.label_train_split)
coordinator.build_strata = timed("strata_s", coordinator.build_strata)
glue.stratum_scores = timed("scores_s", glue.stratum_scores)
trend_detector.TrendDetector.probabilities = timed("trend_s", trend_detector.TrendDetector.probabilities)
glue.MetaCallback._on_update = timed("callback_s", glue.MetaCallback._on_update)
glue.MetaCallback._on_training_start = timed("callback_s", glue.MetaCallback._on_training_start)
OnPolicyAlgorithm.learn = timed("learn_s", OnPolicyAlgorithm.learn)
cfg = build_config(preset, overrides)
start, start_cpu = time.perf_counter(), time.process_time()
result = coordinator.train(cfg, preset=preset, checkpoint_root=os.path.join(os.getcwd(), "ckpt"))
took, took_cpu = time.perf_counter() - start, time.process_time() - start_cpu
if profiler:
    with open(profile_to, "w") as out:
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
print(json.dumps({"status": result.status, "train_s": took, "train_cpu_s": took_cpu, **spent}))
"""


# The stratified meta controller with the regime features: what the `regime` preset was until the
# context-features direct learner replaced it (that preset has no controller, BOCPD or trend detector).
STRATIFIED = {"base_learning_rate": "3e-5", "scheduler_enabled": "false",
              "monitor.enabled": "false", "ppo.ent_coef": "0.005", "env.regime_features": "true",
              "meta_enabled": "true", "meta_stratified": "true", "adaptation_frequency": "20000",
              "run.eval_freq": "20000"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=50_000)
    parser.add_argument("--preset", default="baseline",
                        help="the preset under the --stratified overrides (default: the stratified meta controller)")
    parser.add_argument("--no-stratified", dest="stratified", action="store_false",
                        help="run --preset as it is, without the stratified meta controller's overrides")
    parser.add_argument("--data", default="synthetic:n_bars=300000,seed=11,signal_ic=0.05,signal_regimes=1:-1:0")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--profile", type=Path, default=None,
                        help="write cProfile's top functions of the regime-aware parts (not learn) here")
    args = parser.parse_args()
    overrides = {"run.total_timesteps": str(args.timesteps), "run.progress_bar": "false", "data.source": args.data,
                 **(STRATIFIED if args.stratified else {})}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "CONVOPT_CACHE_DIR": f"{tmp}/cache"}
        env.pop("MLFLOW_RUN_ID", None)
        profile_to = str(args.profile.resolve()) if args.profile else ""
        out = subprocess.run([sys.executable, "-c", _CHILD, args.preset, json.dumps(overrides), profile_to], cwd=tmp,
                             env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    row = json.loads(out.stdout.strip().splitlines()[-1])
    one_off = row.get("label_s", 0) + row.get("strata_s", 0)
    direct = row["direct_s"]
    learn, learn_cpu = row.get("learn_s"), row.get("learn_cpu_s")
    summary = {"one_off_s": one_off, "direct_s": direct, "learn_s": learn,
               "share_of_learn": direct / learn if learn else None,
               "one_off_cpu_s": row.get("label_cpu_s", 0) + row.get("strata_cpu_s", 0),
               "direct_cpu_s": row["direct_cpu_s"], "learn_cpu_s": learn_cpu,
               "share_of_learn_cpu": row["direct_cpu_s"] / learn_cpu if learn_cpu else None,
               "steps_per_s": args.timesteps / learn if learn else None}
    print(json.dumps({**row, **summary}, indent=1))
    write_result({"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info(),
                  "run": row, "summary": summary}, args.out)


if __name__ == "__main__":
    main()
