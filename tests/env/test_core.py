import numpy as np
import pytest

from convopt_mlflow.env import MarketCore
from convopt_mlflow.errors import ConfigError, DataValidationError


def test_hand_computed_rewards_and_positions(hand_core):
    # short, long (switch costs 2 units), long (no cost), flat (1 unit); cost rate 1e-3.
    t = np.array([1])
    position = np.zeros(1)
    rewards, positions = [], []
    for action in [0, 2, 2, 1]:
        position, reward = hand_core.step(t, position, np.array([action]))
        rewards.append(reward[0])
        positions.append(position[0])
        t = t + 1
    assert positions == [-1.0, 1.0, 1.0, 0.0]
    expected = [
        -1 * -0.02 - 1e-3 * 1,  # 0.019
        1 * 0.03 - 1e-3 * 2,  # 0.028
        1 * 0.005 - 0.0,  # 0.005
        0 * -0.01 - 1e-3 * 1,  # -0.001
    ]
    assert rewards == pytest.approx([0.019, 0.028, 0.005, -0.001], abs=1e-15)
    assert rewards == expected


def test_observation_is_window_oldest_first_then_position(hand_core):
    obs = hand_core.observe(np.array([1, 4]), np.array([0.0, -1.0]))
    assert obs.dtype == np.float32 and obs.shape == (2, 5)
    np.testing.assert_array_equal(obs[0], [0, 1, 10, 11, 0])
    np.testing.assert_array_equal(obs[1], [30, 31, 40, 41, -1])


def test_observe_refuses_bars_without_a_full_window(hand_core):
    with pytest.raises(IndexError):
        hand_core.observe(np.array([0]), np.zeros(1))
    with pytest.raises(IndexError):
        hand_core.observe(np.array([6]), np.zeros(1))


def test_step_refuses_bad_actions_and_last_bar(hand_core):
    with pytest.raises(IndexError):
        hand_core.step(np.array([1]), np.zeros(1), np.array([3]))
    with pytest.raises(IndexError):
        hand_core.step(np.array([1]), np.zeros(1), np.array([-1]))
    with pytest.raises(IndexError):
        hand_core.step(np.array([5]), np.zeros(1), np.array([1]))


def test_windows_are_views_not_copies(hand_core):
    assert np.shares_memory(hand_core.windows, hand_core.features)
    assert not hand_core.windows.flags.writeable


def test_start_bounds_respect_range_window_and_warmup():
    feats, rets = np.ones((20, 1), np.float32), np.zeros(20)
    core = MarketCore(feats, rets, window=5, episode_length=3, cost_bps=0, bar_range=(10, 20))
    assert core.start_bounds == (10, 16)  # windows may reach back before the split start
    core = MarketCore(feats, rets, window=5, episode_length=3, cost_bps=0, bar_range=(5, 20), warmup=8)
    assert core.start_bounds == (12, 16)  # window 8..12 starts at the warmup bar
    core = MarketCore(feats, rets, window=5, episode_length=3, cost_bps=0)
    assert core.start_bounds == (4, 16)
    starts = core.sample_starts(np.random.default_rng(0), 2000)
    assert starts.min() == 4 and starts.max() == 16


def test_sampled_episodes_stay_inside_the_split():
    feats, rets = np.ones((30, 1), np.float32), np.zeros(30)
    core = MarketCore(feats, rets, window=4, episode_length=5, cost_bps=0, bar_range=(8, 20), warmup=2)
    lo, hi = core.start_bounds
    assert lo >= 8 and lo - 4 + 1 >= 2
    assert hi + 5 - 1 + 1 == 19  # last reward uses bar stop - 1


def test_too_short_range_names_the_numbers(hand_arrays):
    features, log_returns = hand_arrays
    with pytest.raises(ConfigError, match=r"window=2 and episode_length=5.*stop >= 7.*stop is 6"):
        MarketCore(features, log_returns, window=2, episode_length=5, cost_bps=1.0)
    with pytest.raises(ConfigError, match="warmup=3"):
        MarketCore(features, log_returns, window=2, episode_length=2, cost_bps=1.0, warmup=3)
    # The exact fit is accepted: window 2, 4 decisions, 6 bars.
    MarketCore(features, log_returns, window=2, episode_length=4, cost_bps=1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(window=0, episode_length=2, cost_bps=1.0),
        dict(window=2, episode_length=2, cost_bps=-1.0),
        dict(window=2, episode_length=2, cost_bps=1.0, bar_range=(3, 9)),
        dict(window=2, episode_length=2, cost_bps=1.0, warmup=-1),
    ],
)
def test_bad_config_is_a_config_error(kwargs, hand_arrays):
    features, log_returns = hand_arrays
    with pytest.raises(ConfigError):
        MarketCore(features, log_returns, **kwargs)


def test_shape_mismatch_is_a_config_error(hand_arrays):
    features, log_returns = hand_arrays
    with pytest.raises(ConfigError, match="log_returns"):
        MarketCore(features, log_returns[:5], window=2, episode_length=2, cost_bps=1.0)


def test_non_finite_inside_usable_span_is_rejected_but_allowed_before_warmup(hand_arrays):
    features, log_returns = hand_arrays
    feats = features.copy()
    feats[0, 1] = np.nan
    with pytest.raises(DataValidationError, match="bars 0"):
        MarketCore(feats, log_returns, window=2, episode_length=2, cost_bps=1.0)
    core = MarketCore(feats, log_returns, window=2, episode_length=2, cost_bps=1.0, warmup=1)
    assert core.start_bounds == (2, 3)
    rets = log_returns.copy()
    rets[4] = np.inf
    with pytest.raises(DataValidationError, match="log returns at bars 4"):
        MarketCore(features, rets, window=2, episode_length=2, cost_bps=1.0)


def test_long_only_levels_and_rewards(hand_arrays):
    features, log_returns = hand_arrays
    core = MarketCore(features, log_returns, window=2, episode_length=4, cost_bps=10.0, long_only=True)
    np.testing.assert_array_equal(core.position_levels, [0.0, 1.0])
    assert core.n_actions == 2
    position, reward = core.step(np.array([2, 3]), np.array([0.0, 1.0]), np.array([1, 0]))
    np.testing.assert_array_equal(position, [1.0, 0.0])
    assert reward.tolist() == [0.03 - 1e-3, 0.0 - 1e-3]
    with pytest.raises(IndexError):
        core.step(np.array([2]), np.zeros(1), np.array([2]))
    low, high = core.observation_bounds
    assert (low[-1], high[-1]) == (0.0, 1.0)


def test_caller_arrays_are_not_modified_or_frozen(hand_arrays):
    features, log_returns = hand_arrays
    feats = features.copy()
    MarketCore(feats, log_returns, window=2, episode_length=2, cost_bps=1.0)
    assert feats.flags.writeable
