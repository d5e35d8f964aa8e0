"""Online change-point detection on bar returns, and a rolling-volatility baseline to compare it with.

:class:`BayesianChangePointDetector` is Bayesian online change-point detection (Adams & MacKay
2007) with a Normal-Gamma model of each segment's returns: a segment has an unknown mean and an
unknown variance, so a shift of either the drift or the volatility is a change. The posterior
over the run length ``r_t`` (bars since the last change) is updated once per bar:

    P(r_t = 0)      ∝ Σ_r P(r_{t-1} = r) · p(x_t | r) · H
    P(r_t = r + 1)  ∝ P(r_{t-1} = r) · p(x_t | r) · (1 - H)

where ``p(x_t | r)`` is the Student-t predictive of the segment of length ``r`` and ``H`` the
constant hazard (1 / expected segment length in bars). Run lengths beyond ``max_run`` are merged
into the oldest kept one. The recursion is computed a block of bars at a time, with the same
results as bar by bar: by default over the run lengths that carry at least ``prune`` of the
posterior (:mod:`convopt_mlflow.components.bocpd_fast`, ~10 µs of CPU per bar, the pruned mass is
recorded); with ``prune=None`` over all of them (:mod:`convopt_mlflow.components.bocpd`, exact,
O(max_run) per bar, the reference the pruned one is tested against).

Inputs are per-bar log returns divided by a reference ``scale`` (a robust std of the returns) and
winsorized at ``clip`` times the current segment's volatility (at least 1): a single jump must not
open a segment, and a volatile segment's own returns must not be flattened. A change is *declared* at bar t
when the maximum-a-posteriori run length says the current segment began after the last declared
change by at least ``min_spacing`` bars and has lasted ``confirm`` bars: the detection delay is at
least ``confirm`` bars, and a one-bar outlier is never a change.

Units: bars (time), log returns (values); volatility is per-bar std in units of ``scale``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from convopt_mlflow.components.bocpd import Prior, RunState, run_bocpd
from convopt_mlflow.components.bocpd_fast import (DEFAULT_MAX_STARTS, DEFAULT_PRUNE, PRUNE_EVERY, SparseState,
                                                 sparse_block)

#: Regime names by segment volatility relative to the reference scale.
REGIMES = ("low_vol", "normal", "high_vol")

#: Run lengths kept by default (R; see :class:`BayesianChangePointDetector`).
DEFAULT_MAX_RUN = 400


def robust_scale(returns: np.ndarray) -> float:
    """Median absolute deviation of ``returns`` (log returns, 1-D) as a std estimate; 1.0 if degenerate."""
    returns = np.asarray(returns, dtype=np.float64)
    returns = returns[np.isfinite(returns)]
    if returns.size == 0:
        return 1.0
    mad = float(np.median(np.abs(returns - np.median(returns)))) / 0.6745
    return mad if mad > 0 else (float(np.std(returns)) or 1.0)


def volatility_regime(vol_ratio: float, low: float = 0.75, high: float = 1.6) -> str:
    """``low_vol`` / ``normal`` / ``high_vol`` for a segment volatility in units of the reference scale."""
    return REGIMES[0] if vol_ratio < low else REGIMES[2] if vol_ratio > high else REGIMES[1]


@dataclass(frozen=True)
class ChangePoint:
    """A declared change: ``bar`` is where it was declared, ``start`` where the new segment began."""

    bar: int
    start: int
    vol_ratio: float
    """The new segment's volatility over the reference scale when it was declared."""


@dataclass(frozen=True)
class Trace:
    """What the detector saw over a batch of bars, one entry per bar (bars, per-bar std in ``scale`` units)."""

    run_length: np.ndarray
    """MAP run length after each bar (bars since the segment began)."""
    vol: np.ndarray
    """The MAP segment's volatility after each bar (its ``vol_ratio``)."""
    changes: list[ChangePoint]

    @property
    def regimes(self) -> np.ndarray:
        """Regime index (into :data:`REGIMES`) after each bar."""
        return regime_index(self.vol)


