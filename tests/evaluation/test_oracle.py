"""The cost-aware oracle against a brute-force search, and its hysteresis rule by hand."""
from __future__ import annotations

import numpy as np
import pytest

from convopt_mlflow.data.synthetic import generate_market
from convopt_mlflow.evaluation.metrics import trading_metrics
from convopt_mlflow.evaluation.oracle import fit_oracle, threshold_positions


def _loop_positions(signal, theta, long_only):
    held, out = 0.0, []
    for z in signal:
        if long_only:
            held = 1.0 if z > theta else (0.0 if z < -theta else held)
        elif abs(z) > theta:
            held = float(np.sign(z))
        out.append(held)
    return np.array(out)


@pytest.mark.parametrize("long_only", [False, True])
def test_rule_matches_a_plain_loop(long_only):
    signal = np.random.default_rng(0).standard_normal(500)
    for theta in (0.0, 0.3, 1.0, 2.5, 10.0):
        np.testing.assert_array_equal(threshold_positions(signal, theta, long_only=long_only),
                                      _loop_positions(signal, theta, long_only))


@pytest.mark.parametrize("long_only", [False, True])
def test_fit_equals_brute_force_over_every_threshold(long_only):
    market = generate_market(400, seed=5, signal_ic=0.2)
    signal = market.frame["feat_signal"].to_numpy()[:-1]
    returns = np.diff(np.log(market.frame["close"].to_numpy()))
    cost = 3.0
    best_sharpe, best_theta = -np.inf, None
    for theta in np.concatenate([[0.0], np.sort(np.abs(signal))]):
        sharpe = trading_metrics(_loop_positions(signal, theta, long_only), returns, cost_bps=cost,
                                 periods_per_year=8760)["sharpe"]
        if sharpe > best_sharpe + 1e-12:
            best_sharpe, best_theta = sharpe, theta
    rule = fit_oracle(signal, returns, cost_bps=cost, periods_per_year=8760, long_only=long_only)
    assert rule.train_sharpe == pytest.approx(best_sharpe, rel=1e-9)
    assert rule.theta == pytest.approx(best_theta)


def test_higher_cost_raises_the_threshold_and_lowers_turnover():
    market = generate_market(20_000, seed=3, signal_ic=0.05)
    signal = market.frame["feat_signal"].to_numpy()[:-1]
    returns = np.diff(np.log(market.frame["close"].to_numpy()))
    cheap = fit_oracle(signal, returns, cost_bps=0.0, periods_per_year=8760)
    dear = fit_oracle(signal, returns, cost_bps=5.0, periods_per_year=8760)
    assert dear.theta > cheap.theta
    turn = lambda rule: np.mean(np.abs(np.diff(rule.positions(signal))))
    assert turn(dear) < turn(cheap)
