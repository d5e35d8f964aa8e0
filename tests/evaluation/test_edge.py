"""The selection-aware no-edge rule (deflated Sharpe of the shipped weights' validation PnL), on hand-made PnL."""
from __future__ import annotations

import math

import numpy as np
import pytest

from convopt_mlflow.evaluation.edge import EDGE_THRESHOLD, edge_verdict
from convopt_mlflow.evaluation.summary import RunSummary
from convopt_mlflow.stats import expected_max_sharpe, probabilistic_sharpe_ratio
from convopt_mlflow.training.selection import ModelChoice, judge_edge, selection_trials

BARS = 3000


def _best_of(rng, n, bars=BARS, mean=0.0):
    """The PnL with the highest Sharpe among ``n`` strategies of per-bar ``mean`` (the selection)."""
    pnls = rng.normal(mean, 1.0, (n, bars))
    return pnls[np.argmax(pnls.mean(axis=1) / pnls.std(axis=1, ddof=1))]


def test_the_best_of_n_noise_scores_is_no_edge_though_it_beats_flat():
    rng = np.random.default_rng(0)
    draws = [_best_of(rng, 10) for _ in range(200)]
    old = [not (d.mean() / d.std(ddof=1)) > 0 for d in draws]  # the old rule: validation Sharpe > 0
    new = [edge_verdict(d, n_trials=10).no_edge for d in draws]
    assert sum(old) <= 2  # the best of 10 beats flat almost always
    assert np.mean(new) >= 0.97  # the deflated rule calls it noise


def test_counting_the_trials_is_what_flags_it():
    rng = np.random.default_rng(1)
    flagged_as_one = [edge_verdict(_best_of(rng, 30), n_trials=1).no_edge for _ in range(100)]
    flagged_as_thirty = [edge_verdict(_best_of(rng, 30), n_trials=30).no_edge for _ in range(100)]
    assert np.mean(flagged_as_one) < 0.8
    assert np.mean(flagged_as_thirty) >= 0.95


def test_a_strong_edge_keeps_it_among_many_trials():
    rng = np.random.default_rng(2)
    verdict = edge_verdict(_best_of(rng, 50, mean=0.1), n_trials=50)
    assert not verdict.no_edge and verdict.dsr > 0.99 and "above 0.95" in verdict.reason()


def test_the_benchmark_is_the_expected_best_of_n_null_sharpes():
    # brute force: the mean of the best per-bar Sharpe of n no-edge strategies on T bars
    rng = np.random.default_rng(3)
    n, bars = 20, 500
    best = [max(r.mean() / r.std(ddof=1) for r in rng.normal(0.0, 1.0, (n, bars))) for _ in range(2000)]
    verdict = edge_verdict(rng.normal(0.0, 1.0, bars), n_trials=n)
    assert verdict.benchmark == pytest.approx(expected_max_sharpe(n, 1.0 / (bars - 1)))
    assert verdict.benchmark == pytest.approx(np.mean(best), rel=0.05)


def test_one_trial_is_the_plain_psr_and_flat_has_no_edge():
    r = np.random.default_rng(4).normal(0.05, 1.0, 1000)
    one = edge_verdict(r, n_trials=1)
    assert one.benchmark == 0.0 and one.dsr == pytest.approx(probabilistic_sharpe_ratio(r)) == one.psr
    flat = edge_verdict(np.zeros(1000), n_trials=5)
    assert flat.no_edge and math.isnan(flat.dsr) and "never trade" in flat.reason()
    assert "model/edge/dsr" not in flat.metrics() and flat.metrics()["model/edge/n_trials"] == 5
    with pytest.raises(ValueError, match="n_trials"):
        edge_verdict(r, n_trials=0)


def test_metrics_are_annualized_like_the_validation_score():
    r = np.random.default_rng(5).normal(0.02, 1.0, 2000)
    verdict = edge_verdict(r, n_trials=4, trial_sharpes=[0.0, 0.01, 0.02], periods_per_year=100.0)
    m = verdict.metrics()
    assert m["model/edge/sr0"] == pytest.approx(10.0 * verdict.benchmark)
    assert m["model/edge/trial_sharpe_std"] == pytest.approx(10.0 * np.std([0.0, 0.01, 0.02], ddof=1))
    assert m["model/edge/threshold"] == EDGE_THRESHOLD and m["model/edge/n_bars"] == 2000


def test_selection_trials_count_every_evaluation_and_the_last_weights_once():
    evaluated = [(256.0, 0.1), (512.0, -0.3), (768.0, 0.2)]
    assert selection_trials(evaluated, 1000, "best") == 4  # + the last weights
    assert selection_trials(evaluated, 768, "best") == 3  # the last evaluation scored the last weights
    assert selection_trials(evaluated, 1000, "last") == 1  # nothing was chosen
    assert selection_trials([], 1000, "best") == 1


def test_model_choice_carries_the_verdict_as_data():
    rng = np.random.default_rng(6)
    choice = ModelChoice("best", 512, 1.2, -0.4, 512, 1.2, "best checkpoint")
    assert not choice.no_edge  # without a verdict: the old rule (val_score > 0)
    judged = judge_edge(choice, _best_of(rng, 6), [(256.0, 0.3), (512.0, 1.2), (768.0, -0.1), (1024.0, 0.0),
                                                   (1280.0, 0.5)], last_step=1536, final_model="best",
                        periods_per_year=1.0)
    assert judged.edge.n_trials == 6 and judged.no_edge
    assert judged.tags()["convopt.no_edge"] == "true" and "DSR" in judged.tags()["convopt.edge_reason"]
    assert judged.metrics()["model/edge/n_trials"] == 6.0 and judged.metrics()["model/val_score"] == 1.2


def test_summary_explains_the_deflated_rule():
    metrics = {"model/val_score": 1.6, "model/edge/n_trials": 8.0, "model/edge/sr0": 5.68,
               "model/edge/dsr": 0.149, "model/edge/threshold": 0.95, "backtest/test/sharpe": -0.5}
    summary = RunSummary("r", "baseline-s0", "baseline", "noise", "FINISHED", metrics, {"convopt.no_edge": "true"})
    assert summary.edge_line() == (
        "no edge over staying flat: the shipped weights score a validation Sharpe (annualized) of 1.600, "
        "selected over 8 validation scores, against 5.680, the best that 8 no-edge tries would score: "
        "deflated Sharpe ratio 0.149 not above 0.95; validation alone decides this "
        "(the test split, -0.500, is only reported)")
