"""Input guard: non-finite observations or rewards never reach the policy.

A NaN observation makes SB3's categorical distribution raise mid-rollout and a
NaN reward poisons every advantage of the update. The guard replaces them by 0
(one vectorized ``isfinite`` per step) and counts them; the monitor reads the
count as a divergence event and rolls back instead of crashing.
"""
from __future__ import annotations

import numpy as np
from stable_baselines3.common.vec_env import VecEnvWrapper


class FiniteGuard(VecEnvWrapper):
    """VecEnv wrapper that zeroes non-finite observations/rewards and counts them."""

    def __init__(self, venv):
        super().__init__(venv)
        self.nonfinite_inputs = 0

    def _clean(self, array: np.ndarray) -> np.ndarray:
        # fast path: NaN and inf propagate through a sum, so a finite sum means a finite array
        # (a finite array whose sum overflows just takes the exact path below)
        if np.isfinite(array.sum()):
            return array
        finite = np.isfinite(array)
        if finite.all():
            return array
        self.nonfinite_inputs += int((~finite).sum())
        return np.where(finite, array, 0).astype(array.dtype, copy=False)

    def reset(self):
        return self._clean(self.venv.reset())

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        if dones.any():  # SB3 bootstraps truncated episodes from their terminal observation
            for i in np.flatnonzero(dones):
                terminal = infos[i].get("terminal_observation")
                if terminal is not None:
                    infos[i]["terminal_observation"] = self._clean(terminal)
        return self._clean(obs), self._clean(rewards), dones, infos

    def pop_count(self) -> int:
        count, self.nonfinite_inputs = self.nonfinite_inputs, 0
        return count
