"""How hard each candidate training episode is, from the bars it will trade (pure numpy).

An episode that starts at bar ``s`` is rewarded on the log returns ``r[s+1 .. s+L]``
(``L = episode_length``). Over that span, computed for every start at once with
cumulative sums (O(n) time, a few float arrays of memory):

==============  ============================================================  =============
component       raw measure over the span                                      hard when
==============  ============================================================  =============
trend           1 - efficiency ratio ``|sum r| / sum |r|`` (Kaufman)           no clear trend
volatility      std of r                                                       volatile
noise           mean of the ranks of -autocorr(r, lag 1) and mean (high-low)/close   choppy, wide bars
regime          changes between consecutive ``vol_window``-bar blocks: vol     many regime changes
                jumps by 2x, or a significant trend reversal
==============  ============================================================  =============

Each component becomes a percentile rank in [0, 1] among the candidates (1 = hardest), and
``difficulty`` is the percentile rank of the mean of the four ranks (so a cap of 0.35 keeps
the easiest 35% of the windows). Ranks make the scores scale-free: the same
stages work on FX hours and equity days.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["COMPONENTS", "WindowDifficulty", "score_windows", "percentile_rank"]

#: The difficulty components, each a percentile rank in [0, 1].
COMPONENTS = ("trend", "volatility", "noise", "regime")
#: Volatility ratio between neighbouring blocks that counts as a regime change.
VOL_CHANGE = 2.0


@dataclass(frozen=True, eq=False)
class WindowDifficulty:
    """Difficulty of every candidate episode start.

    Attributes:
        starts: int64 ``(n,)`` candidate start bars (ascending).
        ranks: component name (see :data:`COMPONENTS`, plus ``difficulty``) -> float32 ``(n,)``
            percentile rank in [0, 1], 1 = hardest.
        raw: float64 ``(n,)`` raw measures (mean_rank, efficiency_ratio, volatility, autocorr,
            range_close, regime_changes), for reports.
    """

    starts: np.ndarray
    ranks: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.starts.size)


def percentile_rank(values: np.ndarray) -> np.ndarray:
    """Rank of each value among all, scaled to [0, 1] (ties share their mean rank); float32."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n <= 1:
        return np.zeros(n, dtype=np.float32)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # mean rank of each run of ties
    edges = np.flatnonzero(np.diff(sorted_values) != 0) + 1
    bounds = np.concatenate([[0], edges, [n]])
    run_mean = (bounds[:-1] + bounds[1:] - 1) / 2.0
    ranks = np.empty(n)
    ranks[order] = np.repeat(run_mean, np.diff(bounds))
    return (ranks / (n - 1)).astype(np.float32)


def score_windows(log_returns: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                  starts: np.ndarray, episode_length: int, *, vol_window: int = 20) -> WindowDifficulty:
    """Score the episodes starting at ``starts`` (bars; each needs ``s + episode_length < n_bars``).

    Args:
        log_returns: float64 ``(n_bars,)``, ``r[t] = log(close[t] / close[t-1])``.
        high: float64 ``(n_bars,)`` prices.
        low: float64 ``(n_bars,)`` prices.
        close: float64 ``(n_bars,)`` prices.
        starts: candidate start bars.
        episode_length: decisions per episode (bars in the span).
        vol_window: bars per block of the regime-change count.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> r = rng.normal(0, 1e-3, 500); close = 100 * np.exp(np.cumsum(r))
        >>> scores = score_windows(r, close * 1.001, close * 0.999, close, np.arange(10, 400), 50)
        >>> len(scores), float(scores.ranks["difficulty"].max()) <= 1.0
        (390, True)
    """
    r = np.asarray(log_returns, dtype=np.float64)
    starts = np.asarray(starts, dtype=np.int64)
    length = int(episode_length)
    if length < 2:
        raise ValueError(f"episode_length must be >= 2 to score windows, got {episode_length}")
    if starts.size == 0 or starts.min() < 0 or starts.max() + length >= r.size:
        raise ValueError(f"starts must lie in [0, {r.size - length - 1}] for episode_length={length}")
    close = np.asarray(close, dtype=np.float64)
    width = (np.asarray(high, dtype=np.float64) - np.asarray(low, dtype=np.float64)) / close

    def span_sum(x: np.ndarray, first: int = 1) -> np.ndarray:
        """sum of x[s+first .. s+length] for every start s."""
        c = np.concatenate([[0.0], np.cumsum(x)])
        return c[starts + length + 1] - c[starts + first]

    s1, s_abs, s2 = span_sum(r), span_sum(np.abs(r)), span_sum(r * r)
    lagged = np.concatenate([[0.0], r[1:] * r[:-1]])  # lagged[t] = r[t] r[t-1]
    s_lag = span_sum(lagged, first=2)  # pairs inside the span
    mean = s1 / length
    var = np.maximum(s2 / length - mean**2, 0.0)
    efficiency = np.abs(s1) / np.maximum(s_abs, 1e-300)
    autocorr = (s_lag / (length - 1) - mean**2) / np.maximum(var, 1e-300)
    mean_width = span_sum(width) / length
    changes = _regime_changes(r, starts, length, vol_window)

    ranks = {
        "trend": percentile_rank(1.0 - efficiency),
        "volatility": percentile_rank(np.sqrt(var)),
        "noise": ((percentile_rank(-autocorr) + percentile_rank(mean_width)) / 2).astype(np.float32),
        "regime": percentile_rank(changes),
    }
    mean_rank = sum(ranks[c].astype(np.float64) for c in COMPONENTS) / len(COMPONENTS)
    ranks["difficulty"] = percentile_rank(mean_rank)
    raw = {"mean_rank": mean_rank, "efficiency_ratio": efficiency, "volatility": np.sqrt(var), "autocorr": autocorr,
           "range_close": mean_width, "regime_changes": changes}
    return WindowDifficulty(starts=starts, ranks=ranks, raw=raw)


def _regime_changes(r: np.ndarray, starts: np.ndarray, length: int, block: int) -> np.ndarray:
    """Regime changes inside each episode span (float64 ``(n_starts,)``).

    The span ``r[s+1 .. s+length]`` is cut into consecutive blocks of ``block`` bars; two
    neighbouring blocks are a change when their volatility differs by more than a factor
    :data:`VOL_CHANGE`, or when their mean returns have opposite signs and each is at least
    one standard error from zero (a trend reversal).
    """
    block = max(int(block), 2)
    n_blocks = max(length // block, 1)
    c1 = np.concatenate([[0.0], np.cumsum(r)])
    c2 = np.concatenate([[0.0], np.cumsum(r * r)])

    def stats(j: int) -> tuple[np.ndarray, np.ndarray]:
        first = starts + 1 + j * block
        mean = (c1[first + block] - c1[first]) / block
        vol = np.sqrt(np.maximum((c2[first + block] - c2[first]) / block - mean**2, 1e-300))
        return mean, vol

    changes = np.zeros(starts.size)
    mean, vol = stats(0)
    for j in range(1, n_blocks):
        next_mean, next_vol = stats(j)
        vol_jump = np.abs(np.log(next_vol / vol)) > np.log(VOL_CHANGE)
        t_prev, t_next = mean * np.sqrt(block) / vol, next_mean * np.sqrt(block) / next_vol
        reversal = (t_prev * t_next < 0) & (np.abs(t_prev) >= 1) & (np.abs(t_next) >= 1)
        changes += vol_jump | reversal
        mean, vol = next_mean, next_vol
    return changes
