"""Causal detector of trend versus mean reversion: rolling autocorrelation statistics of log returns.

BOCPD (:mod:`~convopt_mlflow.components.changepoint`) sees volatility. What flips the sign of a
momentum signal is the *dependence* of returns: persistent (trend, momentum) or anti-persistent
(mean reversion). Over the trailing ``window`` bars ending at bar t (bars <= t only) this detector
computes two classical statistics of the returns, each standardized to N(0, 1) under a random walk:

- ``z_ac``: lag-1 autocorrelation times sqrt(window);
- ``z_vr``: the variance ratio ``VR(q) - 1 = 2 sum_{k<q} (1 - k/q) rho_k`` over its asymptotic
  std ``sqrt(2 (2q-1)(q-1) / (3 q window))`` (Lo & MacKinlay 1988), which also sees dependence at
  lags 2 .. q-1.

Returns are first divided by their trailing RMS over ``window`` bars and clipped at ``clip``, so
jumps and volatility bursts do not dominate. The pair ``u = (z_ac, z_vr)`` is then classified by
three Gaussian likelihoods with the null covariance of the two statistics: ``neutral`` centred on 0,
``trend`` on ``+effect * (1, c)`` and ``mean_reversion`` on ``-effect * (1, c)`` (``c``: their null
correlation, the direction a lag-1 dependence moves them in), with equal priors. The
probabilities are the posterior over the three states given the window.

Why this and not a Gaussian HMM: the statistics are a fixed function of the last
``2 * window + q`` bars. Nothing is fitted, so nothing can leak from validation or test into the
train split, the logged model rebuilds the features from its OHLCV input with no stored state,
an augmented episode's features computed over its segment equal the whole-series ones after the
warm-up, and the detector transfers to markets whose regimes it has never seen. The price is a
detection delay of about half a window; a forward-filtered HMM would carry its state across bars
(infinite memory) and need a fit per market. No dependency beyond numpy.

Units: bars; inputs are per-bar log returns.

Example:
    >>> rng = np.random.default_rng(0)
    >>> noise = rng.standard_normal(3001)
    >>> reverting = noise[1:] - 0.5 * noise[:-1]  # MA(1): lag-1 autocorrelation -0.4
    >>> returns = np.r_[rng.standard_normal(1500), reverting[:1500]] * 1e-3
    >>> probs = TrendDetector().probabilities(returns)
    >>> TREND_STATES[int(np.argmax(probs[1400]))], TREND_STATES[int(np.argmax(probs[2900]))]
    ('neutral', 'mean_reversion')
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the states, in the column order of :meth:`TrendDetector.probabilities`
TREND_STATES = ("trend", "mean_reversion", "neutral")


@dataclass(frozen=True)
class TrendDetector:
    """Rolling lag-1 autocorrelation + variance ratio -> P(trend), P(mean_reversion), P(neutral).

    Args:
        window: bars each statistic covers (and the RMS the returns are scaled by), >= 16.
        horizon: q of the variance ratio (bars), 2 <= q < window.
        effect: distance of the trend / mean-reversion means from 0 along (1, c), in null stds.
        clip: scaled returns are clipped at ±clip.
    """

    window: int = 64
    horizon: int = 8
    effect: float = 3.0
    clip: float = 4.0

    def __post_init__(self):
        if int(self.window) < 16 or not 2 <= int(self.horizon) < int(self.window):
            raise ValueError(f"need window >= 16 and 2 <= horizon < window, got {self.window}, {self.horizon}")

    @property
    def warmup(self) -> int:
        """Bars before the first defined statistic (rows before it are the prior, 1/3 each)."""
        return 2 * self.window + self.horizon - 1

    @property
    def null_correlation(self) -> float:
        q = self.horizon
        return 2.0 * (1.0 - 1.0 / q) / np.sqrt(2.0 * (2 * q - 1) * (q - 1) / (3.0 * q))

    def statistics(self, log_returns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(z_ac, z_vr)``, float64 ``(n,)`` each, NaN before :attr:`warmup`. Bar t uses bars <= t."""
        r = np.nan_to_num(np.asarray(log_returns, dtype=np.float64).ravel())
        W, q, n = int(self.window), int(self.horizon), r.size
        rms = np.sqrt(_trailing_sum(r * r, W) / W)
        x = np.clip(np.divide(r, rms, out=np.zeros(n), where=rms > 0), -self.clip, self.clip)
        x[:W - 1] = 0.0  # no scale yet
        mean = _trailing_sum(x, W) / W
        square = mean * mean
        var = _trailing_sum(x * x, W) / W - square
        var = np.where(var > 0, var, np.inf)
        rho = np.empty((q - 1, n))
        lagged = np.zeros(n)
        for k in range(1, q):
            np.multiply(x[k:], x[:-k], out=lagged[k:])  # (lagged[:k] stays 0)
            rho[k - 1] = (_trailing_sum(lagged, W - k) / (W - k) - square) / var
        z_ac = rho[0] * np.sqrt(W)
        weights = 2.0 * (1.0 - np.arange(1, q) / q)
        z_vr = (weights @ rho) / np.sqrt(2.0 * (2 * q - 1) * (q - 1) / (3.0 * q * W))
        z_ac[:self.warmup], z_vr[:self.warmup] = np.nan, np.nan
        return z_ac, z_vr

    def probabilities(self, log_returns: np.ndarray) -> np.ndarray:
        """float64 ``(n, 3)``: P(trend), P(mean_reversion), P(neutral) at each bar (rows sum to 1)."""
        z_ac, z_vr = self.statistics(log_returns)
        c = self.null_correlation
        inv = np.linalg.inv(np.array([[1.0, c], [c, 1.0]]))
        direction = self.effect * np.array([1.0, c])
        # each state's Gaussian log likelihood -0.5 (u - m)' inv (u - m), a state at a time on (n,)
        # arrays (the terms summed in the order of the (n, 3, 2) einsum this replaced, a third of its cost)
        loglik = []
        for mean in (direction, -direction, np.zeros(2)):
            du, dv = z_ac - mean[0], z_vr - mean[1]
            form = du * inv[0, 0] * du
            form += du * inv[0, 1] * dv
            form += dv * inv[1, 0] * du
            form += dv * inv[1, 1] * dv
            form *= -0.5
            loglik.append(form)
        top = np.maximum(np.maximum(loglik[0], loglik[1]), loglik[2])
        probs = np.empty((z_ac.size, 3))
        for k, column in enumerate(loglik):
            column -= top
            np.exp(column, out=probs[:, k])
        probs /= (probs[:, 0] + probs[:, 1] + probs[:, 2])[:, None]
        probs[~np.isfinite(z_ac)] = 1.0 / 3.0
        return probs


