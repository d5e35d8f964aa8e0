"""Effect sizes: Hedges' g and the probability of improvement."""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from convopt_mlflow.stats._validation import as_scores


def run_means(scores: np.ndarray) -> np.ndarray:
    """Mean over tasks of each run, ``(runs, tasks) -> (runs,)``: one value per seed."""
    return scores.mean(axis=1)


def hedges_g(scores_x: ArrayLike, scores_y: ArrayLike) -> float:
    r"""Bias-corrected standardized mean difference of X over Y (Hedges' g).

    With run means ``x`` (``n_x`` values) and ``y`` (``n_y`` values),
    ``s_p = sqrt(((n_x - 1) s_x^2 + (n_y - 1) s_y^2) / (n_x + n_y - 2))``,
    ``d = (mean(x) - mean(y)) / s_p`` and ``g = J d`` with Hedges' (1981)
    correction ``J = 1 - 3 / (4 (n_x + n_y) - 9)``. Unitless; NaN when both arms
    have zero variance.

    Args:
        scores_x: ``(runs, tasks)`` or ``(runs,)``, at least 2 runs; each run is reduced
            to its task mean.
        scores_y: the same for the other arm, with the same number of tasks.

    Examples:
        >>> round(hedges_g([2, 4, 6], [1, 2, 3]), 4)
        1.0119
    """
    x = run_means(as_scores(scores_x, name="scores_x", min_runs=2))
    y = run_means(as_scores(scores_y, name="scores_y", min_runs=2))
    n_x, n_y = x.size, y.size
    pooled = ((n_x - 1) * x.var(ddof=1) + (n_y - 1) * y.var(ddof=1)) / (n_x + n_y - 2)
    if pooled == 0.0:
        return float("nan")
    correction = 1.0 - 3.0 / (4.0 * (n_x + n_y) - 9.0)
    return float(correction * (x.mean() - y.mean()) / np.sqrt(pooled))


def probability_of_improvement(scores_x: ArrayLike, scores_y: ArrayLike) -> float:
    """P(X > Y) + 0.5 P(X = Y) over all run pairs, averaged over tasks (rliable's definition).

    For each task ``m`` it is the Mann-Whitney ``U`` of ``X_m`` against ``Y_m``
    divided by ``n_x * n_y``; the result is the mean over tasks. 0.5 means no
    tendency either way.

    Args:
        scores_x: ``(runs_x, tasks)`` scores.
        scores_y: ``(runs_y, tasks)`` scores; run counts may differ.

    Examples:
        >>> probability_of_improvement([1, 2, 3], [0, 2, 2])
        0.6666666666666666
    """
    x = as_scores(scores_x, name="scores_x")
    y = as_scores(scores_y, name="scores_y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"scores_x has {x.shape[1]} tasks but scores_y has {y.shape[1]}")
    # (runs_x, runs_y, tasks) comparisons of every run pair within each task.
    greater = x[:, None, :] > y[None, :, :]
    ties = x[:, None, :] == y[None, :, :]
    per_task = (greater + 0.5 * ties).mean(axis=(0, 1))
    return float(per_task.mean())
