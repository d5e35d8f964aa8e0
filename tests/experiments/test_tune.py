"""A tiny `convopt tune`: 3 trials, children and parent in MLflow, the best trial reported."""
import importlib
import json
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from convopt_mlflow import cli, cli_parser
from convopt_mlflow.config.search_spaces import search_space

from .conftest import DATA, TINY


def test_tiny_tune_logs_parent_children_and_reports_the_best_trial(tmp_path, mlflow_uri, capsys):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    code = cli.main(["tune", "--preset", "baseline", "--n-trials", "3", "--total-timesteps", "1024", "--data", DATA,
                     "--storage", storage, "--study", "t", "--seed", "3", "--set", TINY])
    err = capsys.readouterr().err
    assert code == 0, err
    client = MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [r for r in runs if r.data.tags.get("convopt.role") == "tune-parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 3
    assert {c.data.tags["convopt.role"] for c in children} == {"tune-trial"}
    assert {c.info.status for c in children} == {"FINISHED"}
    assert all(client.get_metric_history(c.info.run_id, "eval/score") for c in children)  # intermediate steps
    study = optuna.load_study(study_name="t", storage=storage)
    assert isinstance(study.sampler, optuna.samplers.TPESampler) and len(study.trials) == 3
    assert {t.user_attrs["mlflow_run_id"] for t in study.trials} == {c.info.run_id for c in children}
    for t in study.trials:  # a pruned trial's run is FINISHED and tagged
        pruned = t.state == optuna.trial.TrialState.PRUNED
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert (run.data.tags.get("convopt.pruned") == "true") == pruned
        steps = sorted(p.step for p in client.get_metric_history(run.info.run_id, "eval/score"))
        assert steps == sorted(int(s) for s in t.intermediate_values)
        assert set(t.params) == set(search_space("baseline", fixed=tuple(k.split("=")[0] for k in TINY.split(","))))
    best = json.loads(Path(client.download_artifacts(parent.info.run_id, "tune/best.json", str(tmp_path))).read_text())
    assert best["number"] == study.best_trial.number and best["n_trials"] == 3
    assert parent.data.tags["convopt.tune.best_run"] == best["run_id"]
    assert "tune/best/value" in parent.data.metrics
    assert "convopt ab-test --arms 'baseline,baseline:" in err and "DSR" in err
    assert best["ab_command"] in err
    # the A/B it prints re-tests the winner on seeds no trial trained on (every trial here used seed 3)
    trained = {int(c.data.tags["convopt.seed"]) for c in children}
    assert trained == {3} and "--seeds 5 --first-seed 4" in best["ab_command"]
    assert trained.isdisjoint(set(cli_seeds(best["ab_command"])))


def test_pruning_stops_a_trial_below_the_median_and_ends_its_run_finished(tmp_path, mlflow_uri):
    """Two completed trials set the median; a third whose first eval is far below it is pruned."""
    from convopt_mlflow.experiments.tune import TuneObjective, TuneSpec
    from convopt_mlflow.tracking import open_run

    overrides = dict(kv.split("=") for kv in TINY.split(","))
    spec = TuneSpec("baseline", 1, {**overrides, "data.source": DATA, "run.total_timesteps": "1024",
                                    "run.progress_bar": "false"})
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=2,
                                                                                           n_warmup_steps=0))
    for _ in range(2):  # history: two trials that scored very high at every step
        t = study.ask()
        for step in (512, 1024):
            t.report(1e9, step)
        study.tell(t, 1e9)
    parent = open_run(experiment=None, run_id=None, tags={"convopt.role": "tune-parent"})
    study.optimize(TuneObjective(spec, parent.run_id, "p"), n_trials=1)
    parent.end("FINISHED")
    trial = study.trials[-1]
    assert trial.state == optuna.trial.TrialState.PRUNED and list(trial.intermediate_values) == [512]
    run = MlflowClient().get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["convopt.pruned"] == "true"
    assert run.data.tags["convopt.pruned_at"] == "512"


