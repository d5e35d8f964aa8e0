"""The recurrent (LSTM) policy: trained with sb3-contrib's RecurrentPPO, its state carried through the
backtest and through one pyfunc call's rows, logged in a model format that says so, verified on load,
resumed after a kill, and refused where it cannot run.

Real RecurrentPPO at tiny sizes (an 8-unit LSTM, 2,048 steps) on a synthetic market, a real sqlite
MLflow store read back through MlflowClient, the verified loader and the real ``convopt`` CLI.
"""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.models import Model

from convopt_mlflow import cli, load_model
from convopt_mlflow.config import build_config
from convopt_mlflow.errors import ConfigError
from convopt_mlflow.evaluation import trading_metrics
from convopt_mlflow.tracking.integrity import verify_artifact
from convopt_mlflow.tracking.model import FORMAT_RECURRENT, ModelIntegrityError
from convopt_mlflow.tracking.registry import resolve_model
from convopt_mlflow.training.coordinator import train
from convopt_mlflow.training.recurrent import ConvoptRecurrentPPO, recurrent_positions
from convopt_mlflow.training.setup import load_market, make_env, make_model, next_log_returns

from .conftest import SigtermAt, TINY_RUN

TINY_LSTM = {**TINY_RUN, "recurrent.enabled": "true", "recurrent.lstm_hidden_size": "8"}


def _cfg(**overrides: str):
    return build_config("baseline", {**TINY_LSTM, **{k.replace("__", "."): str(v) for k, v in overrides.items()}})


def test_the_backtest_carries_the_lstm_state_like_sb3_contribs_own_predict():
    """The walk's positions are those of RecurrentPPO.predict stepped bar by bar with its state (a
    policy that forgot its state between bars would choose otherwise)."""
    cfg = _cfg()
    market = load_market(cfg)
    model = make_model(cfg, make_env(cfg, market))
    assert isinstance(model, ConvoptRecurrentPPO) and model.policy.lstm_actor.hidden_size == 8
    model.learn(512)
    core, (start, stop) = market.cores["val"], market.splits.val
    path = recurrent_positions(model.policy, core, (start, stop))
    levels, state, held, expected, memoryless = core.position_levels, None, 1.0, [], []
    for i, bar in enumerate(path.bars):
        obs = core.observe(np.array([bar]), np.array([held]))
        action, state = model.predict(obs, state=state, episode_start=np.array([i == 0]), deterministic=True)
        fresh, _ = model.predict(obs, state=None, episode_start=np.array([True]), deterministic=True)
        memoryless.append(levels[int(fresh[0])] != levels[int(action[0])])
        held = float(levels[int(action[0])])
        expected.append(held)
    np.testing.assert_array_equal(path.positions, expected)
    assert any(memoryless)  # the state mattered somewhere on this split


@pytest.fixture(scope="module")
def recurrent_run(tracked):
    """``(config, result)``: one finished recurrent run whose model the read-only tests below inspect."""
    cfg = _cfg()
    return cfg, train(cfg, preset="baseline", checkpoint_root=tracked.checkpoint_root("recurrent"))


