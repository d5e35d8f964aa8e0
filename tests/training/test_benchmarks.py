"""Which oracles a market gets: the true oracle on every synthetic market, the signal rule only with a signal."""
from __future__ import annotations

import numpy as np
import pytest

from convopt_mlflow.config import build_config
from convopt_mlflow.evaluation.true_oracle import expected_net_pnl
from convopt_mlflow.training.evaluate import benchmark_positions, fit_market_oracle
from convopt_mlflow.training.setup import load_market


def _split_bars(market, split="val"):
    start, stop = getattr(market.splits, split)
    return np.arange(max(start, market.cores[split].first_observable_bar), stop - 1)


@pytest.mark.parametrize("source, names", [
    ("synthetic:n_bars=6000,seed=2,signal_ic=0.1", {"oracle", "signal_rule"}),
    ("synthetic:n_bars=6000,seed=2", {"oracle"}),
    ("googl-1d", set()),
    ("synthetic:mechanism=spike,n_bars=6000,seed=2", {"oracle"}),
    ("synthetic:mechanism=trend,n_bars=6000,seed=2", {"oracle"}),
])
def test_benchmarks_by_market(source, names):
    market = load_market(build_config("baseline", [f"data.source={source}", "env.window=8"]))
    rule = fit_market_oracle(market, cost_bps=1.0, long_only=False)
    positions = benchmark_positions(market, _split_bars(market), rule=rule)
    assert set(positions) == names
    if "oracle" in positions:  # the true oracle out-earns the signal rule in expectation
        mu = market._generated.expected_next_return[_split_bars(market)]
        oracle = expected_net_pnl(positions["oracle"], mu, cost=1e-4)
        assert oracle > 0
        if "signal_rule" in positions:
            assert oracle > expected_net_pnl(positions["signal_rule"], mu, cost=1e-4)


def test_long_only_oracle_stays_long_or_flat():
    market = load_market(build_config("baseline", ["data.source=synthetic:n_bars=6000,seed=2,signal_ic=0.1",
                                                   "env.window=8", "env.long_only=true"]))
    positions = benchmark_positions(market, _split_bars(market, "test"))
    assert set(np.unique(positions["oracle"])) <= {0.0, 1.0}


@pytest.mark.parametrize("mechanism", ["noise", "garch"])
def test_no_edge_panel_markets_have_a_flat_oracle(mechanism):
    market = load_market(build_config("baseline", [f"data.source=synthetic:mechanism={mechanism},n_bars=6000,seed=2",
                                                   "env.window=8"]))
    assert market.regimes is None and market.planted_signal is None
    positions = benchmark_positions(market, _split_bars(market, "test"))
    assert set(positions) == {"oracle"} and not positions["oracle"].any()
