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


# ------------------------------------------------------------------ causality and the reward, end to end
CAUSAL = SMALL + ["noise_injection_prob=1", "time_warp_prob=1", "augment.synthetic_prob=0",
                  "feature_dropout_prob=0", "augment.warp_factor=0.6"]


class Recording(TradingDataAugmentation):
    """Keeps every augmented segment the env asked for."""

    def __init__(self, config):
        super().__init__(config)
        self.segments = []

    def apply(self, segment, decision):
        out = super().apply(segment, decision)
        self.segments.append(out)
        return out


def _source(cfg, market, columns=None):
    from convopt_mlflow.training.augment import build_augmentation
    env = augmented_env(cfg, market, Recording(build_augmentation(cfg).config))
    if columns is not None:
        env.episodes.columns = columns
    return env.episodes


def test_an_augmented_episode_sees_nothing_of_the_market_after_its_bar():
    cfg = build_config("augment", CAUSAL)
    market = load_market(cfg)
    core = market.cores["train"]
    start = core.start_bounds[0] + 40
    slot = core.window + core.episode_length
    first_bar = start - core.window + 1  # slot row 0
    rng = np.random.default_rng(0)
    for bar in (start, start + 1, start + 20, start + core.episode_length - 1):
        columns = [c.copy() for c in _source(cfg, market).columns]
        factor = np.exp(rng.normal(0, 0.02, columns[0].size - bar - 1))
        for c in columns:  # every later bar moves: prices (OHLC scaled together stay valid), volume, features
            c[bar + 1:] *= factor
        filled = []
        for source in (_source(cfg, market), _source(cfg, market, columns)):
            features = np.zeros((slot, core.n_features), np.float32)
            returns = np.zeros(slot)
            source.fill(start, features, returns)
            assert source.last.time_warp and source.last.noise
            filled.append((features, returns))
        (f0, r0), (f1, r1) = filled
        seen = bar - first_bar + 1  # rows of bars <= bar
        np.testing.assert_array_equal(f0[:seen], f1[:seen])
        np.testing.assert_array_equal(r0[:seen], r1[:seen])
        assert not np.array_equal(r0[seen:], r1[seen:])  # the perturbation reached the later bars


def test_the_reward_is_the_augmented_return_after_the_observed_bar():
    cfg = build_config("augment", CAUSAL + ["env.n_envs=1"])
    market = load_market(cfg)
    from convopt_mlflow.training.augment import build_augmentation
    aug = Recording(build_augmentation(cfg).config)
    env = augmented_env(cfg, market, aug, reward_scale=3.0)
    core = market.cores["train"]
    lookback, window, length = market.features.warmup, core.window, core.episode_length
    featurize = env.episodes.featurize
    rng = np.random.default_rng(1)
    obs = env.reset()
    segment = aug.segments[-1]
    log_close = np.log(segment[:, 3])
    features = featurize(segment)
    prev = 0.0
    for k in range(length):
        t = lookback + window - 1 + k  # the decision's bar in the segment
        # the observation: the augmented features of bars t-window+1..t, computable from bars <= t alone
        np.testing.assert_allclose(obs[0, :-1], features[t - window + 1:t + 1].ravel(), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(featurize(segment[:t + 1])[t - window + 1:], features[t - window + 1:t + 1])
        assert obs[0, -1] == prev
        action = rng.integers(0, 3, 1)
        obs, reward, done, _ = env.step(action)
        position = core.position_levels[action[0]]
        paid = position * (log_close[t + 1] - log_close[t]) - core.cost_rate * abs(position - prev)
        assert reward[0] == pytest.approx(3.0 * paid, rel=1e-5, abs=1e-9)
        prev = position
    assert done[0] and len(aug.segments) == 2  # the next episode began
