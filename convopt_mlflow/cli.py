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

from .cli_parser import parse_args
from .errors import UserError


def _dashboard(args: argparse.Namespace) -> int:
    from .tracking import resolve_tracking_uri

    try:
        from dashboards import serve
    except ImportError as exc:
        raise UserError(f"the live dashboard is not installed with this package ({exc})") from None
    serve(args.tracking_uri or resolve_tracking_uri(), storage=args.storage or None, host=args.host,
          port=_number("--port", args.port, int), token=args.token or None, token_file=args.token_file or None,
          allow_hosts=args.allow_host)
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
        from .training.data_source import read_bars
        from .training.member_pool import start_members

        bars = read_bars(cfg)  # bad data: one message before any worker exists
        pool = start_members(cfg.ensemble_size, cfg.ensemble.workers)  # the workers import while we do
        try:
            from .training.ensemble import train_ensemble_run
        except BaseException:
            pool.close()
            raise
        _freeze_imported_objects()
        result = train_ensemble_run(cfg, preset=args.preset, pool=pool, bars=bars)
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
                          sequential=sequential, overrides=cfgmod.parse_overrides(args.set),
                          on_failure=args.on_failure, first_seed=args.first_seed)
    name = args.study or "ab-" + "-".join(a.replace(":", "_") for a in spec.arms)[:80]
    result = run_ab_test(spec, study_name=name, storage=args.storage or None,
                         workers=_number("--workers", args.workers, int), experiment=args.experiment or None,
                         heartbeat_interval=_number("--heartbeat-interval", args.heartbeat_interval, int),
                         registry_name=args.registry_name if register else None,
                         wait_timeout_s=_number("--wait-timeout", args.wait_timeout))
    # the verdict was printed once, as the caption of the table above
    print(f"convopt: A/B parent run {result.parent_run_id} (study {name})", file=sys.stderr)
    registration = result.registration
    if registration is not None and registration.reused:
        print(f"convopt: study {name} registered {args.registry_name} version {registration.version} before; "
              f"nothing registered again and 'challenger' not moved", file=sys.stderr)
    elif registration is not None and registration.alias_refused:
        print(f"convopt: registered {args.registry_name} version {registration.version}, but 'challenger' was not "
              f"moved: {registration.alias_refused}", file=sys.stderr)
    elif registration is not None and registration.version is not None:
        print(f"convopt: registered {args.registry_name} version {registration.version} as 'challenger'; "
              f"run `convopt promote --registry-name {args.registry_name}` to compare it with the champion",
              file=sys.stderr)
    elif registration is not None:
        skipped = registration.skipped or ""
        if skipped.startswith(_NO_WINNER):  # it quotes the verdict, printed above already
            skipped = f"{_NO_WINNER} (see the verdict above)"
        print(f"convopt: nothing registered: {skipped}", file=sys.stderr)
    return 0


_NO_WINNER = "no significant winner"


def _promote(args: argparse.Namespace) -> int:
    """Exit 0: promoted, or refused on the evidence (see the message and version tags); 1: compare-and-set
    conflict (the champion changed meanwhile); 2: missing model or alias, bad input."""
    alpha = _number("--alpha", args.alpha)
    if not 0.0 < alpha < 1.0:
        raise UserError(f"--alpha must lie in (0, 1); got {alpha}")
    from .tracking.promotion import promote
    from .tracking.runs import quiet_artifact_transfers, require_existing_store
    from .training.setup import load_market

    require_existing_store()  # reads a registry: never creates ./mlflow.db

    with quiet_artifact_transfers():
        outcome = promote(args.registry_name, load_market=load_market, alpha=alpha, data=args.data or None, challenger=args.challenger,
                          experiment=args.experiment or None, split=args.split.strip().lower())
    d = outcome.decision
    before = f"version {outcome.previous_champion}" if outcome.previous_champion else "no champion"
    if outcome.bars_reused:
        print(f"convopt: warning: these {outcome.split} bars were already used by an A/B verdict "
              "(convopt.promotion.bars_reused=true); the evidence is not independent of it", file=sys.stderr)
    print(f"convopt: {args.registry_name} version {outcome.challenger} vs {before} on the {outcome.split} split of "
          f"{outcome.data_source} ({d.n_bars} bars): Sharpe ({d.unit}) difference "
          f"{d.in_unit(d.sharpe_difference):.4g}, "
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

    done = work(args.study, args.storage, workers=2,
                heartbeat_interval=_number("--heartbeat-interval", args.heartbeat_interval, int),
                wait_timeout_s=_number("--wait-timeout", args.wait_timeout))
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
    from .tracking.runs import require_existing_store

    require_existing_store()

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
    from .tracking.runs import quiet_artifact_transfers, require_existing_store

    if args.model.startswith(("runs:/", "models:/")):
        require_existing_store()  # a model from the store: never creates ./mlflow.db

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


def quiet_mlflow() -> None:
    """MLflow's INFO lines ("Validating input example against model signature") and its
    artifact progress bars off in our processes, unless the user set these variables.

    Works before or after mlflow is imported: on import MLflow sets its logger's level from
    ``MLFLOW_LOGGING_LEVEL``. Warnings and errors still show; the signature and input
    example are still logged, only the message about validating them is not.
    """
    import logging
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
        logger = logging.getLogger("mlflow")
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def _discard_project_run(message: str) -> None:
    """A refused input under ``mlflow run``: its run held nothing yet, so it is not left behind."""
    import os

    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    try:
        from .tracking.experiments import discard_project_run

        if discard_project_run(run_id, message):
            print(f"convopt: run {run_id}, created by `mlflow run` for this refused input, was ended and deleted",
                  file=sys.stderr)
    except Exception:  # noqa: BLE001 - the user's error is the message that matters
        return


def main(argv: Sequence[str] | None = None) -> int:
    quiet_mlflow()
    try:
        args = parse_args(argv)
    except UserError as exc:
        print(f"convopt: error: {exc}", file=sys.stderr)
        _discard_project_run(str(exc))
        return exc.exit_code
    handlers = {"train": _train, "ab-test": _ab_test, "worker": _worker, "data": _data_check,
                "runs": _runs_cleanup, "config": _config, "predict": _predict, "promote": _promote,
                "tune": _tune, "dashboard": _dashboard}
    try:
        return handlers[args.command](args)
    except UserError as exc:
        print(f"convopt: error: {exc}", file=sys.stderr)
        _discard_project_run(str(exc))
        return exc.exit_code
    except KeyboardInterrupt as exc:  # an A/B trial or worker stopped by SIGINT/SIGTERM; its runs ended KILLED
        if args.command not in ("ab-test", "worker", "tune"):
            raise
        print(f"convopt: stopped: {exc}", file=sys.stderr)
        return 130


def run() -> None:
    """The ``convopt`` program: :func:`main`, then the process ends without tearing down the modules
    it imported (:func:`~convopt_mlflow.fast_exit.exit_now`: half a second of a run's wall time).
    An exception out of ``main`` (argparse's ``--help``, a bug) ends the process the usual way, and so
    does a process under a profiler or tracer (``python -m cProfile``, a debugger): they write their
    results after ``main`` returns."""
    from .fast_exit import exit_now

    code = main()
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    exit_now(code)


if __name__ == "__main__":
    run()
