"""The ensemble pyfunc: logged into an existing run on a real sqlite store, loaded back,
deciding exactly like the SB3 policy it came from, and refusing tampered weights."""
from __future__ import annotations

import os

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.entities import LoggedModelStatus
from stable_baselines3 import PPO

from convopt_mlflow.components.combine import combine_probabilities
from convopt_mlflow.data import compute_features, generate_market
from convopt_mlflow.env import MarketCore, TradingVecEnv, deterministic_positions
from convopt_mlflow.errors import ConfigError, DataValidationError, RunNotFoundError
from convopt_mlflow.tracking.model import (
    ModelIntegrityError,
    build_policy,
    log_policy_model,
    policy_spec,
    save_policy_model,
)

WINDOW, VOL_WINDOW, N_BARS = 4, 4, 300
PROBS = ["prob_short", "prob_flat", "prob_long"]


@pytest.fixture(scope="module")
def market():
    frame = generate_market(N_BARS, seed=0, signal_ic=0.1).frame  # OHLCV + feat_signal
    features = compute_features(frame, vol_window=VOL_WINDOW)
    core = MarketCore(features.values, features.log_returns, window=WINDOW, episode_length=32,
                      cost_bps=1.0, warmup=features.warmup)
    return frame, features, core


def _ppo(core: MarketCore, seed: int, steps: int) -> PPO:
    env = TradingVecEnv(core, n_envs=4, seed=seed)
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=2, seed=seed, device="cpu",
                policy_kwargs={"net_arch": [8]})
    if steps:
        model.learn(steps)
    return model


@pytest.fixture(scope="module")
def trained(market):
    return _ppo(market[2], seed=0, steps=256)


def _config(features, **override):
    config = {"window": WINDOW, "observation": "window", "vol_window": VOL_WINDOW, "cost_bps": 1.0, "long_only": False,
              "feature_names": features.names}
    return config | override


@pytest.fixture(scope="module")
def logged(store, market, trained):
    """One model logged into a RUNNING run of a non-default experiment (store: conftest.py)."""
    frame, features, _ = market
    client = store.client
    experiment = client.create_experiment("model-test")
    run = client.create_run(experiment)
    uri = log_policy_model(run.info.run_id, members=[trained.policy.state_dict()], spec=policy_spec(trained),
                           feature_config=_config(features), input_example=frame.iloc[:40])
    return client, run, uri


def test_logging_prints_no_progress_bars_and_marks_the_model_ready(store, market, trained, capfd, monkeypatch):
    """The run's own summary must come last: MLflow's input-example validation downloads
    the model and, unless told not to, draws two "Downloading artifacts" bars."""
    # unset, as in a fresh process (an in-process `convopt` call earlier in the session sets it)
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    frame, features, _ = market
    run = store.client.create_run(store.client.create_experiment("model-quiet"))
    uri = log_policy_model(run.info.run_id, members=[trained.policy.state_dict()], spec=policy_spec(trained),
                           feature_config=_config(features), input_example=frame.iloc[:40])
    out, err = capfd.readouterr()
    assert "Downloading artifacts" not in out + err
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ  # restored
    assert store.client.get_logged_model(uri.removeprefix("models:/")).status == LoggedModelStatus.READY


def test_spec_rebuilds_the_same_network(market, trained):
    spec = policy_spec(trained)
    assert spec == {"obs_size": WINDOW * 6 + 1, "n_actions": 3, "net_arch": {"pi": [8], "vf": [8]},
                    "activation": "tanh"}
    rebuilt = build_policy(spec)
    rebuilt.load_state_dict(trained.policy.state_dict())  # strict: same keys and shapes
    obs = torch.from_numpy(market[2].observe(np.arange(40, 60), np.zeros(20)))
    with torch.no_grad():
        expected = trained.policy.get_distribution(obs).distribution.probs
        assert torch.equal(rebuilt.get_distribution(obs).distribution.probs, expected)



