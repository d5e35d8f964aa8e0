"""``convopt tune``: multivariate TPE over a preset's search space, with pruning.

One MLflow parent run (``convopt.role=tune-parent``) and one child run per trial
(``convopt.role=tune-trial``), trained by the coordinator with the full tracking of a
``convopt train`` run. Two pruners (``--pruner``):

- ``median`` (default): ``MedianPruner`` on in-training evaluations. A trial's intermediate
  values are its ``eval/score`` steps (:class:`ReportToTrial`); when pruned, training
  stops, the child run still ends FINISHED with its backtest and ``convopt.pruned=true``.
- ``wilcoxon``: ``WilcoxonPruner`` across walk-forward folds (:mod:`.tune_folds`). A trial
  trains one model per fold (anchored expanding window, validated on the next block), each
  a nested ``tune-fold`` run; after each fold the trial is compared with the best trial on
  the folds both have seen and pruned when a one-sided Wilcoxon signed-rank test says it is
  worse (``p < 0.1``). Its value is the mean validation Sharpe over the folds.

``--n-trials`` is the study-wide budget (``MaxTrialsCallback`` over COMPLETE and PRUNED
trials): a re-run continues the study up to it, and any number of processes share it:
``--workers K`` here (this process and K - 1 spawned; a PostgreSQL or journal storage),
or the same command on other machines, which join the study's parent run.

The best trial (highest value) is reported with its Deflated Sharpe Ratio given every
trial tried (its validation net returns, deflated by the variance of all trials'
validation Sharpes), and with the ``convopt ab-test`` command that re-runs it over several
seeds against the baseline: a winner picked from one seed is not evidence.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import optuna
from stable_baselines3.common.callbacks import BaseCallback

from ..config.search_spaces import Choice, Range, search_space
from ..errors import UserError
from .liveness import RecordsWorker, fail_dead_trials, holder_state, worker_id
from .storage import get_storage, redact

VAL_PNL_ARTIFACT = "tune/val_pnl.json"
METRIC = "backtest/val/sharpe"
"""Tuning decides on validation; the test split is left for the A/B verdict that re-tests the winner."""
SEED_ATTR = "convopt.seed"
"""The training seed of a trial (user attr): the A/B command starts after the largest."""
AB_SEEDS = 5


class ReportToTrial(BaseCallback):
    """After each validation eval: ``trial.report(score, step)``; stop when the pruner says prune."""

    def __init__(self, trial: optuna.Trial):
        super().__init__()
        self.trial = trial
        self.pruned_at: int | None = None

    def _on_step(self) -> bool:
        score = float(self.parent.history[-1].get("score", math.nan))
        if math.isfinite(score):
            self.trial.report(score, int(self.num_timesteps))
        if self.trial.should_prune():
            self.pruned_at = int(self.num_timesteps)
            return False
        return True


def suggest(trial: optuna.Trial, space: Mapping[str, Range | Choice]) -> dict[str, str]:
    """Config overrides (``key -> text``) drawn for ``trial`` from ``space``."""
    values: dict[str, str] = {}
    for key, dim in space.items():
        if isinstance(dim, Choice):
            value: Any = trial.suggest_categorical(key, list(dim.values))
        elif dim.integer:
            value = trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log)
        else:
            value = trial.suggest_float(key, dim.low, dim.high, log=dim.log)
        values[key] = f"{value:.6g}" if isinstance(value, float) else str(value)
    return values


@dataclass(frozen=True)
class TuneSpec:
    """What to tune: ``n_trials`` is the study-wide budget; ``folds`` the walk-forward folds of ``wilcoxon``."""

    preset: str
    n_trials: int
    common: Mapping[str, str]
    seed: int = 0
    pruner: str = "median"
    folds: int = 5

    def make_pruner(self) -> optuna.pruners.BasePruner:
        if self.pruner == "wilcoxon":
            return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)

    def space(self) -> dict[str, Range | Choice]:
        return search_space(self.preset, fixed=tuple(self.common))


PRUNERS = ("median", "wilcoxon")
PARENT_ATTR = "convopt.parent_run_id"


class TuneObjective:
    """``objective(trial) -> validation Sharpe`` of one child run."""

    def __init__(self, spec: TuneSpec, parent_run_id: str, study_name: str):
        self.spec, self.parent_run_id, self.study_name = spec, parent_run_id, study_name

    def __call__(self, trial: optuna.Trial) -> float:
        from .. import config as cfgmod
        from ..tracking import end_run_if_running, open_child_run
        from ..training.coordinator import train
        from ..training.setup import shared_market

        params = suggest(trial, self.spec.space())
        cfg = cfgmod.build_config(self.spec.preset, {**self.spec.common, **params,
                                                     "run.seed": str(self.spec.seed)})
        tags = {"convopt.role": "tune-trial", "convopt.study": self.study_name, "convopt.trial": str(trial.number),
                "convopt.preset": self.spec.preset}
        child = open_child_run(self.parent_run_id, tags=tags, run_name=f"tune-{self.spec.preset}-t{trial.number}")
        trial.set_user_attr("mlflow_run_id", child.run_id)
        trial.set_user_attr("convopt.worker", worker_id())
        trial.set_user_attr(SEED_ATTR, self.spec.seed)
        report, keep = ReportToTrial(trial), _KeepModel()
        try:
            market, hit = shared_market(cfg)  # kept by the worker for its next trial on the same bars and settings
            result = train(cfg, preset=self.spec.preset, run_id=child.run_id, after_eval=report,
                           tags={**tags, "convopt.worker.market_cache": "hit" if hit else "miss"},
                           extra_callbacks=[keep], market=market)
        except BaseException as exc:
            end_run_if_running(child.run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED",
                               reason=f"{type(exc).__name__}: {exc}")
            raise
        if result.status == "KILLED":
            raise KeyboardInterrupt(f"trial {trial.number}: run {result.run_id} was stopped: {result.reason}")
        if result.status != "FINISHED":
            raise RuntimeError(f"trial {trial.number}: run {result.run_id} ended {result.status}: {result.reason}")
        metrics = {k: float(v) for k, v in result.metrics.items() if math.isfinite(float(v))}
        trial.set_user_attr("metrics", metrics)
        log_val_pnl(child, val_pnl(cfg, keep.model, market), trial)
        if report.pruned_at is not None:
            child.set_tags({"convopt.pruned": "true", "convopt.pruned_at": str(report.pruned_at)})
            raise optuna.TrialPruned(f"pruned at step {report.pruned_at}")
        return metrics.get(METRIC, float("nan"))



def val_pnl(cfg: Any, model: Any, market: Any = None) -> np.ndarray:
    """The shipped policy's per-bar net log returns ``(bars,)`` over the validation split of ``cfg``.

    ``market``: the one the run trained on (default: this worker's kept market for ``cfg``); the
    run's own validation backtest of these weights on it is reused, not walked again."""
    from ..training.evaluate import validation_pnl
    from ..training.setup import shared_market

    market = market if market is not None else shared_market(cfg)[0]
    return validation_pnl(model.policy, market, cost_bps=cfg.env.cost_bps)


def log_val_pnl(child: Any, pnl: np.ndarray, trial: optuna.Trial) -> None:
    """Log the validation net returns (for the best trial's DSR) and their per-bar Sharpe on the trial."""
    child.log_dict({"net_log_pnl": [float(x) for x in np.round(pnl, 10)]}, VAL_PNL_ARTIFACT)
    sharpe = float(pnl.mean() / pnl.std(ddof=1)) if pnl.size > 1 and pnl.std() > 0 else 0.0
    trial.set_user_attr("val_sharpe_per_bar", sharpe)


class _KeepModel(BaseCallback):
    def _on_step(self) -> bool:
        return True


def best_trial_report(study: optuna.Study, spec: TuneSpec, client: Any = None) -> dict[str, Any]:
    """The best COMPLETE trial, its params and metrics, its DSR over all trials tried, the A/B command."""
    from .. import stats
    from ..tracking import read_json_artifact

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    tried = [t for t in study.trials if "val_sharpe_per_bar" in t.user_attrs]
    if not done:
        return {"best": None, "n_trials": len(study.trials), "message": "no trial completed"}
    best = study.best_trial
    out: dict[str, Any] = {"number": best.number, "value": best.value, "params": dict(best.params),
                           "run_id": best.user_attrs.get("mlflow_run_id"), "n_trials": len(tried),
                           "test_sharpe": best.user_attrs.get("metrics", {}).get("backtest/test/sharpe"),
                           "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
                           "dsr": None}
    sharpes = [t.user_attrs["val_sharpe_per_bar"] for t in tried]
    data = read_json_artifact(out["run_id"], VAL_PNL_ARTIFACT, client=client) if out["run_id"] else None
    if data and len(sharpes) >= 2 and np.var(sharpes) > 0:
        pnl = np.asarray(data["net_log_pnl"], dtype=float)
        if pnl.std() > 0:
            out["dsr"] = stats.deflated_sharpe_ratio(pnl, sharpes, n_trials=len(sharpes))
    used = [int(t.user_attrs.get(SEED_ATTR, spec.seed)) for t in study.trials] + [spec.seed]
    out["ab_command"] = ab_command(spec, best.params, first_seed=max(used) + 1)
    return out


def ab_command(spec: TuneSpec, params: Mapping[str, Any], *, first_seed: int | None = None) -> str:
    """The ``convopt ab-test`` line re-running the tuned params over fresh seeds against the baseline.

    Its seeds start at ``first_seed`` (default: after ``spec.seed``), past every seed the
    tuner trained on: seed ``spec.seed`` would replay the very trial that the tuner selected
    on its validation score, so the A/B would re-test the winner on its own luck.

    Example:
        >>> ab_command(TuneSpec("baseline", 3, {}, seed=3), {"ppo.n_epochs": 4})
        "convopt ab-test --arms 'baseline,baseline:ppo.n_epochs=4' --seeds 5 --first-seed 4"
    """
    arm = spec.preset + ":" + ",".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in sorted(params.items()))
    common = ",".join(f"{k}={v}" for k, v in spec.common.items()
                      if k not in ("data.source", "run.total_timesteps", "run.seed"))
    first = spec.seed + 1 if first_seed is None else first_seed
    parts = ["convopt ab-test", f"--arms 'baseline,{arm}'", f"--seeds {AB_SEEDS}", f"--first-seed {first}"]
    if "run.total_timesteps" in spec.common:
        parts.append(f"--total-timesteps {spec.common['run.total_timesteps']}")
    if "data.source" in spec.common:
        parts.append(f"--data '{spec.common['data.source']}'")
    if common:
        parts.append(f"--set '{common}'")
    return " ".join(parts)


