import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from convopt_mlflow.components.augmentation import (
    EpisodeAugmentation, TradingDataAugmentation, check_ohlc, monotone_warp, sample_and_hold,
    stationary_bootstrap_indices,
)
from convopt_mlflow.errors import ConfigError


def bars_from(returns, gaps, ups, downs, start, extra):
    """Valid OHLC bars built by hand (independently of the module's own decomposition)."""
    close = start * np.exp(np.cumsum(returns))
    prev = np.concatenate([[close[0] * np.exp(-returns[0])], close[:-1]])
    open_ = prev * np.exp(gaps)
    high = np.maximum(open_, close) * np.exp(ups)
    low = np.minimum(open_, close) * np.exp(-downs)
    return np.column_stack([open_, high, low, close, extra])


@st.composite
def segments(draw):
    n = draw(st.integers(2, 80))
    floats = lambda lo, hi: arrays(np.float64, n, elements=st.floats(lo, hi, allow_nan=False))
    extra = draw(arrays(np.float64, (n, draw(st.integers(0, 2))), elements=st.floats(-10, 10, allow_nan=False)))
    return bars_from(draw(floats(-0.05, 0.05)), draw(floats(-0.01, 0.01)), draw(floats(0, 0.02)),
                     draw(floats(0, 0.02)), draw(st.floats(1e-2, 1e4)), extra)


settings.register_profile("quick", max_examples=60, deadline=None)
settings.load_profile("quick")


@given(segments(), st.integers(0, 2**32 - 1), st.floats(0, 3))
def test_noise_injection_keeps_ohlc_and_other_columns(seg, seed, level):
    aug = TradingDataAugmentation({"seed": seed, "vol_window": 5})
    out = aug.apply_noise_injection(seg, level)
    assert out.shape == seg.shape and check_ohlc(out)
    np.testing.assert_array_equal(out[:, 4:], seg[:, 4:])
    assert out[0, 3] == pytest.approx(seg[0, 3], rel=1e-12)


@given(segments(), st.integers(0, 2**32 - 1), st.floats(0, 0.95))
def test_time_warp_keeps_ohlc_and_end_points(seg, seed, factor):
    out = TradingDataAugmentation({"seed": seed}).time_warp_sequences(seg, factor)
    assert out.shape == seg.shape and check_ohlc(out)
    np.testing.assert_allclose(out[[0, -1], 3], seg[[0, -1], 3], rtol=1e-10)
    if seg.shape[1] > 4:  # interpolated columns stay inside their range
        assert (out[:, 4:] >= seg[:, 4:].min(axis=0) - 1e-9).all()
        assert (out[:, 4:] <= seg[:, 4:].max(axis=0) + 1e-9).all()


@given(segments(), st.integers(0, 2**32 - 1), st.floats(1, 30))
def test_block_bootstrap_keeps_ohlc_and_draws_whole_bars(seg, seed, block):
    aug = TradingDataAugmentation({"seed": seed, "block_length": block})
    out = aug.block_bootstrap(seg)
    assert out.shape == seg.shape and check_ohlc(out)
    np.testing.assert_array_equal(out[0, 4:], seg[0, 4:])
    if seg.shape[1] > 4 and seg.shape[0] > 1:  # each later bar's columns come from one source bar
        assert all(any(np.array_equal(row, src) for src in seg[1:, 4:]) for row in out[1:, 4:])


@given(segments(), st.integers(0, 2**32 - 1))
def test_every_episode_decision_keeps_ohlc_and_is_deterministic(seg, seed):
    config = {"seed": seed, "noise_injection_prob": 0.5, "time_warp_prob": 0.5, "synthetic_prob": 0.5,
              "feature_dropout_prob": 0.5}
    a, b = TradingDataAugmentation(config), TradingDataAugmentation(config)
    for _ in range(3):
        da, db = a.decide(6), b.decide(6)
        assert da == db
        out = a.apply(seg, da)
        assert check_ohlc(out)
        np.testing.assert_array_equal(out, b.apply(seg, db))


def test_batch_augmentation_applies_configured_probabilities_per_episode():
    rng = np.random.default_rng(0)
    n = 40
    batch = np.stack([bars_from(rng.normal(0, 1e-3, n), np.zeros(n), np.full(n, 1e-3), np.full(n, 1e-3), 100.0,
                                np.zeros((n, 1))) for _ in range(2000)])
    aug = TradingDataAugmentation({"seed": 1, "noise_injection_prob": 0.3, "time_warp_prob": 0.2,
                                   "feature_dropout_prob": 0.1})
    out = aug.augment_batch(batch)
    assert out.shape == batch.shape and check_ohlc(out)
    counts = aug.counts
    assert counts["episodes"] == 2000 and counts["synthetic"] == 0
    for name, p in (("noise", 0.3), ("time_warp", 0.2), ("dropout", 0.1)):
        assert abs(counts[name] / 2000 - p) < 4 * np.sqrt(p * (1 - p) / 2000), name
    changed = ~np.all(out == batch, axis=(1, 2))
    assert 0.3 < changed.mean() < 0.5  # 1 - 0.7 * 0.8 = 0.44 of episodes have changed bars


