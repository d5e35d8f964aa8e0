"""``convopt tune --pruner wilcoxon``: a trial is scored across walk-forward folds, pruned by Wilcoxon.

Fold ``k`` of ``K`` (:func:`~convopt_mlflow.data.splits.walk_forward_test_fractions`) trains a
fresh model on every bar before its validation block (an anchored, expanding window) and
scores it on that block; the last fold is the configured split itself. Each fold is a full
``convopt train`` run nested under the trial's run (``convopt.role=tune-fold``), trained with
the trial's hyperparameters, seed and budget.

After each fold the trial reports the fold's validation Sharpe (annualized) with the fold
index as the step. Optuna's ``WilcoxonPruner`` pairs these with the best trial's scores on
the same folds and prunes when a one-sided signed-rank test says this trial is worse; the
folds left are never trained. Folds run in an order shuffled per trial (seeded by the study
seed and trial number), as the pruner's authors advise, so that no fold always decides.

The trial's run records ``tune/fold_score`` (step = fold index), ``tune/folds_run`` and, when
it completes, ``tune/mean_fold_score`` (the trial's value). Its validation net returns for the
DSR are the folds' validation returns concatenated in time order: a walk-forward
out-of-sample series.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna

from .tune import METRIC, SEED_ATTR, TuneObjective, _KeepModel, log_val_pnl, suggest, val_pnl, worker_id

#: ``data.test_fraction`` must stay below this (config validation); it bounds the folds.
MAX_TEST_FRACTION = 0.5


def fold_fractions(cfg: Any, market: Any, folds: int) -> list[float]:
    """``data.test_fraction`` of each fold of ``cfg``'s data, oldest first (ConfigError if too few bars)."""
    from ..data.splits import walk_forward_test_fractions
    from ..errors import ConfigError

    fractions = walk_forward_test_fractions(market.bars.n_bars, folds, val_fraction=cfg.data.val_fraction,
                                            test_fraction=cfg.data.test_fraction,
                                            holdout_fraction=cfg.data.holdout_fraction,
                                            embargo_bars=cfg.data.embargo_bars, start=market.features.warmup)
    if max(fractions) >= MAX_TEST_FRACTION:
        raise ConfigError(f"{folds} walk-forward folds of data.val_fraction={cfg.data.val_fraction} put the oldest "
                          f"fold's validation block before {1 - max(fractions):.0%} of the bars (data.test_fraction "
                          f"{max(fractions):.3f} >= {MAX_TEST_FRACTION}); use fewer --folds or a smaller "
                          f"data.val_fraction")
    return fractions


class FoldObjective(TuneObjective):
    """``objective(trial) -> mean validation Sharpe over the walk-forward folds``."""

    def __call__(self, trial: optuna.Trial) -> float:
        from .. import config as cfgmod
        from ..tracking import end_run_if_running, open_child_run
        from ..training.setup import load_market

        params = suggest(trial, self.spec.space())
        values = {**self.spec.common, **params, "run.seed": str(self.spec.seed)}
        base = cfgmod.build_config(self.spec.preset, values)
        fractions = fold_fractions(base, load_market(base), self.spec.folds)
        tags = {"convopt.role": "tune-trial", "convopt.study": self.study_name, "convopt.trial": str(trial.number),
                "convopt.preset": self.spec.preset}
        run = open_child_run(self.parent_run_id, tags=tags, run_name=f"tune-{self.spec.preset}-t{trial.number}")
        trial.set_user_attr("mlflow_run_id", run.run_id)
        trial.set_user_attr("convopt.worker", worker_id())
        trial.set_user_attr(SEED_ATTR, self.spec.seed)
        order = np.random.default_rng([self.spec.seed, trial.number]).permutation(len(fractions))
        scores: dict[int, float] = {}
        pnls: dict[int, np.ndarray] = {}
        try:
            run.log_params({**params, "folds": len(fractions), "fold_order": ",".join(map(str, order))})
            for fold in map(int, order):
                cfg = cfgmod.build_config(self.spec.preset, {**values, "data.test_fraction": repr(fractions[fold])})
                metrics, pnls[fold] = self._train_fold(cfg, run.run_id, trial.number, fold, tags)
                scores[fold] = metrics.get(METRIC, float("nan"))
                if fold == len(fractions) - 1:  # the configured split: its test Sharpe is the trial's
                    trial.set_user_attr("metrics", metrics)
                run.log_metrics({"tune/fold_score": scores[fold], "tune/folds_run": len(scores)}, step=fold)
                if math.isfinite(scores[fold]):
                    trial.report(scores[fold], fold)
                if trial.should_prune():
                    break
            walked = np.concatenate([pnls[k] for k in sorted(pnls)])
            log_val_pnl(run, walked, trial)
            trial.set_user_attr("fold_scores", {str(k): v for k, v in sorted(scores.items())})
        except BaseException as exc:
            end_run_if_running(run.run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED",
                               reason=f"{type(exc).__name__}: {exc}")
            raise
        if len(scores) < len(fractions):
            run.set_tags({"convopt.pruned": "true", "convopt.pruned_at": str(len(scores))})
            run.end("FINISHED")
            raise optuna.TrialPruned(f"pruned after {len(scores)} of {len(fractions)} folds")
        value = float(np.mean(list(scores.values())))
        run.log_metrics({"tune/mean_fold_score": value}, step=len(fractions))
        run.end("FINISHED")
        return value

    def _train_fold(self, cfg: Any, trial_run_id: str, number: int, fold: int,
                    tags: dict[str, str]) -> tuple[dict[str, float], np.ndarray]:
        """Train fold ``fold`` as a nested run; its finite metrics and validation net returns."""
        from ..tracking import open_child_run
        from ..training.coordinator import train

        fold_tags = {**tags, "convopt.role": "tune-fold", "convopt.fold": str(fold)}
        child = open_child_run(trial_run_id, tags=fold_tags, run_name=f"tune-t{number}-fold{fold}")
        keep = _KeepModel()
        result = train(cfg, preset=self.spec.preset, run_id=child.run_id, tags=fold_tags, extra_callbacks=[keep])
        if result.status == "KILLED":
            raise KeyboardInterrupt(f"trial {number} fold {fold}: run {result.run_id} was stopped: {result.reason}")
        if result.status != "FINISHED":
            raise RuntimeError(f"trial {number} fold {fold}: run {result.run_id} ended {result.status}: "
                               f"{result.reason}")
        metrics = {k: float(v) for k, v in result.metrics.items() if math.isfinite(float(v))}
        return metrics, val_pnl(cfg, keep.model)