def test_a_policy_rebuilt_for_inference_builds_no_torch_optimizer():
    """Rebuilding a policy (an ensemble's parent, a loaded model) constructs no torch optimizer: the
    first one in a process imports torch._dynamo and sympy, 1.2-1.5 s of CPU, for nothing that steps."""
    import subprocess
    import sys

    code = ("import sys\nfrom convopt_mlflow.tracking.model import build_policy\n"
            "p = build_policy({'obs_size': 9, 'n_actions': 3, 'net_arch': {'pi': [8], 'vf': [8]}, 'activation': 'tanh'})\n"
            "assert not hasattr(p.optimizer, 'step'), type(p.optimizer)\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"

def test_logging_leaves_the_run_and_the_fluent_state_alone(logged):
    client, run, uri = logged
    after = client.get_run(run.info.run_id).info
    assert (after.status, after.end_time) == ("RUNNING", None)
    assert mlflow.active_run() is None
    assert uri.startswith("models:/")
    model = client.get_logged_model(uri.removeprefix("models:/"))
    assert (model.experiment_id, model.source_run_id, model.name) == (run.info.experiment_id, run.info.run_id, "model")
    inputs = mlflow.models.get_model_info(uri).signature.inputs.to_dict()
    assert [(c["name"], c["type"], c["required"]) for c in inputs] == [
        ("timestamp", "datetime", False),  # or the DatetimeIndex
        ("open", "double", True), ("high", "double", True), ("low", "double", True), ("close", "double", True),
        ("volume", "double", True),  # volume_z reads it
        ("feat_signal", "double", True),
    ]
    with pytest.raises(RunNotFoundError, match="not found"):
        log_policy_model("0" * 32, members=[], spec={}, feature_config={}, input_example=None)


def test_loaded_model_decides_like_the_sb3_policy(logged, market, trained):
    _, run, uri = logged
    frame, features, core = market
    out = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").predict(frame)

    assert list(out.columns) == ["position", *PROBS, "agreement", "ready"]
    assert len(out) == N_BARS and out.index.equals(frame.index)
    first = features.warmup + WINDOW - 1  # 23 + 3: the first bar with a full valid window
    assert first == 26
    np.testing.assert_array_equal(out["ready"].to_numpy(), np.arange(N_BARS) >= first)
    warm = out.iloc[:first]
    assert (warm["position"] == 0.0).all()
    assert warm[[*PROBS, "agreement"]].map(lambda v: v is None).all().all()  # None: JSON null, not NaN
    ready = out.iloc[first:]
    assert set(ready["position"]) <= {-1.0, 0.0, 1.0}
    np.testing.assert_allclose(ready[PROBS].astype(float).sum(axis=1), 1.0, atol=1e-6)
    assert (ready["agreement"] == 1.0).all()  # one member always agrees with itself

    path = deterministic_positions(core, lambda obs: trained.predict(obs, deterministic=True)[0], (0, N_BARS))
    np.testing.assert_array_equal(path.bars, np.arange(first, N_BARS - 1))
    np.testing.assert_array_equal(out["position"].to_numpy()[path.bars], path.positions)

    # Same answer from the returned URI, and with the timestamps in a column.
    again = mlflow.pyfunc.load_model(uri).predict(frame.reset_index())
    pd.testing.assert_frame_equal(again.set_axis(frame.index), out)


def test_tampered_member_is_refused(logged, tmp_path):
    _, run, _ = logged
    local = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model", dst_path=str(tmp_path))
    mlflow.pyfunc.load_model(local)  # intact: loads
    member = tmp_path / "model" / "artifacts" / "member_0.pt"
    data = bytearray(member.read_bytes())
    data[len(data) // 2] ^= 0x01
    member.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256 mismatch for ensemble member 'member_0.pt'"):
        mlflow.pyfunc.load_model(local)


def test_ensemble_averages_member_probabilities(tmp_path, market, trained):
    frame, features, core = market
    members = [trained.policy, _ppo(core, seed=1, steps=0).policy]
    save_policy_model(tmp_path / "ensemble", members=[p.state_dict() for p in members], spec=policy_spec(trained),
                      feature_config=_config(features), input_example=frame.iloc[:40])
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "ensemble"))
    out = loaded.predict(frame)

    held, first = 0.0, 26
    with torch.no_grad():
        for t in range(first, N_BARS):
            obs = torch.from_numpy(core.observe(np.array([t]), np.array([held])))
            expected = sum(p.get_distribution(obs).distribution.probs for p in members)[0].numpy() / 2
            np.testing.assert_allclose(out[PROBS].to_numpy(float)[t], expected, rtol=0, atol=1e-6)
            held = out["position"].iloc[t]
            assert held == [-1.0, 0.0, 1.0][int(np.argmax(expected))]

    # The model code itself reads columns in any case and the timestamps from a column.
    raw = frame.reset_index().rename(columns=lambda c: c.upper()).rename(columns={"TIMESTAMP": "Date"})
    direct = loaded.unwrap_python_model().predict(None, raw)
    pd.testing.assert_frame_equal(direct.set_axis(frame.index), out)


