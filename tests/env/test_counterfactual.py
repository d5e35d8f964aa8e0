"""Counterfactual rewards and next observations: every action's outcome at the current bar."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from convopt_mlflow.env import TradingEnv, TradingVecEnv
from convopt_mlflow.env.augmented import AugmentedVecEnv


def test_hand_computed_counterfactuals(hand_core):
    venv = TradingVecEnv(hand_core, n_envs=2, seed=0, reward_scale=2.0)
    venv.reset()
    venv.step(np.array([2, 0]))  # env 0 long, env 1 short; both now at bar 2 (next return +0.03)
    rewards = venv.counterfactual_rewards()
    assert rewards.dtype == np.float32 and rewards.shape == (2, 3)
    # env 0 holds +1: short -0.03 - 2*1e-3, flat 0 - 1e-3, long +0.03; env 1 holds -1: mirrored costs
    np.testing.assert_allclose(rewards, 2.0 * np.array([[-0.032, -0.001, 0.03], [-0.03, -0.001, 0.028]]), atol=1e-7)
    nxt = venv.counterfactual_next_observations()
    assert nxt.shape == (2, 3, 5) and nxt.dtype == np.float32
    np.testing.assert_array_equal(nxt[0], [[20, 21, 30, 31, -1], [20, 21, 30, 31, 0], [20, 21, 30, 31, 1]])


@pytest.mark.parametrize("env_class", [TradingVecEnv, AugmentedVecEnv])
def test_each_action_matches_what_step_returns(random_core, env_class):
    """At every step, step(a) returns exactly counterfactual_rewards()[:, a] and next observation [:, a]
    (the terminal observation at an episode's end), for every a."""
    venv = env_class(random_core, n_envs=5, seed=3, reward_scale=7.0)
    venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(3 * random_core.episode_length):
        rewards, observations = venv.counterfactual_rewards(), venv.counterfactual_next_observations()
        for action in range(random_core.n_actions):
            twin = copy.deepcopy(venv)
            obs, reward, dones, infos = twin.step(np.full(5, action))
            np.testing.assert_array_equal(reward, rewards[:, action])
            expected = np.array([infos[i]["terminal_observation"] if dones[i] else obs[i] for i in range(5)])
            np.testing.assert_array_equal(expected, observations[:, action])
        venv.step(rng.integers(0, random_core.n_actions, size=5))


def test_single_env_twin_agrees(random_core):
    venv = TradingVecEnv(random_core, n_envs=1, seed=0)
    venv.reset()
    start = int(venv.current_bars[0])
    env = TradingEnv(random_core)
    env.reset(options={"start": start})
    rng = np.random.default_rng(1)
    for _ in range(random_core.episode_length):
        np.testing.assert_allclose(env.counterfactual_rewards(), venv.counterfactual_rewards()[0], rtol=1e-6)
        np.testing.assert_array_equal(env.counterfactual_next_observations(), venv.counterfactual_next_observations()[0])
        action = int(rng.integers(0, random_core.n_actions))
        expected_reward = env.counterfactual_rewards()[action]
        expected_obs = env.counterfactual_next_observations()[action]
        obs, reward, *_ = env.step(action)
        assert reward == expected_reward
        np.testing.assert_array_equal(obs, expected_obs)
        venv.step(np.array([action]))
    with pytest.raises(RuntimeError, match="reset"):
        env.counterfactual_rewards()


def test_stepping_never_computes_counterfactuals(random_core, monkeypatch):
    """Nothing extra per step when unused: step() never calls the counterfactual paths."""
    calls = []
    monkeypatch.setattr(type(random_core), "action_rewards", lambda *a: calls.append(1))
    venv = TradingVecEnv(random_core, n_envs=4, seed=0)
    venv.reset()
    for _ in range(20):
        venv.step(np.ones(4, dtype=int))
    assert calls == []
