"""env.context_features: trailing statistics of what flips a signal's sign, against brute force,
lookahead-free, and bit-identical whatever segment of the series they are computed in."""
from __future__ import annotations

import numpy as np
import pytest

from convopt_mlflow.data.context import (
    CONTEXT_WINDOWS, EWM_HALF_LIVES, MOMENTUM_WINDOWS, context_columns, context_warmup, uses_context_ewm,
    uses_context_features, uses_context_momentum,
)
from convopt_mlflow.data.features import compute_features, observation_features, segment_observation_values
from convopt_mlflow.data.synthetic import generate_market

N = 1500


@pytest.fixture(scope="module")
def frame():
    return generate_market(N, seed=5, signal_ic=0.1, signal_regimes="1:-1:0").frame


def test_names_warmup_and_placement(frame):
    plain = compute_features(frame, vol_window=20)
    both = compute_features(frame, vol_window=20, context_features=True, regime_features=True)
    context = [n for n in both.names if n.startswith("ctx_")]
    assert both.names == plain.names + ["regime_trend", "regime_mean_reversion", "regime_neutral"] + context
    assert context == ["ctx_autocorr_64", "ctx_return_64", "ctx_autocorr_256", "ctx_return_256",
                       "ctx_vol_ratio_64_256", "ctx_ic_signal_64", "ctx_signed_signal_64", "ctx_ic_signal_256",
                       "ctx_signed_signal_256"]
    assert uses_context_features(both.names) and not uses_context_features(plain.names)
    assert not uses_context_momentum(both.names)  # env.context_momentum off: the columns models saved before it
    momentum = compute_features(frame, vol_window=20, context_features=True, context_momentum=True)
    assert [n for n in momentum.names if n.startswith("ctx_")] == (
        context[:5] + ["ctx_momentum_32", "ctx_momentum_64", "ctx_momentum_256"] + context[5:])
    assert uses_context_momentum(momentum.names) and momentum.warmup == both.warmup
    assert max(MOMENTUM_WINDOWS) <= max(CONTEXT_WINDOWS)
    assert not uses_context_ewm(momentum.names)
    ewm = compute_features(frame, vol_window=20, context_features=True, context_momentum=True, context_ewm=True)
    assert [n for n in ewm.names if n.startswith("ctx_")] == (
        context[:5] + ["ctx_momentum_32", "ctx_momentum_64", "ctx_momentum_256", "ctx_ewm_4", "ctx_ewm_16",
                       "ctx_ewm_64"] + context[5:])
    assert uses_context_ewm(ewm.names) and ewm.warmup == both.warmup
    assert both.warmup == context_warmup() == max(CONTEXT_WINDOWS) + 1
    np.testing.assert_array_equal(both.values[both.warmup:, :plain.n_features], plain.values[both.warmup:])


def test_values_match_brute_force_windows():
    rng = np.random.default_rng(3)
    r, s = rng.normal(0, 0.01, 700), rng.normal(size=700)
    r[1:] += -0.3 * r[:-1]  # some autocorrelation
    cols = context_columns(r, {"feat_x": s}, momentum=True, ewm=True)
    for t in (257, 400, 699):
        for w in CONTEXT_WINDOWS:
            u = np.arange(t - w + 1, t + 1)
            ac = np.corrcoef(r[u - 1], r[u])[0, 1]
            ic = np.corrcoef(s[u - 1], r[u])[0, 1]
            rms = np.sqrt(np.mean(r[u] ** 2))
            np.testing.assert_allclose(cols[f"ctx_autocorr_{w}"][t], ac, rtol=1e-8)
            np.testing.assert_allclose(cols[f"ctx_ic_x_{w}"][t], ic, rtol=1e-8)
            np.testing.assert_allclose(cols[f"ctx_signed_x_{w}"][t], s[t] * ic * np.sqrt(w), rtol=1e-8)
            np.testing.assert_allclose(cols[f"ctx_return_{w}"][t], r[t] / rms * ac * np.sqrt(w), rtol=1e-8)
        ratio = np.sqrt(np.mean(r[t - 63:t + 1] ** 2)) / np.sqrt(np.mean(r[t - 255:t + 1] ** 2)) - 1
        np.testing.assert_allclose(cols["ctx_vol_ratio_64_256"][t], ratio, rtol=1e-8)
        for m in MOMENTUM_WINDOWS:
            window = r[t - m + 1:t + 1]
            z = window.sum() / (np.sqrt(np.mean(window**2)) * np.sqrt(m))
            np.testing.assert_allclose(cols[f"ctx_momentum_{m}"][t], z, rtol=1e-8)
        window = r[t - 255:t + 1]
        for h in EWM_HALF_LIVES:
            weights = 0.5 ** (np.arange(256)[::-1] / h)  # age 0 is bar t
            z = (weights * window).sum() / (np.sqrt(np.mean(window**2)) * np.sqrt((weights**2).sum()))
            np.testing.assert_allclose(cols[f"ctx_ewm_{h}"][t], z, rtol=1e-8)
    assert np.isnan(cols["ctx_momentum_32"][31]) and np.isfinite(cols["ctx_momentum_32"][32])  # r[1..32]
    # r[0] is not a return: the first windows are invalid, the first valid one starts at r[1]
    assert np.isnan(cols["ctx_autocorr_256"][256]) and np.isfinite(cols["ctx_autocorr_256"][257])
    assert np.isnan(cols["ctx_ewm_4"][255]) and np.isfinite(cols["ctx_ewm_4"][256])  # r[1..256]


