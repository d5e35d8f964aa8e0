"""Fixed cost of an A/B trial inside a long-lived worker: wall and CPU time, and where it goes.

One process plays a worker: it imports once, opens one A/B parent run in a temporary sqlite
MLflow store and one in-memory Optuna study, trains one untimed warm-up trial per arm (a
worker's first trial pays the imports' first use, the market's first build and the oracle
cache), then trains ``--pairs`` pairs of trials per arm through the A/B objective
(:class:`convopt_mlflow.experiments.trial.TrialRunner`, what ``convopt ab-test`` and ``convopt
worker`` run), one at ``--steps`` and one at twice that, the order alternating per pair and each
trial with its own seed. Per trial it records the wall time and the process's CPU time
(``time.process_time``: all threads; far less sensitive to a loaded machine than wall time).

Derived, per arm and per pair: ``fixed = t(B) - (t(2B) - t(B))`` (issue 20: at most 1.5 s beyond
learning), in wall and CPU seconds, reported as median [min, max] over the pairs.

``--phases`` also times, in CPU seconds per trial (inclusive; nested phases are indented), the
parts of a trial outside learning, by wrapping the functions named in :data:`PHASES` for the
length of the benchmark. ``/proc/loadavg`` is recorded with every trial.

    python benchmarks/bench_worker_fixed_cost.py --arms baseline,full --steps 16384 --pairs 4 --phases \\
        --out benchmarks/results/worker_fixed_cost.json
"""
from __future__ import annotations

import argparse
import functools
import importlib
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

#: (label, module, attribute path) of each timed phase; the label's leading spaces show nesting.
PHASES = (
    ("open child run + tags", "convopt_mlflow.tracking", "open_child_run"),
    ("market (kept by the worker, by digest)", "convopt_mlflow.training.setup", "shared_market"),
    ("coordinator.train", "convopt_mlflow.training.coordinator", "train"),
    ("  open run, log config/params/dataset/splits", "convopt_mlflow.training.coordinator", "log_run_inputs"),
    ("  make env", "convopt_mlflow.training.coordinator", "make_env"),
    ("  make model", "convopt_mlflow.training.coordinator", "make_model"),
    ("  learn (PPO, evals, checkpoints)", "stable_baselines3.common.on_policy_algorithm", "OnPolicyAlgorithm.learn"),
    ("    validation evals", "convopt_mlflow.training.callbacks", "ValidationEvalCallback._on_update"),
    ("    checkpoint saves", "convopt_mlflow.training.checkpoints", "CheckpointStore.save"),
    ("  progress artifacts + convergence dashboard", "convopt_mlflow.training.coordinator", "write_progress_artifacts"),
    ("  choose final model", "convopt_mlflow.training.coordinator", "choose_final_model"),
    ("  finalize: backtests, figures, model", "convopt_mlflow.training.coordinator", "finalize_run"),
    ("    oracle fit", "convopt_mlflow.training.reporting", "fit_market_oracle"),
    ("    backtests val + test", "convopt_mlflow.training.reporting", "backtest_split"),
    ("    equity figures", "convopt_mlflow.training.reporting", "equity_figure"),
    ("    log figures (html)", "convopt_mlflow.tracking.html", "log_figure"),
    ("    log model", "convopt_mlflow.tracking", "log_policy_model"),
    ("  run description", "convopt_mlflow.training.coordinator", "describe"),
    ("  end run", "convopt_mlflow.tracking.runs", "RunHandle.end"),
    ("secondary metrics + test PnL artifact", "convopt_mlflow.experiments.trial", "TrialRunner._secondary"),
)


