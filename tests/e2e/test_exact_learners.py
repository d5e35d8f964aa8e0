"""The `counterfactual` and `direct` presets end to end: `mlflow run .`, the A/B module, the registry, `convopt predict`.

Tiny budgets on a small planted market; real MLflow (sqlite) read back through MlflowClient,
real Optuna storage, the real `convopt` CLI.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from convopt_mlflow import cli
from convopt_mlflow.tracking.registry import register_verified_model

from .test_mlproject import ROOT, _all_runs, _env, _mlflow_cli

DATA = "synthetic:n_bars=3000,seed=1,signal_ic=0.1"
#: 1,024 steps: PPO 4 envs x 64 per rollout; the direct learner 8 windows of 32 bars per batch.
TINY = ("env.n_envs=4,ppo.n_steps=64,ppo.batch_size=64,ppo.n_epochs=2,ppo.net_arch=16,env.window=8,"
        "env.episode_length=64,direct.window=32,direct.batch_windows=8,direct.passes=2,"
        "run.eval_freq=512,run.checkpoint_freq=512,run.progress_bar=false")


@pytest.mark.parametrize("preset", ["counterfactual", "direct"])
def test_mlflow_run_registers_and_predicts(preset, tmp_path, monkeypatch, mlflow_template):
    uri = mlflow_template.copy_to(tmp_path)
    proc = subprocess.run(
        [*_mlflow_cli(), "run", str(ROOT), "--env-manager", "local", "-P", f"preset={preset}",
         "-P", "total_timesteps=1024", "-P", f"data={DATA}", "-P", "n_envs=4", "-P", f"overrides={TINY}"],
        cwd=tmp_path, env=_env(uri, CONVOPT_CHECKPOINT_ROOT=str(tmp_path / "ckpt")),
        capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    (run,) = _all_runs(client)
    assert run.info.status == "FINISHED" and run.data.tags["convopt.preset"] == preset
    assert run.data.params[f"{preset}.enabled"] == "True" and "convopt.degraded" not in run.data.tags
    assert "backtest/test/oracle_fraction" in run.data.metrics
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    version = register_verified_model(f"runs:/{run.info.run_id}/model", f"convopt-{preset}")
    client.set_registered_model_alias(f"convopt-{preset}", "challenger", version.version)
    out = tmp_path / "positions.csv"
    assert cli.main(["predict", "--model", f"models:/convopt-{preset}@challenger", "--data", DATA,
                     "--out", str(out)]) == 0
    ready = pd.read_csv(out).query("ready")
    assert len(ready) > 2000 and set(ready["position"]) <= {-1.0, 0.0, 1.0}


def test_the_ab_module_compares_both_presets_with_the_baseline(tmp_path, monkeypatch, capsys, mlflow_template):
    uri = mlflow_template.copy_to(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("CONVOPT_CHECKPOINT_ROOT", str(tmp_path / "ckpt"))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    code = cli.main(["ab-test", "--arms", "baseline,counterfactual,direct", "--seeds", "2", "--total-timesteps",
                     "1024", "--data", DATA, "--study", "exact", "--storage", f"sqlite:///{tmp_path}/optuna.db",
                     "--set", TINY])
    assert code == 0, capsys.readouterr().err
    client = MlflowClient(tracking_uri=uri)
    runs = _all_runs(client)
    (parent,) = [r for r in runs if r.data.tags.get("convopt.role") == "ab-parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted((c.data.tags["convopt.arm"], c.data.tags["convopt.seed"]) for c in children) == [
        (arm, seed) for arm in ("baseline", "counterfactual", "direct") for seed in ("0", "1")]
    assert {c.info.status for c in children} == {"FINISHED"}
    for c in children:
        arm = c.data.tags["convopt.arm"]
        if arm != "baseline":
            assert c.data.params[f"{arm}.enabled"] == "True"
        assert "backtest/test/sharpe" in c.data.metrics
    report = json.loads(Path(client.download_artifacts(parent.info.run_id, "ab/report.json", str(tmp_path))).read_text())
    assert report["cells"] == {"planned": 6, "complete": 6, "failed": 0}
    assert sorted(c["arm"] for c in report["comparisons"]) == ["counterfactual", "direct"]
