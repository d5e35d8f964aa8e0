"""Benchmark: seeds per hour of ``convopt ab-test --arms baseline,full --total-timesteps 200000``,
before and after the fixed-cost work, and the MDE one hour of seeds buys.

What runs: for each code version (``--code label=PATH``, a checkout put first on PYTHONPATH) and
each per-trial budget B in ``--budgets`` (default 60000,120000), one whole ``python -m
convopt_mlflow.cli ab-test --arms baseline,full --seeds S --total-timesteps B --no-register``
process with one worker (the default; sqlite Optuna storage allows one), each in a fresh folder
with a fresh sqlite MLflow store and Optuna study, one cache folder per code version. Before the
timed studies each version makes one untimed 2,048-step ``full`` run on the market (a user's
first run on it fills the regime-label cache; the old code has none). Studies are interleaved:
each round runs every (version, budget) once, the order reversed every other round.

Read back from the stores, per trial: Optuna's ``datetime_start`` -> ``datetime_complete`` (the
trial in the worker) and its MLflow run's start -> end (the training run inside it).

Derived, per (version, arm), with the medians over seeds:

- in-worker fixed cost of a trial: ``t(B1) - (t(B2) - t(B1))`` with B2 = 2 B1 (issue 20: at
  most 1.5 s);
- learning per step: ``(t(B2) - t(B1)) / (B2 - B1)``;
- bookkeeping share at B1: ``(trial - run) / trial`` (issue 20: at most 2% at 60k steps);
- the study's own overhead: process wall minus the sum of its trials (start-up, imports,
  parent run, report), paid once per study.

Seeds per hour at ``--target`` steps (200,000) is then **extrapolated**, stated exactly: one seed
is one trial of each arm, ``t_arm(target) = fixed_arm + learn_per_step_arm * target``, and an hour
holds ``(3600 - study overhead) / sum_arm t_arm(target)`` seeds. ``--direct`` also runs the study at
``--target`` itself (one round, ``--direct-seeds`` seeds) for the current code, to check the
extrapolation against a measured trial time. The MDE is the paired t test's minimum detectable
``d_z`` at alpha 0.05 and power 0.8 (``convopt_mlflow.stats.minimum_detectable_effect(n,
paired=True)``) for the whole number of seeds an hour holds.

The machine is shared: ``/proc/loadavg`` is recorded with every study; read the spreads.

    git worktree add /tmp/before aaf904b
    python benchmarks/bench_seeds_per_hour.py --code before=/tmp/before --code after=. --seeds 2 \\
        --out benchmarks/results/seeds_per_hour.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ARMS = "baseline,full"


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _env(code: Path, folder: Path, cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
    env["CONVOPT_CACHE_DIR"] = str(cache)
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        env.pop(key, None)
    return env


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode not in (0,):
        raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stderr[-3000:]}")
    return wall


def _store(env: dict[str, str], cwd: Path) -> None:
    """Create and migrate the study's fresh MLflow store before the clock starts."""
    subprocess.run([sys.executable, "-c", "from mlflow.tracking import MlflowClient; MlflowClient().search_experiments()"],
                   env=env, cwd=cwd, check=True, capture_output=True)


def warm(code: Path, cache: Path, data: str | None) -> float:
    folder = Path(tempfile.mkdtemp(prefix="bench-sph-warm-"))
    env = _env(code, folder, cache)
    _store(env, folder)
    cmd = [sys.executable, "-m", "convopt_mlflow.cli", "train", "--preset", "full", "--set", "ensemble_size=1",
           "--total-timesteps", "2048", "--quiet", *(["--data", data] if data else [])]
    return _run(cmd, env, folder)


def study(code: Path, cache: Path, budget: int, seeds: int, data: str | None) -> dict:
    """One whole ab-test process; its wall time and, per trial, (arm, seed, trial s, run s)."""
    folder = Path(tempfile.mkdtemp(prefix=f"bench-sph-{budget}-"))
    env = _env(code, folder, cache)
    _store(env, folder)
    cmd = [sys.executable, "-m", "convopt_mlflow.cli", "ab-test", "--arms", ARMS, "--seeds", str(seeds),
           "--total-timesteps", str(budget), "--no-register", "--storage", f"sqlite:///{folder}/optuna.db",
           "--study", "sph", *(["--data", data] if data else [])]
    before = loadavg()
    wall = _run(cmd, env, folder)
    after = loadavg()
    probe = subprocess.run([sys.executable, "-c", _READ_BACK, f"sqlite:///{folder}/optuna.db"], env=env, cwd=folder,
                           check=True, capture_output=True, text=True)
    trials = json.loads(probe.stdout.strip().splitlines()[-1])
    return {"budget": budget, "wall_s": round(wall, 3), "trials": trials, "loadavg_before": before,
            "loadavg_after": after, "folder": str(folder)}


_READ_BACK = """
import json, sys, optuna
from mlflow.tracking import MlflowClient
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name="sph", storage=sys.argv[1])
client, rows = MlflowClient(), []
for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
    run = client.get_run(t.user_attrs["mlflow_run_id"]).info
    rows.append({"arm": t.params["arm"], "seed": t.params["seed"],
                 "trial_s": (t.datetime_complete - t.datetime_start).total_seconds(),
                 "run_s": (run.end_time - run.start_time) / 1000.0})
print(json.dumps(rows))
"""


def _median(values):
    return statistics.median(values) if values else float("nan")


