"""Where an ensemble's (or one member's) wall time goes: a timeline of one whole process.

Runs what ``bench_ensemble_workers.py`` measures (``--kind ensemble`` or ``single``) in this process,
with timing wrappers around the parent's phases and, in each spawned worker, around its imports,
its market, its learning (``model.learn``) and the rest of its member's run. Every event is a line
``wall_time pid label start|end`` appended to ``--events``; the summary printed at the end gives each
phase in seconds after this process started (imports included). Wrappers only time: they call the code
unchanged. ``PYTHONPATH`` picks the checkout, as in the benchmark.

    PYTHONPATH=. python benchmarks/timeline_ensemble.py --kind ensemble --steps 20000 --events /tmp/ens.tl
"""
from __future__ import annotations

import time

T0 = time.time()

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

EVENTS_ENV = "TIMELINE_EVENTS"


def note(label: str, what: str) -> None:
    path = os.environ.get(EVENTS_ENV)
    if path:
        with open(path, "a") as fh:
            fh.write(f"{time.time():.4f} {os.getpid()} {label} {what}\n")


def timed(label: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        note(label, "start")
        try:
            return fn(*args, **kwargs)
        finally:
            note(label, "end")
    return wrapper


def _time_learning() -> None:
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

    from convopt_mlflow.training import coordinator

    if not getattr(OnPolicyAlgorithm.learn, "__wrapped__", None):
        OnPolicyAlgorithm.learn = timed("learn", OnPolicyAlgorithm.learn)
        coordinator.finalize_run = timed("finalize", coordinator.finalize_run)


def timed_warm_worker(*args) -> None:  # args: a lead slot's (code that has lead slots)
    note("worker_imports", "start")
    from convopt_mlflow.training.member_pool import warm_worker

    warm_worker(*args)
    _time_learning()
    note("worker_imports", "end")
    note(f"cpu={time.process_time():.2f}", "mark")  # this process's CPU so far (not in the summary)


def timed_train_member(tasks, plan):
    try:  # the worker side's own module, where the code has one
        from convopt_mlflow.training import ensemble_member as worker_side
    except ImportError:
        from convopt_mlflow.training import ensemble as worker_side

    _time_learning()
    if not getattr(worker_side.member_market, "__wrapped__", None):
        worker_side.member_market = timed("member_market", worker_side.member_market)
    note(f"member{plan.index}", "start")
    try:
        return worker_side.train_member(tasks, plan)
    finally:
        note(f"member{plan.index}", "end")
        note(f"cpu={time.process_time():.2f}", "mark")


def _patch_parent() -> None:
    from convopt_mlflow import tracking
    from convopt_mlflow.training import ensemble, ensemble_eval, member_pool

    for name in ("load_market", "_log_inputs", "_prepare", "_build", "ensemble_report", "_log_equity", "_log_model",
                 "describe", "_end_lost_members", "_before_build"):
        if hasattr(ensemble, name):
            setattr(ensemble, name, timed(name, getattr(ensemble, name)))
    for name in ("member_tables",):
        if hasattr(ensemble_eval, name):
            setattr(ensemble_eval, name, timed(name, getattr(ensemble_eval, name)))
    tracking.open_run = timed("open_run", tracking.open_run)
    real = member_pool.ParallelMembers

    class Timed(real):
        def __init__(self, workers, initializer=None, on_outcome=None, **kw):
            super().__init__(workers, initializer=timed_warm_worker, on_outcome=on_outcome, **kw)

        def start(self):
            note("pool_start", "start")
            try:
                return super().start()
            finally:
                note("pool_start", "end")

    ensemble.ParallelMembers = Timed
    build = ensemble._build

    def modules_build(*args, **kwargs):  # which modules the build imports first: --modules
        before = set(sys.modules)
        profile = None
        if os.environ.get("TIMELINE_PROFILE"):  # a cProfile of the build (CPU clock): --profile
            import cProfile

            profile = cProfile.Profile(time.process_time)
            profile.enable()
        try:
            return build(*args, **kwargs)
        finally:
            if profile is not None:
                profile.disable()
                profile.dump_stats(os.environ["TIMELINE_PROFILE"])
            if os.environ.get("TIMELINE_MODULES"):
                Path(os.environ["TIMELINE_MODULES"]).write_text("\n".join(sorted(set(sys.modules) - before)))

    ensemble._build = modules_build
    ensemble.train_member = timed_train_member
    from convopt_mlflow.components.ensemble import EnsembleLearningFramework

    EnsembleLearningFramework.train_ensemble = timed("train_ensemble", EnsembleLearningFramework.train_ensemble)


def run(kind: str, data: str, steps: int, seed: int, workers: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    note("imports", "start")
    from bench_ensemble_workers import _config

    cfg = _config(data, steps, seed, workers)
    tmp = tempfile.mkdtemp(prefix=f"timeline-{kind}-")
    if kind == "ensemble":
        from convopt_mlflow.training import member_pool

        early = {}
        if hasattr(member_pool, "start_members"):  # as `convopt train` (and the benchmark) start them
            from convopt_mlflow.training.data_source import read_bars

            note("read_bars", "start")
            early["bars"] = read_bars(cfg)
            note("read_bars", "end")
            note("pool_start", "start")
            workers = member_pool.member_workers(cfg.ensemble_size, cfg.ensemble.workers)
            lead = {"lead_slots": member_pool.lead_slots(cfg.ensemble_size, workers)} \
                if hasattr(member_pool, "lead_slots") else {}
            early["pool"] = member_pool.ParallelMembers(workers, initializer=timed_warm_worker, **lead).start()
            note("pool_start", "end")
        from convopt_mlflow.training.ensemble import train_ensemble_run

        _patch_parent()
        note("imports", "end")
        note("run", "start")
        result = train_ensemble_run(cfg, preset="ensemble", checkpoint_root=f"{tmp}/ckpt", **early)
    else:
        from convopt_mlflow.components.ensemble import EnsembleLearningFramework
        from convopt_mlflow.training import coordinator
        from convopt_mlflow.training.ensemble import diversity_config, member_config

        _time_learning()
        coordinator.load_market = timed("load_market", coordinator.load_market)
        note("imports", "end")
        note("run", "start")
        plans = EnsembleLearningFramework(cfg.ensemble_size, diversity_config(cfg), seed=cfg.run.seed,
                                          min_members=cfg.ensemble.min_members).initialize_models()
        result = coordinator.train(member_config(cfg, plans[0]), preset="ensemble", checkpoint_root=f"{tmp}/ckpt")
    note("run", "end")
    note(f"cpu={time.process_time():.2f}", "mark")
    return {"status": result.status, "reason": result.reason}


def summary(path: str, t0: float) -> list[str]:
    opened: dict[tuple[str, str], float] = {}
    rows = []
    for line in Path(path).read_text().splitlines():
        t, pid, label, what = line.split()
        key = (pid, label)
        if what == "start":
            opened[key] = float(t)
        elif key in opened:
            start = opened.pop(key)
            rows.append((start - t0, float(t) - t0, pid, label))
    rows.sort()
    return [f"{a:7.2f} {b:7.2f} {b - a:6.2f}  {pid:>7} {label}" for a, b, pid, label in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=("ensemble", "single"), default="ensemble")
    ap.add_argument("--data", default="synthetic:n_bars=300000,seed=11,signal_ic=0.05")
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--events", required=True)
    args = ap.parse_args()
    os.environ[EVENTS_ENV] = str(Path(args.events).resolve())
    Path(args.events).write_text("")
    import atexit

    atexit.register(note, "exit", "end")  # registered first: runs after every other atexit hook
    out = run(args.kind, args.data, args.steps, args.seed, args.workers)
    print(json.dumps(out))
    print("  start     end    dur      pid phase (s after process start)")
    print("\n".join(summary(args.events, T0)), flush=True)
    note("exit", "start")  # to the last atexit hook: joins of threads and workers, MLflow's hooks
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
