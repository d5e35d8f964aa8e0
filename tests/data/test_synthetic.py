"""Synthetic markets: valid bars, Markov regimes, jumps, and a planted signal of known IC."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from convopt_mlflow.data import generate_market, oracle_sharpe, validate_frame
from convopt_mlflow.errors import ConfigError

HOURS_PER_YEAR = 8766.0


def next_return_ic(frame: pd.DataFrame) -> float:
    next_returns = np.diff(np.log(frame["close"].to_numpy()))
    return float(np.corrcoef(frame["feat_signal"].to_numpy()[:-1], next_returns)[0, 1])


def test_bars_are_valid_ohlcv():
    market = generate_market(5000, seed=0)
    frame = market.frame
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert market.signal is None
    assert frame.index[0] == pd.Timestamp("2015-01-05") and frame.index[1] == pd.Timestamp("2015-01-05 01:00")
    assert (frame.to_numpy() > 0).all()
    assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()
    assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()
    pd.testing.assert_frame_equal(validate_frame(frame, source="synthetic"), frame, check_freq=False)


def test_regimes_switch_as_a_persistent_markov_chain():
    regimes = generate_market(100_000, seed=1).regimes
    assert regimes.dtype == np.int8
    assert set(np.unique(regimes)) == {0, 1, 2}
    switches = np.flatnonzero(np.diff(regimes))
    assert 100_000 / (switches.size + 1) > 100  # mean regime length in bars (designed ~300)
    assert (regimes[switches] != regimes[switches + 1]).all()


def test_high_volatility_regime_is_more_volatile_and_returns_have_jumps():
    market = generate_market(100_000, seed=2)
    returns = np.diff(np.log(market.frame["close"].to_numpy()))
    regime = market.regimes[1:]
    assert returns[regime == 2].std() > 2 * returns[regime == 1].std()
    calm = returns[regime == 0]
    excess_kurtosis = np.mean((calm - calm.mean()) ** 4) / calm.var() ** 2 - 3
    assert excess_kurtosis > 1.0  # Gaussian noise alone would give ~0


def test_seed_reproduces_and_generator_is_accepted():
    a = generate_market(1000, seed=5, signal_ic=0.05)
    b = generate_market(1000, seed=np.random.default_rng(5), signal_ic=0.05)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    np.testing.assert_array_equal(a.regimes, b.regimes)
    assert not generate_market(1000, seed=6, signal_ic=0.05).frame.equals(a.frame)


@pytest.mark.parametrize("ic", [0.05, 0.1])
def test_planted_signal_has_the_requested_ic(ic):
    market = generate_market(200_000, seed=3, signal_ic=ic)
    np.testing.assert_array_equal(market.frame["feat_signal"].to_numpy(), market.signal)
    assert next_return_ic(market.frame) == pytest.approx(ic, abs=0.01)
    assert market.signal.std() == pytest.approx(1.0, abs=0.05)
    # The signal says nothing about the return of its own bar (it is published at the close).
    own = np.diff(np.log(market.frame["close"].to_numpy()))
    assert abs(np.corrcoef(market.signal[1:], own)[0, 1] - ic * 0.5 ** 0.1) < 0.01  # only via persistence


def test_oracle_sharpe_is_positive_and_grows_with_ic():
    sharpes = [
        oracle_sharpe(generate_market(100_000, seed=4, signal_ic=ic).frame, cost_bps=0.0,
                      periods_per_year=HOURS_PER_YEAR)
        for ic in (0.03, 0.06, 0.12)
    ]
    assert 0 < sharpes[0] < sharpes[1] < sharpes[2]
    with_costs = oracle_sharpe(generate_market(100_000, seed=4, signal_ic=0.12).frame, cost_bps=1.0,
                               periods_per_year=HOURS_PER_YEAR)
    assert 0 < with_costs < sharpes[2]


def test_oracle_sharpe_by_hand():
    frame = pd.DataFrame({"close": [100.0, 101.0, 100.0, 102.0], "feat_signal": [0.3, -2.0, 0.1, 5.0]})
    # positions +1, -1, +1; position changes 1, 2, 2 cost 1 bp each.
    pnl = np.array([np.log(1.01) - 1e-4, -np.log(100 / 101) - 2e-4, np.log(1.02) - 2e-4])
    expected = pnl.mean() / pnl.std(ddof=1) * np.sqrt(252)
    assert oracle_sharpe(frame, cost_bps=1.0, periods_per_year=252) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ConfigError, match="feat_signal"):
        oracle_sharpe(frame.drop(columns="feat_signal"), cost_bps=1.0, periods_per_year=252)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_bars": 1}, "n_bars"),
        ({"seed": -1}, "seed"),
        ({"signal_ic": 0.6}, "signal_ic"),
        ({"freq": "bogus"}, "freq"),
        ({"start": "someday"}, "start"),
        ({"signal_halflife": 0}, "signal_halflife"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs, match):
    args = {"n_bars": 100, "seed": 0} | kwargs
    with pytest.raises(ConfigError, match=match):
        generate_market(args.pop("n_bars"), args.pop("seed"), **args)


def test_daily_frequency_scales_volatility():
    daily = generate_market(20_000, seed=8, freq="1D")
    hourly = generate_market(20_000, seed=8, freq="1h")
    ratio = np.diff(np.log(daily.frame["close"])).std() / np.diff(np.log(hourly.frame["close"])).std()
    assert ratio == pytest.approx(np.sqrt(24), rel=0.1)


def test_signal_regimes_flip_and_mute_the_signal_by_regime():
    market = generate_market(200_000, seed=3, signal_ic=0.1, signal_regimes="1:-1:0")
    close = market.frame["close"].to_numpy()
    next_return = np.diff(np.log(close))
    z, regime = market.signal[:-1], market.regimes[1:]  # r[t+1] is earned in regime[t+1]
    ic = {k: np.corrcoef(z[regime == k], next_return[regime == k])[0, 1] for k in range(3)}
    assert ic[0] > 0.07 and ic[1] < -0.07 and abs(ic[2]) < 0.02
    # the oracle's signal uses the regime known at t: loading[regime[t]] * z[t]
    np.testing.assert_array_equal(market.effective_signal, np.array([1.0, -1.0, 0.0])[market.regimes] * market.signal)


def test_uniform_loadings_reproduce_the_original_market():
    plain = generate_market(5_000, seed=4, signal_ic=0.05)
    uniform = generate_market(5_000, seed=4, signal_ic=0.05, signal_regimes="1:1:1")
    pd.testing.assert_frame_equal(plain.frame, uniform.frame)
    np.testing.assert_array_equal(plain.effective_signal, plain.signal)


@pytest.mark.parametrize("bad", ["1:1", "2:0:0", "a:b:c", ""])
def test_bad_signal_regimes_are_refused(bad):
    with pytest.raises(ConfigError, match="signal_regimes"):
        generate_market(1_000, seed=0, signal_ic=0.05, signal_regimes=bad)


@pytest.mark.parametrize("kwargs, digest", [
    ({"signal_ic": 0.0}, "5bc80273b298effa"),
    ({"signal_ic": 0.05}, "c26370352fb3bd0c"),
    ({"signal_ic": 0.1, "signal_regimes": "1:-1:0"}, "7a4fc796fbe54e7a"),
])
def test_markets_stay_bit_identical_with_the_expected_returns_exposed(kwargs, digest):
    """Digests taken before ``expected_next_return`` existed: same bars, same regimes, same RNG streams."""
    import hashlib

    market = generate_market(5000, seed=3, **kwargs)
    data = np.ascontiguousarray(market.frame.to_numpy()).tobytes() + market.regimes.tobytes()
    assert hashlib.sha256(data).hexdigest()[:16] == digest


@pytest.mark.parametrize("kwargs", [{"signal_ic": 0.0}, {"signal_ic": 0.05}, {"signal_ic": 0.1, "signal_regimes": "1:-1:0"}])
def test_expected_next_return_is_the_conditional_mean_of_the_next_return(kwargs):
    """Regressing r[t+1] on E[r[t+1] | state t] gives slope 1 and intercept 0 (calibrated), in every regime,
    and it predicts far better than the planted signal alone (it also knows drift and MA reversal)."""
    market = generate_market(200_000, seed=8, **kwargs)
    returns = np.diff(np.log(market.frame["close"].to_numpy()))
    expected = market.expected_next_return[:-1]
    assert market.expected_next_return[-1] == 0.0
    slope, intercept = np.polyfit(expected, returns, 1)
    assert slope == pytest.approx(1.0, abs=0.1) and abs(intercept) < 1.5e-5  # ~5 standard errors of a mean return
    for regime in (0, 1):
        held = market.regimes[:-1] == regime
        assert np.polyfit(expected[held], returns[held], 1)[0] == pytest.approx(1.0, abs=0.15)
    if market.signal is not None:
        assert np.corrcoef(expected, returns)[0, 1] > 1.5 * abs(np.corrcoef(market.signal[:-1], returns)[0, 1])
