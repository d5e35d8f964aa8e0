"""The true oracle's DP: exact against brute force over every path, never below the threshold rule."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from convopt_mlflow.data.synthetic import generate_market
from convopt_mlflow.evaluation.oracle import fit_oracle, threshold_positions
from convopt_mlflow.evaluation.true_oracle import (LEVELS_LONG_ONLY, LEVELS_LONG_SHORT, expected_net_pnl,
                                                   optimal_positions)


def brute_force(mu: np.ndarray, cost: float, levels, start: float = 0.0) -> float:
    return max(expected_net_pnl(np.array(path), mu, cost=cost, start=start)
               for path in itertools.product(levels, repeat=mu.size))


@pytest.mark.parametrize("levels", [LEVELS_LONG_SHORT, LEVELS_LONG_ONLY])
def test_dp_matches_brute_force_on_every_short_series(levels):
    rng = np.random.default_rng(0)
    for trial in range(150):
        n = int(rng.integers(1, 9))
        mu = rng.normal(0, 1, n) * rng.choice([0.1, 1.0])
        cost = float(rng.choice([0.0, 0.05, 0.3, 1.0, 3.0]))
        start = float(rng.choice(levels)) if trial % 3 == 0 else 0.0
        positions = optimal_positions(mu, cost=cost, levels=levels, start=start)
        assert set(positions.tolist()) <= set(levels)
        assert expected_net_pnl(positions, mu, cost=cost, start=start) == pytest.approx(
            brute_force(mu, cost, levels, start), abs=1e-12)


def test_dp_by_hand():
    assert optimal_positions(np.array([0.5, -2.0, 0.5]), cost=0.3).tolist() == [0.0, -1.0, 1.0]
    assert optimal_positions(np.array([0.1, 0.1]), cost=0.3).tolist() == [0.0, 0.0]  # 0.2 < entry 0.3
    assert optimal_positions(np.array([0.2, 0.2]), cost=0.3).tolist() == [1.0, 1.0]  # 0.4 > 0.3
    assert optimal_positions(np.zeros(0), cost=0.3).size == 0


def test_never_below_the_signal_rule_in_expected_pnl():
    market = generate_market(20_000, seed=7, signal_ic=0.05)
    mu, z = market.expected_next_return[:-1], market.signal[:-1]
    returns = np.diff(np.log(market.frame["close"].to_numpy()))
    cost = 1e-4
    oracle = expected_net_pnl(optimal_positions(mu, cost=cost), mu, cost=cost)
    rule = fit_oracle(z, returns, cost_bps=1.0, periods_per_year=8766.0)
    for theta in (rule.theta, 0.0, 0.5, 1.0, 2.0):
        assert oracle >= expected_net_pnl(threshold_positions(z, theta), mu, cost=cost) - 1e-12
    assert oracle > 0