def test_trains_logs_a_recurrent_model_and_predict_gives_the_backtest_positions(tracked, recurrent_run, tmp_path):
    cfg, result = recurrent_run
    assert result.status == "FINISHED"
    run = tracked.client.get_run(result.run_id)
    assert run.data.params["recurrent.enabled"] == "True" and run.data.params["recurrent.lstm_hidden_size"] == "8"
    assert not tracked.nonfinite_values(result.run_id)
    # the model format says so: policy.json and the MLmodel metadata
    local = Path(mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/model", dst_path=str(tmp_path / "m")))
    description = json.loads((local / "artifacts" / "policy.json").read_text())
    assert description["format"] == FORMAT_RECURRENT
    assert description["spec"]["recurrent"] == {"lstm_hidden_size": 8, "n_lstm_layers": 1, "shared_lstm": False,
                                                "enable_critic_lstm": True}
    assert Model.load(str(local)).metadata["convopt_policy"] == {
        "kind": "recurrent-lstm", "lstm_hidden_size": 8, "n_lstm_layers": 1, "shared_lstm": False,
        "enable_critic_lstm": True}
    assert any(r.startswith("sb3-contrib==") for r in (local / "requirements.txt").read_text().split())
    # loaded through the verified loader, its policy walks the test split as the run's backtest did
    model = load_model(f"runs:/{result.run_id}/model")
    policy = model.unwrap_python_model().policies[0]
    market = load_market(cfg)
    core, (start, stop) = market.cores["test"], market.splits.test
    path = recurrent_positions(policy, core, (start, stop))
    sharpe = trading_metrics(path.positions, next_log_returns(market, path.bars), cost_bps=cfg.env.cost_bps,
                             periods_per_year=market.bars.periods_per_year)["sharpe"]
    assert sharpe == pytest.approx(run.data.metrics["backtest/test/sharpe"], rel=1e-9, abs=1e-12)
    # predict on the split's bars (with the bars of feature warm-up and window before them): one call,
    # the rows consecutive bars, the state fresh at the first decidable row = the split's first decision
    first = core.first_observable_bar  # feature warm-up + window - 1 bars before a decision
    frame = market.bars.frame.iloc[int(path.bars[0]) - first:stop]
    out = model.predict(frame)
    assert not out["ready"].iloc[:first].any() and out["ready"].iloc[first:].all()
    np.testing.assert_array_equal(out["position"].to_numpy()[first:first + path.bars.size], path.positions)
    assert path.bars.size > 200
    # rows are one sequence per call: the same call twice gives the same answer (state starts fresh)
    np.testing.assert_array_equal(model.predict(frame)["position"].to_numpy(), out["position"].to_numpy())
    # and the CLI predicts with it
    table = tmp_path / "positions.csv"
    assert cli.main(["predict", "--model", f"runs:/{result.run_id}/model", "--data", cfg.data.source,
                     "--out", str(table)]) == 0


def test_a_tampered_recurrent_model_is_refused(recurrent_run, tmp_path):
    """Integrity as for any model: policy.json's member hash, and the run's record of every file
    (a downloaded copy is changed; the stored model stays as it was)."""
    _, result = recurrent_run
    assert result.status == "FINISHED"
    uri = f"runs:/{result.run_id}/model"
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "m")))
    verify_artifact(local, resolve_model(uri).files, "untouched")  # passes before the change
    member = local / "artifacts" / "member_0.pt"
    state = torch.load(member, weights_only=True)
    key = next(k for k in state if k.startswith("lstm_actor.weight"))
    state[key] = state[key] + 1.0
    torch.save(state, member)
    with pytest.raises(ModelIntegrityError, match="member_0.pt"):
        verify_artifact(local, resolve_model(uri).files, "tampered")  # the verified loader's check
    with pytest.raises(ModelIntegrityError, match="sha256 mismatch"):
        mlflow.pyfunc.load_model(str(local))  # policy.json's own record


def test_a_killed_recurrent_run_resumes(tracked):
    cfg = _cfg(run__checkpoint_freq="0")
    first = train(cfg, preset="baseline", extra_callbacks=[SigtermAt(1024)],
                  checkpoint_root=tracked.checkpoint_root("recurrent_resume"))
    assert first.status == "KILLED"
    resumed = train(cfg, resume=first.run_id)
    assert resumed.status == "FINISHED" and tracked.status(first.run_id) == "FINISHED"
    steps = sorted(p.step for p in tracked.client.get_metric_history(first.run_id, "train/loss"))
    assert len(steps) == len(set(steps))  # no step logged twice
    assert steps[:4] == [256, 512, 768, 1024] and len([s for s in steps if s > 1024]) >= 3  # learning went on
    uri = tracked.client.get_run(first.run_id).data.tags["convopt.model_uri"]
    assert load_model(uri).unwrap_python_model().recurrent


def test_the_lr_preset_runs_its_scheduler_and_monitor_on_a_recurrent_policy(tracked):
    """The monitor's parameter watch probes the policy's hidden units and logits (through the LSTM)."""
    cfg = build_config("lr", {**TINY_LSTM, "run.total_timesteps": "1024", "run.eval_freq": "512"})
    result = train(cfg, preset="lr", checkpoint_root=tracked.checkpoint_root("recurrent_lr"))
    assert result.status == "FINISHED"
    metrics = tracked.client.get_run(result.run_id).data.metrics
    assert "convergence/grad_norm" in metrics and "lr" in metrics
    assert any(k.endswith("logit_range") for k in metrics), sorted(metrics)
    assert not tracked.nonfinite_values(result.run_id)


@pytest.mark.parametrize("override, needle", [
    ({"counterfactual.enabled": "true"}, "recurrent.enabled=true with counterfactual.enabled"),
    ({"direct.enabled": "true"}, "recurrent.enabled=true with direct.enabled"),
    ({"replay_enabled": "true"}, "recurrent.enabled=true with replay_enabled"),
    ({"ensemble_size": "2"}, "recurrent.enabled=true with ensemble_size>1"),
    ({"recurrent.lstm_hidden_size": "0"}, "recurrent.lstm_hidden_size"),
])
def test_impossible_recurrent_configs_are_refused(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace(">", ">")):
        build_config("baseline", {**TINY_LSTM, **override})


def test_a_bad_recurrent_combination_exits_2_with_one_message_before_any_run(tracked, capsys):
    argv = ["train", "--preset", "baseline", "--quiet", "--experiment", "recurrent-bad",
            "--set", "recurrent.enabled=true", "--set", "counterfactual.enabled=true"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("recurrent.enabled=true with counterfactual.enabled") == 1 and "Traceback" not in err
    assert tracked.client.get_experiment_by_name("recurrent-bad") is None
