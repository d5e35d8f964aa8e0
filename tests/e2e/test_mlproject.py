"""`mlflow run . --env-manager local` end to end, read back with MlflowClient."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import yaml
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from convopt_mlflow.config import OptimizedTrainingConfig
from convopt_mlflow.data import load_bars

ROOT = Path(__file__).resolve().parents[2]


def _env(uri: str, **extra: str) -> dict[str, str]:
    """The test's environment, with this interpreter's scripts (convopt, mlflow) first on PATH."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_RUN_ID", None)
    return env


def _mlflow_cli() -> list[str]:
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    return [exe] if exe else [sys.executable, "-m", "mlflow"]


def _all_runs(client):
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_mlproject_defaults_match_the_config():
    spec = yaml.safe_load((ROOT / "MLproject").read_text())
    params = spec["entry_points"]["main"]["parameters"]
    cfg = OptimizedTrainingConfig()
    assert params["preset"]["default"] == "baseline"
    assert params["data"]["default"] == cfg.data.source == "eurusd-1h"
    assert params["total_timesteps"]["default"] == cfg.run.total_timesteps
    assert params["seed"]["default"] == cfg.run.seed
    assert params["n_envs"]["default"] == cfg.env.n_envs
    assert params["resume"]["default"] == "" and params["overrides"]["default"] == ""


def test_mlflow_run_trains_on_eurusd_and_logs_a_loadable_model(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = _env(uri, CONVOPT_CHECKPOINT_ROOT=str(tmp_path / "ckpt"))
    overrides = "ppo.n_steps=64,ppo.batch_size=64,ppo.n_epochs=2,ppo.net_arch=16,run.progress_bar=false"
    proc = subprocess.run(
        [*_mlflow_cli(), "run", str(ROOT), "--env-manager", "local", "-P", "total_timesteps=1024",
         "-P", "n_envs=4", "-P", f"overrides={overrides}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    (run,) = _all_runs(client)  # `convopt` once the package's experiment provider is installed, else Default
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.entryPoint"] == "main"
    assert run.data.params["run.total_timesteps"] == "1024" and run.data.params["env.n_envs"] == "4"
    assert run.inputs.dataset_inputs[0].dataset.name == "eurusd-1h"
    assert client.get_metric_history(run.info.run_id, "train/loss")
    assert "backtest/test/sharpe" in run.data.metrics
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
        bars = load_bars("eurusd-1h").frame.iloc[-300:].reset_index()
        out = model.predict(bars)
    finally:
        mlflow.set_tracking_uri(None)
    assert len(out) == 300 and out["ready"].sum() > 100


def test_mlflow_run_bad_param_fails_with_one_message(tmp_path, mlflow_template):
    uri = mlflow_template.copy_to(tmp_path)  # (the first test trains in a folder with no store yet)
    env = _env(uri)
    proc = subprocess.run([*_mlflow_cli(), "run", str(ROOT), "--env-manager", "local", "-P", "preset=nope"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert proc.stderr.count("convopt: error: unknown preset 'nope'") == 1
    _assert_discarded(MlflowClient(tracking_uri=uri), "unknown preset 'nope'")


def _assert_discarded(client, reason):
    """The run `mlflow run` created for a refused input is neither left RUNNING nor left behind."""
    assert not _all_runs(client)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments, run_view_type=ViewType.ALL)
    assert run.info.status == "FAILED" and run.info.lifecycle_stage == "deleted"
    assert reason in run.data.tags["convopt.failure_reason"]


def test_mlflow_run_unknown_param_lists_the_entry_points_parameters(tmp_path, mlflow_template):
    uri = mlflow_template.copy_to(tmp_path)
    proc = subprocess.run([*_mlflow_cli(), "run", str(ROOT), "--env-manager", "local", "-e", "data_check",
                           "-P", "nosuchparam=1"], cwd=tmp_path, env=_env(uri), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode != 0  # MLflow's own exit code for a failed project run is 1
    assert ("convopt: error: unknown parameter(s) nosuchparam for entry point 'data_check'; "
            "its parameters are: source") in proc.stderr
    assert "usage: convopt" not in proc.stderr
    _assert_discarded(MlflowClient(tracking_uri=uri), "nosuchparam")