def test_seeded_rng_state_resumes_the_same_sequence():
    seg = bars_from(np.full(30, 1e-3), np.zeros(30), np.full(30, 1e-3), np.full(30, 1e-3), 50.0, np.zeros((30, 0)))
    config = {"seed": 7, "noise_injection_prob": 1.0, "time_warp_prob": 0.5}
    full = TradingDataAugmentation(config)
    first = [full.apply(seg, full.decide(4)) for _ in range(3)]
    rest = [full.apply(seg, full.decide(4)) for _ in range(3)]
    part = TradingDataAugmentation(config)
    assert all(np.array_equal(x, part.apply(seg, part.decide(4))) for x in first)
    resumed = TradingDataAugmentation(config)
    resumed.load_state_dict(json.loads(json.dumps(part.state_dict())))
    assert all(np.array_equal(x, resumed.apply(seg, resumed.decide(4))) for x in rest)
    assert resumed.counts == full.counts
    other = TradingDataAugmentation({**config, "seed": 8})
    assert not np.array_equal(first[0], other.apply(seg, other.decide(4)))


def test_dropout_masks_some_but_never_all_features():
    aug = TradingDataAugmentation({"feature_dropout_prob": 1.0, "dropout_rate": 0.99, "seed": 0,
                                   "noise_injection_prob": 0.0, "time_warp_prob": 0.0})
    decisions = [aug.decide(5) for _ in range(200)]
    assert all(1 <= len(d.dropped) <= 4 for d in decisions)
    assert not any(d.changes_bars for d in decisions)
    assert EpisodeAugmentation(noise=True).changes_bars


def test_warp_and_bootstrap_helpers():
    rng = np.random.default_rng(0)
    tau = monotone_warp(100, 0.5, rng)
    assert tau[0] == 0 and tau[-1] == 99 and (np.diff(tau) > 0).all()
    assert 0.4 < np.diff(tau).min() and np.diff(tau).max() < 1.6
    idx = stationary_bootstrap_indices(100_000, 1000, 20.0, rng)
    assert idx.min() >= 0 and idx.max() < 1000
    runs = np.flatnonzero(np.diff(idx) % 1000 != 1).size + 1  # blocks
    assert 100_000 / runs == pytest.approx(20.0, rel=0.1)


def test_source_bars_feed_the_bootstrap():
    rng = np.random.default_rng(0)
    src = bars_from(rng.normal(0, 1e-2, 500), np.zeros(500), np.full(500, 1e-3), np.full(500, 1e-3), 10.0,
                    np.arange(500.0)[:, None])
    seg = bars_from(np.zeros(50), np.zeros(50), np.zeros(50), np.zeros(50), 10.0, np.full((50, 1), -1.0))
    aug = TradingDataAugmentation({"seed": 0})
    aug.set_bootstrap_source(src)
    out = aug.block_bootstrap(seg)
    assert set(out[1:, 4]) <= set(range(1, 500)) and out[0, 4] == -1.0
    np.testing.assert_allclose(np.diff(np.log(out[:, 3])), np.diff(np.log(src[:, 3]))[out[1:, 4].astype(int) - 1])


@pytest.mark.parametrize("config", [{"noise_injection_prob": 1.5}, {"warp_factor": 1.0}, {"colour": 1}])
def test_bad_settings_are_refused(config):
    with pytest.raises(ConfigError):
        TradingDataAugmentation(config)


def test_bad_bars_are_refused():
    bad = np.array([[1.0, 0.5, 0.9, 1.0], [1.0, 1.1, 0.9, 1.0]])  # high below open
    with pytest.raises(ValueError, match="low <= open, close <= high"):
        TradingDataAugmentation().apply_noise_injection(bad, 1.0)


# ------------------------------------------------------------------ causality: no transform reads ahead
def _walk(rng, n):
    """A Gaussian random walk of n bars with random gaps and wicks and two other columns."""
    return bars_from(rng.normal(0, 1e-2, n), rng.normal(0, 1e-3, n), np.abs(rng.normal(0, 3e-3, n)),
                     np.abs(rng.normal(0, 3e-3, n)), 100.0, rng.normal(size=(n, 2)))


SOURCE = _walk(np.random.default_rng(123), 40_000)  # e.g. the train split


def _bootstrap_from_source(aug, seg):
    aug.set_bootstrap_source(SOURCE[:, :seg.shape[1]])
    return aug.block_bootstrap(seg)


ALL_ON = EpisodeAugmentation(synthetic=True, time_warp=True, noise=True)
TRANSFORMS = {
    "time_warp": lambda aug, seg: aug.time_warp_sequences(seg, 0.6),
    "noise": lambda aug, seg: aug.apply_noise_injection(seg, 1.0),
    "bootstrap_from_itself": lambda aug, seg: aug.block_bootstrap(seg),
    "bootstrap_from_source": _bootstrap_from_source,
    "all_in_turn": lambda aug, seg: aug.apply(seg, ALL_ON),
}


