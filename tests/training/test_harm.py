"""Harm shows up at run time: a component-on run below flat on validation, where an edge exists, is tagged."""
from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from convopt_mlflow.config import build_config
from convopt_mlflow.config.presets import PRESETS
from convopt_mlflow.evaluation.harm import HARM_TAG, components_on, harm_warning
from convopt_mlflow.training.coordinator import train

TINY = ["env.n_envs=4", "ppo.n_steps=64", "ppo.batch_size=64", "ppo.n_epochs=2", "ppo.net_arch=16", "env.window=8",
        "env.episode_length=64", "run.total_timesteps=512", "run.eval_freq=256", "run.checkpoint_freq=1024",
        "run.progress_bar=false", "monitoring_window=4", "run.seed=0", "env.cost_bps=5"]
TREND = "data.source=synthetic:mechanism=trend,n_bars=3000,seed=4"  # an edge exists: the oracle's val Sharpe is 4.35
NOISE = "data.source=synthetic:mechanism=noise,n_bars=3000,seed=1"  # none: the oracle is flat


def test_components_on_names_what_each_preset_turns_on():
    assert components_on(build_config("baseline")) == ()
    assert components_on(build_config("baseline-3e-5")) == ()
    assert components_on(build_config("curriculum")) == ("curriculum",)
    assert components_on(build_config("augment")) == ("augment",)
    assert components_on(build_config("counterfactual")) == ("counterfactual",)
    assert set(components_on(build_config("everything"))) == {"scheduler", "monitor", "curriculum", "replay", "augment",
                                                        "meta", "ensemble"}
    # every preset but the references turns a component on; full holds what the panel admits
    # (tests/test_full_composition.py)
    assert all(components_on(build_config(p)) for p in PRESETS if not p.startswith("baseline") and p != "full")


def test_the_rule():
    below = {"backtest/val/sharpe": -0.5, "benchmark/val/oracle/sharpe": 3.0}
    assert "below flat" in harm_warning(("augment",), below)
    assert harm_warning((), below) is None  # baseline is the reference
    assert harm_warning(("augment",), {**below, "backtest/val/sharpe": 0.1}) is None
    assert harm_warning(("augment",), {**below, "benchmark/val/oracle/sharpe": 0.0}) is None  # nothing to find
    assert "real data" in harm_warning(("augment",), {"backtest/val/sharpe": -0.5})
    assert harm_warning(("augment",), {"backtest/val/sharpe": float("nan")}) is None


@pytest.fixture()
def store(mlflow_uri):
    return MlflowClient(tracking_uri=mlflow_uri)


def test_a_component_run_below_flat_is_tagged_and_says_so(store, capsys):
    result = train(build_config("curriculum", TINY + [TREND]), preset="curriculum")
    assert result.metrics["backtest/val/sharpe"] < 0 < result.metrics["benchmark/val/oracle/sharpe"]
    run = store.get_run(result.run_id)
    assert "below flat" in run.data.tags[HARM_TAG] and "curriculum" in run.data.tags[HARM_TAG]
    assert "Harm warning" in run.data.tags["mlflow.note.content"]
    assert "warning: validation Sharpe" in capsys.readouterr().out


def test_no_warning_for_baseline_or_where_there_is_no_edge(store):
    base = train(build_config("baseline", TINY + [TREND]), preset="baseline")
    assert base.metrics["backtest/val/sharpe"] < 0  # the same shortfall, but baseline is the reference
    assert HARM_TAG not in store.get_run(base.run_id).data.tags
    noise = train(build_config("curriculum", TINY + [NOISE]), preset="curriculum")
    assert noise.metrics["benchmark/val/oracle/sharpe"] == 0.0 > noise.metrics["backtest/val/sharpe"]
    assert HARM_TAG not in store.get_run(noise.run_id).data.tags


def test_an_ensemble_below_flat_is_tagged_on_its_parent(tracked):
    from convopt_mlflow.training.ensemble import train_ensemble_run

    from .conftest import TINY_RUN

    values = {**TINY_RUN, "ensemble.workers": "2", "ensemble_size": "2", "env.cost_bps": "5",
              "data.source": TREND.split("=", 1)[1]}
    result = train_ensemble_run(build_config("ensemble", values), preset="ensemble",
                                checkpoint_root=tracked.checkpoint_root("ens"))
    assert result.metrics["backtest/val/sharpe"] < 0 < result.metrics["benchmark/val/oracle/sharpe"]
    tags = tracked.client.get_run(result.run_id).data.tags
    assert "ensemble on" in tags[HARM_TAG] and tags["convopt.no_edge"] == "true"