class WorkerTPESampler(RecordsWorker, optuna.samplers.TPESampler):
    """Multivariate TPE; each trial records its worker's ``host:pid`` when claimed."""


def _open_study(spec: TuneSpec, storage: Any, study_name: str) -> optuna.Study:
    sampler = WorkerTPESampler(multivariate=True, seed=spec.seed)
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize", sampler=sampler,
                                pruner=spec.make_pruner(), load_if_exists=True)
    stored = study.user_attrs.get("convopt.pruner")
    if stored is None:
        study.set_user_attr("convopt.pruner", spec.pruner)
    elif stored != spec.pruner:
        raise UserError(f"tuning study {study_name!r} was started with --pruner {stored}; re-run it with the same "
                        f"pruner, or choose another --study")
    return study


def _objective(spec: TuneSpec, parent_run_id: str, study_name: str) -> TuneObjective:
    if spec.pruner == "wilcoxon":
        from .tune_folds import FoldObjective

        return FoldObjective(spec, parent_run_id, study_name)
    return TuneObjective(spec, parent_run_id, study_name)


def optimize(study: optuna.Study, spec: TuneSpec, parent_run_id: str) -> None:
    """Run trials until the study holds ``spec.n_trials`` COMPLETE, PRUNED or RUNNING trials.

    The budget is the study's, shared by every process: counting the trials other workers are
    running keeps it from being overshot, except when two workers finish at the same moment
    (then by at most one trial per extra worker). A dead worker's RUNNING trial stops counting
    once it is failed: by its pid on this host (before the first trial and after each), or by
    its stopped heartbeat (sqlite, PostgreSQL); it is then retried with the same params.
    """
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
    fail_dead_trials(study)
    left = spec.n_trials - len(study.get_trials(deepcopy=False, states=states))
    if left <= 0:
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(_objective(spec, parent_run_id, study.study_name), n_trials=left, catch=(RuntimeError,),
                   callbacks=[lambda s, _t: fail_dead_trials(s),
                              optuna.study.MaxTrialsCallback(spec.n_trials, states=states)], gc_after_trial=False)


