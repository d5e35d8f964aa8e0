"""The market panel: deterministic, valid bars, features, and each mechanism's true oracle right."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from convopt_mlflow.data import load_bars, validate_frame
from convopt_mlflow.data.features import compute_features
from convopt_mlflow.data.loading import parse_synthetic_spec
from convopt_mlflow.data.panel import MECHANISMS, PANEL, generate_synthetic
from convopt_mlflow.errors import ConfigError
from convopt_mlflow.evaluation.true_oracle import (
    LEVELS_LONG_ONLY,
    LEVELS_LONG_SHORT,
    causal_positions,
    expected_net_pnl,
    solve_chain_plan,
)

SYNTHETIC = {name: spec for name, spec in PANEL.items() if spec.startswith("synthetic")}


def small(name: str, n_bars: int = 3000, seed: int | None = None) -> str:
    spec = SYNTHETIC[name].replace("n_bars=300000", f"n_bars={n_bars}")
    return spec if seed is None else spec.replace("seed=", f"seed={seed}0")


def test_the_panel_has_six_synthetic_mechanisms_and_two_real_markets():
    assert len(SYNTHETIC) == 6 and set(PANEL) - set(SYNTHETIC) == {"eurusd-1h", "googl-1d"}
    assert {parse_synthetic_spec(s)["mechanism"] for s in SYNTHETIC.values()} == {"regimes", *MECHANISMS}


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_each_mechanism_is_seeded_valid_and_computes_features(name):
    a, b = load_bars(small(name)), load_bars(small(name))
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert not load_bars(small(name, seed=7)).frame.equals(a.frame)
    frame = a.frame
    assert (frame[["open", "high", "low", "close", "volume"]].to_numpy() > 0).all()
    assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()
    assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()
    validate_frame(frame, source=name)
    features = compute_features(frame, vol_window=20)
    assert np.isfinite(features.values[features.warmup:]).all()
    assert parse_synthetic_spec(a.source) == parse_synthetic_spec(small(name))  # the source re-parses to the same market


def test_a_panel_spec_round_trips_and_bad_specs_name_the_key():
    assert load_bars("synthetic:mechanism=garch,n_bars=500,seed=2").source == \
        "synthetic:mechanism=garch,n_bars=500,seed=2,freq=1h,start=2015-01-05"
    assert load_bars("synthetic:n_bars=500,seed=2").source == "synthetic:n_bars=500,seed=2,signal_ic=0.0,freq=1h,start=2015-01-05"
    with pytest.raises(ConfigError, match="unknown synthetic mechanism 'gbm'"):
        parse_synthetic_spec("synthetic:mechanism=gbm")
    with pytest.raises(ConfigError, match="signal_ic and signal_regimes belong to mechanism=regimes"):
        parse_synthetic_spec("synthetic:mechanism=noise,signal_ic=0.05")


def test_panel_markets_generate_300k_bars_fast():
    import time
    for mechanism in MECHANISMS:
        start = time.perf_counter()
        generate_synthetic(mechanism=mechanism, n_bars=300_000, seed=1)
        assert time.perf_counter() - start < 2.0, mechanism


# ----------------------------------------------------------------------------- the oracles
def _policy_gains(chain, cost, levels):
    """Brute force: the long-run average expected net PnL of EVERY stationary policy (held, state) -> level,
    starting flat in the chain's stationary law (exact, by the limit of the lazy chain's powers)."""
    mean, moves = np.asarray(chain.mean), np.asarray(chain.transition)
    lv = np.asarray(levels)
    k, s_count = lv.size, mean.size
    tables = np.array(list(itertools.product(range(k), repeat=k * s_count))).reshape(-1, k, s_count)
    n = tables.shape[0]
    idx = np.arange(k * s_count)
    p_of, s_of = idx // s_count, idx % s_count
    q = tables[:, p_of, s_of]  # (N, K*S) the level entered from each (held, state)
    reward = lv[q] * mean[s_of] - cost * np.abs(lv[q] - lv[p_of])
    trans = np.zeros((n, k * s_count, k * s_count))
    for s2 in range(s_count):
        trans[np.arange(n)[:, None], idx[None, :], q * s_count + s2] += moves[s_of, s2][None, :]
    limit = 0.5 * (np.eye(k * s_count) + trans)
    for _ in range(45):  # 2^45 steps; rows renormalized so rounding cannot compound
        limit = limit @ limit
        limit /= limit.sum(axis=2, keepdims=True)
    stationary = np.full(s_count, 1.0 / s_count)
    for _ in range(200_000 // s_count):
        stationary = stationary @ moves
        if _ > 50 and np.allclose(stationary @ moves, stationary, atol=1e-15):
            break
    start = np.zeros(k * s_count)
    start[int(np.argmin(np.abs(lv))) * s_count + np.arange(s_count)] = stationary
    gains = np.einsum("i,nij,nj->n", start, limit, reward)
    return gains, tables


def _oracle_table(plan, chain, cost, levels):
    lv = np.asarray(levels)
    return np.array([[int(np.argmin(np.abs(lv - causal_positions(np.array([chain.mean[s]]), np.array([s]), None,
                                                                     plan, cost=cost, start=p)[0])))
                      for s in range(len(chain.mean))] for p in lv])


@pytest.mark.parametrize("mechanism,levels,cost", [
    ("trend", LEVELS_LONG_SHORT, 1e-4), ("trend", LEVELS_LONG_SHORT, 0.2), ("trend", LEVELS_LONG_ONLY, 1e-4),
    ("spike", LEVELS_LONG_SHORT, 1e-4), ("spike", LEVELS_LONG_SHORT, 2.5e-4), ("spike", LEVELS_LONG_ONLY, 3e-4),
    ("spike", LEVELS_LONG_SHORT, 1e-3), ("noise", LEVELS_LONG_SHORT, 1e-4), ("garch", LEVELS_LONG_ONLY, 1e-4),
])
def test_chain_oracle_is_the_best_of_every_stationary_policy(mechanism, levels, cost):
    chain = generate_synthetic(mechanism=mechanism, n_bars=100, seed=0).chain
    plan = solve_chain_plan(chain, cost=cost, levels=levels)
    gains, tables = _policy_gains(chain, cost, levels)
    table = _oracle_table(plan, chain, cost, levels)
    oracle_gain = gains[np.flatnonzero((tables == table).all(axis=(1, 2)))[0]]
    assert oracle_gain >= gains.max() - 1e-12 * max(1.0, abs(gains.max()))
    if not np.any(chain.mean):  # no edge: starting flat it stays flat, and it never pays to trade
        lv = np.asarray(levels)
        assert (lv[table[int(np.argmin(np.abs(lv)))]] == 0).all() and oracle_gain == 0.0
        assert all((lv[table[p]] == lv[p]).all() or (lv[table[p]] == 0).all() for p in range(lv.size))


@pytest.mark.parametrize("mechanism", ["noise", "garch"])
def test_no_edge_markets_have_a_flat_oracle_and_unpredictable_returns(mechanism):
    market = generate_synthetic(mechanism=mechanism, n_bars=50_000, seed=3)
    plan = solve_chain_plan(market.chain, cost=1e-4)
    assert not causal_positions(market.expected_next_return, market.states, None, plan, cost=1e-4).any()
    returns = np.diff(np.log(market.frame["close"].to_numpy()))
    assert abs(np.corrcoef(returns[:-1], returns[1:])[0, 1]) < 0.02
    if mechanism == "garch":  # clustering: squared returns are autocorrelated
        assert np.corrcoef(returns[:-1] ** 2, returns[1:] ** 2)[0, 1] > 0.05


@pytest.mark.parametrize("mechanism", ["trend", "spike"])
def test_edge_markets_oracle_earns_what_it_expects_and_beats_simple_rules(mechanism):
    market = generate_synthetic(mechanism=mechanism, n_bars=200_000, seed=4)
    mu, cost = market.expected_next_return[:-1], 1e-4
    returns = np.diff(np.log(market.frame["close"].to_numpy()))
    slope = np.polyfit(mu, returns, 1)[0]  # the expectation is calibrated
    assert abs(slope - 1.0) < 0.3
    positions = causal_positions(mu, market.states[:-1], None, solve_chain_plan(market.chain, cost=cost), cost=cost)
    expected = expected_net_pnl(positions, mu, cost=cost)
    pnl = positions * returns - cost * np.abs(np.diff(positions, prepend=0.0))
    assert abs(pnl.sum() - expected) < 4 * returns.std() * np.sqrt(np.abs(positions).sum())
    assert expected > 0 and expected >= expected_net_pnl(np.sign(mu), mu, cost=cost)
    held = np.sign(mu) * (np.abs(mu) > cost)
    assert expected >= expected_net_pnl(held, mu, cost=cost)
