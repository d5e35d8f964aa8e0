"""The bar-by-bar BOCPD as it was before the block-vectorized kernel (components/bocpd.py), kept as the
reference the fast one is tested against (tests only; not part of the package).

Per bar: the Student-t predictive of every kept run length, the run-length posterior grown by one bar,
run lengths beyond ``max_run`` merged into the oldest kept one. About 200 µs per bar.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln

from convopt_mlflow.components.changepoint import ChangePoint, volatility_regime


class ReferenceBOCPD:
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
