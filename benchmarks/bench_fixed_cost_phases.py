"""Benchmark: where a standalone run's fixed cost goes, phase by phase, in wall and CPU seconds.

Each run is ``convopt train --preset P --data <planted market> --total-timesteps N --quiet`` in its
own process (``--child``), with timers wrapped around the phases (imports, market, store, model,
learning, dashboards, backtests, figures, model logging, description, summary) and nothing else:
no profiler, so the figures are what a user's run pays. CPU seconds (``time.process_time``) are
what a loaded machine inflates least; read wall seconds as upper bounds when the load is above 1.

With ``--steps 60000,120000`` every budget runs (interleaved) and each phase's share of the fixed
cost formula of ``bench_fixed_cost.py`` (``T60 - (T120 - T60)``, on the medians) is printed: the
phases whose amount of work does not grow with the budget.

With ``--before PATH`` the code at PATH (a folder holding an older ``convopt_mlflow/``) runs too,
run by run after this code, each version against its own sqlite store and cache folder (created
before the first run, as a user's after their first run).

    python benchmarks/bench_fixed_cost_phases.py --steps 2048 --repeats 2 --before /tmp/convopt-before \\
        --out benchmarks/results/fixed_cost_phases.json
"""
from __future__ import annotations

import argparse
import json
import atexit
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
from bench_fixed_cost import DATA, _env, make_store  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
#: (module, attribute, label): the phases timed, where the coordinator looks them up
PHASES = (
    ("convopt_mlflow.config", "build_config", "config"),
    ("convopt_mlflow.training.coordinator", "load_market", "market (generate, validate, features)"),
    ("convopt_mlflow.training.coordinator", "open_run", "open the MLflow run"),
    ("convopt_mlflow.training.coordinator", "make_env", "env"),
    ("convopt_mlflow.training.coordinator", "make_model", "model (policy and optimizer)"),
    ("stable_baselines3.ppo.ppo", "PPO.learn", "learning"),
    ("convopt_mlflow.training.ppo", "ConvoptUpdates.collect_rollouts", "  rollouts (with the callbacks below)"),
    ("convopt_mlflow.training.callbacks", "ValidationEvalCallback._on_update", "    validation evaluations"),
    ("convopt_mlflow.training.callbacks", "CheckpointCallback.save", "    checkpoint saves"),
    ("convopt_mlflow.training.ppo", "ConvoptUpdates.train", "  PPO updates"),
    ("convopt_mlflow.training.evaluate", "_walk", "greedy walks (validation scores, backtests)"),
    ("convopt_mlflow.training.evaluate", "deterministic_positions", "  of which walked (not reused)"),
    ("convopt_mlflow.training.coordinator", "write_progress_artifacts", "dashboards (convergence, activity)"),
    ("convopt_mlflow.training.coordinator", "finalize_run", "final report (the five below and metrics)"),
    ("convopt_mlflow.training.reporting", "fit_market_oracle", "  oracle fit"),
    ("convopt_mlflow.training.reporting", "backtest_split", "  backtests (val, test)"),
    ("convopt_mlflow.training.reporting", "equity_figure", "  equity figures"),
    ("convopt_mlflow.tracking.html", "log_figure", "  HTML pages (all, with plotly.js)"),
    ("convopt_mlflow.tracking", "log_policy_model", "  model logging (MLflow Model.log, hashes)"),
    ("convopt_mlflow.training.coordinator", "describe", "run description"),
    ("convopt_mlflow.cli", "_print_run_summary", "console summary"),
)


