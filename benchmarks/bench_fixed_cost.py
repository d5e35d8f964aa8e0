"""Benchmark: the fixed cost of a standalone run, from whole-process wall times at two budgets.

    fixed cost = T60 - (T120 - T60)

where T60 and T120 are the wall times of the whole process ``python -m convopt_mlflow.cli train
--preset P --data <planted market> --total-timesteps 60000|120000 --quiet`` (interpreter start,
imports, data, set-up, learning, backtests, dashboards, model logging, run description and the
console summary: everything a user waits for). What 60k extra steps add is learning (plus the
in-training evaluations and checkpoints that come with it), so what is left at 60k once one such
increment is taken off is what a run pays whatever its budget.

Arms: ``baseline`` and ``full`` as one model (``ensemble_size=1``), each at 60k and 120k steps.
Every run is its own process, in its own temp directory (checkpoints, artifacts), against one
sqlite MLflow store and one cache folder (``CONVOPT_CACHE_DIR``) per code version, created before
the rounds: an existing store and a market seen before, as a user has after their first run.
Creating and migrating a fresh store is timed once, separately (``fresh_store_s``), and so is an
untimed first ``full`` run of 2,048 steps per version (``first_full_run_2048_steps``: it labels
the train split's regimes, which later runs on the same market restore from the cache). Rounds are interleaved: each round runs every (arm, budget) once, and the
order is reversed every other round.

With ``--before PATH`` the same rounds also run the code at PATH (a checkout of an older commit's
``convopt_mlflow``, put first on PYTHONPATH), interleaved with the current code run by run.

    python benchmarks/bench_fixed_cost.py --rounds 2 --before /tmp/convopt-before \\
        --out benchmarks/results/fixed_cost.json

Goal (issue 20, DESIGN.md budgets): fixed cost <= 5 s for baseline and <= 7 s for full as one model.
"""
from __future__ import annotations

import argparse
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

REPO = Path(__file__).resolve().parent.parent
DATA = "synthetic:n_bars=300000,seed=11,signal_ic=0.05"
ARMS = {"baseline": ("baseline", []), "full": ("full", []),  # `full` is the counterfactual preset, one model
        "full-1": ("everything", ["ensemble_size=1"])}  # every component (the old full)
BUDGETS = (60_000, 120_000)
GOALS = {"baseline": 5.0, "full": 7.0, "full-1": 7.0}


def _env(code: Path, store: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    env.pop("MLFLOW_RUN_ID", None)
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    return env


def make_store(code: Path, folder: Path) -> float:
    """Create (and migrate) the sqlite store a version's runs share; return the seconds it took."""
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from mlflow import MlflowClient; MlflowClient().search_experiments()"],
                   env=_env(code, folder / "mlflow.db"), cwd=folder, check=True, capture_output=True)
    return time.perf_counter() - t0


def run_once(code: Path, store_dir: Path, arm: str, steps: int) -> dict:
    preset, extra = ARMS[arm]
    work = Path(tempfile.mkdtemp(prefix="fixed-cost-", dir=store_dir))
    env = _env(code, store_dir / "mlflow.db")
    env["CONVOPT_CHECKPOINT_ROOT"] = str(work / "checkpoints")
    env["CONVOPT_CACHE_DIR"] = str(store_dir / "cache")  # one project's cache, as a user's runs share
    cmd = [sys.executable, "-m", "convopt_mlflow.cli", "train", "--preset", preset, "--data", DATA,
           "--total-timesteps", str(steps), "--quiet", *[a for kv in extra for a in ("--set", kv)]]
    load = os.getloadavg()[0]
    loadavg = Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else ""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stderr[-3000:]}")
    cpu = (after.ru_utime - used.ru_utime) + (after.ru_stime - used.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "loadavg_1min_before": load, "loadavg": loadavg}


def fixed_cost(t60: float, t120: float) -> float:
    return t60 - (t120 - t60)


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": values}


def summarize(rounds: list[dict], version: str) -> dict:
    out = {}
    for arm in rounds[0][version]:
        per_round = [fixed_cost(r[version][arm]["60000"]["wall_s"], r[version][arm]["120000"]["wall_s"])
                     for r in rounds]
        t60 = [r[version][arm]["60000"]["wall_s"] for r in rounds]
        t120 = [r[version][arm]["120000"]["wall_s"] for r in rounds]
        out[arm] = {"fixed_cost_s": {"median": statistics.median(per_round), "min": min(per_round),
                                     "max": max(per_round), "rounds": per_round},
                    "learn_per_60k_s": statistics.median([b - a for a, b in zip(t60, t120)]),
                    "t60_s": statistics.median(t60), "t120_s": statistics.median(t120),
                    # the same formula on the process's CPU seconds (user + sys): what the load inflates least
                    "fixed_cost_cpu_s": _spread([fixed_cost(r[version][arm]["60000"].get("cpu_s", float("nan")),
                                                            r[version][arm]["120000"].get("cpu_s", float("nan")))
                                                 for r in rounds]),
                    "goal_s": GOALS[arm], "goal_met": statistics.median(per_round) <= GOALS[arm]}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--before", type=Path, default=None,
                        help="a folder holding an older convopt_mlflow/ to run interleaved with this one")
    parser.add_argument("--arms", default="baseline,full-1",
                        help=f"comma-separated, of {', '.join(ARMS)} (full: the `full` preset as it is now)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        parser.error(f"unknown --arms {unknown}; choose from {', '.join(ARMS)}")
    versions = {"after": REPO}
    if args.before:
        versions["before"] = args.before.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="bench-fixed-cost-"))
    fresh = {name: make_store(code, tmp / name) for name, code in versions.items()}
    # untimed: a first run per version on this market (fills the label cache where the code keeps one,
    # and the OS file cache for the imports of both versions alike); its time is reported
    warmup = {name: run_once(code, tmp / name, "full-1", 2048) for name, code in versions.items()}
    load_start = list(os.getloadavg())
    jobs = [(v, arm, steps) for arm in arms for steps in BUDGETS for v in versions]
    rounds = []
    for i in range(args.rounds):
        order = jobs if i % 2 == 0 else jobs[::-1]
        row: dict = {v: {arm: {} for arm in arms} for v in versions}
        for version, arm, steps in order:
            r = row[version][arm][str(steps)] = run_once(versions[version], tmp / version, arm, steps)
            print(f"round {i + 1} {version:<6} {arm:<8} {steps:>6} steps: {r['wall_s']:.2f} s "
                  f"(load {r['loadavg_1min_before']:.1f})", flush=True)
        rounds.append(row)
    summary = {v: summarize(rounds, v) for v in versions}
    for version, per_arm in summary.items():
        for arm, s in per_arm.items():
            fc = s["fixed_cost_s"]
            print(f"{version:<6} {arm:<8} fixed cost {fc['median']:.2f} s [{fc['min']:.2f}, {fc['max']:.2f}] "
                  f"(goal <= {s['goal_s']:.0f} s); learning {s['learn_per_60k_s']:.2f} s per 60k steps")
    doc = {"benchmark": "bench_fixed_cost", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
           "data": DATA, "budgets": list(BUDGETS), "rounds_n": args.rounds,
           "versions": {k: str(v) for k, v in versions.items()}, "fresh_store_s": fresh,
           "first_full_run_2048_steps": warmup,
           "machine": {**machine_info(), "loadavg_at_start": load_start, "loadavg_at_end": list(os.getloadavg())},
           "rounds": rounds, "summary": summary}
    write_result(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
