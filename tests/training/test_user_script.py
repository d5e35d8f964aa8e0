"""The README's "your own SB3 script" example runs against a real MLflow store."""
import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]


def test_own_sb3_script_logs_monitor_scheduler_and_tags(tmp_path, mlflow_template):
    uri = mlflow_template.copy_to(tmp_path)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("MLFLOW_RUN_ID", None)
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "own_sb3_script.py"), "--timesteps", "8192"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs(["0"])
    assert run.data.tags["convopt.version"]  # tagged by the plugin's run context provider
    lr = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "lr")}
    sb3_lr = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/learning_rate")}
    assert lr and len(set(lr.values())) > 1  # the scheduler drives SB3's optimizer
    assert set(sb3_lr.values()) == set(lr.values())
    assert client.get_metric_history(run.info.run_id, "convergence/stability_score")
    assert client.get_metric_history(run.info.run_id, "convergence/grad_norm")
