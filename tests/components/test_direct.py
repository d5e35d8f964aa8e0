"""The direct learner's recursion against brute force over every position path."""
from __future__ import annotations

import numpy as np
import pytest

from convopt_mlflow.components.direct import brute_force_rewards, expected_rewards, position_rewards

LEVELS = np.array([-1.0, 0.0, 1.0])


def _policy(rng: np.random.Generator, bars: int, k: int) -> np.ndarray:
    logits = rng.normal(size=(bars, k, k)) * 2.0
    probs = np.exp(logits)
    return probs / probs.sum(axis=2, keepdims=True)


@pytest.mark.parametrize("levels", [LEVELS, np.array([0.0, 1.0])], ids=["long-short", "long-only"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_recursion_is_the_expectation_over_every_position_path(levels, seed):
    rng = np.random.default_rng(seed)
    probs, returns = _policy(rng, 6, levels.size), rng.normal(size=6)
    start = int(np.flatnonzero(levels == 0.0)[0])
    rewards, dist = expected_rewards(probs, returns, levels, cost=0.3, start=start)
    np.testing.assert_allclose(rewards, brute_force_rewards(probs, returns, levels, cost=0.3, start=start),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)


def test_the_reward_table_is_the_envs_reward():
    table = position_rewards(np.array([0.02]), LEVELS, cost=0.001)
    # from short (-1) to long (+1): 1 * 0.02 - 0.001 * 2
    assert table[0, 0, 2] == pytest.approx(0.018)
    assert table[0, 1, 1] == 0.0 and table[0, 2, 0] == pytest.approx(-0.022)


def test_a_deterministic_policy_earns_its_one_path():
    returns = np.array([0.5, -0.25, 0.1])
    stay_short = np.tile(np.eye(3)[0], (3, 3, 1))
    rewards, _ = expected_rewards(stay_short, returns, LEVELS, cost=0.1, start=1)
    np.testing.assert_allclose(rewards, [-0.5 - 0.1, 0.25, -0.1])
