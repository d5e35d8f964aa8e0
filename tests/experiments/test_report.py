"""The A/B report on hand-made records: failed cells are outcomes, sequential decisions are the verdict.

Pure (no Optuna, no MLflow, no training): :func:`analyze` over records shaped like the study's.
"""
import math

import numpy as np
import pytest

from convopt_mlflow.experiments.pairing import paired_scores
from convopt_mlflow.experiments.report import analyze, headline_metrics, sequential_look, winner_of

ARMS = ["baseline", "lr"]
BASE = [1.0, 1.1, 0.9, 1.05, 0.95]
LR = [2.0, 2.2, 1.9]  # lr is far better on the seeds it completed, and failed seeds 3 and 4
FAILED = [{"arm": "lr", "seed": 3, "reason": "run ended FAILED: diverged"},
          {"arm": "lr", "seed": 4, "reason": "run ended FAILED: diverged"}]


def _records(values):
    return [{"arm": arm, "seed": seed, "run_id": f"{arm}-{seed}", "value": v, "metrics": {}, "no_edge": False}
            for arm, scores in values.items() for seed, v in enumerate(scores)]


def _analyze(records, failed=(), rule="refuse", **kwargs):
    return analyze(records, arms=kwargs.pop("arms", ARMS), metric="backtest/test/sharpe", alpha=0.05,
                   planned_cells=kwargs.pop("planned", 10), failed=failed, on_failure=rule, **kwargs)


def test_an_arm_that_failed_seeds_is_named_and_not_registered_under_refuse():
    # the case: before, the verdict said "lr beats baseline ... n = 3" and registrable was True
    records = _records({"baseline": BASE, "lr": LR})
    report = _analyze(records, FAILED)
    assert report["winner"] == "lr" and "n = 3 paired seeds" in report["verdict"]
    assert "lr seed 3 (run ended FAILED: diverged)" in report["verdict"] and "lr seed 4" in report["verdict"]
    assert "cannot be registered" in report["verdict"] and "seed(s) 3, 4 are left out" in report["verdict"]
    assert report["failures"]["rate"] == {"baseline": 0.0, "lr": 0.4} and report["failures"]["rule"] == "refuse"
    assert [d["seed"] for d in report["pairing"]["dropped"]] == [3, 4]
    winner = winner_of(report, records)
    assert not winner.registrable and "never registered" in winner.refusal
    assert winner.evidence["on_failure"] == "refuse" and len(winner.evidence["failed_cells"]) == 2
    metrics = headline_metrics(report, {"baseline": "baseline", "lr": "lr"})
    assert metrics["ab/lr/failure_rate"] == 0.4 and metrics["ab/baseline/failure_rate"] == 0.0
    assert metrics["ab/cells_failed"] == 2


def test_a_failed_baseline_seed_makes_the_comparison_unregistrable_under_refuse():
    records = _records({"baseline": BASE[:4], "lr": [2.0, 2.2, 1.9, 2.1, 2.0]})
    report = _analyze(records, [{"arm": "baseline", "seed": 4, "reason": "x"}])
    assert report["winner"] == "lr" and not winner_of(report, records).registrable
    assert "baseline seed 4 (x)" in report["verdict"]


def test_the_worst_rule_keeps_every_pair_and_scores_failures_as_the_worst_value():
    records = _records({"baseline": BASE, "lr": LR})
    pairing = paired_scores(records, ARMS, FAILED, rule="worst")
    assert pairing.seeds == [0, 1, 2, 3, 4] and pairing.filled == [("lr", 3), ("lr", 4)]
    assert pairing.scores["lr"].tolist() == [2.0, 2.2, 1.9, 0.9, 0.9]  # 0.9: the worst value observed
    report = _analyze(records, FAILED, rule="worst")
    assert report["seeds_compared"] == [0, 1, 2, 3, 4] and report["unregistrable"] == {}
    assert "Under --on-failure worst" in report["verdict"] and "lr seed 3" in report["verdict"]
    # lr now pays for its failures: two seeds far below the baseline, so it no longer wins
    assert report["winner"] is None


def test_an_arm_that_fails_every_seed_is_still_reported():
    records = _records({"baseline": BASE[:3]})
    failed = [{"arm": "lr", "seed": s, "reason": "no metric"} for s in range(3)]
    report = _analyze(records, failed)
    assert report["winner"] is None and report["failures"]["rate"]["lr"] == 1.0
    assert "only 0 seed(s)" in report["verdict"] and "lr seed 0 (no metric)" in report["verdict"]