def declared_switches(probs: np.ndarray, *, confirm: int = 20, min_prob: float = 0.5, start: int = 0) -> list[int]:
    """Bars where a different state becomes the one in force: the most probable state, at
    probability >= ``min_prob``, for ``confirm`` consecutive bars (a bar below ``min_prob`` keeps the
    previous bar's state). The first state entered is not a switch. Bars before ``start`` are skipped."""
    probs = np.asarray(probs)
    labels = np.argmax(probs, axis=1)
    unsure = np.flatnonzero(probs.max(axis=1) < min_prob)
    if unsure.size:  # carry the last confident label forward
        keep = np.ones(labels.size, dtype=bool)
        keep[unsure] = False
        last = np.maximum.accumulate(np.where(keep, np.arange(labels.size), 0))
        labels = np.where(keep[last], labels[last], -1)
    labels[:start] = -1
    # run length of the current label at each bar, vectorized over constant stretches
    starts = np.r_[0, np.flatnonzero(labels[1:] != labels[:-1]) + 1]
    lengths = np.diff(np.r_[starts, labels.size])
    run = np.arange(labels.size) - np.repeat(starts, lengths) + 1
    confirmed = np.flatnonzero((run == confirm) & (labels >= 0))
    out, current = [], None
    for bar in confirmed.tolist():
        if current is not None and labels[bar] != current:
            out.append(bar)
        current = labels[bar]
    return out


def _trailing_sum(x: np.ndarray, window: int) -> np.ndarray:
    """Sum of the last ``window`` values ending at each bar (the first ones over fewer values)."""
    sums = np.cumsum(x)
    sums[window:] = sums[window:] - sums[:-window]
    return sums
