r"""The direct learner's estimator: the exact expected net reward of a window, through the position recursion.

A policy ``pi(pos | x_t, prev)`` over the position levels (``[-1, 0, 1]``, or ``[0, 1]`` long
only) decides at each bar ``t`` of a window, from the bar's features ``x_t`` and the position
held coming in. Starting from a known position (flat), the distribution of the position held
after bar ``t`` follows the 3-state recursion

.. math::

    p_t(pos) = \sum_{prev} p_{t-1}(prev)\, \pi(pos \mid x_t, prev),

and the expected reward of bar ``t`` (the env's reward: ``pos * r_{t+1} - cost * |pos - prev|``) is

.. math::

    E[R_t] = \sum_{prev} \sum_{pos} p_{t-1}(prev)\, \pi(pos \mid x_t, prev)\, [pos\, r_{t+1} - cost\, |pos - prev|].

Because the market is exogenous this is exact: no action is sampled, so the gradient of the
window's expected PnL with respect to the policy carries no sampling noise (Moody & Saffell 2001,
"direct reinforcement"). This module is the numpy reference; ``training/direct.py`` computes the
same in torch and its tests check it against :func:`expected_rewards` and :func:`brute_force_rewards`.

Shapes: ``probs`` is ``(T, K, K)`` with ``probs[t, prev, pos]`` (rows sum to 1); ``next_returns``
``(T,)`` holds ``r_{t+1}`` for each decision bar, in the env's reward units.

Examples:
    >>> import numpy as np
    >>> levels = np.array([-1.0, 0.0, 1.0])
    >>> always_long = np.tile(np.eye(3)[2], (2, 3, 1))      # (T=2, prev, pos): go long, stay long
    >>> rewards, dist = expected_rewards(always_long, np.array([0.5, -0.25]), levels, cost=0.1, start=1)
    >>> rewards.round(6).tolist(), dist[-1].tolist()
    ([0.4, -0.25], [0.0, 0.0, 1.0])
"""
from __future__ import annotations

import itertools

import numpy as np

__all__ = ["position_rewards", "expected_rewards", "brute_force_rewards"]


def position_rewards(next_returns: np.ndarray, levels: np.ndarray, cost: float) -> np.ndarray:
    """``(T, K, K)`` table ``R[t, prev, pos] = pos * next_returns[t] - cost * |pos - prev|``."""
    levels = np.asarray(levels, dtype=np.float64)
    turn = np.abs(levels[None, :] - levels[:, None])  # [prev, pos]
    return np.asarray(next_returns, dtype=np.float64)[:, None, None] * levels[None, None, :] - cost * turn[None]


def expected_rewards(probs: np.ndarray, next_returns: np.ndarray, levels: np.ndarray, *, cost: float,
                     start: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact expected reward of each bar and the position distributions, by the recursion.

    Args:
        probs: ``(T, K, K)`` policy, ``probs[t, prev, pos]``.
        next_returns: ``(T,)`` the return each decision earns on (env units).
        levels: ``(K,)`` position of each index.
        cost: cost per unit of position change (env units).
        start: index of the position held before the first bar.

    Returns:
        ``(rewards (T,), distribution (T+1, K))``; ``distribution[0]`` is one-hot at ``start``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    table = position_rewards(next_returns, levels, cost)
    dist = np.zeros((probs.shape[0] + 1, probs.shape[1]))
    dist[0, start] = 1.0
    rewards = np.empty(probs.shape[0])
    for t in range(probs.shape[0]):
        rewards[t] = np.einsum("p,pq,pq->", dist[t], probs[t], table[t])
        dist[t + 1] = dist[t] @ probs[t]
    return rewards, dist


def brute_force_rewards(probs: np.ndarray, next_returns: np.ndarray, levels: np.ndarray, *, cost: float,
                        start: int) -> np.ndarray:
    """The same expected rewards by enumerating all ``K**T`` position paths (for short ``T`` only)."""
    probs = np.asarray(probs, dtype=np.float64)
    levels = np.asarray(levels, dtype=np.float64)
    n_bars, k = probs.shape[0], probs.shape[1]
    rewards = np.zeros(n_bars)
    for path in itertools.product(range(k), repeat=n_bars):
        held = (start, *path)
        weight = np.prod([probs[t, held[t], held[t + 1]] for t in range(n_bars)])
        earned = [levels[held[t + 1]] * next_returns[t] - cost * abs(levels[held[t + 1]] - levels[held[t]])
                  for t in range(n_bars)]
        rewards += weight * np.asarray(earned)
    return rewards
