"""Failed cells in the study's ledger: counted, named, and never retrained for ever.

Real Optuna storage (in memory, and one real tiny trial on sqlite); trials' outcomes are
written the way :class:`~convopt_mlflow.experiments.trial.TrialRunner` writes them.
"""
import optuna
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from convopt_mlflow.experiments.abtest import Ledger, failed_cells, open_study
from convopt_mlflow.experiments.session import spec_from_args
from convopt_mlflow.experiments.storage import get_storage
from convopt_mlflow.experiments.trial import NO_METRIC, TrialFailed, TrialRunner
from convopt_mlflow.tracking import open_run

from .conftest import DATA, TINY

SPEC = spec_from_args("baseline,lr", 3)
DISTRIBUTIONS = {"arm": CategoricalDistribution(list(SPEC.arms)), "seed": CategoricalDistribution(list(SPEC.seeds))}


def _study_with(*trials):
    study = optuna.create_study(direction="maximize")
    for arm, seed, attrs in trials:
        study.add_trial(create_trial(state=TrialState.FAIL, params={"arm": arm, "seed": seed},
                                     distributions=DISTRIBUTIONS, user_attrs=attrs))
    return study


def test_a_finished_run_without_the_metric_is_a_failure_given_up_at_once():
    study = _study_with(("lr", 1, {"convopt.status": NO_METRIC, "convopt.failure_reason": "no metric"}),
                        # a study written before this rule: FINISHED, metrics stored, trial FAIL
                        ("lr", 2, {"convopt.status": "FINISHED", "metrics": {"backtest/val/sharpe": 1.0}}))
    ledger = Ledger.of(study)
    assert ledger.given_up(("lr", 1)) and ledger.given_up(("lr", 2))  # before: retrained for ever
    cells = failed_cells(study, SPEC)
    assert [(c.arm, c.seed, c.attempts) for c in cells] == [("lr", 1, 1), ("lr", 2, 1)]
    assert cells[0].reason == "no metric"


def test_a_failed_training_is_retried_once_then_given_up_with_its_reason():
    failed = {"convopt.status": "FAILED", "convopt.failure_reason": "run ended FAILED: diverged"}
    once = _study_with(("baseline", 0, failed))
    assert not Ledger.of(once).given_up(("baseline", 0)) and failed_cells(once, SPEC) == []
    twice = _study_with(("baseline", 0, failed), ("baseline", 0, failed))
    (cell,) = failed_cells(twice, SPEC)
    assert (cell.arm, cell.seed, cell.reason, cell.attempts) == ("baseline", 0, "run ended FAILED: diverged", 2)
    stale = _study_with(("baseline", 0, {}))  # a dead worker's trial: Optuna retries it, no failure
    assert failed_cells(stale, SPEC) == [] and Ledger.of(stale).failures == {}


def test_a_real_trial_without_the_decision_metric_fails_its_cell_once(tmp_path, mlflow_uri):
    spec = spec_from_args("baseline,lr", 2, total_timesteps=1024, data=DATA, metric="no/such/metric",
                          overrides=dict(kv.split("=") for kv in TINY.split(",")))
    study = open_study(spec, get_storage(f"sqlite:///{tmp_path}/optuna.db"), "nometric")
    parent = open_run(experiment=None, run_id=None, tags={"convopt.role": "ab-parent"})
    study.enqueue_trial({"arm": "lr", "seed": 1})
    study.optimize(TrialRunner(spec, parent.run_id, "nometric", str(tmp_path / "ckpt")), n_trials=1,
                   catch=(TrialFailed,))
    parent.end("FINISHED")
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL and trial.user_attrs["convopt.status"] == NO_METRIC
    assert Ledger.of(study).given_up(("lr", 1))
    (cell,) = failed_cells(study, spec)
    assert (cell.arm, cell.seed) == ("lr", 1) and "no/such/metric" in cell.reason
    run = MlflowClient().get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED" and "no/such/metric" in run.data.tags["convopt.ab.cell_failed"]
