"""``convopt`` console script; the MLproject entry points call it.

Exit codes: 0 success; 2 usage or bad input (one message, no traceback, no run
created); 1 training failure (run FAILED), or a promotion refused because the champion
changed meanwhile; 130/143 SIGINT/SIGTERM (run KILLED).
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

    ab = sub.add_parser("ab-test", help="compare arms over seeds in an Optuna study; one parent run + child runs")
    ab.add_argument("--arms", required=True, help="comma-separated presets or preset:overrides; the first is the baseline"
                    " (e.g. baseline,full,lr:ppo.batch_size=512)")
    ab.add_argument("--seeds", default="5", help="seeds per arm; seed s is the same env seed in every arm")
    ab.add_argument("--total-timesteps", default=None, help="environment steps of every trial")
    ab.add_argument("--data", default=None, help="data source shared by every arm")
    ab.add_argument("--metric", default="", help="primary metric of the test (default backtest/val/sharpe)")
    ab.add_argument("--storage", default="", help="Optuna storage URL (default sqlite:///optuna.db)")
    ab.add_argument("--study", default="", help="study name; re-running the same study resumes it")
    ab.add_argument("--alpha", default="0.05", help="family-wise significance level")
    ab.add_argument("--workers", default="1", help="worker processes on this machine")
    ab.add_argument("--sequential", nargs="?", const="true", default="false",
                    help="add seeds in rounds and stop when decisive (group-sequential)")
    ab.add_argument("--experiment", default="", help="MLflow experiment of the parent run")
    ab.add_argument("--heartbeat-interval", default="30", help="seconds between trial heartbeats (PostgreSQL)")
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

    promote = sub.add_parser("promote", help="move the registry's `champion` alias to the challenger on evidence")
    promote.add_argument("--registry-name", default="convopt-ensemble", help="registered model name")
    promote.add_argument("--alpha", default="0.05", help="one-sided significance level of the Sharpe test")
    promote.add_argument("--data", default="", help="test data (default: the source recorded on the challenger)")
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
    tune.add_argument("--heartbeat-interval", default="30", help="seconds between trial heartbeats (PostgreSQL)")

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
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind; any non-local one needs --token")
    dashboard.add_argument("--port", default="8050", help="port to listen on")
    dashboard.add_argument("--token", default="", help="required on every request (default $CONVOPT_DASHBOARD_TOKEN)")
    return parser


def _dashboard(args: argparse.Namespace) -> int:
    from .tracking import resolve_tracking_uri

    try:
        from dashboards import serve
    except ImportError as exc:
        raise UserError(f"the live dashboard is not installed with this package ({exc})") from None
    serve(args.tracking_uri or resolve_tracking_uri(), storage=args.storage or None, host=args.host,
          port=_number("--port", args.port, int), token=args.token or None)
    return 0


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

        _freeze_imported_objects()
        result = train_ensemble_run(cfg, preset=args.preset)
    else:
        from .training.coordinator import train

        _freeze_imported_objects()
        result = train(cfg, preset=args.preset, resume=args.resume)
    verb = {"FINISHED": "finished", "KILLED": "was stopped", "FAILED": "failed"}[result.status]
    print(f"convopt: run {result.run_id} {verb}" + (f": {result.reason}" if result.reason else ""), file=sys.stderr)
    _print_run_summary(result.run_id)
    if result.no_edge and cfg.ensemble_size > 1 and not args.resume:
        print("convopt: the ensemble found no edge over staying flat on validation (tag convopt.no_edge=true); "
              "it was not registered", file=sys.stderr)
    elif result.no_edge:
        print("convopt: the agent found no edge over staying flat on validation (tag convopt.no_edge=true)",
              file=sys.stderr)
    return result.exit_code


def _freeze_imported_objects() -> None:
    """Exempt what the imports built (torch, SB3, MLflow: millions of objects) from garbage collection.

    Every full collection walks every tracked object, and a run's backtests, figures and model
    logging set off dozens of them: about 1 s of CPU per run. A CLI process runs one command,
    so nothing frozen here would be freed anyway. Not for library use: a long-lived process
    that froze after each run would keep each run's garbage.
    """
    import gc

    gc.collect()
    gc.freeze()


def _print_run_summary(run_id: str) -> None:
    """The end-of-run table (rich on a terminal, plain lines otherwise), read back from the run."""
    from .evaluation.summary import print_summary
    from .tracking.describe import read_summary

    print_summary(read_summary(run_id), sys.stderr)


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


def _number(flag: str, text: str, kind=float):
    try:
        return kind(float(text)) if kind is int else kind(text)
    except (TypeError, ValueError):
        raise UserError(f"{flag} must be a number; got {text!r}") from None


def _flag(flag: str, text: str) -> bool:
    value = str(text).strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise UserError(f"{flag} must be true or false; got {text!r}")
    return value in ("true", "1", "yes")


def _ab_test(args: argparse.Namespace) -> int:
    from . import config as cfgmod

    sequential = _flag("--sequential", args.sequential)
    register = _flag("--register", args.register)
    from .experiments.session import run_ab_test, spec_from_args

    spec = spec_from_args(args.arms, args.seeds, total_timesteps=args.total_timesteps, data=args.data,
                          metric=args.metric or None, alpha=_number("--alpha", args.alpha),
                          sequential=sequential, overrides=cfgmod.parse_overrides(args.set))
    name = args.study or "ab-" + "-".join(a.replace(":", "_") for a in spec.arms)[:80]
    result = run_ab_test(spec, study_name=name, storage=args.storage or None,
                         workers=_number("--workers", args.workers, int), experiment=args.experiment or None,
                         heartbeat_interval=_number("--heartbeat-interval", args.heartbeat_interval, int),
                         registry_name=args.registry_name if register else None)
    print(f"convopt: A/B parent run {result.parent_run_id} (study {name}): {result.report['verdict']}",
          file=sys.stderr)
    registration = result.registration
    if registration is not None and registration.version is not None:
        print(f"convopt: registered {args.registry_name} version {registration.version} as 'challenger'; "
              f"run `convopt promote --registry-name {args.registry_name}` to compare it with the champion",
              file=sys.stderr)
    elif registration is not None:
        print(f"convopt: nothing registered: {registration.skipped}", file=sys.stderr)
    return 0


def _promote(args: argparse.Namespace) -> int:
    """Exit 0: promoted, or refused on the evidence (see the message and version tags); 1: compare-and-set
    conflict (the champion changed meanwhile); 2: missing model or alias, bad input."""
    alpha = _number("--alpha", args.alpha)
    if not 0.0 < alpha < 1.0:
        raise UserError(f"--alpha must lie in (0, 1); got {alpha}")
    from .tracking.promotion import promote
    from .tracking.runs import quiet_artifact_transfers

    with quiet_artifact_transfers():
        outcome = promote(args.registry_name, alpha=alpha, data=args.data or None, challenger=args.challenger,
                          experiment=args.experiment or None)
    d = outcome.decision
    before = f"version {outcome.previous_champion}" if outcome.previous_champion else "no champion"
    print(f"convopt: {args.registry_name} version {outcome.challenger} vs {before} on the test split of "
          f"{outcome.data_source} ({d.n_bars} bars): Sharpe difference {d.sharpe_difference:.4g} per bar, "
          f"z = {d.z:.3g}, one-sided p = {d.p_value:.3g} (promotion run {outcome.run_id})", file=sys.stderr)
    if d.promote:
        print(f"convopt: promoted: {args.registry_name}@champion is now version {outcome.challenger} "
              f"({d.reason})", file=sys.stderr)
    else:
        print(f"convopt: not promoted, champion unchanged ({before}): {d.reason}", file=sys.stderr)
    return 0


def _tune(args: argparse.Namespace) -> int:
    from . import config as cfgmod

    common = cfgmod.parse_overrides(args.set)
    if args.data:
        common["data.source"] = str(args.data)
    if args.total_timesteps not in (None, ""):
        common["run.total_timesteps"] = str(_number("--total-timesteps", args.total_timesteps, int))
    common.setdefault("run.progress_bar", "false")
    from .experiments.tune import TuneSpec, run_tune

    spec = TuneSpec(args.preset, _number("--n-trials", args.n_trials, int), common,
                    seed=_number("--seed", args.seed, int), pruner=args.pruner.strip().lower(),
                    folds=_number("--folds", args.folds, int))
    run_tune(spec, study_name=args.study or f"tune-{args.preset}", storage=args.storage or None,
             experiment=args.experiment or None, workers=_number("--workers", args.workers, int),
             heartbeat_interval=_number("--heartbeat-interval", args.heartbeat_interval, int))
    return 0


def _worker(args: argparse.Namespace) -> int:
    from .experiments.worker import work

    done = work(args.study, args.storage, heartbeat_interval=_number("--heartbeat-interval",
                                                                     args.heartbeat_interval, int), workers=2)
    print(f"convopt worker: study {args.study} has {done} complete cell(s)", file=sys.stderr)
    return 0


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


_TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _predict(args: argparse.Namespace) -> int:
    """Verify the model, load the bars, predict; write a table or print a summary."""
    from pathlib import Path

    out = Path(args.out).expanduser() if args.out else None
    if out is not None:
        if out.suffix.lower() not in _TABLE_SUFFIXES:
            raise UserError(f"--out {str(out)!r}: use a .csv or .parquet file name")
        if not out.parent.is_dir():
            raise UserError(f"--out {str(out)!r}: the folder {str(out.parent)!r} does not exist")
    from .data import load_bars
    from .tracking.registry import load_model, predict_bars
    from .tracking.runs import quiet_artifact_transfers

    bars = load_bars(args.data, max_gap=None)  # gaps matter to training, not to a decision
    with quiet_artifact_transfers():  # one line of output, not a bar
        model = load_model(args.model)
        table = predict_bars(model, bars.frame, bars.source).reset_index()
    numeric = [c for c in table.columns if c.startswith("prob_") or c == "agreement"]
    table[numeric] = table[numeric].astype("float64")  # None -> NaN: empty in CSV, null in Parquet
    if out is None:
        _print_prediction_summary(args.model, bars, table)
        return 0
    partial = out.with_name(out.name + ".partial")
    if _TABLE_SUFFIXES[out.suffix.lower()] == "csv":
        table.to_csv(partial, index=False)
    else:
        table.to_parquet(partial, index=False)
    partial.replace(out)
    print(f"convopt: {len(table)} rows ({int(table['ready'].sum())} ready) of {args.model} on {bars.source} "
          f"written to {out}", file=sys.stderr)
    return 0


def _print_prediction_summary(model_uri: str, bars, table) -> None:
    ready = table[table["ready"]]
    print(f"model: {model_uri}")
    print(f"data: {bars.source} ({bars.n_bars} bars, {len(ready)} with a decision)")
    counts = ready["position"].value_counts().sort_index()
    print("positions: " + ", ".join(f"{level:+g}: {n}" for level, n in counts.items()))
    last = ready.iloc[-1]
    probs = ", ".join(f"{c.removeprefix('prob_')} {last[c]:.3f}" for c in table.columns if c.startswith("prob_"))
    print(f"last decision: {last['timestamp']}  position {last['position']:+g}  ({probs}; "
          f"agreement {last['agreement']:.2f})")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"train": _train, "ab-test": _ab_test, "worker": _worker, "data": _data_check,
                "runs": _runs_cleanup, "config": _config, "predict": _predict, "promote": _promote,
                "tune": _tune, "dashboard": _dashboard}
    try:
        return handlers[args.command](args)
    except UserError as exc:
        print(f"convopt: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # an A/B trial or worker stopped by SIGINT/SIGTERM; its runs ended KILLED
        if args.command not in ("ab-test", "worker", "tune"):
            raise
        print(f"convopt: stopped: {exc}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
