"""Single-episode gymnasium twin of :class:`~convopt_mlflow.env.vec_env.TradingVecEnv`.

Same :class:`~convopt_mlflow.env.core.MarketCore`, stepped with ``n = 1`` arrays, so the two
envs give identical observations and rewards for the same start and actions.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from convopt_mlflow.env.core import MarketCore
from convopt_mlflow.env.vec_env import StartSampler

__all__ = ["TradingEnv"]


class TradingEnv(gym.Env):
    """One trading episode over ``core``: ``Discrete`` actions, log-return rewards.

    ``reset(seed=...)`` draws the start bar with ``self.np_random`` (through
    ``start_sampler``, default uniform); ``reset(options={"start": bar})`` forces it.
    Every episode is truncated after ``core.episode_length`` decisions; it never terminates.
    Rewards are Python floats (float64 precision). ``step`` returns an empty info (the
    position just taken is the observation's last element, and :attr:`position`); the
    reset info holds the start ``bar``. Stepping needs a live episode:
    ``step`` before ``reset`` or after truncation raises RuntimeError.

    Examples:
        >>> import numpy as np
        >>> core = MarketCore(np.zeros((50, 2), np.float32), np.zeros(50), window=4,
        ...                   episode_length=10, cost_bps=1.0)
        >>> env = TradingEnv(core)
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(2)
    """

    metadata = {"render_modes": []}

    def __init__(self, core: MarketCore, start_sampler: StartSampler | None = None, render_mode: str | None = None):
        if render_mode is not None:
            raise ValueError(f"TradingEnv has no render modes, got render_mode={render_mode!r}")
        self.core = core
        self.render_mode = None
        self.observation_space = spaces.Box(*core.observation_bounds, dtype=np.float32)
        self.action_space = spaces.Discrete(core.n_actions)
        self._start_sampler: StartSampler = start_sampler or core.sample_starts
        # n = 1 state arrays for the core's unchecked fast paths (bars are kept valid here).
        self._row = np.zeros(1, dtype=np.intp)  # t - window + 1
        self._next = np.zeros(1, dtype=np.intp)  # t + 1
        self._pos = np.zeros(1)
        self._new_pos = np.zeros(1)
        self._reward = np.zeros(1)
        self._steps_left = 0

    @property
    def current_bar(self) -> int:
        """Bar of the next decision."""
        return int(self._next[0]) - 1

    @property
    def position(self) -> float:
        """Position held coming into the next decision."""
        return float(self._pos[0])

    def counterfactual_rewards(self) -> np.ndarray:
        """The reward each action would earn at the current decision bar, float64 ``(n_actions,)``."""
        self._check_live()
        return self.core.action_rewards(self._next, self._pos)[0]

    def counterfactual_next_observations(self) -> np.ndarray:
        """The observation ``step`` would return under each action, float32 ``(n_actions, obs_size)``."""
        self._check_live()
        return self.core.action_observations(self._row + 1)[0]

    def _check_live(self) -> None:
        if self._steps_left <= 0:
            raise RuntimeError("TradingEnv has no current decision: reset() first (or after truncation)")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options and "start" in options:
            start = self.core.check_starts(np.array([options["start"]]))
        else:
            start = self.core.check_starts(self._start_sampler(self.np_random, 1))
        self._row[:] = start - (self.core.window - 1)
        self._next[:] = start + 1
        self._pos[:] = 0.0
        self._steps_left = self.core.episode_length
        return self._observe(), {"bar": int(start[0])}

    def step(self, action):
        if self._steps_left <= 0:
            raise RuntimeError("TradingEnv.step() called before reset() or after the episode was truncated")
        action = int(action)
        levels = self.core.position_levels
        if not 0 <= action < levels.size:
            raise IndexError(f"action must lie in [0, {levels.size}), got {action}")
        self._new_pos[0] = levels[action]
        self.core.reward_unchecked(self._next, self._pos, self._new_pos, self._reward)
        self._pos, self._new_pos = self._new_pos, self._pos
        self._row += 1
        self._next += 1
        self._steps_left -= 1
        return self._observe(), float(self._reward[0]), False, self._steps_left == 0, {}

    def _observe(self) -> np.ndarray:
        obs = np.empty((1, self.core.observation_size), dtype=np.float32)
        self.core.observe_unchecked(self._row, self._pos, obs)
        return obs[0]
