"""``convopt`` console script; the MLproject entry points call it.

Exit codes: 0 success; 2 usage or bad input (one message, no traceback, no run
created); 1 training failure (run FAILED); 130/143 SIGINT/SIGTERM (run KILLED).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .errors import UserError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convopt", description="Convergence-optimized PPO trading, tracked in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one agent as one MLflow run (an ensemble when ensemble_size > 1)")
    train.add_argument("--preset", default="baseline", help="named preset (see `convopt config presets`)")
    train.add_argument("--data", default=None, help="eurusd-1h, googl-1d, a CSV/Parquet path or synthetic:k=v,...")
    train.add_argument("--total-timesteps", default=None, help="environment steps of the run")
    train.add_argument("--seed", default=None, help="seed for torch, numpy and the environments")
    train.add_argument("--n-envs", default=None, help="environments stepped together")
    train.add_argument("--experiment", default=None, help="MLflow experiment name")
    train.add_argument("--resume", default="", help="run id to continue from its last good checkpoint")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="config override, repeatable or comma-separated (e.g. ppo.batch_size=128)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    data = sub.add_parser("data", help="market data tools").add_subparsers(dest="data_command", required=True)
    check = data.add_parser("check", help="validate a data source and summarise it")
    check.add_argument("source")
    check.add_argument("--max-gap", default="30D", help="largest allowed gap between bars ('none' disables)")

    runs = sub.add_parser("runs", help="MLflow run maintenance").add_subparsers(dest="runs_command", required=True)
    cleanup = runs.add_parser("cleanup", help="mark runs left RUNNING by dead processes as KILLED")
    cleanup.add_argument("--experiment", action="append", default=None, help="limit to these experiments")
    cleanup.add_argument("--older-than", type=float, default=600.0,
                         help="seconds without activity before a run on another host counts as stale")

    config = sub.add_parser("config", help="show presets and config keys").add_subparsers(dest="config_command",
                                                                                         required=True)
    show = config.add_parser("show", help="print the resolved config of a preset with overrides")
    show.add_argument("--preset", default="baseline")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    config.add_parser("presets", help="list the presets")
    config.add_parser("keys", help="list every config key with its documentation")
    return parser


def _train(args: argparse.Namespace) -> int:
    from . import config as cfgmod

    overrides = cfgmod.parse_overrides(args.set)
    for flag, key in (("data", "data.source"), ("total_timesteps", "run.total_timesteps"), ("seed", "run.seed"),
                      ("n_envs", "env.n_envs"), ("experiment", "run.experiment")):
        value = getattr(args, flag)
        if value not in (None, ""):
            overrides[key] = str(value)
    if args.quiet:
        overrides["run.progress_bar"] = "false"
    cfg = cfgmod.build_config(args.preset, overrides)
    _check_experiment_matches_project_run(cfg.run.experiment)
    if cfg.ensemble_size > 1 and not args.resume:  # members are child runs; each resumes as a single run
        from .training.ensemble import train_ensemble_run

        result = train_ensemble_run(cfg, preset=args.preset)
    else:
        from .training.coordinator import train

        result = train(cfg, preset=args.preset, resume=args.resume)
    verb = {"FINISHED": "finished", "KILLED": "was stopped", "FAILED": "failed"}[result.status]
    print(f"convopt: run {result.run_id} {verb}" + (f": {result.reason}" if result.reason else ""), file=sys.stderr)
    for key in ("backtest/val/sharpe", "backtest/test/sharpe", "benchmark/test/buy_and_hold/sharpe",
                "benchmark/test/oracle/sharpe", "backtest/test/oracle_fraction"):
        if key in result.metrics:
            print(f"  {key} = {result.metrics[key]:.3f}", file=sys.stderr)
    if result.no_edge and cfg.ensemble_size > 1 and not args.resume:
        print("convopt: the ensemble found no edge over staying flat on validation (tag convopt.no_edge=true); "
              "it was not registered", file=sys.stderr)
    elif result.no_edge:
        print("convopt: the agent found no edge over staying flat on validation (tag convopt.no_edge=true)",
              file=sys.stderr)
    return result.exit_code


def _check_experiment_matches_project_run(experiment: str) -> None:
    """Under `mlflow run` the run already exists; an --experiment that differs can't move it."""
    import os

    if not experiment or not os.environ.get("MLFLOW_RUN_ID"):
        return
    from .tracking import run_experiment_name

    actual = run_experiment_name(os.environ["MLFLOW_RUN_ID"])
    if actual != experiment:
        raise UserError(f"-P experiment={experiment} cannot move a run that `mlflow run` already created in "
                        f"experiment {actual!r}; use `mlflow run . --experiment-name {experiment}` instead")


def _data_check(args: argparse.Namespace) -> int:
    from .data import describe_bars, load_bars

    max_gap = None if args.max_gap.lower() in ("", "none", "off") else args.max_gap
    bars = load_bars(args.source, max_gap=max_gap)
    summary = describe_bars(bars)
    print(f"{args.source}: OK")
    for key, value in summary.items():
        print(f"  {key}: {value}")
    return 0


def _runs_cleanup(args: argparse.Namespace) -> int:
    from .tracking import cleanup_stale_runs

    killed = cleanup_stale_runs(experiment_names=args.experiment, older_than_s=args.older_than)
    print(f"marked {len(killed)} stale run(s) KILLED" + (": " + ", ".join(killed) if killed else ""))
    return 0


def _config(args: argparse.Namespace) -> int:
    from . import config as cfgmod

    if args.config_command == "presets":
        for name, values in cfgmod.PRESETS.items():
            print(f"{name}: {json.dumps(values, default=str)}")
    elif args.config_command == "keys":
        docs = cfgmod.field_docs()
        for key, value in cfgmod.flatten(cfgmod.OptimizedTrainingConfig()).items():
            print(f"{key} = {value}" + (f"    # {docs[key]}" if key in docs else ""))
    else:
        cfg = cfgmod.build_config(args.preset, cfgmod.parse_overrides(args.set))
        print(cfgmod.to_json(cfg))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"train": _train, "data": _data_check, "runs": _runs_cleanup, "config": _config}
    try:
        return handlers[args.command](args)
    except UserError as exc:
        print(f"convopt: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