def _worker_main(spec: TuneSpec, study_name: str, storage: str | None, parent_run_id: str, workers: int,
                 heartbeat_interval: int) -> None:
    """A spawned tuning worker: it joins the study and runs trials while the budget has room."""
    study = _open_study(spec, get_storage(storage, workers=workers, heartbeat_interval=heartbeat_interval), study_name)
    optimize(study, spec, parent_run_id)


def _held_by_the_dead(study: optuna.Study) -> bool:
    """A RUNNING trial whose worker on this host is gone (:func:`optimize` fails it once past its claim grace)."""
    return any(holder_state(t.user_attrs) == "dead"
               for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))


POLL_S = 2.0
"""How often this process, done with the budget, looks at the trials its spawned siblings still run."""


def _run_workers(study: optuna.Study, spec: TuneSpec, storage: str | None, parent_run_id: str, workers: int,
                 heartbeat_interval: int) -> None:
    """``--workers K``: this process is one worker (it trains at once), K - 1 are spawned.

    Each leaves :func:`optimize` when the budget has no room (RUNNING trials count); this
    process then waits, and whenever a sibling exits (or every ``POLL_S``) optimizes again, so
    a sibling's trial failed by its death is retried here. A worker's non-zero exit fails the
    command only when the budget is not met."""
    from .worker import run_local_workers

    def here(idle) -> int:
        optimize(study, spec, parent_run_id)
        while idle(0) or _held_by_the_dead(study):  # a sibling still trains, or died in a trial not judged yet
            idle(POLL_S)
            optimize(study, spec, parent_run_id)
        return 0

    codes = run_local_workers(workers, _worker_main, (spec, study.study_name, storage, parent_run_id, workers,
                                                      heartbeat_interval), in_process=here)
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    if any(codes) and len(done) < spec.n_trials:
        raise RuntimeError(f"tune worker processes exited with codes {codes}")
    if any(codes):
        print(f"convopt tune: worker exit codes {codes}; the study's budget of {spec.n_trials} trials is met "
              f"without the failed ones", file=sys.stderr)