def test_wilcoxon_prunes_a_trial_worse_than_the_best_across_walk_forward_folds(tmp_path, mlflow_uri):
    """A best trial that scored very high on all 5 folds; a new trial is worse on every fold it runs,
    so the one-sided signed-rank test (p = 1/16 < 0.1) prunes it after its 4th fold: the 5th never trains."""
    from convopt_mlflow.data.splits import chronological_splits
    from convopt_mlflow.experiments.tune import TuneSpec
    from convopt_mlflow.experiments.tune_folds import FoldObjective
    from convopt_mlflow.tracking import open_run

    overrides = dict(kv.split("=") for kv in TINY.split(","))
    spec = TuneSpec("baseline", 1, {**overrides, "data.source": DATA, "run.total_timesteps": "512",
                                    "run.eval_freq": "256", "data.val_fraction": "0.05", "run.progress_bar": "false"},
                    pruner="wilcoxon", folds=5)
    study = optuna.create_study(direction="maximize", pruner=spec.make_pruner())
    best = study.ask()
    for fold in range(5):
        best.report(1e9, fold)
    study.tell(best, 1e9)
    parent = open_run(experiment=None, run_id=None, tags={"convopt.role": "tune-parent"})
    study.optimize(FoldObjective(spec, parent.run_id, "w"), n_trials=1)
    parent.end("FINISHED")
    trial = study.trials[-1]
    assert trial.state == optuna.trial.TrialState.PRUNED and len(trial.intermediate_values) == 4
    client = MlflowClient()
    run = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["convopt.pruned"] == "true"
    assert run.data.tags["convopt.pruned_at"] == "4" and run.data.tags["convopt.role"] == "tune-trial"
    folds = client.search_runs([e.experiment_id for e in client.search_experiments()], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert sorted(int(f.data.tags["convopt.fold"]) for f in folds) == sorted(trial.intermediate_values)
    assert {f.data.tags["convopt.role"] for f in folds} == {"tune-fold"} and {f.info.status for f in folds} == {"FINISHED"}
    history = client.get_metric_history(run.info.run_id, "tune/fold_score")
    assert {p.step: p.value for p in history} == pytest.approx(dict(trial.intermediate_values))
    for f in folds:  # each fold validates on its own block, later folds later in time
        assert f.data.metrics["backtest/val/sharpe"] == pytest.approx(trial.intermediate_values[int(f.data.tags["convopt.fold"])])
    tests = sorted(float(f.data.params["data.test_fraction"]) for f in folds)
    vals = [chronological_splits(3000, val_fraction=0.05, test_fraction=t, embargo_bars=24).val for t in tests]
    assert all(a[0] > b[0] for a, b in zip(vals, vals[1:]))
    assert "val_sharpe_per_bar" in trial.user_attrs  # the walked folds' returns, for the DSR


def test_n_trials_is_a_study_wide_budget_and_a_re_run_continues_up_to_it(tmp_path, mlflow_uri, capsys):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    argv = ["tune", "--preset", "baseline", "--total-timesteps", "512", "--data", DATA, "--storage", storage,
            "--study", "b", "--set", TINY + ",run.eval_freq=256"]
    assert cli.main([*argv, "--n-trials", "2"]) == 0
    assert cli.main([*argv, "--n-trials", "2"]) == 0  # budget spent: no new trial
    study = optuna.load_study(study_name="b", storage=storage)
    assert len(study.trials) == 2
    assert cli.main([*argv, "--n-trials", "3"]) == 0
    assert len(optuna.load_study(study_name="b", storage=storage).trials) == 3
    runs = MlflowClient().search_runs([e.experiment_id for e in MlflowClient().search_experiments()])
    parents = [r for r in runs if r.data.tags.get("convopt.role") == "tune-parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # re-runs join the study's parent run
    assert len([r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]) == 3
    capsys.readouterr()
    # 5 folds of 15% don't fit (after the 10% holdout, the oldest fold has no training bars)
    assert cli.main([*argv, "--n-trials", "4", "--pruner", "wilcoxon"]) == 2
    err = capsys.readouterr().err
    assert "5 walk-forward folds" in err and "use fewer folds, a smaller val_fraction" in err
    assert cli.main([*argv, "--n-trials", "4", "--pruner", "wilcoxon", "--folds", "2"]) == 2
    assert "started with --pruner median" in capsys.readouterr().err
    assert len(optuna.load_study(study_name="b", storage=storage).trials) == 3


def cli_seeds(command: str) -> list[int]:
    """The seeds an ``convopt ab-test`` command line runs, as the CLI parses them."""
    import shlex

    from convopt_mlflow.experiments.session import spec_from_args

    argv = shlex.split(command)[2:]
    args = cli_parser._parser().parse_args(["ab-test", *argv])
    return list(spec_from_args(args.arms, args.seeds, first_seed=args.first_seed).seeds)


def test_a_tune_worker_builds_the_market_once_and_reuses_the_runs_validation_walk(tmp_path, mlflow_uri, monkeypatch):
    """Trials of one worker share its market (kept by the bars' digest and settings), and the DSR's
    validation PnL is the run's own validation backtest of the shipped weights, not a new market's."""
    import numpy as np

    from convopt_mlflow.experiments.tune import VAL_PNL_ARTIFACT, TuneObjective, TuneSpec
    from convopt_mlflow.tracking import open_run
    from convopt_mlflow.training import setup

    builds = []
    load = setup.load_market

    def counted_load(cfg, *args, **kwargs):
        builds.append(cfg.data.source)
        return load(cfg, *args, **kwargs)

    monkeypatch.setattr(setup, "load_market", counted_load)
    monkeypatch.setattr(importlib.import_module("convopt_mlflow.training.market"), "load_market", counted_load)  # shared_market's
    monkeypatch.setattr(importlib.import_module("convopt_mlflow.training.market"), "_SHARED", {})
    overrides = dict(kv.split("=") for kv in TINY.split(","))
    spec = TuneSpec("baseline", 2, {**overrides, "data.source": DATA, "run.total_timesteps": "1024",
                                    "run.progress_bar": "false"})
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    parent = open_run(experiment=None, run_id=None, tags={"convopt.role": "tune-parent"})
    study.optimize(TuneObjective(spec, parent.run_id, "shared"), n_trials=2)
    parent.end("FINISHED")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert builds == [DATA]  # once for both trials and their validation PnL
    client = MlflowClient()
    runs = [client.get_run(t.user_attrs["mlflow_run_id"]) for t in study.trials]
    assert [r.data.tags["convopt.worker.market_cache"] for r in runs] == ["miss", "hit"]
    for run in runs:
        path = client.download_artifacts(run.info.run_id, VAL_PNL_ARTIFACT, str(tmp_path / run.info.run_id[:8]))
        pnl = json.loads(Path(path).read_text())["net_log_pnl"]
        assert np.expm1(np.sum(pnl)) == pytest.approx(run.data.metrics["backtest/val/total_return"], rel=1e-6, abs=1e-9)
