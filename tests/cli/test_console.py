"""What `convopt train` prints, end to end in a subprocess: our lines, not MLflow's INFO logs or bars."""
from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest
from mlflow.tracking import MlflowClient

TINY = ("data.source=synthetic:n_bars=3000,seed=1,signal_ic=0.1,env.n_envs=4,ppo.n_steps=64,ppo.batch_size=64,"
        "ppo.n_epochs=1,ppo.net_arch=16,env.window=8,env.episode_length=64,run.total_timesteps=1024,"
        "run.checkpoint_freq=512,monitoring_window=4")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("console")
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_LOGGING_LEVEL", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_RUN_ID",
                        "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")}
    env["MLFLOW_TRACKING_URI"] = uri
    proc = subprocess.run([sys.executable, "-m", "convopt_mlflow.cli", "train", "--quiet", "--set", TINY,
                           "--set", "base_learning_rate=1e-4"],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("convopt").experiment_id])
    return proc, client, run


def test_no_mlflow_info_lines_or_progress_bars(trained, monkeypatch):
    proc, client, run = trained
    output = proc.stdout + proc.stderr
    assert "Validating input example against model signature" not in output
    assert "INFO mlflow" not in output and "Downloading artifacts" not in output
    # the signature and input example are still logged with the model
    # through the environment, not mlflow.set_tracking_uri: a process-wide URI would outlive this test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    info = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
    assert info.signature is not None and info.saved_input_example_info is not None

def test_summary_shows_shipped_step_and_full_url(trained):
    proc, _, run = trained
    assert "shipped: the weights of step " in proc.stderr
    assert f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" in proc.stderr
