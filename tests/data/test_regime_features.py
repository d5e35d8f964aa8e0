"""env.regime_features: the trend / mean-reversion probabilities as observed features, lookahead-free."""
from __future__ import annotations

import numpy as np
import pytest

from convopt_mlflow.components.trend_detector import TrendDetector
from convopt_mlflow.data.features import (
    REGIME_FEATURES, compute_features, observation_features, segment_observation_values, uses_regime_features,
)
from convopt_mlflow.data.synthetic import generate_market

N = 1500


@pytest.fixture(scope="module")
def frame():
    return generate_market(N, seed=5, signal_ic=0.1, signal_regimes="1:-1:0").frame


def test_columns_warmup_and_values(frame):
    plain = compute_features(frame, vol_window=20)
    regime = compute_features(frame, vol_window=20, regime_features=True)
    assert regime.names == plain.names + list(REGIME_FEATURES) and uses_regime_features(regime.names)
    assert not uses_regime_features(plain.names)
    assert regime.warmup == max(plain.warmup, TrendDetector().warmup) == 135
    expected = TrendDetector().probabilities(plain.log_returns).astype(np.float32)
    np.testing.assert_array_equal(regime.values[regime.warmup:, -3:], expected[regime.warmup:])
    np.testing.assert_array_equal(regime.values[:, :-3][regime.warmup:], plain.values[regime.warmup:])
    assert not regime.values[:regime.warmup].any()


@pytest.mark.parametrize("observation, history", [("multiscale", 16), ("window", 8)])
@pytest.mark.parametrize("k", [140, 700, N - 2])
def test_perturbing_future_bars_changes_nothing_observed_up_to_t(frame, observation, history, k):
    before = observation_features(frame, vol_window=20, observation=observation, history=history,
                                  regime_features=True).features
    changed = frame.copy()
    rng = np.random.default_rng(k)
    shock = np.exp(np.cumsum(rng.normal(0, 0.01, N - k - 1)))  # a different future path from bar k+1 on
    for column in ("open", "high", "low", "close"):
        changed.iloc[k + 1:, changed.columns.get_loc(column)] *= shock
    after = observation_features(changed, vol_window=20, observation=observation, history=history,
                                 regime_features=True).features
    regime_cols = [j for j, name in enumerate(before.names) if name.startswith("regime_")]
    assert len(regime_cols) == 3 * (1 if observation == "window" else 5)
    assert np.array_equal(before.values[:k + 1], after.values[:k + 1])
    assert not np.array_equal(before.values[k + 1:, regime_cols], after.values[k + 1:, regime_cols])


@pytest.mark.parametrize("observation, history", [("multiscale", 16), ("window", 8)])
def test_an_episode_segment_recomputes_the_same_regime_features(frame, observation, history):
    """Augmented episodes recompute their features over a segment: the detector's finite memory
    makes them equal the whole-series ones after the warm-up."""
    full = observation_features(frame, vol_window=20, observation=observation, history=history,
                                regime_features=True).features
    bars, columns = frame.to_numpy(), list(frame.columns)
    for first in (0, 300, N - full.warmup - 60):
        stop = first + full.warmup + 60
        values = segment_observation_values(bars[first:stop], columns, vol_window=20, observation=observation,
                                            history=history, volume_z=True, regime_features=True)
        assert values.shape == (stop - first, full.values.shape[1])
        np.testing.assert_allclose(values[full.warmup:], full.values[first + full.warmup:stop], rtol=1e-5, atol=1e-5)
