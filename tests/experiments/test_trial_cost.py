"""An A/B trial's bookkeeping reuses what its run computed: one market per trial, and the test
split walked once for the run's backtest and the report's PnL artifact (issue 20)."""
import importlib
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
    monkeypatch.setattr(importlib.import_module("convopt_mlflow.training.market"), "load_market", counted_load)  # shared_market's
    monkeypatch.setattr(importlib.import_module("convopt_mlflow.training.market"), "_SHARED", {})  # no market kept from an earlier test in this process
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


def test_a_worker_builds_the_market_once_for_its_trials_and_rebuilds_it_when_the_data_changes(
        tmp_path, mlflow_uri, monkeypatch):
    """Trials one after another in one worker share its market (features, cores), keyed by the
    digest of the bars read for each trial: a data file that changed in between is a miss."""
    from convopt_mlflow.data import load_bars

    builds = []
    load = setup.load_market

    def counted_load(cfg, *args, **kwargs):
        builds.append(cfg.data.source)
        return load(cfg, *args, **kwargs)

    monkeypatch.setattr(setup, "load_market", counted_load)
    monkeypatch.setattr(importlib.import_module("convopt_mlflow.training.market"), "load_market", counted_load)  # shared_market's
    monkeypatch.setattr(importlib.import_module("convopt_mlflow.training.market"), "_SHARED", {})
    csv = tmp_path / "bars.csv"
    frame = load_bars(DATA, min_bars=0).frame
    frame.to_csv(csv, index_label="timestamp")
    spec = spec_from_args("baseline,lr", 3, total_timesteps=1024, data=str(csv),
                          overrides=dict(kv.split("=") for kv in TINY.split(",")))
    study = open_study(spec, get_storage(f"sqlite:///{tmp_path}/optuna.db"), "shared")
    parent = open_run(experiment=None, run_id=None, tags={"convopt.role": "ab-parent"})
    runner = TrialRunner(spec, parent.run_id, "shared", str(tmp_path / "ckpt"))
    for arm, seed in (("baseline", 0), ("lr", 0)):
        study.enqueue_trial({"arm": arm, "seed": seed})
        study.optimize(runner, n_trials=1)
    changed = frame.copy()
    changed.iloc[-1, changed.columns.get_loc("close")] *= 1.001  # another last close: other bars
    changed["high"] = changed[["open", "high", "close"]].max(axis=1)
    changed["low"] = changed[["open", "low", "close"]].min(axis=1)
    changed.to_csv(csv, index_label="timestamp")
    study.enqueue_trial({"arm": "baseline", "seed": 1})
    study.optimize(runner, n_trials=1)
    parent.end("FINISHED")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert builds == [str(csv), str(csv)]  # the first trial's, then the changed file's
    client = MlflowClient()
    runs = [client.get_run(t.user_attrs["mlflow_run_id"]) for t in study.trials]
    assert [r.data.tags["convopt.worker.market_cache"] for r in runs] == ["miss", "hit", "miss"]
    digests = [r.data.tags["convopt.data.digest"] for r in runs]
    assert digests[0] == digests[1] != digests[2]
    assert all("backtest/test/sharpe" in r.data.metrics for r in runs)


def test_trials_on_a_kept_market_train_exactly_like_trials_on_a_fresh_one(tmp_path, mlflow_uri, monkeypatch):
    """Arms that build episodes from the market (curriculum scores its windows, augmentation
    transforms them) after a trial of another arm on the same kept market: the same results as on
    a market built for them alone."""
    monkeypatch.setattr(importlib.import_module("convopt_mlflow.training.market"), "_SHARED", {})
    spec = spec_from_args("baseline,curriculum,augment", 2, total_timesteps=1024, data=DATA,
                          overrides=dict(kv.split("=") for kv in TINY.split(",")))
    parent = open_run(experiment=None, run_id=None, tags={"convopt.role": "ab-parent"})

    def backtests(study_name: str, cells) -> dict:
        study = open_study(spec, get_storage(f"sqlite:///{tmp_path}/{study_name}.db"), study_name)
        runner = TrialRunner(spec, parent.run_id, study_name, str(tmp_path / study_name))
        for arm, seed in cells:
            study.enqueue_trial({"arm": arm, "seed": seed})
            study.optimize(runner, n_trials=1)
        runs = [MlflowClient().get_run(t.user_attrs["mlflow_run_id"]) for t in study.trials]
        return {(r.data.tags["convopt.arm"], r.data.tags["convopt.worker.market_cache"]):
                {k: v for k, v in r.data.metrics.items() if k.startswith(("backtest/", "eval/"))} for r in runs}

    kept = backtests("kept", [("baseline", 0), ("curriculum", 0), ("augment", 0)])
    fresh = {}
    for arm in ("curriculum", "augment"):
        monkeypatch.setattr(importlib.import_module("convopt_mlflow.training.market"), "_SHARED", {})
        fresh.update(backtests(f"fresh-{arm}", [(arm, 0)]))
    parent.end("FINISHED")
    assert set(kept) == {("baseline", "miss"), ("curriculum", "hit"), ("augment", "hit")}
    for arm in ("curriculum", "augment"):
        assert kept[(arm, "hit")] == fresh[(arm, "miss")] and kept[(arm, "hit")]
