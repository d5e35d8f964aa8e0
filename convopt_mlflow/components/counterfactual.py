"""All-action advantages and critic targets for a market that prices every action.

The market is exogenous: at a visited bar, the reward of every action is known exactly, and
the next state under action a is the actual next window with position ``levels[a]``. These
pure functions turn one rollout's per-step numbers into what counterfactual PPO learns from
(``training/counterfactual.py``). Shapes: ``N`` visited states, ``K`` actions (= position
levels, action a takes position ``levels[a]``), ``D`` observation size. The functions use only
``+ - *``, indexing and ``abs`` on arrays, so numpy arrays (and torch tensors) both work.

Example:
    >>> import numpy as np
    >>> action_advantages(np.array([[1.0, 0.0, -1.0]]), np.array([[0.5, 0.0, 0.5]]),
    ...                   np.array([0.25]), gamma=0.5).tolist()
    [[1.0, -0.25, -1.0]]
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["action_advantages", "centre_on_policy", "expected_targets", "held_reward_table", "held_variants"]


def action_advantages(rewards: Any, next_values: Any, values: Any, *, gamma: float,
                      terminated: Any = None) -> Any:
    """``A(s, a) = r(s, a) + gamma * V(s'_a) * (1 - terminated) - V(s)``, ``(N, K)``.

    Args:
        rewards: ``r(s, a)``, ``(N, K)``, the reward each action earns at s.
        next_values: ``V(s'_a)``, ``(N, K)``, the critic's value of the next state under each action.
        values: ``V(s)``, ``(N,)``.
        gamma: discount.
        terminated: ``(N,)`` 1 where s' is terminal (no bootstrap); None: never (truncations bootstrap).
    """
    bootstrap = gamma * next_values if terminated is None else gamma * next_values * (1 - terminated)[:, None]
    return rewards + bootstrap - values[:, None]


def centre_on_policy(advantages: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``A(s, a) - sum_b pi(b|s) A(s, b)``, ``(N, K)``: the same action values measured from the policy's
    own expected value instead of ``V(s)``, so the critic's error at s cancels. The expected gradient
    ``sum_a grad pi(a|s) A(s, a)`` is unchanged, since ``sum_a grad pi(a|s) = 0``."""
    return advantages - np.sum(probs * advantages, axis=1, keepdims=True)


def held_reward_table(rewards: np.ndarray, held: np.ndarray, levels: np.ndarray, cost: float) -> np.ndarray:
    """``r(p, a)`` for every held position ``p`` in ``levels``: float64 ``(N, P, K)``.

    From the rewards at the position actually held, ``r(held, a) = levels[a] * x - cost * |levels[a] - held|``
    (``x`` the next return, ``cost`` per unit of position change, in the rewards' units), the other
    held positions differ only in the cost: ``r(p, a) = r(held, a) + cost * (|l_a - held| - |l_a - p|)``.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    levels = np.asarray(levels, dtype=np.float64)
    held = np.asarray(held, dtype=np.float64).reshape(-1)
    paid = np.abs(levels[None, :] - held[:, None])  # (N, K) cost units at the held position
    would_pay = np.abs(levels[None, :] - levels[:, None])  # (P, K)
    return rewards[:, None, :] + cost * (paid[:, None, :] - would_pay[None, :, :])


def expected_targets(probs: np.ndarray, table: np.ndarray, next_values: np.ndarray, *, gamma: float) -> np.ndarray:
    """One-step expected value targets ``y(s_p) = sum_a pi(a|s_p) [r(p, a) + gamma V(s'_a)]``, ``(N, P)``.

    Args:
        probs: ``pi(a | s_p)``, ``(N, P, K)``: the policy at each held-position variant of s.
        table: ``r(p, a)``, ``(N, P, K)`` (:func:`held_reward_table`).
        next_values: ``V(s'_a)``, ``(N, K)``; the next state does not depend on the held position.
    """
    return np.sum(probs * (table + gamma * np.asarray(next_values)[:, None, :]), axis=-1)


def held_variants(observations: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Each observation with its position feature (the last element) set to every level: ``(N, P, D)``."""
    observations = np.asarray(observations)
    out = np.repeat(observations[:, None, :], len(levels), axis=1)
    out[:, :, -1] = np.asarray(levels, dtype=observations.dtype)
    return out
