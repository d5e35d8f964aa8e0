"""The pruned BOCPD kernel (components/bocpd_fast.py, the default) against the exact one (``prune=None``).

Tolerances stated here: with nothing pruned (``prune=0``, ``max_starts >= R``) the pruned kernel is
the exact one to 1e-9. At the defaults, on seeded regime-market series of 6,000 bars, at least
99.5% of bars get the exact kernel's regime label and at least 99% its MAP run length, at least 90% of the exact
kernel's declared changes are declared within 5 bars, and the total posterior mass dropped is
what renormalizing moved (the bookkeeping is exact). Against the kernel as it was before its per-call
cuts (tests/components/bocpd_fast_reference.py): the same run lengths, labels, changes and kept run
lengths, and volatilities and posteriors to 1e-12. Against the kernel before issue 19's cost cuts
(tests/components/bocpd_fast_reference_d1ed280.py): every output and state equal, bit for bit, on seeded
regime markets, a plain synthetic market, a switching series and gym-anytrading's EURUSD CSV.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from convopt_mlflow.components import changepoint
from convopt_mlflow.components.bocpd import Prior, run_bocpd
from convopt_mlflow.components.bocpd_fast import PRUNE_EVERY, SparseState, sparse_block
from convopt_mlflow.components.changepoint import BayesianChangePointDetector, robust_scale
from convopt_mlflow.data.synthetic import generate_market

sys.path.insert(0, str(Path(__file__).parent))
from bocpd_fast_reference import reference_run_bocpd, reference_sparse_block  # noqa: E402
from bocpd_fast_reference_d1ed280 import d1ed280_run_bocpd, d1ed280_sparse_block  # noqa: E402


def _market(seed, n=6000):
    close = generate_market(n + 1, seed=seed, signal_regimes="1:-1:0").frame["close"].to_numpy()
    return np.diff(np.log(close))


def _switching(seed, n=900):
    rng = np.random.default_rng(seed)
    third = n // 3
    return np.r_[rng.normal(0, 1e-3, third), 4e-3 * rng.standard_t(3, third), rng.normal(0, 5e-4, n - 2 * third)]


@pytest.mark.parametrize("max_run", [3, 17, 64, 400])
def test_nothing_pruned_is_the_exact_kernel(max_run):
    returns = _switching(3)
    scale = robust_scale(returns[:200])
    exact = BayesianChangePointDetector(scale, max_run=max_run, prune=None)
    fast = BayesianChangePointDetector(scale, max_run=max_run, prune=0.0, max_starts=10**6)
    a, b = exact.process(returns), fast.process(returns)
    assert np.array_equal(a.run_length, b.run_length)
    assert np.max(np.abs(a.vol - b.vol)) < 1e-9
    assert [(c.bar, c.start) for c in a.changes] == [(c.bar, c.start) for c in b.changes]
    assert a.changes or max_run < 64  # (a change needs a run of `confirm` bars)
    assert np.max(np.abs(exact.probs - fast.probs)) < 1e-9 and fast.dropped_mass == 0.0


@pytest.mark.parametrize("seed", [2, 5, 11])
def test_default_pruning_agrees_with_the_exact_kernel_on_regime_markets(seed):
    returns = _market(seed)
    scale = robust_scale(returns)
    exact = BayesianChangePointDetector(scale, prune=None).process(returns)
    det = BayesianChangePointDetector(scale)
    fast = det.process(returns)
    assert np.mean(fast.regimes == exact.regimes) >= 0.995
    assert np.mean(fast.run_length == exact.run_length) >= 0.99
    found = [c.bar for c in fast.changes]
    matched = sum(any(abs(f - c.bar) <= 5 for f in found) for c in exact.changes)
    assert exact.changes and matched >= 0.9 * len(exact.changes)
    assert abs(len(found) - len(exact.changes)) <= max(2, 0.1 * len(exact.changes))
    # it did prune, and kept at most max_starts at the last pruning (plus the run lengths of the bars since)
    assert 0 < det.dropped_mass and det.state.runs.size <= 64 + returns.size % PRUNE_EVERY


@pytest.mark.parametrize("series", ["market-2", "market-11", "switching"])
def test_same_answers_as_the_kernel_before_its_cuts(series, monkeypatch):
    """The block loop no longer splits before a bar that might be clipped, and the block does fewer
    numpy calls: the run lengths, labels, changes and kept run lengths are those of the kernel as it
    was, bar for bar (the volatilities differ by float rounding only, where blocks are split elsewhere)."""
    returns = _switching(6, n=6000) if series == "switching" else _market(int(series.split("-")[1]), n=20000)
    scale = robust_scale(returns)
    now_det = BayesianChangePointDetector(scale)
    now = now_det.process(returns)
    with monkeypatch.context() as patch:
        patch.setattr(changepoint, "run_bocpd", reference_run_bocpd)
        patch.setattr(changepoint, "sparse_block", reference_sparse_block)
        before_det = BayesianChangePointDetector(scale)
        before = before_det.process(returns)
    assert np.array_equal(now.run_length, before.run_length)
    assert np.array_equal(now.regimes, before.regimes) and len(set(before.regimes.tolist())) > 1
    assert [(c.bar, c.start) for c in now.changes] == [(c.bar, c.start) for c in before.changes] and before.changes
    assert np.max(np.abs(now.vol - before.vol)) < 1e-12
    assert np.array_equal(now_det.state.runs, before_det.state.runs)
    assert np.max(np.abs(now_det.state.probs - before_det.state.probs)) < 1e-12
    assert abs(now_det.dropped_mass - before_det.dropped_mass) < 1e-12 and before_det.dropped_mass > 0


def test_dropped_mass_is_exactly_what_renormalizing_moved():
    """After a pruning, the pruned posterior is the unpruned one with the dropped run lengths removed and
    the rest scaled by 1 / (1 - dropped): the total-variation distance is the mass recorded."""
    z = _switching(4, n=PRUNE_EVERY) / 1e-3
    start = SparseState(np.zeros(1, dtype=np.int64), np.ones(1), np.zeros(0), 1.0)
    kwargs = dict(hazard=1e-3, max_run=400, clip=3.0, prior=Prior(), block=PRUNE_EVERY)
    *_, full = run_bocpd(z, start, kernel=sparse_block(0.0, 10**6), **kwargs)
    *_, pruned = run_bocpd(z, start, kernel=sparse_block(1e-3, 10), **kwargs)
    dense_full, dense_pruned = full.dense(400), pruned.dense(400)
    assert full.dropped == 0.0 and 0 < pruned.dropped < 1 and pruned.runs.size <= 10
    assert abs(0.5 * np.abs(dense_full - dense_pruned).sum() - pruned.dropped) < 1e-12
    kept = dense_pruned > 0
    assert np.allclose(dense_pruned[kept] * (1 - pruned.dropped), dense_full[kept], rtol=1e-10, atol=0)


def test_causal_perturbing_later_bars_changes_nothing_before_them():
    returns = _market(3, n=3000)
    scale = robust_scale(returns)
    base = BayesianChangePointDetector(scale).process(returns)
    rng = np.random.default_rng(0)
    for cut in (700, 1601, 2500):  # on, off and between pruning points (every 64 bars)
        changed = returns.copy()
        changed[cut:] = 8 * rng.standard_normal(returns.size - cut) * returns.std()  # a violent future
        other = BayesianChangePointDetector(scale).process(changed)
        assert np.array_equal(other.run_length[:cut], base.run_length[:cut])
        assert np.array_equal(other.vol[:cut], base.vol[:cut])
        assert [c for c in other.changes if c.bar < cut] == [c for c in base.changes if c.bar < cut]
        assert not np.array_equal(other.run_length[cut:], base.run_length[cut:])


def test_calls_blocks_and_a_saved_state_give_the_same_answers():
    """Pruning happens every 64 bars fed, not where a call ends: any split of the bars into calls,
    any block size, and a state saved and loaded mid-stream give the same answers."""
    returns = _switching(5, n=1500)
    whole_det = BayesianChangePointDetector(1e-3, max_run=200)
    whole = whole_det.process(returns)
    pieces = BayesianChangePointDetector(1e-3, max_run=200, block=17)
    parts = [pieces.process(returns[a:b]) for a, b in ((0, 1), (1, 100), (100, 130), (130, 900))]
    resumed = BayesianChangePointDetector(1e-3, max_run=200)
    resumed.load_state_dict(pieces.state_dict())
    parts.append(resumed.process(returns[900:]))
    assert np.array_equal(np.concatenate([p.run_length for p in parts]), whole.run_length)
    assert np.allclose(np.concatenate([p.vol for p in parts]), whole.vol, rtol=0, atol=1e-9)
    assert [c.bar for p in parts for c in p.changes] == [c.bar for c in whole.changes] and whole.changes
    assert np.allclose(resumed.probs, whole_det.probs, atol=1e-12)
    assert abs(resumed.dropped_mass - whole_det.dropped_mass) < 1e-12


def test_bad_pruning_settings_are_refused():
    with pytest.raises(ValueError, match="prune"):
        BayesianChangePointDetector(1e-3, prune=1.5)
    with pytest.raises(ValueError, match="max_starts"):
        BayesianChangePointDetector(1e-3, max_starts=0)


def _gym_anytrading(name):
    from convopt_mlflow.data import load_bars

    close = load_bars(name).frame["close"].to_numpy()
    return np.diff(np.log(close))


@pytest.mark.parametrize("series", ["regime-11", "regime-2", "regime-5", "plain-7", "switching", "eurusd-1h"])
def test_bit_for_bit_the_kernel_before_the_cost_cuts(series, monkeypatch):
    """Issue 19's cost cuts (fewer, cheaper numpy calls, the same float operations on every entry) change
    no bit: run lengths, volatilities, labels, changes and the state after the last bar (run lengths,
    posterior, history, dropped mass: what a label cache entry restores) are those of the kernel as it
    was (commit d1ed280, tests/components/bocpd_fast_reference_d1ed280.py), compared with ``==``, over
    one call and over two (the train bars, then the validation bars from a state saved and loaded, as
    a label cache entry is continued), and the loaded state goes on exactly as the one never saved."""
    kind, _, seed = series.partition("-")
    if kind == "regime":  # the regime market of the regime preset's measurements (trend / mean reversion / high vol)
        close = generate_market(20001, seed=int(seed), signal_ic=0.05, signal_regimes="1:-1:0").frame["close"]
        returns = np.diff(np.log(close.to_numpy()))
    elif kind == "plain":
        returns = np.diff(np.log(generate_market(20001, seed=int(seed)).frame["close"].to_numpy()))
    elif kind == "switching":
        returns = _switching(8, n=6000)
    else:
        returns = _gym_anytrading(series)
    scale, half = robust_scale(returns), returns.size // 2 + 17

    def run():
        whole_det = BayesianChangePointDetector(scale)
        whole = whole_det.process(returns)
        first = BayesianChangePointDetector(scale)
        first.process(returns[:half])
        resumed = BayesianChangePointDetector(scale)
        resumed.load_state_dict(first.state_dict())
        return whole, whole_det.state_dict(), resumed.process(returns[half:]), resumed, first

    now, now_state, now_rest, resumed, first = run()
    with monkeypatch.context() as patch:
        patch.setattr(changepoint, "run_bocpd", d1ed280_run_bocpd)
        patch.setattr(changepoint, "sparse_block", d1ed280_sparse_block)
        before, before_state, before_rest, before_resumed, _ = run()
    for a, b in ((now, before), (now_rest, before_rest)):
        assert np.array_equal(a.run_length, b.run_length) and np.array_equal(a.vol, b.vol)
        assert np.array_equal(a.regimes, b.regimes)
        assert [(c.bar, c.start, c.vol_ratio) for c in a.changes] == [(c.bar, c.start, c.vol_ratio) for c in b.changes]
    assert now_state == before_state and resumed.state_dict() == before_resumed.state_dict() and before.changes
    never_saved = first.process(returns[half:])
    assert np.array_equal(never_saved.vol, now_rest.vol) and resumed.state_dict() == first.state_dict()