def child(preset: str, steps: int, out: Path) -> None:
    """Run one ``convopt train`` in this process with the phases timed; write their seconds to ``out``."""
    import importlib

    start_wall, start_cpu = time.perf_counter(), time.process_time()
    rows: dict[str, list[float]] = {}

    def add(label: str, wall: float, cpu: float) -> None:
        row = rows.setdefault(label, [0, 0.0, 0.0])
        row[0] += 1
        row[1] += wall
        row[2] += cpu

    def timed(owner, name: str, label: str) -> None:
        function = getattr(owner, name)

        def wrapper(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                add(label, time.perf_counter() - wall, time.process_time() - cpu)

        setattr(owner, name, wrapper)

    wall, cpu = time.perf_counter(), time.process_time()
    import convopt_mlflow.cli as cli  # noqa: F401 - the import is the phase
    import convopt_mlflow.config  # noqa: F401
    add("imports: cli, config (pandas, components)", time.perf_counter() - wall, time.process_time() - cpu)
    wall, cpu = time.perf_counter(), time.process_time()
    import convopt_mlflow.training.coordinator  # noqa: F401
    import convopt_mlflow.training.reporting  # noqa: F401
    add("imports: training (SB3, torch, MLflow)", time.perf_counter() - wall, time.process_time() - cpu)
    for module, attribute, label in PHASES:
        owner = importlib.import_module(module)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        timed(owner, name, label)
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        code = cli.main(["train", "--preset", preset, "--data", DATA, "--total-timesteps", str(steps), "--quiet"])
    except SystemExit as exc:
        code = exc.code
    add("main() in all", time.perf_counter() - wall, time.process_time() - cpu)
    add("process after interpreter start", time.perf_counter() - start_wall, time.process_time() - start_cpu)
    result = {"exit_code": code, "phases": {k: {"n": v[0], "wall_s": v[1], "cpu_s": v[2]} for k, v in rows.items()}}
    out.write_text(json.dumps(result))

    def at_exit() -> None:  # registered last, so it runs first: what the other exit handlers cost is after it
        add("process up to the exit handlers", time.perf_counter() - start_wall, time.process_time() - start_cpu)
        result["phases"] = {k: {"n": v[0], "wall_s": v[1], "cpu_s": v[2]} for k, v in rows.items()}
        out.write_text(json.dumps(result))

    atexit.register(at_exit)


def run_child(code: Path, store_dir: Path, preset: str, steps: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="phases-", dir=store_dir))
    env = _env(code, store_dir / "mlflow.db")
    env["CONVOPT_CHECKPOINT_ROOT"] = str(work / "checkpoints")
    env["CONVOPT_CACHE_DIR"] = str(store_dir / "cache")
    out = work / "phases.json"
    loadavg = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", preset, str(steps), str(out)], env=env, cwd=work,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"phases child exited {done.returncode}:\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(out.read_text())
    cpu = (after.ru_utime - used.ru_utime) + (after.ru_stime - used.ru_stime)
    # the whole process as bench_fixed_cost.py times it: interpreter start and exit included
    result["phases"]["whole process (interpreter start to exit)"] = {"n": 1, "wall_s": wall, "cpu_s": cpu}
    return {**result, "whole_process_wall_s": wall, "loadavg": loadavg}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=3, metavar=("PRESET", "STEPS", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--presets", default="baseline,full")
    parser.add_argument("--steps", default="2048", help="budgets, comma-separated (two: the fixed-cost split)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), Path(args.child[2]))
        try:  # end as the `convopt` program does (cli.run), where the code measured has it
            from convopt_mlflow.fast_exit import exit_now
        except ImportError:
            return 0
        exit_now(0)
    versions = {"after": REPO} | ({"before": args.before.resolve()} if args.before else {})
    tmp = Path(tempfile.mkdtemp(prefix="bench-phases-"))
    for name, code in versions.items():
        make_store(code, tmp / name)
        run_child(code, tmp / name, "full", 2048)  # untimed: the label cache and the OS file cache
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    budgets = [int(b) for b in str(args.steps).split(",") if b.strip()]
    arms = [f"{p}@{b}" if len(budgets) > 1 else p for p in presets for b in budgets]
    runs = {v: {arm: [] for arm in arms} for v in versions}
    for _ in range(args.repeats):
        for preset in presets:
            for steps in budgets:
                for name, code in versions.items():
                    arm = f"{preset}@{steps}" if len(budgets) > 1 else preset
                    runs[name][arm].append(run_child(code, tmp / name, preset, steps))
    summary = {}
    for name in versions:
        for arm in arms:
            labels = runs[name][arm][0]["phases"]
            summary[f"{name}/{arm}"] = {label: {key: statistics.median(r["phases"].get(label, {}).get(key, 0.0)
                                                                      for r in runs[name][arm])
                                                for key in ("n", "wall_s", "cpu_s")} for label in labels}
            print(f"== {name} {arm} (median of {args.repeats})")
            for label, s in summary[f"{name}/{arm}"].items():
                print(f"  {label:<48} n {s['n']:4.0f}  wall {s['wall_s']:6.2f}  cpu {s['cpu_s']:6.2f}")
        if len(budgets) == 2:
            for preset in presets:
                lo, hi = (summary[f"{name}/{preset}@{b}"] for b in budgets)
                print(f"== {name} {preset}: fixed-cost share, CPU s ({budgets[0]} - ({budgets[1]} - {budgets[0]}))")
                for label in lo:
                    fixed = 2 * lo[label]["cpu_s"] - hi.get(label, {}).get("cpu_s", 0.0)
                    print(f"  {label:<48} {fixed:6.2f}")
    write_result({"benchmark": "bench_fixed_cost_phases", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                  "data": DATA, "steps": budgets, "versions": {k: str(v) for k, v in versions.items()},
                  "machine": {**machine_info(), "loadavg_at_end": list(os.getloadavg())},
                  "runs": runs, "summary_median": summary}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
