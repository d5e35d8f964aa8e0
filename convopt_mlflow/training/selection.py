"""Which weights a run ships: the best-by-validation checkpoint or the last update.

A run's last update is rarely its best one: the validation score of a PPO trading agent
can peak and then fall while entropy collapses. By default (``run.final_model=best``) the
run ships whichever of the two scores higher on validation: the best-by-eval checkpoint
(the store keeps it) or the weights the last update left. Validation then selected the
model, so its validation numbers are optimistic; the test split is the unbiased one.

Flat scores a validation Sharpe of 0. Beating 0 is not enough: the shipped weights are the
best of every validation score the run looked at, and the best of N scores of a strategy with no
edge is above 0 by chance. The shipped weights have an edge only when the deflated Sharpe ratio
of their per-bar validation PnL, against the best that ``n_trials`` no-edge tries would score,
exceeds 0.95 (:mod:`convopt_mlflow.evaluation.edge`). Otherwise the run still finishes, tagged
``convopt.no_edge=true`` with the reason in ``convopt.edge_reason``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from ..evaluation.edge import EDGE_THRESHOLD, EdgeVerdict, edge_verdict
from .checkpoints import CheckpointStore
from .interventions import load_weights

FINAL_MODELS = ("best", "last")


@dataclass(frozen=True)
class ModelChoice:
    """The decision, as data: what was shipped, from which step, and the scores compared."""

    source: str
    """"best" (a checkpoint was restored) or "last" (the final update's weights)."""
    step: int
    """Environment step whose weights are shipped."""
    val_score: float
    """Validation score (Sharpe) of the shipped weights."""
    last_score: float
    """Validation score of the final update's weights."""
    best_step: int | None
    best_score: float | None
    reason: str
    edge: EdgeVerdict | None = None
    """The deflated-Sharpe verdict on the shipped weights (None: only ``val_score > 0`` is known)."""

    @property
    def no_edge(self) -> bool:
        return self.edge.no_edge if self.edge is not None else not self.val_score > 0.0

    def tags(self) -> dict[str, str]:
        out = {"convopt.model_step": str(self.step), "convopt.model_source": self.source,
               "convopt.no_edge": str(self.no_edge).lower()}
        return {**out, **self.edge.tags()} if self.edge is not None else out

    def metrics(self) -> dict[str, float]:
        out = {"model/val_score": self.val_score, "model/last_val_score": self.last_score,
               "model/step": float(self.step)}
        if self.best_score is not None:
            out["model/best_checkpoint_val_score"] = self.best_score
        if self.edge is not None:
            out.update(self.edge.metrics())
        return {k: v for k, v in out.items() if math.isfinite(v)}


def selection_trials(evaluated: Sequence[tuple[float, float]], last_step: int, final_model: str) -> int:
    """How many validation scores chose the shipped weights: every evaluation ``(step, score)`` of the
    whole run and the last weights (not again when an evaluation at ``last_step`` scored them); 1 with
    ``final_model="last"``, where nothing is chosen."""
    if final_model == "last":
        return 1
    steps = {int(step) for step, _ in evaluated}
    return len(evaluated) + (0 if int(last_step) in steps else 1)


def judge_edge(choice: ModelChoice, pnl: np.ndarray, evaluated: Sequence[tuple[float, float]], *, last_step: int,
               final_model: str, periods_per_year: float, threshold: float = EDGE_THRESHOLD) -> ModelChoice:
    """``choice`` with its deflated-Sharpe verdict on the shipped weights' per-bar validation ``pnl``.

    ``evaluated``: ``(step, annualized validation Sharpe)`` of every evaluation the run made (a
    resumed run's included); ``last_step``: the step of the last weights (scored once more).
    """
    n = selection_trials(evaluated, last_step, final_model)
    scale = math.sqrt(periods_per_year)
    per_bar = [score / scale for _, score in evaluated] + [choice.last_score / scale]
    verdict = edge_verdict(pnl, n, trial_sharpes=per_bar, threshold=threshold, periods_per_year=periods_per_year)
    return replace(choice, edge=verdict)


def choose_final_model(model: Any, store: CheckpointStore, score: Callable[[Any], float], *,
                       final_model: str = "best") -> ModelChoice:
    """Score the last weights, compare with the store's best checkpoint and load the winner into ``model``.

    ``score(policy)`` returns the validation score. With ``final_model="last"`` the last
    weights are always kept. A best checkpoint that fails its sha256 check is passed over.
    """
    step = int(model.num_timesteps)
    last = float(score(model.policy))
    best = store.best()
    if final_model == "last" or best is None or best.score is None:
        why = "run.final_model=last" if final_model == "last" else "no scored checkpoint"
        return ModelChoice("last", step, last, last, None, None, why)
    if not best.score > last:
        return ModelChoice("last", step, last, last, best.step, best.score,
                           f"last weights score {last:.4g} >= best checkpoint {best.score:.4g} (step {best.step})")
    try:
        load_weights(model, store.load(best))
    except Exception as exc:  # a corrupt checkpoint: ship the last weights and say why
        return ModelChoice("last", step, last, last, best.step, best.score, f"best checkpoint unusable: {exc}")
    return ModelChoice("best", best.step, float(best.score), last, best.step, best.score,
                       f"best checkpoint (step {best.step}) scores {best.score:.4g} > last weights {last:.4g}")
