"""The market's oracles are solved once per (inputs, code) and restored exactly from disk; an entry
that is damaged or belongs to other inputs is never used."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from convopt_mlflow.config import build_config
from convopt_mlflow.data.synthetic import MarketDynamics
from convopt_mlflow.evaluation.oracle import fit_oracle
from convopt_mlflow.evaluation.true_oracle import solve_plan
from convopt_mlflow.training import oracle_cache
from convopt_mlflow.training.evaluate import fit_market_oracle
from convopt_mlflow.training.oracle_cache import cached_plan, cached_rule
from convopt_mlflow.training.setup import load_market

DYNAMICS = MarketDynamics(vol=(1e-3, 8e-4, 3e-3), hazard=(0.01, 0.02, 0.05), drift=2e-4, reversal=-3e-4,
                          signal_coef=(4e-4, 4e-4, 4e-4), rho=0.9)


class Counted:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self):
        self.calls += 1
        return self.fn()


def _plan(tmp_path, dynamics=DYNAMICS, cost=1e-4):
    solve = Counted(lambda: solve_plan.__wrapped__(dynamics, cost=cost, grid_size=11, quadrature=5))
    return cached_plan(solve, inputs=(dynamics, cost), cache_dir=tmp_path), solve


def test_a_plan_restored_from_disk_is_the_solved_plan_bit_for_bit_and_read_only(tmp_path):
    fresh, solve = _plan(tmp_path)
    again, solve_again = _plan(tmp_path)
    assert solve.calls == 1 and solve_again.calls == 0
    assert again.iterations == fresh.iterations
    for name in ("continuation", "z_grid", "levels"):
        stored, solved = getattr(again, name), getattr(fresh, name)
        assert stored.dtype == solved.dtype and stored.tobytes() == solved.tobytes()
        assert not stored.flags.writeable
    other, solve_other = _plan(tmp_path, cost=2e-4)  # other inputs: another entry, solved afresh
    assert solve_other.calls == 1 and not np.array_equal(other.continuation, fresh.continuation)
    assert len(list(tmp_path.glob("oracle-plan-*.npz"))) == 2


def test_a_damaged_or_foreign_plan_entry_is_ignored_and_solved_afresh(tmp_path):
    fresh, _ = _plan(tmp_path)
    entry = next(tmp_path.glob("oracle-plan-*.npz"))
    entry.write_bytes(entry.read_bytes()[:200])  # truncated
    restored, solve = _plan(tmp_path)
    assert solve.calls == 1 and restored.continuation.tobytes() == fresh.continuation.tobytes()
    other, _ = _plan(tmp_path / "other", cost=2e-4)  # a whole, valid entry of other inputs under this key's name
    next((tmp_path / "other").glob("oracle-plan-*.npz")).replace(entry)
    restored, solve = _plan(tmp_path)
    assert solve.calls == 1 and restored.continuation.tobytes() == fresh.continuation.tobytes()


def test_a_rule_restored_from_disk_is_the_fitted_rule_and_other_data_refits(tmp_path):
    rng = np.random.default_rng(0)
    signal, returns = rng.normal(size=4000), rng.normal(0, 1e-3, 4000)
    settings = {"cost_bps": 1.0, "periods_per_year": 8760.0, "long_only": False}

    def rule(sig):
        fit = Counted(lambda: fit_oracle(sig, returns, cost_bps=1.0, periods_per_year=8760.0))
        return cached_rule(fit, signal=sig, next_log_returns=returns, settings=settings, cache_dir=tmp_path), fit

    fresh, fit = rule(signal)
    again, fit_again = rule(signal)
    assert fit.calls == 1 and fit_again.calls == 0 and again == fresh
    moved = signal.copy()
    moved[17] += 1e-9  # one bar differs: a new key
    _, fit_moved = rule(moved)
    assert fit_moved.calls == 1


def test_a_second_market_load_restores_both_oracles_without_solving(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVOPT_CACHE_DIR", str(tmp_path))
    cfg = build_config("baseline", {"data.source": "synthetic:n_bars=6000,seed=3,signal_ic=0.1"})
    first = load_market(cfg)
    plan, rule = first.oracle_plan, fit_market_oracle(first, cost_bps=cfg.env.cost_bps, long_only=cfg.env.long_only)
    assert rule is not None and len(list(tmp_path.glob("oracle-*.npz"))) == 2

    def refuse(*args, **kwargs):
        raise AssertionError("solved again")

    # the module objects whose functions this test calls (a dotted path resolves through the package's
    # attributes, which another test may have replaced by deleting it from sys.modules)
    monkeypatch.setattr(sys.modules[load_market.__module__], "solve_plan", refuse)
    monkeypatch.setattr(sys.modules[fit_market_oracle.__module__], "fit_oracle", refuse)
    second = load_market(cfg)
    assert second.oracle_plan.continuation.tobytes() == plan.continuation.tobytes()
    assert fit_market_oracle(second, cost_bps=cfg.env.cost_bps, long_only=cfg.env.long_only) == rule
    bars = np.arange(*second.splits.test)[:500]
    assert np.array_equal(second.oracle_positions(bars), first.oracle_positions(bars))


@pytest.fixture(autouse=True)
def _fresh_code_hashes(monkeypatch):
    monkeypatch.setattr(oracle_cache, "_CODE", {})
