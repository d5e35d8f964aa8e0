"""ConvoptPPO skips SB3's per-step callback calls when every callback acts only at rollout boundaries."""
from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

from convopt_mlflow.training.control import StopRequest
from convopt_mlflow.training.guards import FiniteGuard
from convopt_mlflow.training.ppo import ConvoptPPO

N_ENVS, N_STEPS = 2, 16


def tiny_convopt_ppo() -> ConvoptPPO:
    return ConvoptPPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=N_ENVS, seed=0), n_steps=N_STEPS, batch_size=32, n_epochs=1,
                      policy_kwargs=dict(net_arch=[8]), seed=0, device="cpu")


class Boundaries(BaseCallback):
    """Records what it sees at each boundary; counts any per-step call."""

    per_step = True

    def __init__(self, stop: StopRequest | None = None, stop_at: int | None = None):
        super().__init__()
        self.stop_request, self.stop_at = stop, stop_at
        self.step_calls = 0
        self.at_end: list[tuple[int, int, bool]] = []

    def _on_step(self) -> bool:
        self.step_calls += 1
        return True

    def _on_rollout_start(self) -> None:
        if self.stop_at is not None and self.model.num_timesteps >= self.stop_at:
            self.stop_request.request("test")

    def _on_rollout_end(self) -> None:
        self.at_end.append((self.num_timesteps, self.n_calls, "rollout_buffer" in self.locals))


class RolloutOnly(Boundaries):
    per_step = False


def test_boundary_only_callbacks_get_no_step_calls_but_the_same_counters():
    every, boundary = Boundaries(), RolloutOnly()
    tiny_convopt_ppo().learn(3 * N_ENVS * N_STEPS, callback=[boundary])
    tiny_convopt_ppo().learn(3 * N_ENVS * N_STEPS, callback=[every])
    assert boundary.step_calls == 0 and every.step_calls == 3 * N_STEPS
    # num_timesteps, n_calls and the rollout's locals are what SB3's per-step calls would have left
    assert boundary.at_end == every.at_end == [(k * N_ENVS * N_STEPS, k * N_STEPS, True) for k in (1, 2, 3)]


def test_one_per_step_callback_keeps_sb3_per_step_calls_for_the_whole_tree():
    every, boundary = Boundaries(), RolloutOnly()
    tiny_convopt_ppo().learn(2 * N_ENVS * N_STEPS, callback=[boundary, every])
    assert boundary.step_calls == every.step_calls == 2 * N_STEPS


def test_a_stop_request_ends_learning_at_the_next_step():
    stop = StopRequest()
    boundary = RolloutOnly(stop, stop_at=N_ENVS * N_STEPS)
    model = tiny_convopt_ppo()
    model.learn(10 * N_ENVS * N_STEPS, callback=[boundary])
    # the request is made at the start of the 2nd rollout; its first step is the last one taken
    assert model.num_timesteps == N_ENVS * N_STEPS + N_ENVS
    assert boundary.num_timesteps == model.num_timesteps and boundary.step_calls == 0


class ScriptedVecEnv(VecEnv):
    """Returns the scripted (obs, rewards, dones, infos) on every step."""

    def __init__(self, obs, rewards, dones, infos):
        from gymnasium import spaces

        super().__init__(len(obs), spaces.Box(-np.inf, np.inf, (obs.shape[1],), np.float32), spaces.Discrete(2))
        self.out = (obs, rewards, dones, infos)

    def reset(self):
        return self.out[0].copy()

    def step_async(self, actions):
        pass

    def step_wait(self):
        obs, rewards, dones, infos = self.out
        return obs.copy(), rewards.copy(), dones.copy(), [dict(i) for i in infos]

    def close(self):
        pass

    def get_attr(self, attr_name, indices=None):
        return [None] * self.num_envs

    def set_attr(self, attr_name, value, indices=None):
        pass

    def env_method(self, method_name, *args, indices=None, **kwargs):
        return [None] * self.num_envs

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False] * self.num_envs


def test_finite_guard_zeroes_and_counts_on_step_and_step_wait():
    obs = np.array([[1.0, np.nan], [np.inf, 2.0]], np.float32)
    rewards = np.array([np.nan, 0.5], np.float32)
    terminal = np.array([-np.inf, 3.0], np.float32)
    guard = FiniteGuard(ScriptedVecEnv(obs, rewards, np.array([False, True]), [{}, {"terminal_observation": terminal}]))
    for step in (lambda: guard.step(np.zeros(2, int)), lambda: (guard.step_async(np.zeros(2, int)), guard.step_wait())[1]):
        o, r, d, infos = step()
        assert o.tolist() == [[1.0, 0.0], [0.0, 2.0]] and r.tolist() == [0.0, 0.5]
        assert infos[1]["terminal_observation"].tolist() == [0.0, 3.0]
        assert guard.pop_count() == 4  # 2 observations, 1 reward, 1 terminal observation


def test_finite_guard_passes_finite_arrays_through_untouched():
    obs, rewards = np.ones((2, 3), np.float32), np.zeros(2, np.float32)
    guard = FiniteGuard(ScriptedVecEnv(obs, rewards, np.zeros(2, bool), [{}, {}]))
    o, r, _, _ = guard.step(np.zeros(2, int))
    assert o.tolist() == obs.tolist() and r.tolist() == rewards.tolist() and guard.pop_count() == 0
