"""An A/B arm with ``ensemble_size > 1``: each of its trials is an ensemble run (members as nested runs),
scored as an ensemble, next to a single-model arm of the same preset (the direct learner, `regime`)."""
import json
from pathlib import Path

from mlflow.tracking import MlflowClient

from convopt_mlflow import cli

from .conftest import TINY

REGIME_MARKET = "synthetic:n_bars=3000,seed=2,signal_ic=0.1,signal_regimes=1:-1:0"
TINY_REGIME = f"{TINY},direct.window=32,direct.batch_windows=8"


def test_an_ensemble_arm_trains_each_trial_as_an_ensemble_run(tmp_path, mlflow_uri, capsys):
    code = cli.main(["ab-test", "--arms", "regime,regime:ensemble_size=2,ensemble.workers=1", "--seeds", "2",
                     "--study", "ens-arm", "--storage", f"sqlite:///{tmp_path}/optuna.db", "--total-timesteps", "1024",
                     "--data", REGIME_MARKET, "--set", TINY_REGIME, "--no-register"])
    err = capsys.readouterr().err
    assert code == 0, err
    client = MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [r for r in runs if r.data.tags.get("convopt.role") == "ab-parent"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted((t.data.tags["convopt.arm"], t.data.tags["convopt.seed"]) for t in trials) == [
        ("regime", "0"), ("regime", "1"), ("regime:ensemble_size=2,ensemble.workers=1", "0"),
        ("regime:ensemble_size=2,ensemble.workers=1", "1")]
    assert {t.info.status for t in trials} == {"FINISHED"}
    assert {t.data.tags["convopt.role"] for t in trials} == {"ab-trial"}
    pnl_bars = set()
    for trial in trials:
        metrics, ensemble = trial.data.metrics, "ensemble_size" in trial.data.tags["convopt.arm"]
        members = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == trial.info.run_id]
        assert len(members) == (2 if ensemble else 0)
        assert all(m.data.tags["convopt.role"] == "ensemble-member" for m in members)
        assert all(m.info.status == "FINISHED" for m in members)
        assert ("convopt.ensemble.method" in trial.data.tags) == ensemble
        assert {"backtest/test/sharpe", "ab/wall_time_s"} <= set(metrics)
        # per-regime values of the policy (the combination, for an ensemble) and of the true oracle
        assert any(k.startswith("backtest/test/regime/") and k.endswith("/sharpe") for k in metrics)
        assert any(k.startswith("benchmark/test/oracle/regime/") and k.endswith("/sharpe") for k in metrics)
        path = client.download_artifacts(trial.info.run_id, "ab/test_pnl.json", str(tmp_path / trial.info.run_id))
        pnl_bars.add(len(json.loads(Path(path).read_text())["net_log_pnl"]))
    assert len(pnl_bars) == 1  # the ensemble's test PnL is on the single runs' decision bars
    report = json.loads(Path(client.download_artifacts(parent.info.run_id, "ab/report.json", str(tmp_path))).read_text())
    assert report["seeds_compared"] == [0, 1] and len(report["comparisons"]) == 1
