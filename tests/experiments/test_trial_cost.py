"""An A/B trial's bookkeeping reuses what its run computed: one market per trial, and the test
split walked once for the run's backtest and the report's PnL artifact (issue 20)."""
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from convopt_mlflow.experiments.abtest import open_study
from convopt_mlflow.experiments.session import spec_from_args
from convopt_mlflow.experiments.storage import get_storage
from convopt_mlflow.experiments.trial import PNL_ARTIFACT, TrialRunner
from convopt_mlflow.tracking import open_run
from convopt_mlflow.training import evaluate, setup

from .conftest import DATA, TINY


def test_a_trial_loads_one_market_and_walks_the_test_split_once(tmp_path, mlflow_uri, monkeypatch):
    loads, walks = [], []
    load, walk = setup.load_market, evaluate.deterministic_positions

    def counted_load(cfg, *args, **kwargs):
        loads.append(cfg.data.source)
        return load(cfg, *args, **kwargs)

    def counted_walk(core, act, bar_range):
        walks.append(tuple(bar_range))
        return walk(core, act, bar_range)

    monkeypatch.setattr(setup, "load_market", counted_load)
    monkeypatch.setattr(evaluate, "deterministic_positions", counted_walk)
    spec = spec_from_args("baseline,lr", 2, total_timesteps=1024, data=DATA,
                          overrides=dict(kv.split("=") for kv in TINY.split(",")))
    study = open_study(spec, get_storage(f"sqlite:///{tmp_path}/optuna.db"), "cost")
    parent = open_run(experiment=None, run_id=None, tags={"convopt.role": "ab-parent"})
    study.enqueue_trial({"arm": "baseline", "seed": 0})
    study.optimize(TrialRunner(spec, parent.run_id, "cost", str(tmp_path / "ckpt")), n_trials=1)
    parent.end("FINISHED")
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert loads == [DATA]  # the run and the secondary metrics share one market
    market = load(spec.parsed_arms()[0].config(spec.common, 0))
    test_walks = [w for w in walks if w == tuple(market.splits.test)]
    assert len(test_walks) == 1, walks  # the run's test backtest; the PnL artifact reuses it
    # and the artifact is the shipped weights' test PnL: the run's own test backtest, bar by bar
    client = MlflowClient()
    run = client.get_run(trial.user_attrs["mlflow_run_id"])
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, PNL_ARTIFACT, str(tmp_path))).read_text())
    assert np.expm1(np.sum(logged["net_log_pnl"])) == pytest.approx(run.data.metrics["backtest/test/total_return"],
                                                                   rel=1e-6, abs=1e-9)
