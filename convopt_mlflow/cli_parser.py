"""The ``convopt`` command line: its parser, and messages for options it does not know."""
from __future__ import annotations

import argparse
from typing import Sequence

from .errors import UserError

__all__ = ["parse_args"]


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

    ab = sub.add_parser("ab-test", help="compare arms over seeds in an Optuna study; one parent run + child runs")
    ab.add_argument("--arms", required=True, help="comma-separated presets or preset:overrides; the first is the baseline"
                    " (e.g. baseline,full,lr:ppo.batch_size=512)")
    ab.add_argument("--seeds", default="5", help="seeds per arm; seed s is the same env seed in every arm")
    ab.add_argument("--first-seed", default="0", help="seeds run from this one up (use seeds the tuner never "
                    "used: `convopt tune` prints a command that does)")
    ab.add_argument("--total-timesteps", default=None, help="environment steps of every trial")
    ab.add_argument("--data", default=None, help="data source shared by every arm")
    ab.add_argument("--metric", default="", help="primary metric of the test (default backtest/test/sharpe: the "
                    "test split, because validation picked each trial's checkpoint and drove its in-training "
                    "adaptation, so validation scores are optimistic, differently in each arm)")
    ab.add_argument("--storage", default="", help="Optuna storage URL (default sqlite:///optuna.db)")
    ab.add_argument("--study", default="", help="study name; re-running the same study resumes it")
    ab.add_argument("--alpha", default="0.05", help="family-wise significance level")
    ab.add_argument("--workers", default="1", help="worker processes on this machine")
    ab.add_argument("--sequential", nargs="?", const="true", default="false",
                    help="add seeds in rounds and stop when decisive (group-sequential)")
    ab.add_argument("--on-failure", default="refuse",
                    help="a failed cell (arm, seed) is an outcome: `refuse` never registers an arm with one (the "
                         "default); `worst` scores it as the worst value observed in the study, keeping its pairs")
    ab.add_argument("--experiment", default="", help="MLflow experiment of the parent run")
    ab.add_argument("--heartbeat-interval", default="30", help="seconds between trial heartbeats (sqlite, PostgreSQL)")
    ab.add_argument("--wait-timeout", default="3600", help="seconds to wait for cells held by other workers")
    ab.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every arm (e.g. ppo.n_steps=64)")
    ab.add_argument("--register", nargs="?", const="true", default="true",
                    help="register a significant winner's ensemble as `challenger` (true/false; default true)")
    ab.add_argument("--no-register", dest="register", action="store_const", const="false",
                    help="same as --register false")
    ab.add_argument("--registry-name", default="convopt-ensemble", help="registered model of the winner")

    worker = sub.add_parser("worker", help="join an existing A/B study and train its open cells")
    worker.add_argument("--study", required=True)
    worker.add_argument("--storage", required=True, help="the study's Optuna storage URL (PostgreSQL or journal)")
    worker.add_argument("--heartbeat-interval", default="30", help="seconds between trial heartbeats")
    worker.add_argument("--wait-timeout", default="3600", help="seconds to wait for cells held by other workers "
                                                               "(then exit 3; re-run to resume)")

    promote = sub.add_parser("promote", help="move the registry's `champion` alias to the challenger on evidence")
    promote.add_argument("--registry-name", default="convopt-ensemble", help="registered model name")
    promote.add_argument("--alpha", default="0.05", help="one-sided significance level of the Sharpe test")
    promote.add_argument("--data", default="", help="data to judge on (default: the source recorded on the challenger)")
    promote.add_argument("--split", default="holdout",
                         help="bars to judge on: holdout (default; reserved for promotion) or test (the bars the "
                              "A/B verdict already used: recorded as convopt.promotion.bars_reused=true). Bars "
                              "either model trained or was selected on are always refused")
    promote.add_argument("--challenger", default="challenger", help="alias or version number to promote")
    promote.add_argument("--experiment", default="", help="MLflow experiment of the promotion run")

    tune = sub.add_parser("tune", help="multivariate TPE over a preset's hyperparameters, with median or Wilcoxon pruning")
    tune.add_argument("--preset", default="baseline", help="preset whose search space is tuned")
    tune.add_argument("--n-trials", default="20", help="trials to run (a re-run continues the study)")
    tune.add_argument("--total-timesteps", default=None, help="environment steps of every trial")
    tune.add_argument("--data", default=None, help="data source of every trial")
    tune.add_argument("--storage", default="", help="Optuna storage URL (default sqlite:///optuna.db)")
    tune.add_argument("--study", default="", help="study name (default tune-<preset>)")
    tune.add_argument("--seed", default="0", help="seed of the TPE sampler and of every trial's training")
    tune.add_argument("--experiment", default="", help="MLflow experiment of the parent run")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="config override for every trial; a key set here is not tuned")
    tune.add_argument("--pruner", default="median", help="median (in-training evals) or wilcoxon (walk-forward folds)")
    tune.add_argument("--folds", default="5", help="walk-forward folds per trial with --pruner wilcoxon")
    tune.add_argument("--workers", default="1", help="worker processes on this machine (PostgreSQL or journal storage)")
    tune.add_argument("--heartbeat-interval", default="30", help="seconds between trial heartbeats (sqlite, PostgreSQL)")

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

    predict = sub.add_parser("predict", help="positions of a verified model on bars (runs:/ or models:/ URI)")
    predict.add_argument("--model", required=True,
                         help="runs:/<run_id>/model, models:/<name>@<alias>, models:/<name>/<version> or models:/<id>")
    predict.add_argument("--data", required=True, help="eurusd-1h, googl-1d, a CSV/Parquet path or synthetic:k=v,...")
    predict.add_argument("--out", default="", help="write every row to this .csv or .parquet file; "
                                                   "without it, print a summary")
    dashboard = sub.add_parser("dashboard", help="live dashboard of runs, A/B studies and the registry (read-only)")
    dashboard.add_argument("--tracking-uri", default="", help="MLflow tracking URI (default: MLflow's own resolution)")
    dashboard.add_argument("--storage", default="", help="Optuna storage URL of the A/B studies to follow")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    dashboard.add_argument("--port", default="8050", help="port to listen on")
    dashboard.add_argument("--token-file", default="", help="file holding the token every request needs (default: "
                                                            "$CONVOPT_DASHBOARD_TOKEN, else one is generated and printed)")
    dashboard.add_argument("--token", default="", help="the token itself (discouraged: `ps` shows it; use the "
                                                       "environment or --token-file)")
    dashboard.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                           help="another Host name to answer (e.g. an HTTPS proxy's); repeatable")
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; an unknown option names the valid ones of *that* command (UserError, exit 2).

    Under ``mlflow run``, MLflow passes a ``-P`` the MLproject does not declare as ``--name value``:
    the message then lists the entry point's parameters.
    """
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if not extra:
        return args
    words = [args.command] + [getattr(args, f"{args.command}_command", None) or ""]
    command = " ".join(w for w in words if w)
    unknown = [e.lstrip("-").replace("-", "_") for e in extra if e.startswith("--")]
    entry = _project_entry_point(command)
    if entry is not None and unknown:
        name, params = entry
        raise UserError(f"unknown parameter(s) {', '.join(unknown)} for entry point {name!r}; its parameters are: "
                        f"{', '.join(params) or '(none)'} (mlflow run . -e {name} -P <name>=<value>)")
    sub = _subparser(parser, command)
    options = sorted({o for a in sub._actions for o in a.option_strings if o.startswith("--") and o != "--help"})
    raise UserError(f"unrecognized argument(s) for `convopt {command}`: {' '.join(extra)}; its options are: "
                    f"{', '.join(options) or '(none)'}")


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for word in command.split():
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


def _project_entry_point(command: str) -> tuple[str, list[str]] | None:
    """``(entry point, its parameters)`` of the MLproject in the working directory whose command
    runs ``convopt <command>``, when this process is an ``mlflow run``; else None."""
    import os
    from pathlib import Path

    if not os.environ.get("MLFLOW_RUN_ID") or not Path("MLproject").is_file():
        return None
    try:
        import yaml

        spec = yaml.safe_load(Path("MLproject").read_text(encoding="utf-8"))
        for name, entry in (spec.get("entry_points") or {}).items():
            if " ".join(str(entry.get("command", "")).split()).startswith(f"convopt {command} ") or \
                    " ".join(str(entry.get("command", "")).split()) == f"convopt {command}":
                return name, list((entry.get("parameters") or {}).keys())
    except Exception:  # noqa: BLE001 - only the message gets poorer
        return None
    return None