def test_paired_scores_never_drop_a_seed_silently():
    records = _records({"baseline": BASE[:3], "lr": LR[:2]})  # lr seed 2 unfinished (still running)
    pairing = paired_scores(records, ARMS)
    assert pairing.seeds == [0, 1] and pairing.dropped == {2: "lr unfinished"}


def _sequential(decision, z, look=1, n=3):
    return {"looks": [3, 5], "alpha_per_comparison": 0.05, "rounds": [], "trials_planned": 10, "trials_run": 6,
            "compute_saved": 0.4, "decisions": {"lr": {"decision": decision, "look": look, "n": n, "z": z,
                                                       "boundary": 2.669}}}


def test_the_sequential_decision_is_the_verdict_not_a_fixed_sample_test_after_stopping():
    # a fixed-sample paired t on these 3 seeds is significant (p ~ 0.003), but the sequential test accepted
    records = _records({"baseline": [1.0, 1.1, 0.9], "lr": [1.5, 1.62, 1.41]})
    fixed = _analyze(records, planned=6)
    assert fixed["winner"] == "lr"
    report = _analyze(records, planned=6, sequential=_sequential("accept", 2.0))
    (c,) = report["comparisons"]
    assert report["winner"] is None and not c["significant"] and math.isnan(c["p_adjusted"])
    assert "group-sequential" in report["verdict"] and winner_of(report, records) is None
    assert report["mde"]["n_pairs"] == 5 and "final look" in report["mde"]["method"]


def test_an_interim_rejection_is_registered_as_the_sequential_test_decided_it():
    # rejected at look 1 on 3 seeds; later seeds made the fixed-sample test non-significant
    records = _records({"baseline": [1.0, 1.1, 0.9, 1.0, 1.2], "lr": [1.5, 1.62, 1.41, 0.2, 2.6]})
    fixed = _analyze(records)
    assert fixed["winner"] is None
    report = _analyze(records, sequential=_sequential("reject", 3.1))
    assert report["winner"] == "lr" and "look 1 (3 paired seeds)" in report["verdict"]
    winner = winner_of(report, records)
    assert winner.seeds == (0, 1, 2) and winner.evidence["test"].startswith("group-sequential")
    assert winner.evidence["look"] == 1 and winner.evidence["n"] == 3 and winner.registrable


def test_the_power_statement_is_at_the_holm_level():
    rng = np.random.default_rng(0)
    arms = ["baseline", "a", "b", "c"]
    records = _records({arm: rng.normal(size=5).tolist() for arm in arms})
    report = _analyze(records, arms=arms, planned=20)
    assert report["mde"]["comparisons"] == 3 and report["mde"]["level"] == pytest.approx(0.05 / 3)
    assert report["mde"]["standardized"] == pytest.approx(2.2916, abs=1e-3)  # not 1.68, the unadjusted value
    assert "each at 0.0167" in report["verdict"]


def test_an_interim_sequential_decision_is_never_revisited_at_a_later_look():
    # look 1 (3 seeds): the baseline failed seed 2; under `worst` it scores the worst value so far (0.0),
    # and lr's near-constant lead crosses the boundary
    look1 = _records({"baseline": [0.0, 0.1], "lr": [5.0, 5.1, 5.05]})
    failed = [{"arm": "baseline", "seed": 2, "reason": "diverged"}]
    options = dict(arms=ARMS, looks=[3, 5], alpha=0.05, rule="worst")
    decided = sequential_look({}, look1, failed, n=3, **options)
    assert decided["lr"]["decision"] == "reject" and decided["lr"]["look"] == 1
    # look 2: a far worse value arrives, so the failed cell's worst-value score drops to -100
    look2 = look1 + [{"arm": a, "seed": s, "run_id": "", "value": v, "metrics": {}, "no_edge": False}
                     for a, s, v in [("baseline", 3, 0.0), ("lr", 3, -100.0), ("baseline", 4, 0.0), ("lr", 4, 5.0)]]
    replayed = sequential_look({}, look2, failed, n=5, **options)
    assert replayed["lr"]["decision"] != "reject"  # a replay from scratch would undo the interim rejection
    kept = sequential_look(decided, look2, failed, n=5, **options)
    assert kept["lr"] == decided["lr"]