@st.composite
def segments_and_futures(draw):
    """A segment, a bar t and the same segment with every bar after t replaced (still valid bars)."""
    seg = draw(segments())
    n, extra = seg.shape[0], seg.shape[1] - 4
    t = draw(st.integers(0, n - 2))
    k = n - t - 1
    floats = lambda lo, hi: arrays(np.float64, k, elements=st.floats(lo, hi, allow_nan=False))
    later = bars_from(draw(floats(-0.05, 0.05)), draw(floats(-0.01, 0.01)), draw(floats(0, 0.02)),
                      draw(floats(0, 0.02)), 1.0, draw(arrays(np.float64, (k, extra), elements=st.floats(-10, 10))))
    other = seg.copy()
    later[:, :4] *= seg[t, 3] / later[0, :4].max()  # any positive level: the next bars jump
    other[t + 1:] = later
    return seg, other, t


@pytest.mark.parametrize("name", list(TRANSFORMS))
@given(data=segments_and_futures(), seed=st.integers(0, 2**32 - 1))
def test_perturbing_bars_after_t_changes_nothing_at_or_before_t(name, data, seed):
    seg, other, t = data
    transform = TRANSFORMS[name]
    out = transform(TradingDataAugmentation({"seed": seed, "vol_window": 5}), seg)
    out_other = transform(TradingDataAugmentation({"seed": seed, "vol_window": 5}), other)
    assert check_ohlc(out) and check_ohlc(out_other)
    np.testing.assert_array_equal(out[:t + 1], out_other[:t + 1])


def _random_walks(rng, count=400, n=100):
    return [_walk(rng, n) for _ in range(count)]


def _return_dependence(segments_):
    """Pooled lag-1 autocorrelation of the close-to-close returns (bar 0 has none) and sign persistence
    ``P(sign r[t+1] = sign r[t])`` over pairs of non-zero returns, with their standard errors."""
    returns = [np.diff(np.log(seg[:, 3])) for seg in segments_]
    num = sum(float(r[:-1] @ r[1:]) for r in returns)
    den = sum(float(r @ r) for r in returns)
    a = np.concatenate([r[:-1] for r in returns])
    b = np.concatenate([r[1:] for r in returns])
    both = (a != 0) & (b != 0)
    return num / den, 1 / np.sqrt(a.size), float(np.mean(np.sign(a[both]) == np.sign(b[both]))), 0.5 / np.sqrt(both.sum())


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_no_transform_creates_momentum_on_a_random_walk(name):
    """Old warp (linear interpolation): autocorrelation about 0.24 and persistence 0.595 where the walk
    has 0.00 and 0.50; the bounds here are 4 standard errors of the difference (about 0.03 and 0.014)."""
    walks = _random_walks(np.random.default_rng(0))
    aug = TradingDataAugmentation({"seed": 1})
    augmented = [TRANSFORMS[name](aug, seg) for seg in walks]
    assert all(check_ohlc(seg) for seg in augmented)
    ac0, ac_se0, p0, p_se0 = _return_dependence(walks)
    ac, ac_se, p, p_se = _return_dependence(augmented)
    assert abs(ac - ac0) < 4 * np.hypot(ac_se, ac_se0), (ac, ac0)
    assert abs(p - p0) < 4 * np.hypot(p_se, p_se0), (p, p0)
    if name != "bootstrap_from_source":  # the transform changed the bars it was given
        assert not all(np.array_equal(x, y) for x, y in zip(walks, augmented))


def test_sample_and_hold_aggregates_skipped_bars_and_flattens_held_ones():
    seg = np.array([[10.0, 11, 9, 10, 0],  # open, high, low, close, other
                    [10.5, 12, 10, 11, 1],
                    [11.0, 11.5, 8, 9, 2],
                    [9.5, 10, 9, 9.8, 3],
                    [9.8, 10.2, 9.7, 10, 4]])
    out = sample_and_hold(seg, np.array([0, 0, 2, 3, 4]))
    np.testing.assert_array_equal(out, [[10.0, 11, 9, 10, 0],
                                        [10, 10, 10, 10, 0],  # held: flat at bar 0's close
                                        [10.5, 12, 8, 9, 2],  # bars 1-2: open of 1, max high, min low, close of 2
                                        [9.5, 10, 9, 9.8, 3],
                                        [9.8, 10.2, 9.7, 10, 4]])
    returns = np.diff(np.log(out[:, 3]))
    np.testing.assert_allclose(returns, [0.0, np.log(9 / 10), np.log(9.8 / 9), np.log(10 / 9.8)])
    with pytest.raises(ValueError, match="non-decreasing"):
        sample_and_hold(seg, np.array([0, 2, 1, 3, 4]))


def test_the_warp_never_runs_ahead_of_the_clock():
    rng = np.random.default_rng(3)
    for n in (2, 5, 50, 500):
        for _ in range(50):
            tau = monotone_warp(n, 0.9, rng)
            assert (tau <= np.arange(n)).all() and tau[-1] == n - 1 and (np.diff(tau) > 0).all()
    idx = stationary_bootstrap_indices(5000, 5000, 5.0, np.random.default_rng(0), causal=True)
    assert (idx <= np.arange(5000)).all() and np.unique(idx).size > 1000
