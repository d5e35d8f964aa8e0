"""Whether a challenger may become champion: a paired, one-sided Sharpe test on one test period.

Pure numpy/scipy over per-bar net log returns ``(bars,)`` of the strategies, walked over
the same test bars. The test runs on per-bar Sharpe ratios (:mod:`convopt_mlflow.stats`);
with ``periods_per_year`` every Sharpe the user reads (reason, tags) is annualized,
``per-bar Sharpe x sqrt(periods_per_year)``, the unit of training and A/B output.

- With a champion: promote when the challenger's Sharpe is significantly higher
  (Jobson-Korkie/Memmel z, one-sided ``p = 1 - Phi(z) < alpha``).
- Without one (the first champion): the challenger must beat flat (Sharpe > 0) and
  buy-and-hold (Sharpe above it, significantly by the same one-sided test).

A strategy that never trades has zero-variance returns and no Sharpe ratio; it is
compared as Sharpe 0 (flat), against which the challenger's one-sided p is ``1 - PSR``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.stats

from .. import stats

PROMOTE, REFUSE = "promote", "refuse"


@dataclass(frozen=True)
class PromotionDecision:
    """The decision and its evidence; ``tags()`` is what the model version records."""

    decision: str
    reason: str
    compared_to: str
    sharpe_challenger: float
    sharpe_other: float
    z: float
    p_value: float
    alpha: float
    n_bars: int
    periods_per_year: float | None = None
    """Bars per year of the data; None: Sharpes stay per bar."""

    @property
    def promote(self) -> bool:
        return self.decision == PROMOTE

    @property
    def sharpe_difference(self) -> float:
        """Per bar, as the test sees it."""
        return self.sharpe_challenger - self.sharpe_other

    @property
    def unit(self) -> str:
        return "annualized" if self.periods_per_year else "per bar"

    def in_unit(self, sharpe: float) -> float:
        """A per-bar Sharpe in :attr:`unit` (annualized when ``periods_per_year`` is known)."""
        return sharpe * float(np.sqrt(self.periods_per_year)) if self.periods_per_year else sharpe

    def tags(self, prefix: str = "convopt.promotion.") -> dict[str, str]:
        """The evidence; every Sharpe in :attr:`unit` (``sharpe_unit``); z and p are unit-free."""
        values = {**asdict(self), "sharpe_challenger": self.in_unit(self.sharpe_challenger),
                  "sharpe_other": self.in_unit(self.sharpe_other),
                  "sharpe_difference": self.in_unit(self.sharpe_difference), "sharpe_unit": self.unit,
                  "test": "one-sided Jobson-Korkie/Memmel Sharpe difference, per-bar net log returns"}
        if values["periods_per_year"] is None:
            del values["periods_per_year"]
        return {prefix + key: f"{value:.6g}" if isinstance(value, float) else str(value)
                for key, value in values.items()}


def _sharpe_or_flat(returns: np.ndarray) -> float | None:
    """Per-bar Sharpe, or None for zero-variance (never-trading) returns."""
    return None if np.std(returns) == 0.0 else stats.sharpe_ratio(returns)


def one_sided_sharpe_test(challenger: np.ndarray, other: np.ndarray) -> tuple[float, float, float, float]:
    """``(sharpe_challenger, sharpe_other, z, p)`` of H1: challenger's Sharpe > other's."""
    mine, theirs = _sharpe_or_flat(challenger), _sharpe_or_flat(other)
    if mine is None:
        return 0.0, theirs or 0.0, float("nan"), 1.0
    if theirs is None:  # against flat: the PSR's z-score, benchmark 0
        psr = stats.probabilistic_sharpe_ratio(challenger)
        z = float(scipy.stats.norm.ppf(psr)) if 0.0 < psr < 1.0 else float(np.sign(mine) * np.inf)
        return mine, 0.0, z, float(1.0 - psr)
    result = stats.sharpe_difference_test(challenger, other)
    return result.sharpe_a, result.sharpe_b, result.z, float(scipy.stats.norm.sf(result.z))


def decide_promotion(challenger: np.ndarray, *, buy_and_hold: np.ndarray, champion: np.ndarray | None,
                     alpha: float, champion_label: str = "champion",
                     periods_per_year: float | None = None) -> PromotionDecision:
    """Decide on the challenger's per-bar net returns against the champion's, or the benchmarks.

    Args:
        challenger, champion, buy_and_hold: ``(bars,)`` per-bar net log returns over the
            same test bars; ``champion`` None when there is none yet.
        alpha: one-sided significance level.
        champion_label: how the champion is named in the evidence (e.g. ``version 3``).
        periods_per_year: bars per year; the reason then states annualized Sharpes.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> market = rng.normal(0.0, 1e-3, 2000)
        >>> skilled = np.abs(market)                     # always on the right side
        >>> decide_promotion(skilled, buy_and_hold=market, champion=None, alpha=0.05).decision
        'promote'
        >>> decide_promotion(market, buy_and_hold=market, champion=skilled, alpha=0.05).decision
        'refuse'
    """
    challenger = np.asarray(challenger, dtype=float)
    n = int(challenger.size)
    k = float(np.sqrt(periods_per_year)) if periods_per_year else 1.0
    label = "Sharpe (annualized)" if periods_per_year else "Sharpe per bar"
    if champion is not None:
        mine, theirs, z, p = one_sided_sharpe_test(challenger, np.asarray(champion, dtype=float))
        better = p < alpha
        reason = (f"challenger's {label} {k * mine:.4g} vs {champion_label}'s {k * theirs:.4g}: one-sided p = {p:.3g} "
                  + (f"< alpha = {alpha}" if better else f">= alpha = {alpha}; not a significant improvement"))
        return PromotionDecision(PROMOTE if better else REFUSE, reason, champion_label, mine, theirs, z, p, alpha, n,
                                 periods_per_year)
    mine, bh, z, p = one_sided_sharpe_test(challenger, np.asarray(buy_and_hold, dtype=float))
    problems = []
    if not mine > 0.0:
        problems.append(f"its {label} {k * mine:.4g} does not beat flat (0)")
    if not mine > bh:
        problems.append(f"its {label} {k * mine:.4g} does not beat buy-and-hold's {k * bh:.4g}")
    if not p < alpha:
        problems.append(f"the improvement over buy-and-hold is not significant (one-sided p = {p:.3g} >= {alpha})")
    if problems:
        reason = "first champion refused: " + "; ".join(problems)
    else:
        reason = (f"first champion: {label} {k * mine:.4g} beats flat (0) and buy-and-hold ({k * bh:.4g}), "
                  f"one-sided p = {p:.3g} < alpha = {alpha}")
    return PromotionDecision(REFUSE if problems else PROMOTE, reason, "buy_and_hold", mine, bh, z, p, alpha, n,
                             periods_per_year)
