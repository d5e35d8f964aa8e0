"""All-action advantages, held-position reward tables and critic targets, by hand and against the env."""
from __future__ import annotations

import numpy as np
import pytest

from convopt_mlflow.components.counterfactual import (action_advantages, centre_on_policy, expected_targets,
                                                      held_reward_table, held_variants)
from convopt_mlflow.env import MarketCore

LEVELS = np.array([-1.0, 0.0, 1.0])


def test_advantages_by_hand():
    # two states; rewards of short/flat/long, V of the next state under each, V(s), gamma 0.9
    rewards = np.array([[0.5, 0.0, -0.7], [-1.0, -0.1, 1.0]])
    next_values = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 10.0]])
    values = np.array([1.0, 2.0])
    expected = np.array([[0.5 + 0.9 - 1.0, 0.0 + 1.8 - 1.0, -0.7 + 2.7 - 1.0],
                         [-1.0 - 2.0, -0.1 - 2.0, 1.0 + 9.0 - 2.0]])
    np.testing.assert_allclose(action_advantages(rewards, next_values, values, gamma=0.9), expected)
    # a terminal next state is not bootstrapped
    terminal = action_advantages(rewards, next_values, values, gamma=0.9, terminated=np.array([1.0, 0.0]))
    np.testing.assert_allclose(terminal[0], rewards[0] - 1.0)
    np.testing.assert_allclose(terminal[1], expected[1])


def test_held_reward_table_prices_every_held_position_like_the_env():
    rng = np.random.default_rng(0)
    core = MarketCore(rng.standard_normal((50, 2)).astype(np.float32), rng.standard_normal(50) * 1e-3,
                      window=2, episode_length=5, cost_bps=3.0)
    bars = rng.integers(5, 40, size=12)
    held = LEVELS[rng.integers(0, 3, size=12)]
    table = held_reward_table(core.action_rewards(bars + 1, held), held, LEVELS, core.cost_rate)
    assert table.shape == (12, 3, 3)
    for p, level in enumerate(LEVELS):
        np.testing.assert_allclose(table[:, p, :], core.action_rewards(bars + 1, np.full(12, level)), atol=1e-15)


def test_expected_targets_by_hand():
    probs = np.array([[[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.2, 0.3, 0.5]]])  # (1, P=3, K=3)
    table = np.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]])
    next_values = np.array([[10.0, 20.0, 30.0]])
    targets = expected_targets(probs, table, next_values, gamma=0.5)
    np.testing.assert_allclose(targets, [[1.0 + 5.0, 0.5 * (5 + 10) + 0.5 * (6 + 15),
                                          0.2 * (7 + 5) + 0.3 * (8 + 10) + 0.5 * (9 + 15)]])


def test_held_variants_replace_only_the_position():
    obs = np.array([[1.0, 2.0, 0.0], [3.0, 4.0, -1.0]], dtype=np.float32)
    variants = held_variants(obs, LEVELS)
    assert variants.shape == (2, 3, 3) and variants.dtype == np.float32
    np.testing.assert_array_equal(variants[1], [[3, 4, -1], [3, 4, 0], [3, 4, 1]])
    np.testing.assert_array_equal(obs[:, -1], [0.0, -1.0])  # the input is not changed


def test_centring_on_the_policy_by_hand():
    advantages = np.array([[1.0, 2.0, 4.0]])
    probs = np.array([[0.5, 0.25, 0.25]])  # expected advantage 0.5 + 0.5 + 1.0 = 2.0
    centred = centre_on_policy(advantages, probs)
    np.testing.assert_allclose(centred, [[-1.0, 0.0, 2.0]])
    assert float(np.sum(probs * centred)) == pytest.approx(0.0)
    # a critic error at s shifts every action alike and cancels
    np.testing.assert_allclose(centre_on_policy(advantages + 7.0, probs), centred)
