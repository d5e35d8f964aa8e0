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
Per study: ``setup`` (validation, study, parent run, worker spawn up to the first trial),
``report`` (last trial's end -> ``run_ab_test`` returned: the workers' exit, reading the trials
back, statistics, report artifacts) and ``straggler_tail`` (the first worker's last trial end ->
the study's last trial end: one worker idles while the other finishes).

``trials_per_min`` is the trial count over the whole ``run_ab_test`` wall time, setup and report
included (what a user waits for); ``trials_per_min_training_phase`` counts from the first trial's
start to the last one's end. The default 2 arms x ``--seeds`` is an even trial count, so 2 workers
end together up to the straggler tail (at most one trial).

Bookkeeping share = (in-trial + between-trial bookkeeping) / worker time in trials and
between them; setup and report are fixed costs per study, reported in seconds. Timings on a
shared 2-core machine are noisy: run it when the machine is quiet, and read the seconds per
trial as well as the share (the share shrinks as the per-trial budget grows).

    CONVOPT_TEST_POSTGRES_URL=postgresql://user@host/db PGPASSWORD=... \
    python benchmarks/bench_workers.py [--seeds 4] [--steps 1024] [--workers 1,2] [--out results/workers.json]

MLflow store (``--stores``, a comma list, each measured in every round):

- ``sqlite``: a fresh temporary sqlite file per measurement (the default: what one machine uses);
- ``postgresql``: one fresh database on the same PostgreSQL server (``CREATE DATABASE``; the role
  needs CREATEDB), dropped at the end;
- ``server``: ``mlflow server`` on 127.0.0.1 (one uvicorn worker) backed by such a database, with
  a local artifact root: the scale-out set-up of N machines, here with the network on loopback.

``--rounds R`` repeats every (store, worker count) R times, interleaved: one round measures each
store with each worker count once, and every other round reverses the order. ``/proc/loadavg``
is recorded before and after every measurement (the machine is shared).
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


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _psycopg2(url: str) -> str:
    """SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3, which is not installed."""
    return url.replace("postgresql://", "postgresql+psycopg2://", 1) if url.startswith("postgresql://") else url


def _create_database(url: str, name: str) -> str:
    """A fresh PostgreSQL database ``name`` next to ``url``'s; returns its (psycopg2) URL."""
    import sqlalchemy

    url = _psycopg2(url)
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


def _drop_database(url: str, name: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(_psycopg2(url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


class MlflowServer:
    """``mlflow server`` on a free loopback port, backed by ``backend`` (one uvicorn worker)."""

    def __init__(self, backend: str, artifacts: str):
        import socket
        import subprocess
        import urllib.request

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.uri = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                                      "--default-artifact-root", artifacts, "--host", "127.0.0.1",
                                      "--port", str(port), "--workers", "1"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.uri + "/health", timeout=2)
                return
            except Exception:  # noqa: BLE001 - not up yet
                if self.proc.poll() is not None:
                    break
                time.sleep(1)
        self.close()
        raise SystemExit("mlflow server did not start")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001
            self.proc.kill()


def measure(url: str, workers: int, seeds: int, steps: int, tracking_uri: str | None = None) -> dict:
    import optuna
    from mlflow.tracking import MlflowClient

    from convopt_mlflow.experiments.session import run_ab_test, spec_from_args
    from convopt_mlflow.experiments.storage import get_storage

    name = f"bench-workers-{workers}-{uuid.uuid4().hex[:6]}"
    spec = spec_from_args("baseline,lr", seeds, total_timesteps=steps, data=DATA,
                          overrides=dict(kv.split("=") for kv in TINY.split(",")))
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri or f"sqlite:///{tmp}/mlflow.db"
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
    # the straggler: from the first worker's last trial end to the study's last trial end, one worker idles
    tail = last - min(max(r["end"] for r in rows if r["worker"] == w) for w in {r["worker"] for r in rows})
    wall = end - start
    return {"workers": workers, "store": (tracking_uri or "sqlite").split(":")[0], "trials": len(rows), "other_trials": other, "wall_s": round(wall, 2),
            "trials_per_min": round(len(rows) / wall * 60.0, 2),
            "trials_per_min_training_phase": round(len(rows) / (last - first) * 60.0, 2),
            "trial_s_median": round(statistics.median(trial_s), 3),
            "train_s_median": round(statistics.median(r["train_s"] for r in rows), 3),
            "in_trial_bookkeeping_s_median": round(statistics.median(in_trial), 3),
            "between_trial_s_total": round(between, 3),
            "bookkeeping_share": round((sum(in_trial) + between) / worker_time, 4),
            "in_trial_share": round(sum(in_trial) / sum(trial_s), 4),
            "setup_s": round(first - start, 2), "report_s": round(end - last, 2), "straggler_tail_s": round(tail, 2),
            "trials_per_worker": sorted(sum(r["worker"] == w for r in rows) for w in {r["worker"] for r in rows}),
            "verdict": result.report["verdict"][:200]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--stores", default="sqlite", help="comma list of sqlite, postgresql, server")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    url = os.environ.get("CONVOPT_TEST_POSTGRES_URL") or os.environ.get("CONVOPT_BENCH_POSTGRES_URL")
    if not url:
        print("set CONVOPT_TEST_POSTGRES_URL to a PostgreSQL database (password in PGPASSWORD)", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    counts = [int(w) for w in args.workers.split(",")]
    uris, cleanup = {"sqlite": None}, []
    tmp = tempfile.mkdtemp(prefix="bench-workers-stores-")
    for kind in stores:
        if kind in ("postgresql", "server") and kind not in uris:
            name = f"bench_mlflow_{kind}_{uuid.uuid4().hex[:8]}"
            backend = _create_database(url, name)
            cleanup.append(lambda name=name: _drop_database(url, name))
            if kind == "server":
                server = MlflowServer(backend, f"{tmp}/artifacts")
                cleanup.insert(0, server.close)
                uris[kind] = server.uri
            else:
                uris[kind] = backend
            os.environ["MLFLOW_TRACKING_URI"] = uris[kind]
            from mlflow.tracking import MlflowClient

            MlflowClient(uris[kind]).search_experiments()  # schema created before timing
    results = []
    order = [(kind, w) for kind in stores for w in counts]
    try:
        for rnd in range(args.rounds):
            for kind, workers in (order if rnd % 2 == 0 else order[::-1]):
                before = loadavg()
                r = measure(url, workers, args.seeds, args.steps, tracking_uri=uris[kind])
                r.update({"round": rnd, "store": kind, "loadavg_before": before, "loadavg_after": loadavg()})
                results.append(r)
                _print(r)
    finally:
        for step in cleanup:
            step()
    summary = {}
    for kind in stores:
        by = {w: [r["trials_per_min"] for r in results if r["store"] == kind and r["workers"] == w] for w in counts}
        if len(counts) == 2 and all(by.values()):
            ratios = [b / a for a, b in zip(by[counts[0]], by[counts[1]])]  # round by round
            summary[kind] = {f"trials_per_min_{w}": v for w, v in by.items()}
            summary[kind].update({"ratio_per_round": [round(x, 3) for x in ratios],
                                  "ratio_min": round(min(ratios), 3), "ratio_median": round(statistics.median(ratios), 3),
                                  "ratio_max": round(max(ratios), 3), "goal": 1.7,
                                  "goal_met": statistics.median(ratios) >= 1.7})
    doc = {"benchmark": "bench_workers", "command": " ".join(["python", "benchmarks/bench_workers.py", *(argv or sys.argv[1:])]),
           "seeds": args.seeds, "steps": args.steps, "arms": "baseline,lr", "data": DATA, "config": TINY,
           "rounds": args.rounds, "stores": stores,
           "machine": machine_info(), "load_avg_at_end": os.getloadavg(), "results": results, "summary": summary}
    write_result(doc, args.out)
    return 0


def _print(r: dict) -> None:
    print(f"[{r['store']}] workers={r['workers']}: {r['trials']} trials in {r['wall_s']} s = "
          f"{r['trials_per_min']} trials/min ("
          f"{r['trials_per_min_training_phase']} in the training phase); trial {r['trial_s_median']} s, "
          f"train {r['train_s_median']} s, in-trial bookkeeping {r['in_trial_bookkeeping_s_median']} s "
          f"(medians); bookkeeping share {r['bookkeeping_share']:.1%}; setup {r['setup_s']} s, "
          f"report {r['report_s']} s, tail {r['straggler_tail_s']} s, per worker {r['trials_per_worker']}; load {r['loadavg_before']} -> {r['loadavg_after']}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
