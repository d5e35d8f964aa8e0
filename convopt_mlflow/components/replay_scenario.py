"""Scenario replay: prioritized choice of the bars that training episodes start from.

PPO stays exactly on-policy under it. Only the distribution of episode starts changes, and
every update still trains on transitions its own policy just collected; the objective
becomes the return expected under that start distribution, a reweighting of which market
windows matter, not a biased gradient.

Priority of start bar ``s`` (an episode decides at bars ``s .. s + L - 1``):

    p(s) = mean(score[s:s+L]) * (mean(difficulty[s:s+L]) + eps)

``score`` is the strategy's static bar score (:func:`~convopt_mlflow.components.replay.bar_scores`)
and ``difficulty[t]`` the latest ``|TD error|`` the critic made at bar ``t`` (until a bar is
visited: the mean of the first refresh). A start is drawn from ``p(s)**alpha`` with
probability ``replay_ratio`` and uniformly otherwise, so every window keeps being visited.

Composes with a curriculum: ``sample(rng, k, pool)`` draws only from ``pool`` (the start
bars the curriculum allows), prioritized within it.

**Random stream.** The non-prioritized starts come from ``uniform(rng, k)``, the sampler the
run would use without replay (uniform over the start bounds, uniform over ``pool`` as the
curriculum's ``pool_sampler`` draws, or an ensemble member's block sampler). They are drawn
first; then, only when ``replay_ratio > 0``, one coin per start and the prioritized draws.
So at ``replay_ratio = 0`` a run consumes exactly the generator stream it consumes without
replay, and its episodes start at the same bars (common random numbers hold across arms).

Examples:
    >>> import numpy as np
    >>> replay = ScenarioReplay(replay_ratio=1.0)
    >>> replay.bind((10, 19), episode_length=5, scores=np.ones(40, np.float32))
    >>> replay.update_priorities(np.arange(10, 40), np.where(np.arange(10, 40) == 30, 50.0, 0.0))
    >>> int(np.bincount(replay.sample(np.random.default_rng(0), 1000) - 10).argmax()) + 10 in range(10, 20)
    True
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from .sumtree import SumTree

__all__ = ["ScenarioReplay"]


class ScenarioReplay:
    """Prioritized episode starts; call it as a ``TradingVecEnv`` start sampler ``(rng, k) -> starts``.

    Args:
        priority_alpha: prioritization exponent.
        replay_ratio: share of starts drawn by priority (the rest uniform); 0 is exactly
            the sampler without replay (same draws from the same generator; see :meth:`sample`).
        priority_strategy: one of ``PRIORITY_STRATEGIES``; names the ``scores`` given to :meth:`bind`.
        beta: importance-sampling exponent used only for the logged weight range.
        eps: added to the window's mean ``|TD error|``.

    :meth:`bind` must be called with the market before sampling.
    """

    def __init__(self, priority_alpha: float = 0.6, replay_ratio: float = 0.5, *,
                 priority_strategy: str = "learning_difficulty", beta: float = 1.0, eps: float = 1e-3):
        if not 0.0 <= replay_ratio <= 1.0 or not 0.0 <= priority_alpha <= 1.0:
            raise ValueError(f"replay_ratio and priority_alpha must lie in [0, 1], got {replay_ratio}, {priority_alpha}")
        self.alpha, self.replay_ratio, self.beta, self.eps = float(priority_alpha), float(replay_ratio), beta, eps
        self.priority_strategy = priority_strategy  # the glue scores bars with it (bar_scores) at bind()
        self.lo = self.hi = self.episode_length = 0
        self.scores: np.ndarray | None = None
        self.difficulty: np.ndarray | None = None
        self.visited: np.ndarray | None = None
        self.tree: SumTree | None = None
        self.refreshed = False
        self._drawn = self._prioritized = 0
        self._weight_low = 1.0

    # ------------------------------------------------------------------ setup
    def bind(self, start_bounds: tuple[int, int], episode_length: int, scores: np.ndarray) -> None:
        """Attach to a market: inclusive ``start_bounds``, decisions per episode, ``scores`` ``(n_bars,)``."""
        self.lo, self.hi = int(start_bounds[0]), int(start_bounds[1])
        self.episode_length = int(episode_length)
        self.scores = np.asarray(scores, dtype=np.float32)
        if self.hi + self.episode_length > self.scores.size:
            raise ValueError(f"scores cover {self.scores.size} bars; episodes reach bar {self.hi + self.episode_length - 1}")
        self.difficulty = np.ones(self.scores.size, dtype=np.float32)
        self.visited = np.zeros(self.scores.size, dtype=bool)
        self.tree = SumTree(self.hi - self.lo + 1)
        self._rebuild()

    @property
    def n_starts(self) -> int:
        return self.hi - self.lo + 1

    def _window_mean(self, per_bar: np.ndarray) -> np.ndarray:
        """Mean of ``per_bar`` over each start's episode bars, float64 ``(n_starts,)``."""
        span = per_bar[self.lo:self.hi + self.episode_length].astype(np.float64)
        csum = np.concatenate([[0.0], np.cumsum(span)])
        return (csum[self.episode_length:] - csum[:-self.episode_length]) / self.episode_length

    def _rebuild(self) -> None:
        priority = self._window_mean(self.scores) * (self._window_mean(self.difficulty) + self.eps)
        self.tree.rebuild(np.maximum(priority, 0.0) ** self.alpha)

    # ------------------------------------------------------------- sampling
    def __call__(self, rng: np.random.Generator, k: int) -> np.ndarray:
        return self.sample(rng, k)

    def sample(self, rng: np.random.Generator, k: int, pool: np.ndarray | None = None,
               uniform: Callable[[np.random.Generator, int], np.ndarray] | None = None) -> np.ndarray:
        """``k`` start bars (int64); with ``pool`` (int bars inside the start bounds) only from it.

        ``uniform``: ``(rng, k) -> starts``, the sampler without replay (default: uniform over
        ``pool``, else over the start bounds, as ``MarketCore.sample_starts``). Its draws come
        first; at ``replay_ratio = 0`` they are returned and nothing else is drawn.
        """
        if self.tree is None:
            raise RuntimeError("ScenarioReplay.bind() must be called before sampling")
        k = int(k)
        if pool is not None:
            pool = np.asarray(pool, dtype=np.int64).reshape(-1)
            if pool.size == 0 or pool.min() < self.lo or pool.max() > self.hi:
                raise ValueError(f"pool must be non-empty start bars in [{self.lo}, {self.hi}]")
        if uniform is None:
            uniform = self._uniform if pool is None else _pool_uniform(pool)
        starts = np.array(uniform(rng, k), dtype=np.int64)  # a copy: prioritized draws overwrite it
        population = self.n_starts if pool is None else pool.size
        if self.replay_ratio > 0.0:
            prioritized = rng.random(k) < self.replay_ratio
            n = int(prioritized.sum())
            if n and pool is None:
                items = self.tree.sample(rng, n)
                starts[prioritized] = items + self.lo
                self._note(0, self.tree.get(items) / self.tree.total, population)
            elif n:
                weights = self.tree.get(pool - self.lo)
                cdf = np.cumsum(weights)
                chosen = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), pool.size - 1)
                starts[prioritized] = pool[chosen]
                self._note(0, weights[chosen] / cdf[-1], population)
        self._note(k, np.zeros(0), population)
        return starts

    def _uniform(self, rng: np.random.Generator, k: int) -> np.ndarray:
        return rng.integers(self.lo, self.hi + 1, size=k)  # exactly MarketCore.sample_starts

    def _note(self, k: int, probabilities: np.ndarray, population: int) -> None:
        """Count ``k`` draws, ``probabilities.size`` of them prioritized, for :meth:`stats`."""
        self._drawn += k
        if probabilities.size:
            weights = (population * probabilities) ** -self.beta  # relative to uniform draws
            self._prioritized += probabilities.size
            self._weight_low = min(self._weight_low, float(weights.min() / weights.max()))

    # -------------------------------------------------------------- refresh
    def update_priorities(self, bars: np.ndarray, td_errors: np.ndarray) -> None:
        """Set ``difficulty[bars] = |td_errors|`` (int and float ``(B,)``), then re-prioritize every start."""
        bars = np.asarray(bars, dtype=np.intp).reshape(-1)
        td = np.abs(np.asarray(td_errors, dtype=np.float64).reshape(-1))
        keep = np.isfinite(td)
        bars, td = bars[keep], td[keep]
        if bars.size == 0:
            return
        if not self.refreshed:  # unvisited bars start at the first measured mean: neither favoured nor ignored
            self.difficulty[:] = float(td.mean())
            self.refreshed = True
        self.difficulty[bars] = td
        self.visited[bars] = True
        self._rebuild()

    def stats(self) -> dict[str, float]:
        """``fill`` (share of start bars with a measured TD error), ``mean_priority``, and over the
        draws since the last call ``share`` (prioritized / all) and the ``is_weight_min``/``max``
        range of the prioritized draws' weights ``(n P)**-beta`` (normalized to max 1)."""
        if self.tree is None:
            return {}
        out = {"fill": float(self.visited[self.lo:self.hi + 1].mean()), "mean_priority": self.tree.total / self.n_starts}
        if self._drawn:
            out["share"] = self._prioritized / self._drawn
        if self._prioritized:
            out.update(is_weight_min=self._weight_low, is_weight_max=1.0)
        self._drawn = self._prioritized = 0
        self._weight_low = 1.0
        return out

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        if self.difficulty is None:
            return {"refreshed": self.refreshed}
        return {"difficulty": self.difficulty.copy(), "visited": self.visited.copy(), "refreshed": self.refreshed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("difficulty") is not None:
            difficulty = np.asarray(state["difficulty"], dtype=np.float32)
            if self.difficulty is not None and difficulty.shape != self.difficulty.shape:
                raise ValueError(f"state covers {difficulty.size} bars, the bound market {self.difficulty.size}")
            self.difficulty = difficulty.copy()
            self.visited = np.asarray(state["visited"], dtype=bool).copy()
        self.refreshed = bool(state.get("refreshed", False))
        if self.tree is not None:
            self._rebuild()

    @property
    def priorities(self) -> np.ndarray:
        """Leaf priorities ``p(s)**alpha`` of every start bar (read-only)."""
        return self.tree.priorities


def _pool_uniform(pool: np.ndarray) -> Callable[[np.random.Generator, int], np.ndarray]:
    """Uniform draws from ``pool`` (repeats weigh more): the draws of the curriculum's ``pool_sampler``."""
    return lambda rng, k: pool[rng.integers(0, pool.size, size=k)]