def run_tune(spec: TuneSpec, *, study_name: str, storage: str | None = None, experiment: str | None = None,
             console: bool = True, workers: int = 1, heartbeat_interval: int = 30) -> dict[str, Any]:
    """Run (or continue, or join) the tuning study; return the best trial's report (logged on the parent run)."""
    from .. import config as cfgmod
    from ..tracking import end_run_if_running, open_run
    from ..training.setup import load_market

    if spec.n_trials < 1:
        raise UserError(f"--n-trials must be at least 1; got {spec.n_trials}")
    if spec.pruner not in PRUNERS:
        raise UserError(f"--pruner must be one of {', '.join(PRUNERS)}; got {spec.pruner!r}")
    if workers < 1:
        raise UserError(f"--workers must be at least 1; got {workers}")
    spec.space()  # unknown preset: exit 2 before anything exists
    cfg = cfgmod.build_config(spec.preset, dict(spec.common))
    market = load_market(cfg)  # bad data: exit 2, nothing written
    if spec.pruner == "wilcoxon":
        from .tune_folds import fold_fractions

        fold_fractions(cfg, market, spec.folds)  # too few bars for the folds: exit 2
    optuna_storage = get_storage(storage, workers=workers, heartbeat_interval=heartbeat_interval)
    study = _open_study(spec, optuna_storage, study_name)
    parent_id = os.environ.get("MLFLOW_RUN_ID") or study.user_attrs.get(PARENT_ATTR) or None
    parent = open_run(experiment=experiment, run_id=parent_id, run_name=f"tune-{study_name}",
                      tags={"convopt.role": "tune-parent", "convopt.study": study_name, "convopt.preset": spec.preset})
    study.set_user_attr(PARENT_ATTR, parent.run_id)
    try:
        parent.log_params({"preset": spec.preset, "n_trials": spec.n_trials, "study": study_name, "seed": spec.seed,
                           "sampler": "TPESampler(multivariate=True)",
                           "pruner": "WilcoxonPruner" if spec.pruner == "wilcoxon" else "MedianPruner",
                           **({"folds": spec.folds} if spec.pruner == "wilcoxon" else {}),
                           "storage": redact(storage or "sqlite:///optuna.db"),
                           **{f"common.{k}": v for k, v in spec.common.items()}})
        if workers == 1:
            optimize(study, spec, parent.run_id)
        else:
            _run_workers(study, spec, storage, parent.run_id, workers, heartbeat_interval)
        report = best_trial_report(study, spec, client=parent.client)
        parent.log_dict(report, "tune/best.json")
        metrics = {"tune/best/value": report.get("value"), "tune/best/dsr": report.get("dsr"),
                   "tune/best/test_sharpe": report.get("test_sharpe"), "tune/n_trials": report.get("n_trials"),
                   "tune/pruned": report.get("pruned")}
        parent.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))},
                           step=0)
        if report.get("run_id"):
            parent.set_tags({"convopt.tune.best_run": report["run_id"],
                             "convopt.tune.ab_command": report["ab_command"][:5000]})
    except BaseException as exc:
        parent.set_tags({"convopt.failure_reason": f"{type(exc).__name__}: {exc}"[:5000]})
        end_run_if_running(parent.run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    parent.end("FINISHED")
    report["parent_run_id"] = parent.run_id
    if console:
        _print(report, study_name)
    return report


def _print(report: Mapping[str, Any], study_name: str) -> None:
    if report.get("number") is None:
        print(f"convopt tune: study {study_name}: {report.get('message')}", file=sys.stderr)
        return
    dsr = "n/a" if report["dsr"] is None else f"{report['dsr']:.3f}"
    print(f"convopt tune: study {study_name}: best trial {report['number']} (run {report['run_id']}): "
          f"validation Sharpe {report['value']:.3f}, test Sharpe {report['test_sharpe']}, "
          f"DSR {dsr} over {report['n_trials']} trial(s) ({report['pruned']} pruned)", file=sys.stderr)
    print("  params: " + ", ".join(f"{k}={v}" for k, v in sorted(report["params"].items())), file=sys.stderr)
    print("  one seed is not evidence; re-run it over fresh seeds (none the tuner used) against the baseline, "
          "decided on the test split:\n  " + report["ab_command"],
          file=sys.stderr)