def test_inconsistent_inputs_are_refused(tmp_path, market, trained):
    frame, features, _ = market
    kwargs = {"members": [trained.policy.state_dict()], "spec": policy_spec(trained), "input_example": frame.iloc[:40]}
    with pytest.raises(ConfigError, match="5 bars of 6 features"):
        save_policy_model(tmp_path / "a", feature_config=_config(features, window=5), **kwargs)
    with pytest.raises(ConfigError, match="3 actions"):
        save_policy_model(tmp_path / "b", feature_config=_config(features, long_only=True), **kwargs)
    config = _config(features)
    with pytest.raises(ConfigError, match="input example yields features"):
        save_policy_model(tmp_path / "d", feature_config=config, **(kwargs | {"input_example": frame.iloc[:40, :5]}))
    with pytest.raises(ConfigError, match="needs at least 27 bars"):
        save_policy_model(tmp_path / "e", feature_config=config, **(kwargs | {"input_example": frame.iloc[:26]}))
    assert not any((tmp_path / name).exists() for name in "abde")

    save_policy_model(tmp_path / "c", feature_config=_config(features), **kwargs)
    model = mlflow.pyfunc.load_model(str(tmp_path / "c")).unwrap_python_model()
    with pytest.raises(DataValidationError, match="trained on"):
        model.predict(None, frame.drop(columns="feat_signal"))
    with pytest.raises(DataValidationError, match="too few bars: a decision needs at least 27"):
        model.predict(None, frame.iloc[:26])


@pytest.mark.parametrize("combination", [{"method": "weighted", "weights": [0.7, 0.3]},
                                         {"method": "majority_vote", "weights": [0.5, 0.5]}])
def test_stored_combination_decides_the_walk(tmp_path, market, trained, combination):
    frame, features, core = market
    members = [trained.policy, _ppo(core, seed=1, steps=0).policy]
    save_policy_model(tmp_path / "m", members=[p.state_dict() for p in members], spec=policy_spec(trained),
                      feature_config=_config(features), input_example=frame.iloc[:40], combination=combination)
    out = mlflow.pyfunc.load_model(str(tmp_path / "m")).predict(frame)

    held = 0.0
    with torch.no_grad():
        for t in range(26, N_BARS):
            obs = torch.from_numpy(core.observe(np.array([t]), np.array([held])))
            probs = np.stack([p.get_distribution(obs).distribution.probs.numpy() for p in members])
            actions, mean, agreement = combine_probabilities(probs, **combination)
            np.testing.assert_allclose(out[PROBS].to_numpy(float)[t], mean[0], atol=1e-6)
            assert out["agreement"].iloc[t] == pytest.approx(agreement[0])
            held = out["position"].iloc[t]
            assert held == [-1.0, 0.0, 1.0][actions[0]]
    with pytest.raises(ConfigError, match="sum to 1"):
        save_policy_model(tmp_path / "bad", members=[p.state_dict() for p in members], spec=policy_spec(trained),
                          feature_config=_config(features), input_example=frame.iloc[:40],
                          combination={"method": "weighted", "weights": [0.7, 0.7]})


def test_logging_skips_mlflows_installed_package_scan_and_keeps_signature_and_example(store, market, trained,
                                                                                      monkeypatch):
    """Our requirements are pinned to this environment, so MLflow's mismatch check (a scan of
    every installed distribution, ~1.5 s per process) is skipped while logging, and only then;
    the signature and the input example are still stored."""
    import mlflow.pyfunc
    import mlflow.utils.environment
    from mlflow.utils import requirements_utils

    frame, features, _ = market
    checks = (mlflow.utils.environment.warn_dependency_requirement_mismatches,
              mlflow.pyfunc.warn_dependency_requirement_mismatches)
    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)  # as in a fresh process
    run = store.client.create_run(store.client.create_experiment("model-no-scan"))
    uri = log_policy_model(run.info.run_id, members=[trained.policy.state_dict()], spec=policy_spec(trained),
                           feature_config=_config(features), input_example=frame.iloc[:40])
    assert requirements_utils._MODULES_TO_PACKAGES is None  # the scan never ran
    assert (mlflow.utils.environment.warn_dependency_requirement_mismatches,
            mlflow.pyfunc.warn_dependency_requirement_mismatches) == checks  # put back
    info = mlflow.models.get_model_info(uri)
    assert info.signature is not None and "close" in info.signature.inputs.input_names()
    assert info.saved_input_example_info is not None
