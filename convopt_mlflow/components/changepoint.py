"""Online change-point detection on bar returns, and a rolling-volatility baseline to compare it with.

:class:`BayesianChangePointDetector` is Bayesian online change-point detection (Adams & MacKay
2007) with a Normal-Gamma model of each segment's returns: a segment has an unknown mean and an
unknown variance, so a shift of either the drift or the volatility is a change. The posterior
over the run length ``r_t`` (bars since the last change) is updated once per bar:

    P(r_t = 0)      ∝ Σ_r P(r_{t-1} = r) · p(x_t | r) · H
    P(r_t = r + 1)  ∝ P(r_{t-1} = r) · p(x_t | r) · (1 - H)

where ``p(x_t | r)`` is the Student-t predictive of the segment of length ``r`` and ``H`` the
constant hazard (1 / expected segment length in bars). Run lengths beyond ``max_run`` are merged
into the oldest kept one (cost O(max_run) per bar).

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
from scipy.special import gammaln

#: Regime names by segment volatility relative to the reference scale.
REGIMES = ("low_vol", "normal", "high_vol")


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


class BayesianChangePointDetector:
    """Bayesian online change-point detection (Adams & MacKay 2007) on standardized returns.

    Args:
        scale: reference std of the returns (same units as the returns), > 0.
        hazard: prior probability of a change at any bar (1 / expected segment length).
        max_run: run lengths kept (older ones merge into the oldest kept).
        confirm: bars the new segment must have lasted before the change is declared.
        min_spacing: bars between the starts of two declared segments.
        clip: winsorize standardized returns at ±clip times the current segment's volatility (at least 1).
        min_vol_change: a new segment is declared only if its volatility differs from the one the
            detector saw just before it began by at least this factor (a regime change, not a re-split).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> x = np.r_[rng.normal(0, 1e-3, 500), rng.normal(0, 3e-3, 500)]
        >>> det = BayesianChangePointDetector(scale=1e-3)
        >>> changes = [c for t, v in enumerate(x) if (c := det.update(v, t)) is not None]
        >>> [(c.start // 10, c.bar > 500) for c in changes]
        [(50, True)]
    """

    def __init__(self, scale: float, *, hazard: float = 1 / 1000, max_run: int = 400, confirm: int = 10,
                 min_spacing: int = 30, clip: float = 3.0, min_vol_change: float = 1.3):
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        if not 0 < hazard < 1:
            raise ValueError(f"hazard must be in (0, 1), got {hazard!r}")
        self.scale, self.hazard, self.max_run = float(scale), float(hazard), int(max_run)
        self.confirm, self.min_spacing, self.clip = int(confirm), int(min_spacing), float(clip)
        self.min_vol_change = float(min_vol_change)
        # Normal-Gamma prior on a standardized segment: mean 0, variance about 1.
        self.prior = (0.0, 1.0, 1.0, 1.0)  # mu, kappa, alpha, beta
        self.reset()

    def reset(self) -> None:
        mu0, kappa0, alpha0, beta0 = self.prior
        self.probs = np.ones(1)
        self.mu, self.kappa = np.array([mu0]), np.array([kappa0])
        self.alpha, self.beta = np.array([alpha0]), np.array([beta0])
        self.bars_seen = 0
        self.last_start: int | None = None  # start of the last declared segment (the first bar fed, at first)
        self.run_length = 0
        self.recent_vol = np.ones(self.max_run + 1)  # ring buffer: MAP-segment volatility after each bar

    # ------------------------------------------------------------------ per bar
    def _log_predictive(self, x: float) -> np.ndarray:
        df = 2.0 * self.alpha
        var = self.beta * (self.kappa + 1.0) / (self.alpha * self.kappa)
        z2 = (x - self.mu) ** 2 / (df * var)
        return (gammaln((df + 1) / 2) - gammaln(df / 2) - 0.5 * np.log(df * math.pi * var)
                - (df + 1) / 2 * np.log1p(z2))

    def update(self, value: float, bar: int | None = None) -> ChangePoint | None:
        """Feed one bar's return; returns the change declared at this bar, if any."""
        bar = self.bars_seen if bar is None else int(bar)
        if self.last_start is None:
            self.last_start = bar
        bound = self.clip * max(1.0, self.vol_ratio)  # winsorize relative to the current segment's volatility
        x = float(np.clip(value / self.scale, -bound, bound)) if math.isfinite(value) else 0.0
        log_pred = self._log_predictive(x)
        weighted = self.probs * np.exp(log_pred - log_pred.max())
        grown = weighted * (1.0 - self.hazard)
        probs = np.concatenate(([weighted.sum() * self.hazard], grown))
        mu0, kappa0, alpha0, beta0 = self.prior
        beta = self.beta + self.kappa * (x - self.mu) ** 2 / (2.0 * (self.kappa + 1.0))
        mu = (self.kappa * self.mu + x) / (self.kappa + 1.0)
        self.mu = np.concatenate(([mu0], mu))
        self.kappa = np.concatenate(([kappa0], self.kappa + 1.0))
        self.alpha = np.concatenate(([alpha0], self.alpha + 0.5))
        self.beta = np.concatenate(([beta0], beta))
        if probs.size > self.max_run:  # merge the oldest run length into the one before it
            probs[-2] += probs[-1]
            probs = probs[:-1]
            self.mu, self.kappa, self.alpha, self.beta = (a[:-1] for a in (self.mu, self.kappa, self.alpha, self.beta))
        self.probs = probs / probs.sum()
        self.bars_seen += 1
        self.run_length = int(np.argmax(self.probs))
        start = bar - self.run_length + 1  # first bar of the MAP segment
        vol = self.vol_ratio
        before = self.recent_vol[(self.bars_seen - 1 - self.run_length) % self.recent_vol.size]
        self.recent_vol[(self.bars_seen - 1) % self.recent_vol.size] = vol
        capped = self.run_length >= self.max_run - 1  # the merged tail: an old segment, not a new one
        if not capped and self.run_length >= self.confirm and start - self.last_start >= self.min_spacing:
            if max(vol / before, before / vol) >= self.min_vol_change:
                self.last_start = start
                return ChangePoint(bar, start, vol)
        return None

    @property
    def vol_ratio(self) -> float:
        """Volatility of the current MAP segment over the reference scale (posterior mean of the std)."""
        r = self.run_length
        return float(math.sqrt(self.beta[r] / self.alpha[r]))

    @property
    def regime(self) -> str:
        return volatility_regime(self.vol_ratio)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"probs": self.probs.tolist(), "mu": self.mu.tolist(), "kappa": self.kappa.tolist(),
                "alpha": self.alpha.tolist(), "beta": self.beta.tolist(), "bars_seen": self.bars_seen,
                "last_start": self.last_start, "run_length": self.run_length, "recent_vol": self.recent_vol.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key in ("probs", "mu", "kappa", "alpha", "beta"):
            setattr(self, key, np.asarray(state[key], dtype=np.float64))
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
    """Run ``detector`` bar by bar over ``returns`` (1-D log returns); the changes it declares."""
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
