"""The exact block-vectorized BOCPD (``prune=None``) against the bar-by-bar reference it replaced
(tests/components/bocpd_reference.py)."""
import sys
from pathlib import Path

import numpy as np
import pytest

from convopt_mlflow.components.changepoint import REGIMES, BayesianChangePointDetector, robust_scale
from convopt_mlflow.data.synthetic import generate_market

sys.path.insert(0, str(Path(__file__).parent))
from bocpd_reference import ReferenceBOCPD  # noqa: E402


def Exact(*args, **kwargs):
    """The exact kernel (no pruning; the pruned default is tested in test_bocpd_fast.py)."""
    return BayesianChangePointDetector(*args, prune=None, **kwargs)


def _same_changes(a, b):
    return ([(c.bar, c.start) for c in a] == [(c.bar, c.start) for c in b]
            and np.allclose([c.vol_ratio for c in a], [c.vol_ratio for c in b], rtol=0, atol=1e-9))


def _reference(returns, scale, **kwargs):
    det = ReferenceBOCPD(scale, **kwargs)
    rows = []
    for bar, value in enumerate(returns):
        change = det.update(value, bar)
        rows.append((det.run_length, det.vol_ratio, REGIMES.index(det.regime), change))
    run_length, vol, regimes, changes = zip(*rows)
    return det, np.array(run_length), np.array(vol), np.array(regimes), [c for c in changes if c is not None]


def _switching(seed, n=700):
    """Calm, then a volatile fat-tailed stretch (bars clipped above the floor bound), then calm again."""
    rng = np.random.default_rng(seed)
    third = n // 3
    return np.r_[rng.normal(0, 1e-3, third), 4e-3 * rng.standard_t(3, third), rng.normal(0, 5e-4, n - 2 * third)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lossless_truncation_matches_the_reference_exactly(seed):
    returns = _switching(seed)
    scale = robust_scale(returns[:200])
    ref, run_length, vol, regimes, changes = _reference(returns, scale, max_run=returns.size + 5)
    det = Exact(scale, max_run=returns.size + 5)
    trace = det.process(returns)
    assert np.array_equal(trace.run_length, run_length)
    assert np.array_equal(trace.regimes, regimes)
    assert np.max(np.abs(trace.vol - vol)) < 1e-9
    assert _same_changes(trace.changes, changes) and len(changes) >= 2
    assert det.probs.size == ref.probs.size == returns.size + 1
    assert np.max(np.abs(det.probs - ref.probs)) < 1e-9


@pytest.mark.parametrize("max_run", [3, 17, 64])
def test_the_same_truncation_gives_the_same_answers(max_run):
    """Run lengths beyond R merged into R-1, as the reference does: still identical, bar for bar."""
    returns = _switching(3, n=900)
    scale = robust_scale(returns[:200])
    ref, run_length, vol, _, changes = _reference(returns, scale, max_run=max_run)
    det = Exact(scale, max_run=max_run, block=50)
    trace = det.process(returns)
    assert np.array_equal(trace.run_length, run_length)
    assert np.max(np.abs(trace.vol - vol)) < 1e-9
    assert _same_changes(trace.changes, changes)
    assert np.max(np.abs(det.probs - ref.probs)) < 1e-9


def test_default_truncation_labels_a_regime_market_as_the_reference_does():
    market = generate_market(3000, seed=2, signal_regimes="1:-1:0")
    returns = np.diff(np.log(market.frame["close"].to_numpy()))
    scale = robust_scale(returns)
    _, _, _, regimes, changes = _reference(returns, scale)  # the reference's own defaults (max_run 400)
    trace = Exact(scale).process(returns)
    assert np.mean(trace.regimes == regimes) >= 0.99
    assert [c.bar for c in trace.changes] == [c.bar for c in changes]


def test_batches_bar_by_bar_and_block_sizes_agree():
    returns = _switching(4, n=600)
    whole = Exact(1e-3, max_run=100).process(returns)
    pieces = Exact(1e-3, max_run=100, block=7)
    parts = [pieces.process(returns[a:b]) for a, b in ((0, 1), (1, 250), (250, 251), (251, 600))]
    single = Exact(1e-3, max_run=100)
    one_by_one = [single.update(v, i) for i, v in enumerate(returns)]
    assert np.array_equal(np.concatenate([p.run_length for p in parts]), whole.run_length)
    assert _same_changes([c for p in parts for c in p.changes], whole.changes)
    assert _same_changes(whole.changes, [c for c in one_by_one if c is not None]) and whole.changes
    assert np.allclose(pieces.probs, single.probs, atol=1e-12)


def test_non_finite_returns_count_as_zero():
    returns = _switching(5, n=300)
    holed = returns.copy()
    holed[[10, 150]] = [np.nan, np.inf]
    filled = returns.copy()
    filled[[10, 150]] = 0.0
    a = Exact(1e-3).process(holed)
    b = Exact(1e-3).process(filled)
    assert np.array_equal(a.run_length, b.run_length) and np.array_equal(a.vol, b.vol)


def test_a_block_whose_evidence_leaves_float_range_is_split(monkeypatch):
    """The scaled evidence of a long block could underflow on pathological input; the block is then
    halved until it fits, with the same answers (the failure is injected: no real series hits it)."""
    import convopt_mlflow.components.bocpd as kernel

    returns = _switching(6, n=500)
    expected = Exact(1e-3, max_run=50).process(returns)
    real = kernel._block

    def fails_on_long_blocks(x, *args):
        if x.size > 40:
            raise FloatingPointError("injected")
        return real(x, *args)

    monkeypatch.setattr(kernel, "_block", fails_on_long_blocks)
    got = Exact(1e-3, max_run=50).process(returns)
    assert np.array_equal(got.run_length, expected.run_length) and np.allclose(got.vol, expected.vol)