def summarize(studies: list[dict], budgets: tuple[int, int], target: int, seeds: int) -> dict:
    from convopt_mlflow.stats import minimum_detectable_effect

    b1, b2 = budgets
    out: dict = {"per_arm": {}}
    per_seed_target = 0.0
    for arm in ARMS.split(","):
        t = {b: [r["trial_s"] for s in studies if s["budget"] == b for r in s["trials"] if r["arm"] == arm]
             for b in budgets}
        run = {b: [r["run_s"] for s in studies if s["budget"] == b for r in s["trials"] if r["arm"] == arm]
               for b in budgets}
        book = [(r["trial_s"] - r["run_s"]) / r["trial_s"] for s in studies if s["budget"] == b1
                for r in s["trials"] if r["arm"] == arm]
        m1, m2 = _median(t[b1]), _median(t[b2])
        learn_per_step = (m2 - m1) / (b2 - b1)
        fixed = m1 - (m2 - m1) * b1 / (b2 - b1)
        # every (B1 trial, B2 trial) pair: the spread of the fixed cost
        pairs = [x - (y - x) * b1 / (b2 - b1) for x in t[b1] for y in t[b2]]
        at_target = fixed + learn_per_step * target
        per_seed_target += at_target
        out["per_arm"][arm] = {
            f"trial_s_{b1}": t[b1], f"trial_s_{b2}": t[b2], f"run_s_{b1}": run[b1], f"run_s_{b2}": run[b2],
            "in_worker_fixed_s": round(fixed, 3),
            "in_worker_fixed_s_pairs": {"min": round(min(pairs), 3), "median": round(_median(pairs), 3),
                                        "max": round(max(pairs), 3)} if pairs else None,
            "learn_s_per_60k": round(learn_per_step * 60_000, 3),
            f"bookkeeping_share_at_{b1}": {"min": round(min(book), 4), "median": round(_median(book), 4),
                                           "max": round(max(book), 4)} if book else None,
            f"trial_s_at_{target}_extrapolated": round(at_target, 2)}
    overhead = [s["wall_s"] - sum(r["trial_s"] for r in s["trials"]) for s in studies]
    study_overhead = _median(overhead)
    seeds_per_hour = (3600.0 - study_overhead) / per_seed_target
    whole = int(seeds_per_hour)
    out.update({"study_overhead_s": {"min": round(min(overhead), 2), "median": round(study_overhead, 2),
                                     "max": round(max(overhead), 2)},
                "seed_s_at_target": round(per_seed_target, 2), "seeds_per_hour": round(seeds_per_hour, 2),
                "whole_seeds_per_hour": whole,
                "mde_dz_one_hour": round(minimum_detectable_effect(whole, paired=True), 3) if whole >= 2 else None,
                "mde_dz_one_hour_holm_3": round(minimum_detectable_effect(whole, paired=True, comparisons=3), 3)
                if whole >= 2 else None})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--code", action="append", default=[], help="label=PATH of a checkout (repeatable)")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--budgets", default="60000,120000", help="two per-trial budgets, the second twice the first")
    ap.add_argument("--target", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--data", default=None, help="--data of every study (default: ab-test's own default)")
    ap.add_argument("--direct", action="store_true", help="also run the current code's study at --target")
    ap.add_argument("--direct-seeds", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    budgets = tuple(int(b) for b in args.budgets.split(","))
    assert len(budgets) == 2 and budgets[1] > budgets[0], "--budgets B1,B2 with B2 > B1"
    codes = {k: Path(v).resolve() for k, v in (item.split("=", 1) for item in (args.code or [f"after={REPO}"]))}
    caches = {k: Path(tempfile.mkdtemp(prefix=f"bench-sph-cache-{k}-")) for k in codes}
    doc: dict = {"benchmark": "seeds_per_hour", "command": " ".join(["python", "benchmarks/bench_seeds_per_hour.py",
                                                                       *(argv if argv is not None else sys.argv[1:])]),
                 "arms": ARMS, "seeds": args.seeds, "budgets": budgets, "target": args.target,
                 "data": args.data or "ab-test default", "codes": {k: str(v) for k, v in codes.items()},
                 "warm_s": {}, "studies": [], "machine": machine_info()}
    for label, code in codes.items():
        doc["warm_s"][label] = round(warm(code, caches[label], args.data), 2)
        print(f"{label}: warm-up run {doc['warm_s'][label]} s", flush=True)
    order = [(label, b) for label in codes for b in budgets]
    for rnd in range(args.rounds):
        for label, budget in (order if rnd % 2 == 0 else order[::-1]):
            s = study(codes[label], caches[label], budget, args.seeds, args.data)
            s.update({"code": label, "round": rnd})
            doc["studies"].append(s)
            print(f"{label} {budget}: {s['wall_s']} s, trials {[round(r['trial_s'], 1) for r in s['trials']]}, "
                  f"load {s['loadavg_before']} -> {s['loadavg_after']}", flush=True)
    if args.direct:
        label = list(codes)[-1]
        s = study(codes[label], caches[label], args.target, args.direct_seeds, args.data)
        s.update({"code": label, "round": "direct"})
        doc["direct"] = s
        print(f"{label} direct {args.target}: {s['wall_s']} s, trials {[round(r['trial_s'], 1) for r in s['trials']]}",
              flush=True)
    doc["summary"] = {label: summarize([s for s in doc["studies"] if s["code"] == label], budgets, args.target,
                                       args.seeds) for label in codes}
    if "before" in doc["summary"] and "after" in doc["summary"]:
        doc["summary"]["after_over_before_seeds_per_hour"] = round(
            doc["summary"]["after"]["seeds_per_hour"] / doc["summary"]["before"]["seeds_per_hour"], 3)
    if "direct" in doc:
        label = list(codes)[-1]
        for arm, row in doc["summary"][label]["per_arm"].items():
            measured = [r["trial_s"] for r in doc["direct"]["trials"] if r["arm"] == arm]
            row[f"trial_s_at_{args.target}_measured"] = measured
    write_result(doc, args.out)
    print(json.dumps(doc["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
