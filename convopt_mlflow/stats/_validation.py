"""Input normalization shared by the statistics modules."""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def as_scores(scores: ArrayLike, *, name: str = "scores", min_runs: int = 1) -> np.ndarray:
    """Return ``scores`` as a finite float array shaped ``(runs, tasks)``.

    A 1-D array is one task: ``(runs,)`` becomes ``(runs, 1)``.
    """
    array = np.asarray(scores, dtype=float)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"{name} must be shaped (runs,) or (runs, tasks); got shape {np.shape(scores)}")
    if array.shape[0] < min_runs:
        raise ValueError(f"{name} needs at least {min_runs} runs; got {array.shape[0]}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def as_returns(returns: ArrayLike, *, name: str = "returns", min_obs: int = 3) -> np.ndarray:
    """Return ``returns`` as a finite 1-D float array of at least ``min_obs`` periods."""
    array = np.asarray(returns, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (periods,); got shape {array.shape}")
    if array.size < min_obs:
        raise ValueError(f"{name} needs at least {min_obs} periods; got {array.size}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def as_generator(rng: np.random.Generator | int) -> np.random.Generator:
    """The injected generator itself, or a new one seeded with the int ``rng``."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator or an int seed; got {type(rng).__name__}")


def check_probability(value: float, name: str) -> float:
    """``value`` if it lies strictly between 0 and 1, else ValueError."""
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1; got {value}")
    return float(value)
