import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from convopt_mlflow.env import MarketCore, TradingEnv


@pytest.mark.parametrize("long_only", [False, True])
def test_both_env_checkers_pass_without_warnings(random_core, long_only):
    core = random_core
    if long_only:
        core = MarketCore(core.features, core.log_returns, window=5, episode_length=7, cost_bps=2.0, long_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # No render modes exist, so the render check has nothing to test (it only warns).
        gymnasium_check_env(TradingEnv(core), skip_render_check=True)
        sb3_check_env(TradingEnv(core), warn=True)


def test_hand_computed_episode(hand_core):
    env = TradingEnv(hand_core)
    obs, info = env.reset(seed=0)
    assert info == {"bar": 1}
    np.testing.assert_array_equal(obs, [0, 1, 10, 11, 0])
    steps = [env.step(a) for a in [0, 2, 2, 1]]
    rewards = [s[1] for s in steps]
    assert rewards == pytest.approx([0.019, 0.028, 0.005, -0.001], abs=1e-15)
    assert [s[0][-1] for s in steps] == [-1.0, 1.0, 1.0, 0.0]  # position fed back
    assert env.position == 0.0 and env.current_bar == 5
    np.testing.assert_array_equal(steps[0][0], [10, 11, 20, 21, -1])
    np.testing.assert_array_equal(steps[1][0], [20, 21, 30, 31, 1])
    np.testing.assert_array_equal(steps[3][0], [40, 41, 50, 51, 0])
    assert [s[2] for s in steps] == [False] * 4  # never terminated
    assert [s[3] for s in steps] == [False, False, False, True]  # truncated at episode_length


def test_seeded_reset_is_reproducible(random_core):
    def starts(seed):
        env = TradingEnv(random_core)
        first = env.reset(seed=seed)[1]["bar"]
        return [first] + [env.reset()[1]["bar"] for _ in range(5)]

    assert starts(1) == starts(1)
    assert starts(1) != starts(2)


def test_forced_start_and_out_of_range_start(random_core):
    env = TradingEnv(random_core)
    assert env.reset(options={"start": 37})[1]["bar"] == 37
    lo, hi = random_core.start_bounds
    with pytest.raises(ValueError, match="episode starts"):
        env.reset(options={"start": hi + 1})


def test_step_needs_a_live_episode(hand_core):
    env = TradingEnv(hand_core)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(1)
    env.reset(seed=0)
    for _ in range(hand_core.episode_length):
        env.step(1)
    with pytest.raises(RuntimeError, match="truncated"):
        env.step(1)
    env.reset(seed=0)
    with pytest.raises(IndexError):
        env.step(3)
