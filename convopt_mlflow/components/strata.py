"""Regime strata for stratified rollouts: per-bar labels, per-episode labels, and the block schedule.

Why strata combine two detectors. What flips the sign of a signal's edge is the *dependence* of
returns (trend: momentum pays; mean reversion: it is reversed), which the trend detector
(:mod:`~convopt_mlflow.components.trend_detector`) sees and BOCPD does not; what makes any edge
useless next to the noise is a burst of volatility, which BOCPD
(:mod:`~convopt_mlflow.components.changepoint`) sees and the trend detector (it works on returns
scaled by their trailing RMS) does not. A bar's stratum is therefore ``high_vol`` when BOCPD labels
it so, else the trend detector's most probable state (``trend``, ``mean_reversion``, ``neutral``).
Both labels are causal (bar t from bars <= t), need no fit and no knowledge of how a market makes
its regimes, so the strata exist on any market (real data included).

An episode's stratum is the most common stratum of the ``episode_length`` bars it trades through
(:func:`window_majority`): it is used only to *choose* training windows, never observed, so looking
at the episode's own bars is no lookahead for the agent.

Units: bars.

Example:
    >>> probs = np.array([[.8, .1, .1], [.1, .8, .1], [.2, .2, .6], [.9, .05, .05]])
    >>> combine_labels(probs, np.array([1, 1, 1, 2])).tolist()  # the last bar: BOCPD says high_vol
    [0, 1, 2, 3]
    >>> window_majority(np.array([0, 0, 1, 1, 1, 3]), 3).tolist()
    [0, 1, 1, 1]
    >>> schedule = BlockSchedule(("a", "b"))
    >>> [schedule.next({"a": 0.75, "b": 0.25}) for _ in range(4)]
    ['a', 'a', 'b', 'a']
    >>> {k: round(v, 3) for k, v in schedule.targets({"a": 0.99, "b": 0.01}).items()}  # b raised x4, not to 0.1
    {'a': 0.961, 'b': 0.039}
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from convopt_mlflow.components.changepoint import REGIMES
from convopt_mlflow.components.trend_detector import TREND_STATES

#: the strata, in code order: the trend detector's states (same order), then BOCPD's high volatility
STRATA = (*TREND_STATES, "high_vol")
_HIGH_VOL = REGIMES.index("high_vol")


def combine_labels(trend_probs: np.ndarray, vol_labels: np.ndarray | None = None) -> np.ndarray:
    """Stratum code (int8 index into :data:`STRATA`) of every bar.

    Args:
        trend_probs: ``(n, 3)`` P(trend), P(mean_reversion), P(neutral) per bar; NaN rows (the
            detector's warm-up) count as ``neutral``.
        vol_labels: ``(n,)`` BOCPD regime index per bar (into ``changepoint.REGIMES``), or None.
    """
    probs = np.asarray(trend_probs, dtype=np.float64)
    codes = np.full(probs.shape[0], STRATA.index("neutral"), dtype=np.int8)
    known = np.isfinite(probs).all(axis=1)
    codes[known] = np.argmax(probs[known], axis=1)
    if vol_labels is not None:
        codes[np.asarray(vol_labels).reshape(-1) == _HIGH_VOL] = STRATA.index("high_vol")
    return codes


def window_majority(codes: np.ndarray, length: int, n_states: int = len(STRATA)) -> np.ndarray:
    """Most common code of ``codes[s:s + length]`` for every ``s`` (ties: the lowest code); ``(n - length + 1,)``."""
    codes = np.asarray(codes, dtype=np.intp).reshape(-1)
    if length < 1 or codes.size < length:
        return np.zeros(0, dtype=np.int8)
    counts = np.zeros((codes.size + 1, n_states), dtype=np.int32)
    counts[np.arange(1, codes.size + 1), codes] = 1  # one code per row: a plain assignment (np.add.at is ~20x slower)
    np.cumsum(counts, axis=0, out=counts)
    windows = counts[length:] - counts[:-length]
    return np.argmax(windows, axis=1).astype(np.int8)


def start_pools(codes: np.ndarray, bounds: tuple[int, int], length: int) -> dict[str, np.ndarray]:
    """Episode start bars in ``[low, high]`` (both inclusive, as ``MarketCore.start_bounds``) grouped
    by the stratum of the ``length`` bars they trade; every stratum is a key (possibly empty)."""
    low, high = int(bounds[0]), int(bounds[1])
    majority = window_majority(codes[max(low, 0):high + length], length)  # only the windows of these starts
    starts = np.arange(max(low, 0), max(low, 0) + majority.size)
    labels = majority
    return {name: starts[labels == k] for k, name in enumerate(STRATA)}


class BlockSchedule:
    """Which stratum the next block of rollouts trains on: the one furthest behind its target share.

    Deterministic (no randomness to inject): after ``t`` blocks, stratum g has had about
    ``target_g * t`` of them, ``target_g`` its share of train episode starts raised towards
    ``min_share``, by at most ``max_oversample`` times (then renormalized). The run thus trains on
    nearly the mix of regimes an unstratified one sees (only which update sees which regime changes),
    except that a rare regime still gets blocks for its bandit to learn from, while a stratum of a
    handful of windows is not replayed over and over. Strata with share 0 are never chosen.
    """

    def __init__(self, names: tuple[str, ...] = STRATA, *, min_share: float = 0.1, max_oversample: float = 4.0):
        self.names = tuple(names)
        self.min_share, self.max_oversample = float(min_share), float(max_oversample)
        self.counts = dict.fromkeys(self.names, 0)

    def targets(self, shares: Mapping[str, float]) -> dict[str, float]:
        """The share of blocks each stratum is scheduled to get."""
        raised = {n: max(float(shares[n]), min(self.min_share, self.max_oversample * float(shares[n])))
                  for n in self.names if shares.get(n, 0.0) > 0}
        mass = sum(raised.values())
        return {n: v / mass for n, v in raised.items()}

    def next(self, shares: Mapping[str, float]) -> str:
        total = sum(self.counts.values()) + 1
        target = self.targets(shares)
        if not target:
            raise ValueError("no stratum has any episode start")
        chosen = max(target, key=lambda n: (target[n] * total - self.counts[n], -self.names.index(n)))
        self.counts[chosen] += 1
        return chosen

    def state_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.counts = {n: int(state["counts"].get(n, 0)) for n in self.names}
