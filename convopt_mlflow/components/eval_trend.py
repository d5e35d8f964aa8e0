"""Validation-score bookkeeping: stagnation and overfitting over successive evals.

Units: ``update`` is the index of the PPO update (1, 2, ...) on which an eval
happened; slopes are per update.
"""
from __future__ import annotations

import math
from typing import Any, List, Mapping, Sequence

from convopt_mlflow.components import signals as sig


class EvalTrend:
    """Tracks the best eval_score, evals since it, and the train-vs-eval trend gap.

    On each new eval the generalization gap is ``slope(train_return) -
    slope(eval_score)``, both per update, the train slope over the monitor's
    window and the eval slope over the last ``eval_window`` evals. An eval
    counts towards overfitting when train is rising while eval is falling (so
    the train-minus-eval level keeps widening); the count resets on any other eval.

    Examples:
        >>> trend = EvalTrend(eval_window=3)
        >>> for update, score in [(1, 1.0), (2, 0.9), (3, 0.8)]:
        ...     trend.add(update, score, train_returns=[0.0, 1.0, 2.0], train_updates=[1, 2, 3])
        >>> trend.evals_since_best, trend.overfit_count, round(trend.gap, 6)
        (2, 2, 1.1)
    """

    def __init__(self, eval_window: int):
        self.eval_window = int(eval_window)
        self.evals: List[List[float]] = []  # [update, score], the last eval_window evals
        self.best: float | None = None
        self.evals_since_best = 0
        self.overfit_count = 0
        self.gap = 0.0

    @property
    def last_score(self) -> float:
        return self.evals[-1][1] if self.evals else math.nan

    def slope(self) -> float:
        """Least-squares eval_score slope per update over the kept evals."""
        return sig.slope([e[1] for e in self.evals], [e[0] for e in self.evals])

    def add(self, update: int, score: float, train_returns: Sequence[float], train_updates: Sequence[float]) -> None:
        """Ingest a new eval (ignored when ``score`` is not finite)."""
        if not math.isfinite(score):
            return
        self.evals.append([float(update), float(score)])
        del self.evals[: -self.eval_window]
        if self.best is None or score > self.best:
            self.best, self.evals_since_best = float(score), 0
        else:
            self.evals_since_best += 1
        train_slope = sig.slope(train_returns, train_updates)
        eval_slope = self.slope()
        self.gap = train_slope - eval_slope
        # train rising and eval falling: the gap is positive, so train - eval keeps widening
        widening = len(self.evals) >= 2 and train_slope > 0 and eval_slope < 0
        self.overfit_count = self.overfit_count + 1 if widening else 0

    def stagnant(self, patience: int) -> bool:
        """No new best for ``patience`` evals and a non-rising recent trend."""
        return self.evals_since_best >= patience and self.slope() <= 0

    def state_dict(self) -> dict[str, Any]:
        return {"evals": [list(e) for e in self.evals], "best": self.best,
                "evals_since_best": self.evals_since_best, "overfit_count": self.overfit_count, "gap": self.gap}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.evals = [[float(u), float(s)] for u, s in state["evals"]][-self.eval_window:]
        self.best = None if state["best"] is None else float(state["best"])
        self.evals_since_best = int(state["evals_since_best"])
        self.overfit_count = int(state["overfit_count"])
        self.gap = float(state["gap"])
