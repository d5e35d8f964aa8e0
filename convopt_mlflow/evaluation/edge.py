"""Has the shipped model an edge over staying flat, given how many validation scores chose it?

A run ships the best of the validation scores it looked at (every in-training evaluation and
the last weights, :mod:`convopt_mlflow.training.selection`). On a market with no edge, the best
of N noisy scores is above 0 by chance alone, so "validation Sharpe > 0" calls noise an edge.

The rule here is the deflated Sharpe ratio (Bailey & Lopez de Prado 2014) of the shipped
weights' per-bar validation PnL:

* ``SR0``, the benchmark, is the expected maximum per-bar Sharpe of ``n_trials`` strategies with
  no edge, each measured on the same ``T`` validation bars. Under that null a Sharpe estimate
  varies by ``1 / (T - 1)`` (its sampling variance at a true Sharpe of 0), so
  ``SR0 = expected_max_sharpe(n_trials, 1 / (T - 1))``. The null's own variance is used, not the
  spread of the scores the run saw: a run that learns moves its scores from 0 to its edge, and
  that spread is progress, not luck (the spread is still reported, ``trial_sharpe_std``).
* ``DSR = PSR(SR0)``: the probability that the true Sharpe exceeds ``SR0``, with the sample's
  skew and kurtosis. With one trial (``run.final_model=last``, or nothing evaluated) ``SR0 = 0``
  and the DSR is the plain PSR.
* The model has an edge when ``DSR > threshold`` (:data:`EDGE_THRESHOLD`, 0.95). A model that
  never trades on validation (zero PnL variance) has none.

Everything is per bar (not annualized); ``periods_per_year`` only scales what is shown.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> noise = [rng.normal(0.0, 1.0, 2000) for _ in range(8)]  # 8 scores of strategies without an edge
    >>> best = max(noise, key=lambda r: r.mean() / r.std())
    >>> verdict = edge_verdict(best, n_trials=8)
    >>> verdict.sharpe > 0, verdict.no_edge
    (True, True)
    >>> edge_verdict(rng.normal(0.1, 1.0, 2000), n_trials=8).no_edge
    False
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ..stats import expected_max_sharpe, probabilistic_sharpe_ratio

__all__ = ["EDGE_THRESHOLD", "EdgeVerdict", "edge_verdict"]

#: The DSR a shipped model must exceed to have an edge: a 5% chance that luck alone explains it.
EDGE_THRESHOLD = 0.95


@dataclass(frozen=True)
class EdgeVerdict:
    """The no-edge decision, as data. Sharpes are per bar; ``annualize`` scales them for display."""

    n_trials: int
    """Validation scores the selection looked at (evaluations + the last weights; members' too)."""
    n_bars: int
    """Validation bars of the shipped weights' PnL (``T``)."""
    sharpe: float
    """Per-bar Sharpe of the shipped weights' validation PnL (NaN: it never trades)."""
    benchmark: float
    """``SR0``: the expected maximum per-bar Sharpe of ``n_trials`` strategies without an edge."""
    psr: float
    """P(true Sharpe > 0) (NaN: it never trades)."""
    dsr: float
    """P(true Sharpe > SR0): the decision's number (NaN: it never trades)."""
    threshold: float
    trial_sharpe_std: float = float("nan")
    """Spread (ddof=1) of the per-bar Sharpes the selection looked at; NaN with fewer than 2."""
    annualize: float = 1.0
    """``sqrt(periods_per_year)``: multiplies a per-bar Sharpe into the validation score's units."""

    @property
    def no_edge(self) -> bool:
        return not self.dsr > self.threshold

    def reason(self) -> str:
        """Why the model has (or has not) an edge, in one sentence (units: annualized Sharpe)."""
        a = self.annualize
        if not math.isfinite(self.sharpe):
            return "the shipped weights never trade on validation"
        picked = (f"selected over {self.n_trials} validation scores" if self.n_trials > 1
                  else "its only validation score")
        verdict = "above" if not self.no_edge else "not above"
        return (f"DSR {self.dsr:.3f} {verdict} {self.threshold:g}: validation Sharpe {a * self.sharpe:.3f} "
                f"({picked}) against {a * self.benchmark:.3f}, the best that {self.n_trials} "
                f"no-edge {'tries' if self.n_trials > 1 else 'try'} would score on {self.n_bars:,} bars "
                f"(PSR vs flat {self.psr:.3f})")

    def metrics(self, prefix: str = "model/edge/") -> dict[str, float]:
        """Finite values only; Sharpes annualized like ``model/val_score``."""
        a = self.annualize
        out = {"n_trials": float(self.n_trials), "n_bars": float(self.n_bars), "sr0": a * self.benchmark,
               "psr": self.psr, "dsr": self.dsr, "threshold": self.threshold,
               "trial_sharpe_std": a * self.trial_sharpe_std}
        return {prefix + k: float(v) for k, v in out.items() if math.isfinite(v)}

    def tags(self) -> dict[str, str]:
        return {"convopt.no_edge": str(self.no_edge).lower(), "convopt.edge_reason": self.reason()[:5000]}


def edge_verdict(pnl: ArrayLike, n_trials: int, *, trial_sharpes: Sequence[float] = (),
                 threshold: float = EDGE_THRESHOLD, periods_per_year: float = 1.0) -> EdgeVerdict:
    """The deflated-Sharpe verdict on the shipped weights' per-bar validation ``pnl`` ``(bars,)``.

    Args:
        pnl: per-bar net log PnL of the shipped weights on validation.
        n_trials: validation scores the selection looked at (at least 1).
        trial_sharpes: those scores as per-bar Sharpes, where kept (only reported).
        threshold: the DSR above which the model has an edge.
        periods_per_year: only for display (annualized Sharpes in ``reason``/``metrics``).
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1; got {n_trials}")
    r = np.asarray(pnl, dtype=float)
    r = r[np.isfinite(r)]
    sharpes = np.asarray([s for s in trial_sharpes if math.isfinite(s)], dtype=float)
    spread = float(sharpes.std(ddof=1)) if sharpes.size >= 2 else float("nan")
    bars = int(r.size)
    benchmark = expected_max_sharpe(n_trials, 1.0 / (bars - 1)) if n_trials >= 2 and bars >= 2 else 0.0
    common = {"n_trials": int(n_trials), "n_bars": bars, "benchmark": benchmark, "threshold": float(threshold),
              "trial_sharpe_std": spread, "annualize": math.sqrt(periods_per_year)}
    nan = float("nan")
    if bars < 3 or r.std() == 0.0:
        return EdgeVerdict(sharpe=nan, psr=nan, dsr=nan, **common)
    sharpe = float(r.mean() / r.std(ddof=1))
    try:
        psr, dsr = probabilistic_sharpe_ratio(r), probabilistic_sharpe_ratio(r, benchmark=benchmark)
    except ValueError:  # moments too extreme for a Sharpe variance: no evidence of an edge
        psr = dsr = nan
    return EdgeVerdict(sharpe=sharpe, psr=psr, dsr=dsr, **common)
