"""Benchmark: A/B study throughput with 1 and 2 worker processes on one PostgreSQL study,
and the A/B bookkeeping as a share of trial time (budget: <= 1%).

For each worker count, a fresh study (arms ``baseline,lr`` x ``--seeds`` seeds, every trial
``--steps`` env steps of a tiny PPO) runs through ``run_ab_test`` exactly as ``convopt ab-test
--workers K --storage postgresql://...`` does, against a fresh temporary sqlite MLflow store.

Per trial (from the stores, after the study):
- ``trial``: Optuna's ``datetime_start`` -> ``datetime_complete`` (the objective);
- ``train``: the MLflow child run's ``start_time`` -> ``end_time``: the ``convopt train``-equivalent
  run with its own tracking (budgeted separately, <= 3%), including the child run's creation;
- ``in-trial bookkeeping`` = trial - train: the duplicate-cell check, user attrs, the secondary
  metrics (eval AUC, the test backtest for ``ab/test_pnl.json``) and their logging.
Per worker: ``between-trial`` = its first trial's start -> last trial's end, minus its trials:
Optuna ask/tell, the ledger reads, stale-trial checks, waits.
Per study: ``setup`` (validation, study, parent run, worker spawn up to the first trial) and
``report`` (last trial's end -> ``run_ab_test`` returned: reading the trials back, statistics,
report artifacts).

Bookkeeping share = (in-trial + between-trial bookkeeping) / worker time in trials and
between them; setup and report are fixed costs per study, reported in seconds. Timings on a
shared 2-core machine are noisy: run it when the machine is quiet, and read the seconds per
trial as well as the share (the share shrinks as the per-trial budget grows).

    CONVOPT_TEST_POSTGRES_URL=postgresql://user@host/db PGPASSWORD=... \
    python benchmarks/bench_workers.py [--seeds 4] [--steps 1024] [--workers 1,2] [--out results/workers.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

TINY = ("env.n_envs=4,ppo.n_steps=64,ppo.batch_size=64,ppo.n_epochs=2,ppo.net_arch=16,env.window=8,"
        "env.episode_length=64,run.eval_freq=512,run.checkpoint_freq=512,run.progress_bar=false,monitoring_window=4")
DATA = "synthetic:n_bars=3000,seed=1,signal_ic=0.1"


def measure(url: str, workers: int, seeds: int, steps: int) -> dict:
    import optuna
    from mlflow.tracking import MlflowClient

    from convopt_mlflow.experiments.session import run_ab_test, spec_from_args
    from convopt_mlflow.experiments.storage import get_storage

    name = f"bench-workers-{workers}-{uuid.uuid4().hex[:6]}"
    spec = spec_from_args("baseline,lr", seeds, total_timesteps=steps, data=DATA,
                          overrides=dict(kv.split("=") for kv in TINY.split(",")))
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.environ["CONVOPT_CHECKPOINT_ROOT"] = f"{tmp}/ckpt"
        MlflowClient().search_experiments()  # create the store before timing
        start = time.time()
        result = run_ab_test(spec, study_name=name, storage=url, workers=workers, console=False,
                             registry_name=None, heartbeat_interval=10, checkpoint_root=f"{tmp}/ckpt")
        end = time.time()
        client = MlflowClient()
        study = optuna.load_study(study_name=name, storage=get_storage(url))
        rows = []
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
            run = client.get_run(t.user_attrs["mlflow_run_id"]).info
            rows.append({"worker": t.user_attrs.get("convopt.worker"), "start": t.datetime_start.timestamp(),
                         "end": t.datetime_complete.timestamp(),
                         "train_s": (run.end_time - run.start_time) / 1000.0})
        other = len(study.trials) - len(rows)
        optuna.delete_study(study_name=name, storage=get_storage(url))
    trial_s = [r["end"] - r["start"] for r in rows]
    in_trial = [t - r["train_s"] for t, r in zip(trial_s, rows)]
    between = 0.0
    for worker in {r["worker"] for r in rows}:
        mine = sorted((r for r in rows if r["worker"] == worker), key=lambda r: r["start"])
        span = mine[-1]["end"] - mine[0]["start"]
        between += span - sum(r["end"] - r["start"] for r in mine)
    worker_time = sum(trial_s) + between
    first, last = min(r["start"] for r in rows), max(r["end"] for r in rows)
    wall = end - start
    return {"workers": workers, "trials": len(rows), "other_trials": other, "wall_s": round(wall, 2),
            "trials_per_min": round(len(rows) / wall * 60.0, 2),
            "trials_per_min_training_phase": round(len(rows) / (last - first) * 60.0, 2),
            "trial_s_median": round(statistics.median(trial_s), 3),
            "train_s_median": round(statistics.median(r["train_s"] for r in rows), 3),
            "in_trial_bookkeeping_s_median": round(statistics.median(in_trial), 3),
            "between_trial_s_total": round(between, 3),
            "bookkeeping_share": round((sum(in_trial) + between) / worker_time, 4),
            "in_trial_share": round(sum(in_trial) / sum(trial_s), 4),
            "setup_s": round(first - start, 2), "report_s": round(end - last, 2),
            "verdict": result.report["verdict"][:200]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    url = os.environ.get("CONVOPT_TEST_POSTGRES_URL") or os.environ.get("CONVOPT_BENCH_POSTGRES_URL")
    if not url:
        print("set CONVOPT_TEST_POSTGRES_URL to a PostgreSQL database (password in PGPASSWORD)", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)
    results = []
    for workers in (int(w) for w in args.workers.split(",")):
        r = measure(url, workers, args.seeds, args.steps)
        results.append(r)
        print(f"workers={workers}: {r['trials']} trials in {r['wall_s']} s = {r['trials_per_min']} trials/min "
              f"({r['trials_per_min_training_phase']} in the training phase); trial {r['trial_s_median']} s, "
              f"train {r['train_s_median']} s, in-trial bookkeeping {r['in_trial_bookkeeping_s_median']} s "
              f"(medians); bookkeeping share {r['bookkeeping_share']:.1%}; setup {r['setup_s']} s, "
              f"report {r['report_s']} s", flush=True)
    doc = {"benchmark": "bench_workers", "command": " ".join(["python", "benchmarks/bench_workers.py", *(argv or sys.argv[1:])]),
           "seeds": args.seeds, "steps": args.steps, "arms": "baseline,lr", "data": DATA, "config": TINY,
           "machine": machine_info(), "load_avg_at_end": os.getloadavg(), "results": results}
    write_result(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
