"""One A/B trial: an MLflow child run under the study's parent, trained by the coordinator.

The objective returns the primary metric; the trial's ``user_attrs`` hold the child's run
id (set before training, so a stale trial's run can be ended KILLED) and all its metrics.
Secondary metrics computed here are also logged on the child: ``ab/eval_auc`` (mean
validation score over training, the area under the eval curve per step),
``ab/steps_to_edge`` (first eval step whose score beats flat), ``ab/wall_time_s`` and
``ab/peak_rss_mb`` (the worker process's peak so far). The test-split net log PnL of the
shipped model is logged as ``ab/test_pnl.json`` for the report's DSR and Sharpe test.
"""
from __future__ import annotations

import math
import os
import resource
import socket
import time
from typing import Any

import numpy as np
import optuna
from stable_baselines3.common.callbacks import BaseCallback

from .arms import Arm
from .spec import StudySpec

PNL_ARTIFACT = "ab/test_pnl.json"
#: ``convopt.status`` of a trial whose run FINISHED without the decision metric.
NO_METRIC = "NO_METRIC"


class TrialFailed(Exception):
    """The trial's training did not finish; the trial ends FAIL and its cell may be retried."""


class WorkerStopped(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped the trial's training (its run ended KILLED): the worker stops too."""


class DuplicateCell(Exception):
    """Another trial already holds this (arm, seed) cell; this one trains nothing."""


class _KeepModel(BaseCallback):
    """Keeps a reference to the model; after ``train`` it holds the shipped weights."""

    def _on_step(self) -> bool:
        return True


def seed_is_categorical(study: optuna.Study) -> bool:
    """Whether the study's trials drew ``seed`` from a fixed list (studies made before seeds could
    be added): Optuna refuses a list of another length for them, so they cannot be extended."""
    return any(isinstance(t.distributions.get("seed"), optuna.distributions.CategoricalDistribution)
               for t in study.get_trials(deepcopy=False))


def _suggest_seed(trial: optuna.Trial, seeds) -> int:
    """The cell's seed as an int range, which stays one parameter space when the study gains seeds."""
    if seed_is_categorical(trial.study):
        return trial.suggest_categorical("seed", list(seeds))
    return trial.suggest_int("seed", min(seeds), max(seeds))


def cell_of(trial: optuna.trial.FrozenTrial) -> tuple[str, int] | None:
    params = trial.params or trial.system_attrs.get("fixed_params") or {}
    if "arm" not in params or "seed" not in params:
        return None
    return str(params["arm"]), int(params["seed"])


def duplicate_of(study: optuna.Study, number: int, cell: tuple[str, int]) -> int | None:
    """Number of another trial holding ``cell`` (COMPLETE, RUNNING or WAITING), else None.

    Two trials that pick one cell at once may both stand down; the worker loop hands the
    cell out again. Neither trains it twice.
    """
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    for other in study.get_trials(deepcopy=False, states=states):
        if other.number != number and cell_of(other) == cell:
            return other.number
    return None


class TrialRunner:
    """The study's objective: ``runner(trial) -> primary metric``."""

    def __init__(self, spec: StudySpec, parent_run_id: str, study_name: str, checkpoint_root: str | None = None):
        self.spec = spec
        self.arms: dict[str, Arm] = {a.name: a for a in spec.parsed_arms()}
        self.parent_run_id = parent_run_id
        self.study_name = study_name
        self.checkpoint_root = checkpoint_root

    def __call__(self, trial: optuna.Trial) -> float:
        arm_name = trial.suggest_categorical("arm", list(self.spec.arms))
        seed = _suggest_seed(trial, self.spec.seeds)
        holder = duplicate_of(trial.study, trial.number, (arm_name, seed))
        if holder is not None:
            trial.set_user_attr("convopt.duplicate_of", holder)
            raise DuplicateCell(f"cell ({arm_name}, seed {seed}) is held by trial {holder}")
        return self._train(trial, self.arms[arm_name], seed)

    def _train(self, trial: optuna.Trial, arm: Arm, seed: int) -> float:
        from ..tracking import end_run_if_running, open_child_run
        from ..training.coordinator import train
        from ..training.setup import shared_market

        cfg = arm.config(self.spec.common, seed)
        tags = {"convopt.role": "ab-trial", "convopt.arm": arm.name, "convopt.seed": str(seed),
                "convopt.study": self.study_name, "convopt.trial": str(trial.number)}
        child = open_child_run(self.parent_run_id, tags=tags, run_name=f"ab-{arm.label}-s{seed}")
        trial.set_user_attr("mlflow_run_id", child.run_id)
        trial.set_user_attr("convopt.worker", f"{socket.gethostname()}:{os.getpid()}")
        keep = _KeepModel()
        start = time.perf_counter()
        try:
            # one market per trial, shared by training and the secondary metrics, and kept by the
            # worker for its next trial on the same bars (digest) and settings
            market, hit = shared_market(cfg)
            if cfg.ensemble_size > 1:  # the arm is an ensemble: the trial's run is the ensemble run
                from ..training.ensemble import train_ensemble_run

                result = train_ensemble_run(cfg, preset=arm.preset, run_id=child.run_id,
                                            checkpoint_root=self.checkpoint_root, market=market, tags=tags)
            else:
                result = train(cfg, preset=arm.preset, run_id=child.run_id, checkpoint_root=self.checkpoint_root,
                               extra_callbacks=[keep], market=market,
                               tags={**tags, "convopt.worker.market_cache": "hit" if hit else "miss"})
        except BaseException as exc:
            end_run_if_running(child.run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED",
                               reason=f"{type(exc).__name__}: {exc}")
            raise
        trial.set_user_attr("convopt.status", result.status)
        if result.status == "KILLED":
            raise WorkerStopped(f"run {result.run_id} was stopped: {result.reason}")
        if result.status != "FINISHED":
            trial.set_user_attr("convopt.failure_reason", f"run ended {result.status}: {result.reason}"[:1000])
            raise TrialFailed(f"run {result.run_id} ended {result.status}: {result.reason}")
        secondary = self._secondary(child, cfg, getattr(keep, "model", None), time.perf_counter() - start, market,
                                    result.test_pnl)
        metrics = {k: float(v) for k, v in {**result.metrics, **secondary}.items() if math.isfinite(float(v))}
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("no_edge", bool(result.no_edge))
        if self.spec.metric not in metrics:  # a failure of this cell, not a gap: retrying would repeat it
            reason = f"run FINISHED without a finite {self.spec.metric!r}"
            trial.set_user_attr("convopt.status", NO_METRIC)
            trial.set_user_attr("convopt.failure_reason", reason)
            child.set_tags({"convopt.ab.cell_failed": reason})  # the run is fine; its A/B cell is not
            raise TrialFailed(f"run {result.run_id} has no metric {self.spec.metric!r}")
        return metrics[self.spec.metric]

    def _secondary(self, child: Any, cfg: Any, model: Any, wall_s: float, market: Any,
                   pnl: Any = None) -> dict[str, float]:
        """``pnl``: the shipped policy's test PnL where the trainer made it (an ensemble's); None: walk ``model``."""
        from ..evaluation import net_log_pnl
        from ..tracking import metric_history
        from ..training.evaluate import walk_split

        curve = metric_history(child.run_id, "eval/score", client=child.client)
        out = {"ab/eval_auc": eval_auc(curve), "ab/steps_to_edge": steps_to_edge(curve),
               "ab/wall_time_s": wall_s, "ab/peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if pnl is None:  # the shipped weights' test walk: the run's own test backtest made it on this market (kept)
            path, returns = walk_split(model.policy, market, "test", cost_bps=cfg.env.cost_bps)
            pnl = net_log_pnl(path.positions, returns, cost_bps=cfg.env.cost_bps)
        child.log_dict({"net_log_pnl": [float(x) for x in np.round(pnl, 10)]}, PNL_ARTIFACT)
        step = int(model.num_timesteps) if model is not None else cfg.run.total_timesteps
        child.log_metrics({k: v for k, v in out.items() if math.isfinite(v)}, step=step)
        return out


def eval_auc(curve: list[tuple[int, float]]) -> float:
    """Area under the eval curve per step (its mean height over training); NaN without evals.

    Example:
        >>> eval_auc([(0, 0.0), (10, 1.0), (20, 1.0)])
        0.75
    """
    if not curve:
        return float("nan")
    steps, scores = np.array(curve, dtype=float).T
    if steps[-1] == steps[0]:
        return float(scores.mean())
    return float(np.trapezoid(scores, steps) / (steps[-1] - steps[0]))


def steps_to_edge(curve: list[tuple[int, float]]) -> float:
    """First eval step whose validation score beats flat (> 0); NaN if none did."""
    return next((float(step) for step, score in curve if score > 0.0), float("nan"))
