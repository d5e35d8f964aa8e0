"""A single-process SB3 ``VecEnv`` that steps every trading env in one array operation.

All ``n_envs`` episodes live in a few ``(n_envs,)`` arrays (current bar, position, return
and length so far); ``step_wait`` advances all of them with numpy arithmetic on the shared
:class:`~convopt_mlflow.env.core.MarketCore`. The only Python loop is over the envs whose
episode just ended, to build their info dicts.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from convopt_mlflow.env.core import MarketCore

__all__ = ["StartSampler", "TradingVecEnv"]

StartSampler = Callable[[np.random.Generator, int], np.ndarray]
"""``(rng, k) -> k`` episode start bars (ints inside ``MarketCore.start_bounds``)."""


class TradingVecEnv(VecEnv):
    """``n_envs`` trading episodes over one :class:`MarketCore`, stepped together.

    Observations are float32 ``(n_envs, core.observation_size)``, rewards float32 (times ``reward_scale``)
    ``(n_envs,)`` log returns net of costs, actions ``Discrete(core.n_actions)`` indices.
    An episode is truncated (never terminated) after ``core.episode_length`` decisions and
    auto-reset to a start drawn by ``start_sampler``. A finishing env's info holds
    ``terminal_observation``, ``TimeLimit.truncated=True`` and a Monitor-style
    ``episode={'r', 'l', 't'}`` (``t``: seconds since the env was created), so SB3's
    ``ep_info_buffer`` fills without a ``VecMonitor``. Other envs get an empty dict that is
    shared between steps: treat it as read-only.

    Each step returns freshly allocated obs/reward/done arrays (SB3 keeps references to
    the previous ones), everything else is preallocated.

    Args:
        core: the market.
        n_envs: number of parallel episodes.
        seed: seeds the ``np.random.Generator`` that draws episode starts. ``seed()``
            follows SB3: the new seed applies at the next ``reset()``.
        start_sampler: ``(rng, k) -> starts``; defaults to ``core.sample_starts`` (uniform).
        reward_scale: multiplies the rewards returned to the agent; the ``episode`` infos
            keep unscaled log returns.

    Example:
        >>> import numpy as np
        >>> core = MarketCore(np.zeros((50, 2), np.float32), np.zeros(50), window=4,
        ...                   episode_length=10, cost_bps=1.0)
        >>> venv = TradingVecEnv(core, n_envs=3, seed=0)
        >>> venv.reset().shape
        (3, 9)
        >>> obs, rewards, dones, infos = venv.step(np.array([0, 1, 2]))
    """

    render_mode = None

    def __init__(
        self,
        core: MarketCore,
        n_envs: int,
        seed: int | None = None,
        start_sampler: StartSampler | None = None,
        reward_scale: float = 1.0,
    ):
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        self.core = core
        observation_space = spaces.Box(*core.observation_bounds, dtype=np.float32)
        super().__init__(int(n_envs), observation_space, spaces.Discrete(core.n_actions))
        n = self.num_envs
        self._rng = np.random.default_rng(seed)
        self.reward_scale = float(reward_scale)
        self._start_sampler: StartSampler = start_sampler or core.sample_starts
        self._t = np.zeros(n, dtype=np.intp)  # decision bar per env
        self._rows = np.zeros(n, dtype=np.intp)  # t - window + 1: row of core.windows
        self._next = np.zeros(n, dtype=np.intp)  # t + 1: bar of the next return
        self._pos = np.zeros(n)
        self._new_pos = np.zeros(n)
        self._reward = np.zeros(n)
        self._scratch = np.zeros(n)
        self._ep_return = np.zeros(n)
        self._ep_length = np.zeros(n, dtype=np.int64)
        self._empty_infos: list[dict[str, Any]] = [{} for _ in range(n)]
        self._actions = np.zeros(n, dtype=np.int64)
        self._t_created = time.time()
        self._steps_to_done = 0  # steps until the first env finishes; 0: reset() needed

    # --------------------------------------------------------------- state
    @property
    def current_bars(self) -> np.ndarray:
        """Decision bar of each env (copy, int ``(n_envs,)``)."""
        return self._t.copy()

    @property
    def positions(self) -> np.ndarray:
        """Position held by each env coming into its next decision (copy, float64)."""
        return self._pos.copy()

    @property
    def rng_state(self) -> dict[str, Any]:
        """State of the episode-start generator (JSON-able; saved in checkpoints)."""
        return self._rng.bit_generator.state

    @rng_state.setter
    def rng_state(self, state: dict[str, Any]) -> None:
        """Restore the generator; a pending ``seed()`` is dropped so the next reset keeps it."""
        self._rng.bit_generator.state = state
        self._reset_seeds()

    @property
    def start_sampler(self) -> StartSampler:
        """The sampler every later episode start is drawn with."""
        return self._start_sampler

    def set_start_sampler(self, fn: StartSampler | None) -> None:
        """Use ``fn(rng, k)`` for every later episode start (``None``: uniform default)."""
        self._start_sampler = fn or self.core.sample_starts

    # -------------------------------------------------------- counterfactuals
    def counterfactual_rewards(self) -> np.ndarray:
        """The reward each action would earn at every env's current decision bar, float32
        ``(n_envs, n_actions)`` (times ``reward_scale``, like :meth:`step`'s rewards).

        Exact, not estimated: the market is exogenous, so the next bar's return prices every
        action. Computed only when called, from the arrays the env holds; ``step`` never pays for it.
        Call it between steps (before ``step`` with the action it would price).
        """
        rewards = self.core.action_rewards(self._next, self._pos)
        return np.multiply(rewards, self.reward_scale, out=np.empty(rewards.shape, np.float32))

    def counterfactual_next_observations(self) -> np.ndarray:
        """The observation ``step`` would return under each action, float32 ``(n_envs, n_actions, obs_size)``.

        They differ only in the position feature (the last element). For an env whose episode
        ends at this step it is the ``terminal_observation`` (SB3 bootstraps from it).
        """
        return self.core.action_observations(self._rows + 1)

    # ------------------------------------------------------------- stepping
    def reset(self) -> VecEnvObs:
        if self._seeds[0] is not None:
            self._rng = np.random.default_rng(self._seeds[0])
        self._reset_seeds()
        self._reset_options()
        self._begin(np.arange(self.num_envs))
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self._observe()

    def restart(self) -> VecEnvObs:
        """End every episode now (untracked: no ``episode`` info) and start fresh ones from the start
        sampler, without reseeding; returns their first observations. For a caller that changes
        the sampler between rollouts and wants every env in the new windows at once."""
        if self._steps_to_done <= 0:
            raise RuntimeError("TradingVecEnv.restart() called before reset()")
        self._begin(np.arange(self.num_envs))
        return self._observe()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(-1)

    def step_wait(self) -> VecEnvStepReturn:
        if self._steps_to_done <= 0:
            raise RuntimeError("TradingVecEnv.step() called before reset()")
        core = self.core
        core.position_levels.take(self._actions, out=self._new_pos)
        core.reward_unchecked(self._next, self._pos, self._new_pos, self._reward, self._scratch)
        self._pos, self._new_pos = self._new_pos, self._pos
        self._ep_return += self._reward
        self._ep_length += 1
        self._t += 1
        self._rows += 1
        self._next += 1
        rewards = np.multiply(self._reward, self.reward_scale, out=np.empty(self.num_envs, np.float32))
        self._steps_to_done -= 1
        if self._steps_to_done > 0:  # no episode can have ended: skip the per-env check
            return self._observe(), rewards, np.zeros(self.num_envs, dtype=bool), self._empty_infos
        dones = self._ep_length >= core.episode_length
        infos = self._finish(np.flatnonzero(dones))
        return self._observe(), rewards, dones, infos

    def _finish(self, done: np.ndarray) -> list[dict[str, Any]]:
        """Info dicts for the envs in ``done`` (with their terminal obs), then restart them."""
        terminal = np.empty((done.size, self.core.observation_size), dtype=np.float32)
        self.core.observe_unchecked(self._rows[done], self._pos[done], terminal)
        elapsed = round(time.time() - self._t_created, 6)
        returns, lengths = self._ep_return[done].tolist(), self._ep_length[done].tolist()
        infos = list(self._empty_infos)
        for j, i in enumerate(done.tolist()):
            infos[i] = {
                "terminal_observation": terminal[j],
                "TimeLimit.truncated": True,
                "episode": {"r": returns[j], "l": lengths[j], "t": elapsed},
            }
        self._begin(done)
        return infos

    def _begin(self, envs: np.ndarray) -> None:
        """Start fresh flat episodes for ``envs`` at bars from the start sampler."""
        starts = self.core.check_starts(self._start_sampler(self._rng, envs.size))
        if starts.size != envs.size:
            raise ValueError(f"start_sampler returned {starts.size} starts for {envs.size} envs")
        self._t[envs] = starts
        self._rows[envs] = starts - (self.core.window - 1)
        self._next[envs] = starts + 1
        self._pos[envs] = 0.0
        self._ep_return[envs] = 0.0
        self._ep_length[envs] = 0
        self._steps_to_done = self.core.episode_length - int(self._ep_length.max())

    def _observe(self) -> np.ndarray:
        obs = np.empty((self.num_envs, self.core.observation_size), dtype=np.float32)
        self.core.observe_unchecked(self._rows, self._pos, obs)
        return obs

    # ------------------------------------------------------- VecEnv plumbing
    def close(self) -> None:
        """Nothing to release: all state is numpy arrays in this process."""

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The (shared) attribute ``attr_name`` of this env, once per index."""
        value = getattr(self, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set a shared attribute; all envs share one object, so ``indices`` must cover all."""
        if sorted(self._get_indices(indices)) != list(range(self.num_envs)):
            raise ValueError("TradingVecEnv attributes are shared by all envs; set them for all indices")
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call the shared method once per index and return the results."""
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """True only for ``Monitor``: the envs emit Monitor-style ``episode`` infos themselves."""
        return [wrapper_class is Monitor for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]
