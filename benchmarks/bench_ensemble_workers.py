"""An ensemble of 3 members on 2 workers against one member's run, wall time, before and after.

Each measurement is one whole ``python`` process (imports included) started with
``PYTHONPATH`` pointing at one checkout of the code, against its own sqlite MLflow store created
(and migrated) before the clock starts, as a user's existing store is:

- ``ensemble``: ``train_ensemble_run`` of the ``ensemble`` preset (3 members, ``ensemble.workers=2``),
  its bars read and its workers started first as ``convopt train`` does (``data_source.read_bars``,
  ``member_pool.start_members``, where the code has them);
- ``single``: one member's run, ``coordinator.train`` with member 0's config (what one member
  trains: ``ensemble_size=1``, one torch thread) as a standalone run.

The goal (issue 20): ensemble wall <= 1.7 x single wall. ``--code label=PATH`` may be given
several times (e.g. ``old=/tmp/old48 new=.``); ``--rounds`` rounds, interleaved: each round
measures every checkout's single and ensemble, the order reversed every other round; the market's
oracle cache is warmed once per checkout first (untimed), and ``/proc/loadavg`` is recorded with
every measurement. The goal is judged on the median ratio; min and max are reported with it.

    python benchmarks/bench_ensemble_workers.py --code old=/tmp/old48 --code new=. --steps 20000 \\
        --out benchmarks/results/ensemble_workers.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

DATA = "synthetic:n_bars=300000,seed=11,signal_ic=0.05"
GOAL = 1.7


def _config(data: str, steps: int, seed: int, workers: int = 2):
    from convopt_mlflow.config import build_config

    return build_config("ensemble", {"data.source": data, "run.seed": str(seed), "run.total_timesteps": str(steps),
                                     "run.progress_bar": "false", "ensemble.workers": str(workers),
                                     "ensemble.register": "false"})


def child(kind: str, data: str, steps: int, seed: int, workers: int = 2) -> dict:
    """Runs inside the measured process; returns what it saw."""
    start = time.perf_counter()
    tmp = os.environ.get("BENCH_ENSW_DIR") or tempfile.mkdtemp(prefix=f"bench-ensw-{kind}-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    cfg = _config(data, steps, seed, workers)
    if kind == "ensemble":
        early = {}
        try:  # as `convopt train` does: the bars read, then the workers started before torch, SB3 and MLflow
            from convopt_mlflow.training.data_source import read_bars
            from convopt_mlflow.training.member_pool import start_members
        except ImportError:  # code from before start_members: the ensemble run starts them itself
            pass
        else:
            early["bars"] = read_bars(cfg)
            early["pool"] = start_members(cfg.ensemble_size, cfg.ensemble.workers)
        from convopt_mlflow.training.ensemble import train_ensemble_run

        result = train_ensemble_run(cfg, preset="ensemble", checkpoint_root=f"{tmp}/ckpt", **early)
    else:
        from convopt_mlflow.components.ensemble import EnsembleLearningFramework
        from convopt_mlflow.training.coordinator import train
        from convopt_mlflow.training.ensemble import diversity_config, member_config

        plans = EnsembleLearningFramework(cfg.ensemble_size, diversity_config(cfg), seed=cfg.run.seed,
                                          min_members=cfg.ensemble.min_members).initialize_models()
        result = train(member_config(cfg, plans[0]), preset="ensemble", checkpoint_root=f"{tmp}/ckpt")
    return {"status": result.status, "reason": result.reason, "in_process_wall_s": time.perf_counter() - start,
            "parent_cpu_s": round(time.process_time(), 2)}


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _code_env(path: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(Path(path).resolve())}
    env.setdefault("CONVOPT_CACHE_DIR", str(Path(tempfile.gettempdir()) / "bench-ensw-cache"))
    return env


def warm(path: str, data: str) -> None:
    """Untimed: the market's oracles into the cache folder (code that has one), as after a user's first run."""
    code = ("from convopt_mlflow.config import build_config\nfrom convopt_mlflow.training.setup import load_market\n"
            "from convopt_mlflow.training.evaluate import fit_market_oracle\n"
            f"cfg = build_config('ensemble', {{'data.source': {data!r}}})\nm = load_market(cfg)\nm.oracle_plan\n"
            "fit_market_oracle(m, cost_bps=cfg.env.cost_bps, long_only=cfg.env.long_only)\n")
    subprocess.run([sys.executable, "-c", code], env=_code_env(path), check=True, capture_output=True,
                   cwd=tempfile.gettempdir())


def measure(path: str, kind: str, data: str, steps: int, seed: int, workers: int = 2) -> dict:
    """One whole process; its sqlite store is created (and migrated) before the clock starts,
    as a user's existing store is."""
    folder = tempfile.mkdtemp(prefix=f"bench-ensw-{kind}-")
    env = {**_code_env(path), "BENCH_ENSW_DIR": folder, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}
    subprocess.run([sys.executable, "-c", "from mlflow.tracking import MlflowClient; MlflowClient().search_experiments()"],
                   env=env, check=True, capture_output=True, cwd=folder)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--data", data, "--steps", str(steps), "--seed", str(seed),
           "--workers", str(workers)]
    before = loadavg()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} at {path} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), **seen, "loadavg_before": before, "loadavg_after": loadavg(), "folder": folder}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=("ensemble", "single"))
    ap.add_argument("--code", action="append", default=[], help="label=PATH of a checkout (repeatable)")
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--workers", default="2",
                    help="ensemble.workers values, comma-separated (e.g. 2,3): each round measures every one")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.data, args.steps, args.seed, int(args.workers))))
        return 0
    workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    codes = dict(item.split("=", 1) for item in (args.code or ["new=."]))
    results, load_before = {}, os.getloadavg()
    for label, path in codes.items():
        warm(path, args.data)
    rounds_by = {label: [] for label in codes}
    for rnd in range(args.rounds):  # interleaved: every version in every round, the order reversed every other round
        for label, path in (list(codes.items()) if rnd % 2 == 0 else list(codes.items())[::-1]):
            kinds = ["single", *(f"ensemble_w{w}" for w in workers)]
            kinds = kinds if rnd % 2 == 0 else kinds[::-1]
            seen = {kind: measure(path, kind.partition("_w")[0], args.data, args.steps, args.seed,
                                  int(kind.partition("_w")[2] or 2)) for kind in kinds}
            if len(workers) == 1:  # the result's shape before --workers: "ensemble"
                seen["ensemble"] = seen.pop(f"ensemble_w{workers[0]}")
            ratios = {k: round(v["wall_s"] / seen["single"]["wall_s"], 3) for k, v in seen.items() if k != "single"}
            rounds_by[label].append({**seen, **{f"ratio{k[len('ensemble'):]}": r for k, r in ratios.items()}})
            print(label, json.dumps(rounds_by[label][-1]), flush=True)
    for label, path in codes.items():
        rounds = rounds_by[label]
        results[label] = {"path": path, "rounds": rounds}
        for key in sorted(k for k in rounds[0] if k.startswith("ratio")):
            ratios = [r[key] for r in rounds]
            results[label].update({f"{key}_min": min(ratios), f"{key}_median": statistics.median(ratios),
                                   f"{key}_max": max(ratios), f"{key}_goal_met": statistics.median(ratios) <= GOAL})
    doc = {"benchmark": "ensemble_workers", "goal": f"ensemble of 3 on 2 workers <= {GOAL}x one member's run (wall)",
           "data": args.data, "steps": args.steps, "seed": args.seed, "rounds": args.rounds,
           "measures": "whole-process wall time (imports included), a sqlite MLflow store per process created before "
                           "the clock starts, the market's oracle cache warmed once per code version (untimed)",
           "results": results, "load_avg_1_5_15": {"before": load_before, "after": os.getloadavg()},
           "machine": machine_info()}
    write_result(doc, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
