"""Backtest metrics against values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from convopt_mlflow.evaluation import (
    TRADING_METRIC_KEYS,
    benchmark_metrics,
    equity_curve,
    net_log_pnl,
    trading_metrics,
)

# Four bars: long, long, short, flat; 10 bps cost per unit traded.
POSITIONS = np.array([1.0, 1.0, -1.0, 0.0])
RETURNS = np.array([0.01, -0.02, 0.03, 0.04])
COST_BPS = 10.0
# Trades |Δpos| = 1, 0, 2, 1 -> costs 0.001, 0, 0.002, 0.001.
EXPECTED_PNL = np.array([0.009, -0.02, -0.032, -0.001])


def test_net_log_pnl_by_hand():
    pnl = net_log_pnl(POSITIONS, RETURNS, cost_bps=COST_BPS)
    np.testing.assert_allclose(pnl, EXPECTED_PNL, rtol=0, atol=1e-15)


def test_initial_position_changes_first_cost():
    pnl = net_log_pnl(POSITIONS, RETURNS, cost_bps=COST_BPS, initial_position=1.0)
    np.testing.assert_allclose(pnl, [0.01, -0.02, -0.032, -0.001], rtol=0, atol=1e-15)
    pnl = net_log_pnl(POSITIONS, RETURNS, cost_bps=COST_BPS, initial_position=-1.0)
    assert pnl[0] == pytest.approx(0.01 - 0.002, abs=1e-15)


def test_equity_curve_by_hand():
    curve = equity_curve(POSITIONS, RETURNS, cost_bps=COST_BPS)
    assert curve.shape == (5,)
    assert curve[0] == 1.0
    np.testing.assert_allclose(curve, np.exp([0.0, 0.009, -0.011, -0.043, -0.044]), rtol=1e-14)


def test_trading_metrics_by_hand():
    m = trading_metrics(POSITIONS, RETURNS, cost_bps=COST_BPS, periods_per_year=252)
    assert list(m) == list(TRADING_METRIC_KEYS)
    mean = -0.044 / 4
    # deviations from the mean: 0.020, -0.009, -0.021, 0.010
    sample_std = math.sqrt((0.020**2 + 0.009**2 + 0.021**2 + 0.010**2) / 3)
    downside = math.sqrt((0.02**2 + 0.032**2 + 0.001**2) / 4)
    # log equity 0, .009, -.011, -.043, -.044: peak .009, trough -.044
    max_dd = 1 - math.exp(-0.053)
    assert m["sharpe"] == pytest.approx(mean / sample_std * math.sqrt(252), rel=1e-12)
    assert m["sortino"] == pytest.approx(mean / downside * math.sqrt(252), rel=1e-12)
    assert m["max_drawdown"] == pytest.approx(max_dd, rel=1e-12)
    assert m["calmar"] == pytest.approx((math.exp(mean * 252) - 1) / max_dd, rel=1e-12)
    assert m["total_return"] == pytest.approx(math.exp(-0.044) - 1, rel=1e-12)
    assert m["turnover"] == pytest.approx(1.0, abs=1e-15)  # (1 + 0 + 2 + 1) / 4
    assert m["win_rate"] == pytest.approx(1 / 3, abs=1e-15)  # bars 0..2 in market, only bar 0 wins
    assert m["exposure"] == pytest.approx(0.75, abs=1e-15)
    assert m["n_bars"] == 4.0


def test_sharpe_and_sortino_scale_with_sqrt_periods_per_year():
    rng = np.random.default_rng(0)
    positions = rng.choice([-1.0, 0.0, 1.0], size=50)
    returns = rng.normal(0.0005, 0.01, size=50)
    yearly = trading_metrics(positions, returns, cost_bps=1.0, periods_per_year=1)
    hourly = trading_metrics(positions, returns, cost_bps=1.0, periods_per_year=8760)
    assert yearly["sharpe"] != 0
    assert hourly["sharpe"] == pytest.approx(yearly["sharpe"] * math.sqrt(8760), rel=1e-12)
    assert hourly["sortino"] == pytest.approx(yearly["sortino"] * math.sqrt(8760), rel=1e-12)
    # Non-annualised quantities do not depend on the bar frequency.
    for key in ("max_drawdown", "win_rate", "turnover", "total_return", "exposure", "n_bars"):
        assert hourly[key] == yearly[key]


def test_all_flat_gives_zeros_not_nan():
    m = trading_metrics(np.zeros(5), np.array([0.01, -0.02, 0.0, 0.03, -0.01]), cost_bps=5, periods_per_year=252)
    assert m == {**{k: 0.0 for k in TRADING_METRIC_KEYS}, "n_bars": 5.0}


def test_constant_pnl_has_zero_ratios_and_no_drawdown():
    m = trading_metrics(np.ones(3), np.full(3, 0.1), cost_bps=10, periods_per_year=252, initial_position=1.0)
    assert m["sharpe"] == 0.0 and m["sortino"] == 0.0
    assert m["max_drawdown"] == 0.0 and m["calmar"] == 0.0
    assert m["win_rate"] == 1.0
    assert m["total_return"] == pytest.approx(math.exp(0.3) - 1, rel=1e-12)


def test_single_bar_is_finite():
    m = trading_metrics(np.array([-1.0]), np.array([0.02]), cost_bps=10, periods_per_year=252)
    assert m["sharpe"] == 0.0  # no variance with one bar
    assert m["max_drawdown"] == pytest.approx(1 - math.exp(-0.021), rel=1e-12)
    assert m["sortino"] == pytest.approx(-0.021 / 0.021 * math.sqrt(252), rel=1e-12)
    assert m["win_rate"] == 0.0 and m["turnover"] == 1.0 and m["n_bars"] == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_all_metrics_finite_even_for_extreme_inputs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    scale = 10.0 ** rng.integers(-6, 2)
    positions = rng.uniform(-10, 10, size=n) * rng.integers(0, 2, size=n)
    returns = rng.normal(0, scale, size=n)
    m = trading_metrics(positions, returns, cost_bps=float(rng.uniform(0, 100)), periods_per_year=8760)
    assert all(math.isfinite(v) for v in m.values()), m
    assert 0.0 <= m["max_drawdown"] <= 1.0
    assert 0.0 <= m["win_rate"] <= 1.0


def test_overflowing_compounding_saturates_instead_of_inf():
    # mean log pnl 0.5 per bar compounded over 8760 bars per year would overflow exp().
    returns = np.tile([2.0, -1.0], 5)
    m = trading_metrics(np.ones(10), returns, cost_bps=0, periods_per_year=8760, initial_position=1.0)
    assert m["total_return"] == pytest.approx(math.exp(5) - 1)
    assert m["max_drawdown"] == pytest.approx(1 - math.exp(-1))
    assert m["calmar"] == np.finfo(np.float64).max
    assert all(math.isfinite(v) for v in m.values())


def test_buy_and_hold_pays_one_entry_cost():
    returns = np.array([0.01, 0.02, -0.01])
    bench = benchmark_metrics(returns, cost_bps=5.0, periods_per_year=252)
    assert set(bench) == {"buy_and_hold", "flat"}
    bh = bench["buy_and_hold"]
    assert bh["total_return"] == pytest.approx(math.exp(0.02 - 0.0005) - 1, rel=1e-12)
    assert bh["turnover"] == pytest.approx(1 / 3, abs=1e-15)
    assert bh["exposure"] == 1.0
    assert bh["win_rate"] == pytest.approx(2 / 3, abs=1e-15)
    assert bench["flat"] == {**{k: 0.0 for k in TRADING_METRIC_KEYS}, "n_bars": 3.0}


@pytest.mark.parametrize(
    ("positions", "returns", "kwargs", "match"),
    [
        (np.ones(3), np.ones(4), {}, "shape"),
        (np.ones((2, 2)), np.ones((2, 2)), {}, "shape"),
        (np.ones(0), np.ones(0), {}, "at least one bar"),
        (np.array([1.0, np.nan]), np.ones(2), {}, "finite"),
        (np.ones(2), np.array([0.0, np.inf]), {}, "finite"),
        (np.ones(2), np.ones(2), {"cost_bps": -1.0}, "cost_bps"),
        (np.ones(2), np.ones(2), {"periods_per_year": 0.0}, "periods_per_year"),
        (np.full(2, 1e200), np.full(2, 1e200), {}, "overflow"),
    ],
)
def test_bad_inputs_are_rejected(positions, returns, kwargs, match):
    args = {"cost_bps": 1.0, "periods_per_year": 252.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        trading_metrics(positions, returns, **args)


def test_per_regime_metrics_group_the_path_pnl_by_regime():
    from convopt_mlflow.evaluation.metrics import per_regime_metrics

    positions = np.array([1.0, 1.0, -1.0, -1.0, 0.0, 0.0])
    returns = np.array([0.01, 0.03, -0.02, 0.01, 0.05, -0.05])
    regimes = np.array([0, 0, 1, 1, 2, 2])
    out = per_regime_metrics(positions, returns, regimes, cost_bps=10.0, periods_per_year=4.0)
    # pnl by hand: 0.01-0.001, 0.03, 0.02-0.002, -0.01, 0-0.001, 0
    trend = np.array([0.009, 0.03])
    assert out["trend"]["mean_pnl"] == pytest.approx(trend.mean())
    assert out["trend"]["sharpe"] == pytest.approx(trend.mean() / trend.std(ddof=1) * 2.0)
    assert out["mean_reversion"]["mean_pnl"] == pytest.approx((0.018 - 0.01) / 2)
    assert out["high_vol"]["mean_pnl"] == pytest.approx(-0.0005)
    assert sum(v["share"] for v in out.values()) == pytest.approx(1.0)
