"""Helpers for the statistics tests."""
import scipy.stats


def binomial_band(trials: int, rate: float, confidence: float = 0.99) -> tuple[float, float]:
    """Range of an observed rejection *fraction* that is consistent with ``rate`` at ``confidence``."""
    low, high = scipy.stats.binom.interval(confidence, trials, rate)
    return low / trials, high / trials
