"""Features: float32, finite, O(1), hand-checked definitions, and provably lookahead-free."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from convopt_mlflow.data import compute_features, generate_market, load_bars
from convopt_mlflow.errors import ConfigError

N = 600


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    return generate_market(N, seed=11, signal_ic=0.1).frame


def with_new_future(frame: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """Bars after k replaced by another market's bars (rescaled to continue near close[k])."""
    other = generate_market(len(frame), seed=seed, signal_ic=0.1).frame
    changed = frame.copy()
    scale = frame["close"].iloc[k] / other["close"].iloc[k] * 1.3
    for column in ("open", "high", "low", "close"):
        changed.iloc[k + 1:, changed.columns.get_loc(column)] = other[column].iloc[k + 1:] * scale
    for column in ("volume", "feat_signal"):
        if column in changed.columns:
            changed.iloc[k + 1:, changed.columns.get_loc(column)] = other[column].iloc[k + 1:] * 2.0
    return changed


@pytest.mark.parametrize("keep_volume", [True, False])
@pytest.mark.parametrize("k", [0, 50, 118, 119, 300, N - 2])
def test_changing_future_bars_leaves_past_features_bit_identical(market, k, keep_volume):
    frame = market if keep_volume else market.drop(columns="volume")
    before = compute_features(frame)
    after = compute_features(with_new_future(frame, k, seed=99))
    assert before.names == after.names
    assert np.array_equal(before.values[: k + 1], after.values[: k + 1])
    assert np.array_equal(before.log_returns[: k + 1], after.log_returns[: k + 1])
    if k + 1 >= before.warmup:  # the test can fail: the next bar's features do change
        assert not np.array_equal(before.values[k + 1], after.values[k + 1])


def test_shapes_names_warmup_and_dtype(market):
    features = compute_features(market)
    assert features.names == ["return_z", "vol_ratio", "range_ratio", "momentum_5", "volume_z", "feat_signal"]
    assert features.values.shape == (N, 6) and features.values.dtype == np.float32
    assert features.warmup == 20 + 100 - 1
    assert not features.values[: features.warmup].any()
    assert np.isfinite(features.values).all()
    assert features.log_returns.dtype == np.float64 and features.log_returns[0] == 0.0
    close = market["close"].to_numpy()
    np.testing.assert_allclose(features.log_returns[1:], np.log(close[1:] / close[:-1]), rtol=0, atol=1e-15)
    np.testing.assert_array_equal(features.values[:, 5][features.warmup:],
                                  market["feat_signal"].to_numpy(np.float32)[features.warmup:])


def test_definitions_by_hand(market):
    features = compute_features(market)
    close, high, low = (market[c].to_numpy() for c in ("close", "high", "low"))
    volume = np.log1p(market["volume"].to_numpy())
    r = np.diff(np.log(close), prepend=np.nan)
    for t in (119, 250, 599):
        vol = np.sqrt(np.mean(r[t - 19: t + 1] ** 2))
        vols = [np.sqrt(np.mean(r[s - 19: s + 1] ** 2)) for s in range(t - 99, t + 1)]
        ranges = np.log(high[t - 19: t + 1] / low[t - 19: t + 1])
        window = volume[t - 19: t + 1]
        expected = [
            r[t] / vol,
            vol / np.mean(vols) - 1,
            ranges[-1] / ranges.mean() - 1,
            r[t - 4: t + 1].sum() / (vol * np.sqrt(5)),
            (volume[t] - window.mean()) / window.std(),
            market["feat_signal"].iloc[t],
        ]
        np.testing.assert_allclose(features.values[t], expected, rtol=1e-5, atol=1e-6)


def test_real_data_features_are_order_one():
    features = compute_features(load_bars("eurusd-1h").frame)
    body = features.values[features.warmup:]
    assert np.isfinite(body).all()
    assert (np.abs(body) <= np.sqrt(20) * 1.0001).all(axis=0)[[0, 3, 4]].all()  # proven bounds
    assert ((0.2 < body.std(axis=0)) & (body.std(axis=0) < 2.0)).all()
    assert (np.abs(body.mean(axis=0)) < 0.5).all()


def test_volume_feature_needs_varying_volume(market):
    flat = market.assign(volume=7.0)
    assert "volume_z" not in compute_features(flat).names
    assert "volume_z" not in compute_features(market.drop(columns="volume")).names


def test_constant_prices_stay_finite():
    index = pd.date_range("2024-01-01", periods=200, freq="1h", name="timestamp")
    frame = pd.DataFrame({"open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 5.0}, index=index)
    features = compute_features(frame)
    assert np.isfinite(features.values).all()
    assert features.values[features.warmup:, 0].tolist() == [0.0] * (200 - features.warmup)


def test_bad_arguments(market):
    with pytest.raises(ConfigError, match="vol_window"):
        compute_features(market, vol_window=3)
    with pytest.raises(ConfigError, match="need more than 119 bars, got 119"):
        compute_features(market.iloc[:119])
