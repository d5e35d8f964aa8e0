"""Stratified percentile bootstrap over runs, one stratum per task.

Like rliable's ``StratifiedBootstrap``: each replicate draws ``runs`` run indices
with replacement *independently within every task* (fold), so a replicate keeps
the ``(runs, tasks)`` shape and every task keeps its run count. With one task it
is the ordinary iid bootstrap over runs.
"""
from __future__ import annotations

import numpy as np


def run_indices(runs: int, tasks: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Resampled run indices shaped ``(n_boot, runs, tasks)``, drawn per task."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1; got {n_boot}")
    return rng.integers(0, runs, size=(n_boot, runs, tasks))


def resample(scores: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``scores`` ``(runs, tasks)`` gathered by ``indices`` -> ``(n_boot, runs, tasks)``."""
    return np.take_along_axis(scores[None, :, :], indices, axis=1)


def percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """Two-sided percentile interval of bootstrap ``replicates`` ``(n_boot,)``."""
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(replicates, [tail, 100.0 - tail])
    return float(low), float(high)
