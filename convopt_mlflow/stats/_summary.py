"""Per-arm summary: point estimates with stratified bootstrap confidence intervals."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike

from convopt_mlflow.stats._bootstrap import percentile_interval, resample, run_indices
from convopt_mlflow.stats._validation import as_generator, as_scores, check_probability

_STATISTICS = ("mean", "median", "iqm", "std")


def iqm(scores: ArrayLike) -> float:
    """Interquartile mean of all ``runs x tasks`` scores (rliable's ``aggregate_iqm``).

    The mean of the middle 50% after dropping ``int(0.25 * n)`` of the ``n``
    flattened scores at each end (``scipy.stats.trim_mean(x, 0.25)``).

    Args:
        scores: ``(runs, tasks)`` or ``(runs,)``, in score units.

    Examples:
        >>> iqm([1, 2, 3, 4, 5, 6, 7, 100])
        4.5
    """
    return float(scipy.stats.trim_mean(as_scores(scores), 0.25, axis=None))


def _flat_statistics(samples: np.ndarray) -> dict[str, np.ndarray]:
    """The four statistics of ``samples`` ``(batch, values)``, each ``(batch,)``."""
    return {
        "mean": samples.mean(axis=1),
        "median": np.median(samples, axis=1),
        "iqm": scipy.stats.trim_mean(samples, 0.25, axis=1),
        "std": samples.std(axis=1, ddof=1),
    }


@dataclass(frozen=True)
class ArmSummary:
    """Point estimates and ``confidence`` bootstrap intervals of one arm's scores.

    All values are in score units over the flattened ``runs x tasks`` scores;
    ``std`` is the sample standard deviation (``ddof=1``). Each ``*_ci`` is a
    ``(low, high)`` percentile interval.
    """

    runs: int
    tasks: int
    mean: float
    median: float
    iqm: float
    std: float
    mean_ci: tuple[float, float]
    median_ci: tuple[float, float]
    iqm_ci: tuple[float, float]
    std_ci: tuple[float, float]
    confidence: float

    @property
    def n(self) -> int:
        """Number of runs (seeds) - the unit of replication."""
        return self.runs

    def to_dict(self) -> dict[str, float]:
        """Flat ``{name: number}`` view, e.g. ``mean_ci_low``; fit for logging as metrics."""
        flat: dict[str, float] = {}
        for key, value in asdict(self).items():
            if isinstance(value, tuple):
                flat[f"{key}_low"], flat[f"{key}_high"] = value
            else:
                flat[key] = value
        flat["n"] = self.runs
        return flat


def summarize_arm(
    scores: ArrayLike,
    *,
    rng: np.random.Generator | int,
    n_boot: int = 2000,
    confidence: float = 0.95,
) -> ArmSummary:
    """Summarize one arm: n, mean, median, IQM and std, each with a bootstrap CI.

    Intervals are percentile intervals of a stratified bootstrap: runs are
    resampled independently within each task (see ``rliable``'s
    ``StratifiedBootstrap``); with one task it is the plain bootstrap over runs.

    Args:
        scores: ``(runs, tasks)`` or ``(runs,)`` final scores, at least 2 runs.
        rng: the generator, or an int seed, that draws the resamples.
        n_boot: number of bootstrap replicates.
        confidence: coverage of the intervals, e.g. 0.95.

    Examples:
        >>> s = summarize_arm([1.0, 2.0, 3.0, 4.0, 5.0], rng=0)
        >>> s.n, s.mean, s.median, s.iqm
        (5, 3.0, 3.0, 3.0)
        >>> s.mean_ci[0] < 3.0 < s.mean_ci[1]
        True
    """
    data = as_scores(scores, min_runs=2)
    check_probability(confidence, "confidence")
    generator = as_generator(rng)
    runs, tasks = data.shape
    point = {name: float(value[0]) for name, value in _flat_statistics(data.reshape(1, -1)).items()}
    replicates = resample(data, run_indices(runs, tasks, n_boot, generator)).reshape(n_boot, -1)
    intervals = {
        f"{name}_ci": percentile_interval(values, confidence)
        for name, values in _flat_statistics(replicates).items()
    }
    return ArmSummary(runs=runs, tasks=tasks, confidence=confidence, **point, **intervals)