class PhaseClock:
    """Inclusive CPU seconds per phase: wraps each function of :data:`PHASES` in place."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self._active: set[str] = set()

    def install(self) -> None:
        for label, module_name, attr in PHASES:
            owner = importlib.import_module(module_name)
            *parents, name = attr.split(".")
            for part in parents:
                owner = getattr(owner, part, None)
            if owner is None or not hasattr(owner, name):
                print(f"phase {label!r}: {module_name}.{attr} not found, not timed", file=sys.stderr)
                continue
            setattr(owner, name, self._wrap(label, getattr(owner, name)))

    def _wrap(self, label: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if label in self._active:  # recursion: count the outer call only
                return fn(*args, **kwargs)
            self._active.add(label)
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu[label] += time.process_time() - start
                self._active.discard(label)
        return timed

    def take(self) -> dict[str, float]:
        out, self.cpu = dict(self.cpu), defaultdict(float)
        return out


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", default="baseline,full", help="presets, each measured on its own trials")
    ap.add_argument("--steps", type=int, default=16_384, help="B: the small budget; the large one is 2 B")
    ap.add_argument("--pairs", type=int, default=4, help="(B, 2B) trial pairs per arm")
    ap.add_argument("--data", default=None, help="data.source of every trial (default: ab-test's own default)")
    ap.add_argument("--phases", action="store_true", help="also time the parts of each trial (CPU s)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    out = args.out.resolve() if args.out else None  # the trials run in a temporary folder (chdir below)

    tmp = tempfile.mkdtemp(prefix="bench-wfc-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    os.environ.setdefault("CONVOPT_CACHE_DIR", str(Path(tmp, "cache")))
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        os.environ.pop(key, None)
    os.chdir(tmp)
    import optuna

    from convopt_mlflow.experiments.abtest import open_study
    from convopt_mlflow.experiments.spec import StudySpec
    from convopt_mlflow.experiments.trial import TrialRunner
    from convopt_mlflow.tracking import open_run

    arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
    common = {"run.progress_bar": "false"}
    if args.data:
        common["data.source"] = args.data
    budgets = (args.steps, 2 * args.steps)
    seeds = tuple(range(1 + 2 * args.pairs))
    clock = PhaseClock()
    if args.phases:
        clock.install()
    runners, studies = {}, {}
    parent = open_run(experiment=None, run_id=None, run_name="bench-worker-fixed-cost",
                      tags={"convopt.role": "ab-parent"})
    for budget in budgets:
        spec = StudySpec(arms=arms if len(arms) > 1 else (*arms, "baseline-3e-5"), seeds=seeds,
                         common={**common, "run.total_timesteps": str(budget)})
        studies[budget] = open_study(spec, optuna.storages.InMemoryStorage(), f"wfc-{budget}")
        runners[budget] = TrialRunner(spec, parent.run_id, f"wfc-{budget}")

    def trial(arm: str, budget: int, seed: int) -> dict:
        study = studies[budget]
        study.enqueue_trial({"arm": arm, "seed": seed})
        load, cpu0, wall0 = loadavg(), time.process_time(), time.perf_counter()
        study.optimize(runners[budget], n_trials=1)
        row = {"arm": arm, "steps": budget, "seed": seed, "wall_s": time.perf_counter() - wall0,
               "cpu_s": time.process_time() - cpu0, "loadavg": load, "phases_cpu_s": clock.take()}
        print(f"{arm:>16} {budget:>7} seed {seed}: wall {row['wall_s']:6.2f} s  cpu {row['cpu_s']:6.2f} s  "
              f"load {load.split()[0]}", flush=True)
        return row

    warm = [trial(arm, budgets[0], 0) for arm in arms]  # untimed: first use of everything in this worker
    rows = []
    for pair in range(args.pairs):
        for arm in arms:
            order = budgets if pair % 2 == 0 else budgets[::-1]
            got = {b: trial(arm, b, 1 + 2 * pair + i) for i, b in enumerate(order)}
            fixed = {u: 2 * got[budgets[0]][u] - got[budgets[1]][u] for u in ("wall_s", "cpu_s")}
            rows += [got[budgets[0]], got[budgets[1]]]
            rows[-1]["pair_fixed"] = fixed

    summary = {}
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]
        small = [r for r in mine if r["steps"] == budgets[0]]
        fixed = [r["pair_fixed"] for r in mine if "pair_fixed" in r]
        phases = defaultdict(list)
        for r in small:
            for label, sec in r["phases_cpu_s"].items():
                phases[label].append(sec)
        summary[arm] = {
            "fixed_wall_s": _spread([f["wall_s"] for f in fixed]), "fixed_cpu_s": _spread([f["cpu_s"] for f in fixed]),
            "trial_wall_s": {str(b): statistics.median(r["wall_s"] for r in mine if r["steps"] == b) for b in budgets},
            "trial_cpu_s": {str(b): statistics.median(r["cpu_s"] for r in mine if r["steps"] == b) for b in budgets},
            "phases_cpu_s_at_B": {label: statistics.median(v) for label, v in phases.items()},
        }
    print(f"\nfixed cost of a trial inside a worker, {budgets[0]:,} vs {budgets[1]:,} steps, median [min, max] "
          f"of {args.pairs} pairs (goal <= 1.5 s)")
    for arm, s in summary.items():
        w, c = s["fixed_wall_s"], s["fixed_cpu_s"]
        print(f"  {arm:>16}: wall {w['median']:5.2f} s [{w['min']:.2f}, {w['max']:.2f}]   "
              f"cpu {c['median']:5.2f} s [{c['min']:.2f}, {c['max']:.2f}]")
        if s["phases_cpu_s_at_B"]:
            print(f"    CPU s per trial at {budgets[0]:,} steps (median):")
            for label, _, _ in PHASES:
                if label in s["phases_cpu_s_at_B"]:
                    print(f"      {s['phases_cpu_s_at_B'][label]:6.3f}  {label}")
    write_result({"benchmark": "worker_fixed_cost", "machine": machine_info(), "arms": list(arms),
                  "budgets": list(budgets), "pairs": args.pairs, "data": args.data, "warm_up": warm,
                  "trials": rows, "summary": summary}, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