def regime_index(vol_ratio: np.ndarray, low: float = 0.75, high: float = 1.6) -> np.ndarray:
    """Vectorized :func:`volatility_regime`: int8 indices into :data:`REGIMES`."""
    vol_ratio = np.asarray(vol_ratio, dtype=np.float64)
    return np.where(vol_ratio < low, 0, np.where(vol_ratio > high, 2, 1)).astype(np.int8)


class BayesianChangePointDetector:
    """Bayesian online change-point detection (Adams & MacKay 2007) on standardized returns.

    The recursion runs a block of bars at a time (:func:`~convopt_mlflow.components.bocpd.run_bocpd`):
    feed a whole array to :meth:`process` (~10 µs of CPU per bar); :meth:`update` feeds one bar through the
    same code and gives the same answers, bar for bar, only slower. By default run lengths with less
    than ``prune`` of the posterior are dropped where a block ends (``dropped_mass`` says how much in
    all); ``prune=None`` keeps them all (the exact kernel, ~60 µs per bar at R=400).

    Args:
        scale: reference std of the returns (same units as the returns), > 0.
        hazard: prior probability of a change at any bar (1 / expected segment length).
        max_run: R, the run lengths kept (0 .. R-1); the mass of older run lengths is merged into
            R-1, whose segment statistics are those of the last R-1 bars. The cost per bar grows
            linearly with R. Default 400 (as before the vectorized kernel, so labels are unchanged);
            smaller R is faster but caps the segment a volatility is estimated from: on the synthetic
            regime market R=200 labels 95-99.5% of bars as R=400 does (docs/guides/regimes.md).
            With R at least the number of bars fed the truncation is lossless.
        confirm: bars the new segment must have lasted before the change is declared.
        min_spacing: bars between the starts of two declared segments.
        clip: winsorize standardized returns at ±clip times the current segment's volatility (at least 1).
        min_vol_change: a new segment is declared only if its volatility differs from the one the
            detector saw just before it began by at least this factor (a regime change, not a re-split).
        block: bars per vectorized block (a speed setting; default 256 exact, 64 pruned; the answers
            do not depend on it, nor on how the bars are split into calls).
        prune: every 64 bars, drop run lengths whose posterior mass is below this (None: the exact
            kernel, nothing dropped). The mass dropped is summed in :attr:`dropped_mass`.
        max_starts: keep at most this many run lengths when pruning (pruned kernel only).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> x = np.r_[rng.normal(0, 1e-3, 500), rng.normal(0, 3e-3, 500)]
        >>> det = BayesianChangePointDetector(scale=1e-3)
        >>> [(c.start // 10, c.bar > 500) for c in det.process(x).changes]
        [(50, True)]
    """

    def __init__(self, scale: float, *, hazard: float = 1 / 1000, max_run: int = DEFAULT_MAX_RUN, confirm: int = 10,
                 min_spacing: int = 30, clip: float = 3.0, min_vol_change: float = 1.3, block: int | None = None,
                 prune: float | None = DEFAULT_PRUNE, max_starts: int = DEFAULT_MAX_STARTS):
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        if not 0 < hazard < 1:
            raise ValueError(f"hazard must be in (0, 1), got {hazard!r}")
        if int(max_run) < 3:
            raise ValueError(f"max_run must be >= 3, got {max_run!r}")
        self.scale, self.hazard, self.max_run = float(scale), float(hazard), int(max_run)
        self.confirm, self.min_spacing, self.clip = int(confirm), int(min_spacing), float(clip)
        if prune is not None and not (0 <= prune < 1 and int(max_starts) >= 1):
            raise ValueError(f"prune must be in [0, 1) and max_starts >= 1, got {prune!r}, {max_starts!r}")
        self.prune, self.max_starts = (None if prune is None else float(prune)), int(max_starts)
        self.min_vol_change = float(min_vol_change)
        self.block = int(block) if block is not None else 256 if prune is None else PRUNE_EVERY
        self.kernel = None if prune is None else sparse_block(self.prune, self.max_starts)
        self.prior = Prior()  # Normal-Gamma prior on a standardized segment: mean 0, variance about 1
        self.reset()

    def reset(self) -> None:
        self.state = (RunState(np.ones(1), np.zeros(0), 1.0) if self.prune is None
                      else SparseState(np.zeros(1, dtype=np.int64), np.ones(1), np.zeros(0), 1.0))
        self.bars_seen = 0
        self.last_start: int | None = None  # start of the last declared segment (the first bar fed, at first)
        self.run_length = 0
        self.recent_vol = np.ones(self.max_run + 1)  # MAP-segment volatility after each of the last R+1 bars

    # ------------------------------------------------------------------ bars
    def process(self, returns: np.ndarray, first_bar: int | None = None) -> Trace:
        """Feed the next bars (1-D returns, chronological; ``first_bar`` is the index of ``returns[0]``,
        by default the number of bars fed so far). Returns the per-bar trace and the changes declared."""
        returns = np.asarray(returns, dtype=np.float64).ravel()
        first = self.bars_seen if first_bar is None else int(first_bar)
        if self.last_start is None:
            self.last_start = first
        run_length, vol, self.state = run_bocpd(returns / self.scale, self.state, hazard=self.hazard,
                                                max_run=self.max_run, clip=self.clip, prior=self.prior,
                                                block=self.block, kernel=self.kernel)
        history = np.r_[self.recent_vol, vol]
        keep = self.recent_vol.size
        i = np.arange(returns.size)
        # the volatility seen just before the segment began (after bar t - run_length)
        before = history[keep + i - np.where(run_length == 0, keep, run_length)]
        ratio = np.maximum(vol / before, before / vol)
        candidates = np.flatnonzero((run_length < self.max_run - 1) & (run_length >= self.confirm)
                                    & (ratio >= self.min_vol_change))
        if candidates.size > 1 and self.min_spacing > 0:
            # a candidate with the same segment start as the candidate before it is never declared (that one
            # was, and the spacing is 0, or was not, and nothing changed since): only the first of each run
            # of equal starts is looked at (the loop below went over every bar of a long segment)
            starts = candidates - run_length[candidates]
            candidates = candidates[np.r_[True, starts[1:] != starts[:-1]]]
        changes = []
        for k in candidates.tolist():
            start = first + k - int(run_length[k]) + 1
            if start - self.last_start >= self.min_spacing:
                self.last_start = start
                changes.append(ChangePoint(first + k, start, float(vol[k])))
        if returns.size:
            self.recent_vol = history[-keep:].copy()
            self.run_length = int(run_length[-1])
        self.bars_seen += returns.size
        return Trace(run_length, vol, changes)

    def update(self, value: float, bar: int | None = None) -> ChangePoint | None:
        """Feed one bar's return; returns the change declared at this bar, if any."""
        changes = self.process(np.array([value], dtype=np.float64), bar).changes
        return changes[0] if changes else None

    @property
    def probs(self) -> np.ndarray:
        """Posterior over run lengths ``0 .. len(probs)-1`` after the last bar (zeros where pruned)."""
        if isinstance(self.state, SparseState):
            return self.state.dense(min(self.bars_seen + 1, self.max_run))
        return self.state.probs

    @property
    def dropped_mass(self) -> float:
        """Posterior mass pruned so far, summed over prunings (0 for the exact kernel)."""
        return float(getattr(self.state, "dropped", 0.0))

    @property
    def vol_ratio(self) -> float:
        """Volatility of the current MAP segment over the reference scale (posterior mean of the std)."""
        return float(self.state.vol)

    @property
    def regime(self) -> str:
        return volatility_regime(self.vol_ratio)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        out = {"probs": self.state.probs.tolist(), "history": self.state.history.tolist(), "vol": self.state.vol,
               "bars_seen": self.bars_seen, "last_start": self.last_start, "run_length": self.run_length,
               "recent_vol": self.recent_vol.tolist()}
        if isinstance(self.state, SparseState):
            out.update(runs=self.state.runs.tolist(), dropped=self.state.dropped)
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        probs, history = np.asarray(state["probs"], dtype=np.float64), np.asarray(state["history"], dtype=np.float64)
        runs = np.asarray(state["runs"], dtype=np.int64) if "runs" in state else np.arange(probs.size)
        if self.prune is None:
            self.state = RunState(SparseState(runs, probs, history).dense(min(int(state["bars_seen"]) + 1, self.max_run)), history,
                                  float(state["vol"]))
        else:
            self.state = SparseState(runs, probs, history, float(state["vol"]), float(state.get("dropped", 0.0)),
                                     int(state["bars_seen"]))
        self.bars_seen = int(state["bars_seen"])
        self.last_start = None if state["last_start"] is None else int(state["last_start"])
        self.run_length = int(state["run_length"])
        self.recent_vol = np.asarray(state["recent_vol"], dtype=np.float64)


