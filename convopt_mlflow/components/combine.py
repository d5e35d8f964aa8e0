"""How an ensemble's members turn their action probabilities into one decision (numpy only).

The combination is stored in the model's ``policy.json`` as a small JSON block::

    {"method": "mean_prob" | "majority_vote" | "weighted", "weights": [w_0, ..., w_{m-1}]}

with one non-negative weight per member, summing to 1. ``mean_prob`` means equal weights.

Actions are indexed as convopt's position levels: with 2 actions ``(flat, long)``, with 3
``(short, flat, long)``, so the flat action is index ``n_actions - 2``.

Examples:
    >>> probs = np.array([[[0.1, 0.2, 0.7]], [[0.6, 0.3, 0.1]], [[0.2, 0.1, 0.7]]])  # 3 members, 1 bar
    >>> actions, mean, agreement = combine_probabilities(probs, "majority_vote", [0.25, 0.5, 0.25])
    >>> int(actions[0]), mean[0].round(3).tolist(), float(agreement[0])
    (1, [0.375, 0.225, 0.4], 0.0)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from convopt_mlflow.errors import ConfigError

__all__ = ["METHODS", "combine_probabilities", "make_combination"]

METHODS = ("mean_prob", "majority_vote", "weighted")
_WEIGHT_TOL = 1e-6


def make_combination(n_members: int, method: str = "mean_prob", weights: Sequence[float] | None = None) -> dict:
    """The validated, JSON-ready combination block for ``n_members`` members.

    Args:
        n_members: ensemble size (>= 1).
        method: one of :data:`METHODS`.
        weights: one weight per member, non-negative, summing to 1 (within 1e-6); None
            means equal weights. ``mean_prob`` accepts only equal weights.

    Raises:
        ConfigError: naming the method or weights to fix.

    >>> make_combination(2)
    {'method': 'mean_prob', 'weights': [0.5, 0.5]}
    """
    if method not in METHODS:
        raise ConfigError(f"unknown ensemble combination {method!r}; use one of {', '.join(METHODS)}")
    if n_members < 1:
        raise ConfigError("an ensemble needs at least one member")
    if weights is None:
        return {"method": method, "weights": [1.0 / n_members] * n_members}
    values = np.asarray(weights, dtype=np.float64)
    if values.shape != (n_members,):
        raise ConfigError(f"ensemble weights need one value per member ({n_members}), got {list(weights)}")
    if not np.isfinite(values).all() or (values < 0).any():
        raise ConfigError(f"ensemble weights must be finite and non-negative, got {list(weights)}")
    if abs(values.sum() - 1.0) > _WEIGHT_TOL:
        raise ConfigError(f"ensemble weights must sum to 1, got {list(weights)} (sum {values.sum():.6g})")
    if method == "mean_prob" and np.ptp(values) > _WEIGHT_TOL:
        raise ConfigError(f"mean_prob weighs members equally; use 'weighted' for the weights {list(weights)}")
    return {"method": method, "weights": [float(w) for w in values]}


def combine_probabilities(
    probs: np.ndarray,
    method: str = "mean_prob",
    weights: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Combine member action probabilities into actions, probabilities and agreement.

    Args:
        probs: ``(members, n, actions)`` probabilities, each ``[m, i]`` row summing to 1.
        method: ``mean_prob`` / ``weighted``: action = argmax of the weighted mean
            probabilities (ties: the lowest index, like ``np.argmax``). ``majority_vote``:
            each member votes for its argmax action with its weight, action = the one with
            the most weight; a tie between actions (within 1e-9) chooses flat.
        weights: as in :func:`make_combination` (None: equal).

    Returns:
        ``actions`` int ``(n,)``; ``probs`` float64 ``(n, actions)``, the weighted mean of
        the members' probabilities (for every method); ``agreement`` float64 ``(n,)``, the
        total weight of the members whose own argmax is the chosen action (1 when all agree).

    Raises:
        ConfigError: a bad method or weights, or ``probs`` that is not 3-dimensional.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 3 or probs.shape[2] < 2:
        raise ConfigError(f"probs must be (members, n, actions>=2), got shape {probs.shape}")
    n_members, _, n_actions = probs.shape
    w = np.asarray(make_combination(n_members, method, weights)["weights"])
    mean = np.einsum("m,mna->na", w, probs)
    own = probs.argmax(axis=2)  # (members, n): each member's own choice
    votes = np.einsum("m,mna->na", w, own[..., None] == np.arange(n_actions))
    if method == "majority_vote":
        top = votes.max(axis=1, keepdims=True)
        tied = (votes >= top - 1e-9).sum(axis=1) > 1
        actions = np.where(tied, n_actions - 2, votes.argmax(axis=1))
    else:
        actions = mean.argmax(axis=1)
    agreement = np.take_along_axis(votes, actions[:, None], axis=1)[:, 0]
    return actions.astype(np.intp), mean, agreement
