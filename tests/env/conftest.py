"""Hand-made markets for the env tests."""
import numpy as np
import pytest

from convopt_mlflow.env import MarketCore

# 6 bars, 2 features: features[t] = [10t, 10t + 1], so every window is recognisable.
HAND_FEATURES = np.array([[10 * t, 10 * t + 1] for t in range(6)], dtype=np.float32)
HAND_LOG_RETURNS = np.array([0.0, 0.01, -0.02, 0.03, 0.005, -0.01])


@pytest.fixture
def hand_arrays() -> tuple[np.ndarray, np.ndarray]:
    return HAND_FEATURES.copy(), HAND_LOG_RETURNS.copy()


@pytest.fixture
def hand_core() -> MarketCore:
    """window 2, 4 decisions, 10 bps: the only valid start is bar 1 (decisions at 1..4)."""
    return MarketCore(HAND_FEATURES, HAND_LOG_RETURNS, window=2, episode_length=4, cost_bps=10.0)


@pytest.fixture
def random_core() -> MarketCore:
    rng = np.random.default_rng(123)
    n = 400
    return MarketCore(
        rng.standard_normal((n, 3)).astype(np.float32),
        rng.standard_normal(n) * 1e-3,
        window=5,
        episode_length=7,
        cost_bps=2.0,
    )