class RollingVolatilityDetector:
    """Baseline: a change when the short rolling std leaves a band around the long rolling std.

    A change is declared at bar t when ``std(last short bars) / std(last long bars)`` is above
    ``threshold`` or below ``1 / threshold``, at most once per ``refractory`` bars.
    """

    def __init__(self, *, short: int = 20, long: int = 200, threshold: float = 1.6, refractory: int = 50):
        self.short, self.long = int(short), int(long)
        self.threshold, self.refractory = float(threshold), int(refractory)
        self.window: list[float] = []
        self.last = -10**9

    def update(self, value: float, bar: int) -> ChangePoint | None:
        self.window.append(float(value) if math.isfinite(value) else 0.0)
        if len(self.window) > self.long:
            del self.window[0]
        if len(self.window) < self.long or bar - self.last < self.refractory:
            return None
        recent = np.asarray(self.window[-self.short:])
        ratio = float(recent.std() / (np.std(self.window) or 1.0))
        if ratio > self.threshold or ratio < 1.0 / self.threshold:
            self.last = bar
            return ChangePoint(bar, bar - self.short + 1, ratio)
        return None


def detect_all(detector: Any, returns: np.ndarray) -> list[ChangePoint]:
    """Run ``detector`` over ``returns`` (1-D log returns, bars 0..n-1); the changes it declares.
    A detector with ``process`` takes the whole array at once (same answers as bar by bar)."""
    if hasattr(detector, "process"):
        return detector.process(returns, first_bar=0).changes
    found = []
    for bar, value in enumerate(np.asarray(returns, dtype=np.float64)):
        change = detector.update(value, bar)
        if change is not None:
            found.append(change)
    return found


@dataclass(frozen=True)
class DetectionScore:
    detected: int
    missed: int
    false_alarms: int
    delays: tuple[int, ...]
    """Bars from each detected switch to the bar its change was declared."""
    n_bars: int

    @property
    def false_alarms_per_10k(self) -> float:
        return 1e4 * self.false_alarms / max(self.n_bars, 1)

    @property
    def median_delay(self) -> float:
        return float(np.median(self.delays)) if self.delays else float("nan")


def score_detections(declared: Sequence[int], switches: Sequence[int], n_bars: int, *,
                     max_delay: int = 100) -> DetectionScore:
    """Match declared bars to true switch bars: the first declaration in ``[s, s + max_delay]`` detects switch
    ``s``; every other declaration is a false alarm. Units: bars."""
    declared = sorted(int(d) for d in declared)
    used = [False] * len(declared)
    delays = []
    for s in sorted(int(s) for s in switches):
        for i, d in enumerate(declared):
            if not used[i] and s <= d <= s + max_delay:
                used[i] = True
                delays.append(d - s)
                break
    return DetectionScore(len(delays), len(switches) - len(delays), used.count(False), tuple(delays), int(n_bars))
