"""The true oracle: the exact cost-aware optimum of expected net PnL given the true expected returns.

Given ``mu[t] = E[r[t+1] | state at bar t]`` (a synthetic market's
``expected_next_return``, in log return per bar) and the env's cost model, the oracle picks
positions ``p_t`` from ``levels`` (``{-1, 0, 1}``, or ``{0, 1}`` long-only) maximizing

    J(p) = sum_t ( p_t * mu[t] - cost * |p_t - p_{t-1}| ),    p_{-1} = start (flat),

which is the expectation of the env's reward ``p_t * log_returns[t+1] - cost_bps * 1e-4 *
|p_t - p_{t-1}|`` summed over the decision bars (``cost = cost_bps * 1e-4``). No policy that
decides at bar t from what is known at bar t earns more in expectation.

It is solved exactly by dynamic programming over the K position levels (Viterbi): a forward
pass ``best[t, j] = mu[t] * l_j + max_i (best[t-1, i] - cost * |l_j - l_i|)`` remembering the
argmax, then a backward pass along the argmaxes. O(T * K^2) work, K <= 3. The per-bar gains
``mu[t] * l_j`` and switch costs are numpy arrays; the recursion itself is a loop over bars on
Python floats (about 0.1 s per 100k bars), since each step depends on the previous one.

Example:
    >>> optimal_positions(np.array([0.5, 0.5, -0.1, 0.5]), cost=0.3).tolist()
    [1.0, 1.0, 1.0, 1.0]
    >>> optimal_positions(np.array([0.5, -2.0, 0.5]), cost=0.3).tolist()
    [0.0, -1.0, 1.0]
"""
from __future__ import annotations

import numpy as np

__all__ = ["LEVELS_LONG_ONLY", "LEVELS_LONG_SHORT", "expected_net_pnl", "optimal_positions"]

LEVELS_LONG_SHORT = (-1.0, 0.0, 1.0)
LEVELS_LONG_ONLY = (0.0, 1.0)


def optimal_positions(expected_returns: np.ndarray, *, cost: float, levels=LEVELS_LONG_SHORT,
                      start: float = 0.0) -> np.ndarray:
    """Positions (float64 ``(T,)``, values from ``levels``) maximizing :func:`expected_net_pnl`.

    Args:
        expected_returns: ``mu[t]``, expected next log return of each decision bar, ``(T,)``.
        cost: cost per unit of position change, as a log return (``cost_bps * 1e-4``).
        levels: the allowed positions.
        start: position held before the first decision (flat).

    Ties keep the lower level index (at the end) and the earlier-found predecessor, so the
    result is deterministic.
    """
    mu = np.asarray(expected_returns, dtype=np.float64).reshape(-1)
    levels_arr = np.asarray(levels, dtype=np.float64)
    k = levels_arr.size
    n = mu.size
    if n == 0:
        return np.zeros(0)
    gains = (mu[:, None] * levels_arr[None, :]).tolist()  # (T, K) as lists: the loop reads floats
    switch = (cost * np.abs(levels_arr[:, None] - levels_arr[None, :])).tolist()  # switch[i][j]: from i to j
    entry = (cost * np.abs(levels_arr - start)).tolist()
    choice = np.zeros((n, k), dtype=np.int8)  # best predecessor of level j at bar t
    best = [gains[0][j] - entry[j] for j in range(k)]
    ks = range(k)
    for t in range(1, n):
        gain = gains[t]
        nxt = []
        for j in ks:
            row = switch[j]  # symmetric: |l_j - l_i|
            top, arg = best[0] - row[0], 0
            for i in range(1, k):
                value = best[i] - row[i]
                if value > top:
                    top, arg = value, i
            nxt.append(top + gain[j])
            choice[t, j] = arg
        best = nxt
    path = np.empty(n, dtype=np.intp)
    path[-1] = int(np.argmax(best))
    for t in range(n - 1, 0, -1):
        path[t - 1] = choice[t, path[t]]
    return levels_arr[path]


def expected_net_pnl(positions: np.ndarray, expected_returns: np.ndarray, *, cost: float,
                     start: float = 0.0) -> float:
    """``sum_t positions[t] * mu[t] - cost * |positions[t] - positions[t-1]|`` with ``positions[-1] = start``."""
    positions = np.asarray(positions, dtype=np.float64).reshape(-1)
    mu = np.asarray(expected_returns, dtype=np.float64).reshape(-1)
    turnover = np.abs(np.diff(positions, prepend=start))
    return float(np.sum(positions * mu) - cost * np.sum(turnover))
