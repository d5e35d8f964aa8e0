"""A Gaussian Thompson-sampling bandit with a learning-rate floor, for choosing adjustments."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np


class ThompsonBandit:
    """Thompson sampling over ``arms`` with Gaussian rewards of unknown scale.

    Each arm keeps a value estimate ``q`` updated with step size ``max(1 / n, learning_rate)``:
    the sample mean for the first ``1 / learning_rate`` pulls, then an exponential recency-weighted
    mean that keeps forgetting old rewards (a non-stationary problem: what helps early in training
    need not help later). Its effective sample count is ``n_eff = min(n, (2 - lr) / lr)``.

    :meth:`select` draws ``q_a + s * N(0, 1) / sqrt(n_eff_a + 1)`` for every arm (``s`` the pooled
    std of all rewards seen, ``prior_std`` before two rewards) and returns the largest; an arm
    never pulled draws from ``N(0, s^2)``.

    Examples:
        >>> bandit = ThompsonBandit(["keep", "up"], learning_rate=0.0)
        >>> rng = np.random.default_rng(0)
        >>> for _ in range(200):
        ...     arm = bandit.select(rng)
        ...     bandit.update(arm, (1.0 if arm == "up" else 0.0) + rng.normal(0, 0.5))
        >>> bandit.best()
        'up'
    """

    def __init__(self, arms: Sequence[str], *, learning_rate: float = 0.0, prior_std: float = 1.0):
        if not arms or len(set(arms)) != len(arms):
            raise ValueError(f"arms must be distinct names, got {list(arms)!r}")
        if not 0 <= learning_rate <= 1:
            raise ValueError(f"learning_rate must be in [0, 1], got {learning_rate!r}")
        self.arms = list(arms)
        self.learning_rate = float(learning_rate)
        self.prior_std = float(prior_std)
        k = len(self.arms)
        self.q, self.n = np.zeros(k), np.zeros(k, dtype=np.int64)
        self._sum, self._sumsq, self._count = 0.0, 0.0, 0  # pooled reward moments

    def _index(self, arm: str) -> int:
        return self.arms.index(arm)

    @property
    def reward_std(self) -> float:
        if self._count < 2:
            return self.prior_std
        var = (self._sumsq - self._sum ** 2 / self._count) / (self._count - 1)
        return math.sqrt(var) if var > 0 else self.prior_std

    @property
    def effective_counts(self) -> np.ndarray:
        if self.learning_rate <= 0:
            return self.n.astype(np.float64)
        return np.minimum(self.n, (2.0 - self.learning_rate) / self.learning_rate)

    def select(self, rng: np.random.Generator) -> str:
        """One Thompson draw per arm; the name of the arm with the largest draw."""
        draws = self.q + self.reward_std * rng.standard_normal(len(self.arms)) / np.sqrt(self.effective_counts + 1.0)
        return self.arms[int(np.argmax(draws))]

    def update(self, arm: str, reward: float) -> None:
        """Learn from one reward of ``arm`` (non-finite rewards are ignored)."""
        if not math.isfinite(reward):
            return
        i = self._index(arm)
        self.n[i] += 1
        step = max(1.0 / self.n[i], self.learning_rate)
        self.q[i] += step * (reward - self.q[i])
        self._sum += reward
        self._sumsq += reward * reward
        self._count += 1

    def best(self) -> str:
        """The arm with the highest value estimate among those pulled (the first arm if none was)."""
        if not self.n.any():
            return self.arms[0]
        masked = np.where(self.n > 0, self.q, -np.inf)
        return self.arms[int(np.argmax(masked))]

    def state_dict(self) -> dict[str, Any]:
        return {"arms": list(self.arms), "q": self.q.tolist(), "n": self.n.tolist(),
                "moments": [self._sum, self._sumsq, self._count]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["arms"]) != self.arms:
            raise ValueError(f"bandit arms {state['arms']!r} do not match {self.arms!r}")
        self.q = np.asarray(state["q"], dtype=np.float64)
        self.n = np.asarray(state["n"], dtype=np.int64)
        total, squares, count = state["moments"]
        self._sum, self._sumsq, self._count = float(total), float(squares), int(count)
