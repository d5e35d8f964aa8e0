"""The augmented env: slots filled per episode, identical to the plain env when nothing is augmented."""
import numpy as np
import pytest

from convopt_mlflow.components.augmentation import TradingDataAugmentation
from convopt_mlflow.config import build_config
from convopt_mlflow.data.features import observation_features, segment_observation_values
from convopt_mlflow.data.synthetic import generate_market
from convopt_mlflow.env import TradingVecEnv
from convopt_mlflow.env.augmented import AugmentedVecEnv
from convopt_mlflow.training.augment import augmented_env
from convopt_mlflow.training.setup import load_market

SMALL = ["data.source=synthetic:n_bars=3000,seed=1,signal_ic=0.1", "env.n_envs=4", "env.window=8",
         "env.episode_length=64"]


@pytest.mark.parametrize("observation, history", [("multiscale", 16), ("window", 8)])
def test_segment_features_equal_the_full_matrix(observation, history):
    frame = generate_market(2000, seed=3, signal_ic=0.1).frame
    full = observation_features(frame, vol_window=10, observation=observation, history=history).features
    bars, columns = frame.to_numpy(), list(frame.columns)
    for first in (0, 17, 600, 2000 - full.warmup - 50):
        stop = first + full.warmup + 50
        values = segment_observation_values(bars[first:stop], columns, vol_window=10, observation=observation,
                                            history=history, volume_z=True)
        assert values.dtype == np.float32 and values.shape == (stop - first, full.values.shape[1])
        np.testing.assert_allclose(values[full.warmup:], full.values[first + full.warmup:stop], rtol=1e-5, atol=1e-6)
        assert not values[:full.warmup].any()


def test_segment_features_keep_the_frames_columns_when_the_segment_volume_is_constant():
    frame = generate_market(800, seed=3).frame
    frame.loc[frame.index[:400], "volume"] = 5.0
    full = observation_features(frame, vol_window=10, observation="window", history=1).features
    assert "volume_z" in full.names
    values = segment_observation_values(frame.to_numpy()[:400], list(frame.columns), vol_window=10,
                                        observation="window", history=1, volume_z=True)
    assert values.shape[1] == len(full.names)


def _roll(env, steps, seed=0):
    rng = np.random.default_rng(seed)
    obs = [env.reset()]
    rewards, bars, returns = [], [], []
    for _ in range(steps):
        o, r, d, infos = env.step(rng.integers(0, 3, env.num_envs))
        obs.append(o)
        rewards.append(r)
        bars.append(env.current_bars)
        returns += [info["episode"]["r"] for info in infos if "episode" in info]
    return np.array(obs), np.array(rewards), np.array(bars), returns


def test_without_augmentation_it_steps_exactly_like_the_plain_env():
    market = load_market(build_config("baseline", SMALL))
    core = market.cores["train"]
    plain = _roll(TradingVecEnv(core, 4, seed=5, reward_scale=3.0), 300)
    slots = _roll(AugmentedVecEnv(core, 4, seed=5, reward_scale=3.0), 300)
    for a, b in zip(plain, slots):
        np.testing.assert_array_equal(a, b)


def test_recomputed_but_unchanged_episodes_match_the_plain_env():
    cfg = build_config("augment", SMALL)
    market = load_market(cfg)
    zero_noise = TradingDataAugmentation({"noise_injection_prob": 1.0, "noise_level": 0.0, "time_warp_prob": 0.0,
                                          "feature_dropout_prob": 0.0})
    env = augmented_env(cfg, market, zero_noise)
    plain = _roll(TradingVecEnv(market.cores["train"], 4, seed=0), 200)
    recomputed = _roll(env, 200)
    assert zero_noise.counts["noise"] >= 4 * 3  # every episode recomputed its features
    np.testing.assert_allclose(recomputed[0], plain[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(recomputed[1], plain[1], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(recomputed[2], plain[2])


def test_augmented_episodes_differ_are_seeded_and_pay_the_augmented_returns():
    cfg = build_config("augment", SMALL + ["noise_injection_prob=1", "time_warp_prob=0.5",
                                           "feature_dropout_prob=0.5"])
    market = load_market(cfg)

    def run():
        from convopt_mlflow.training.augment import build_augmentation
        aug = build_augmentation(cfg)
        return _roll(augmented_env(cfg, market, aug), 150), aug

    (obs, rewards, bars, returns), aug = run()
    (obs2, rewards2, _, returns2), _ = run()
    np.testing.assert_array_equal(obs, obs2)
    np.testing.assert_array_equal(rewards, rewards2)
    plain = _roll(TradingVecEnv(market.cores["train"], 4, seed=0), 150)
    np.testing.assert_array_equal(bars, plain[2])  # same windows ...
    assert not np.allclose(obs, plain[0]) and not np.allclose(rewards, plain[1])  # ... other copies of them
    assert aug.counts["episodes"] == 4 * 3 and aug.counts["noise"] == 12 and 0 < aug.counts["dropout"] < 12
    assert np.isfinite(obs).all() and np.isfinite(rewards).all()


def test_a_failing_augmentation_falls_back_to_the_market_and_reports_once():
    class Broken(TradingDataAugmentation):
        def decide(self, n_features):
            raise RuntimeError("boom")

    cfg = build_config("augment", SMALL)
    market = load_market(cfg)
    errors = []
    env = augmented_env(cfg, market, Broken(), on_error=errors.append)
    out = _roll(env, 200)
    plain = _roll(TradingVecEnv(market.cores["train"], 4, seed=0), 200)
    assert [str(e) for e in errors] == ["boom"] and env.episodes is None
    for a, b in zip(out, plain):
        np.testing.assert_array_equal(a, b)