def test_a_constant_series_has_zero_correlation_not_nan():
    cols = context_columns(np.zeros(400), {"feat_x": np.ones(400)}, momentum=True, ewm=True)
    assert (cols["ctx_autocorr_64"][65:] == 0).all() and (cols["ctx_ic_x_256"][257:] == 0).all()
    assert (cols["ctx_momentum_256"][257:] == 0).all() and (cols["ctx_ewm_64"][257:] == 0).all()


def test_momentum_reads_a_trailing_drift_sign():
    """A drift of 0.1 vol per bar over the last 256 bars: the z-scores carry its sign, about 0.1 * sqrt(M)."""
    rng = np.random.default_rng(4)
    r = rng.normal(0, 0.01, 1200)
    r[600:856] += 0.001
    r[856:] -= 0.001
    cols = context_columns(r, {}, momentum=True, ewm=True)
    assert cols["ctx_momentum_256"][855] > 1.0 and cols["ctx_momentum_256"][1199] < -1.0
    assert cols["ctx_momentum_64"][855] > 0 and cols["ctx_momentum_64"][1199] < 0
    assert cols["ctx_ewm_64"][855] > 1.0 and cols["ctx_ewm_64"][1199] < -1.0  # weighted toward the recent drift


@pytest.mark.parametrize("observation, history", [("multiscale", 16), ("window", 8)])
@pytest.mark.parametrize("k", [300, 800, N - 2])
def test_perturbing_future_bars_and_signals_changes_nothing_observed_up_to_t(frame, observation, history, k):
    kwargs = dict(vol_window=20, observation=observation, history=history, context_features=True,
                  context_momentum=True, context_ewm=True)
    before = observation_features(frame, **kwargs).features
    changed = frame.copy()
    rng = np.random.default_rng(k)
    shock = np.exp(np.cumsum(rng.normal(0, 0.01, N - k - 1)))  # a different future path from bar k+1 on
    for column in ("open", "high", "low", "close"):
        changed.iloc[k + 1:, changed.columns.get_loc(column)] *= shock
    changed.iloc[k + 1:, changed.columns.get_loc("feat_signal")] = rng.normal(size=N - k - 1)
    after = observation_features(changed, **kwargs).features
    context = [j for j, name in enumerate(before.names) if name.startswith("ctx_")]
    assert len(context) == 15 * (1 if observation == "window" else 5)
    assert np.array_equal(before.values[:k + 1], after.values[:k + 1])
    assert not np.array_equal(before.values[k + 1:, context], after.values[k + 1:, context])


@pytest.mark.parametrize("momentum, ewm", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("observation, history", [("multiscale", 16), ("window", 8)])
def test_an_episode_segment_recomputes_bit_identical_context_features(frame, observation, history, momentum, ewm):
    """Each window is summed on its own, so a segment (an augmented episode, the pyfunc's input)
    yields exactly the whole series' values after the warm-up."""
    full = observation_features(frame, vol_window=20, observation=observation, history=history,
                                context_features=True, context_momentum=momentum, context_ewm=ewm).features
    bars, columns = frame.to_numpy(), list(frame.columns)
    for first in (0, 301, N - full.warmup - 60):
        stop = first + full.warmup + 60
        values = segment_observation_values(bars[first:stop], columns, vol_window=20, observation=observation,
                                            history=history, volume_z=True, context_features=True,
                                            context_momentum=momentum, context_ewm=ewm)
        assert values.shape == (stop - first, full.values.shape[1])
        context = [j for j, name in enumerate(full.names) if name.startswith("ctx_")]
        np.testing.assert_array_equal(values[full.warmup:, context], full.values[first + full.warmup:stop, context])
