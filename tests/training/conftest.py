"""Fixtures for training tests: a real tiny SB3 PPO on CartPole."""
from __future__ import annotations

import pytest
from stable_baselines3 import PPO


def make_tiny_ppo(seed: int = 0) -> PPO:
    """One gradient step per 32-step rollout; an 8-unit network (CPU)."""
    return PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1,
               policy_kwargs=dict(net_arch=[8]), seed=seed, device="cpu")


@pytest.fixture
def trained_ppo() -> PPO:
    """A tiny PPO after 64 steps (2 updates), so Adam has exp_avg/exp_avg_sq/step state."""
    model = make_tiny_ppo()
    model.learn(64)
    return model
