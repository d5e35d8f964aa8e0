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


@pytest.mark.parametrize("long_only", [False, True])
def test_fit_is_bit_identical_to_scoring_every_candidate_with_the_public_functions(long_only):
    """The fit's hoisted loop computes exactly threshold_positions -> net_log_pnl -> Sharpe."""
    from convopt_mlflow.evaluation.metrics import annualized_sharpe, net_log_pnl
    from convopt_mlflow.evaluation.oracle import GRID_SIZE

    market = generate_market(5_000, seed=9, signal_ic=0.1)  # > 512 distinct |z|: the quantile grid
    signal = market.frame["feat_signal"].to_numpy()[:-1]
    returns = np.diff(np.log(market.frame["close"].to_numpy()))
    grid = np.unique(np.concatenate([[0.0], np.quantile(np.abs(signal), np.linspace(0.0, 0.995, GRID_SIZE))]))
    best = (-np.inf, 0.0)
    for theta in grid:
        pnl = net_log_pnl(threshold_positions(signal, float(theta), long_only=long_only), returns, cost_bps=2.0)
        sharpe = annualized_sharpe(pnl, 8760)
        if sharpe > best[0]:
            best = (sharpe, float(theta))
    rule = fit_oracle(signal, returns, cost_bps=2.0, periods_per_year=8760, long_only=long_only)
    assert (rule.train_sharpe, rule.theta) == best
