"""A tiny A/B study end to end through `mlflow run . -e ab_test`, then resumed: no cell trains twice."""
import json
import subprocess
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from convopt_mlflow import cli
from convopt_mlflow.experiments.abtest import cell_counts, completed_trials, open_study, run_cells
from convopt_mlflow.experiments.session import spec_from_args
from convopt_mlflow.experiments.storage import get_storage
from convopt_mlflow.tracking import open_run

from .conftest import DATA, ROOT, TINY, cli_env, executable

ARGS = {"arms": "baseline,lr", "seeds": "2", "total_timesteps": "1024", "data": DATA, "study": "tiny",
        "overrides": TINY}


def test_mlflow_run_ab_test_logs_parent_children_and_report_then_resumes(tmp_path, mlflow_uri, capsys):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    params = [x for k, v in {**ARGS, "storage": storage}.items() for x in ("-P", f"{k}={v}")]
    proc = subprocess.run([executable("mlflow"), "run", str(ROOT), "-e", "ab_test", "--env-manager", "local", *params],
                          cwd=tmp_path, env=cli_env(mlflow_uri, CONVOPT_CHECKPOINT_ROOT=str(tmp_path / "ckpt")),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [r for r in runs if r.data.tags.get("convopt.role") == "ab-parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and parent.data.tags["mlflow.project.entryPoint"] == "ab_test"
    assert sorted((c.data.tags["convopt.arm"], c.data.tags["convopt.seed"]) for c in children) == [
        ("baseline", "0"), ("baseline", "1"), ("lr", "0"), ("lr", "1")]
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["convopt.role"] for c in children} == {"ab-trial"}
    assert {c.data.tags["convopt.study"] for c in children} == {"tiny"}
    assert all("ab/eval_auc" in c.data.metrics and "backtest/test/sharpe" in c.data.metrics for c in children)
    metrics = parent.data.metrics
    # the verdict is decided on the test split by default (validation chose each trial's checkpoint)
    assert parent.data.params["metric"] == "backtest/test/sharpe"
    for arm in ("baseline", "lr"):
        test_sharpes = [c.data.metrics["backtest/test/sharpe"] for c in children if c.data.tags["convopt.arm"] == arm]
        assert metrics[f"ab/{arm}/mean"] == pytest.approx(sum(test_sharpes) / len(test_sharpes), rel=1e-9)
    for key in ("ab/baseline/mean", "ab/lr/mean", "ab/lr/p_value", "ab/lr/hedges_g", "ab/lr/p_improvement", "ab/mde"):
        assert key in metrics, key
    artifacts = {f.path for f in client.list_artifacts(parent.info.run_id, "ab")}
    assert {"ab/report.json", "ab/report.md", "ab/report.html"} <= artifacts
    report = json.loads(Path(client.download_artifacts(parent.info.run_id, "ab/report.json", str(tmp_path))).read_text())
    assert report["cells"] == {"planned": 4, "complete": 4, "failed": 0} and report["seeds_compared"] == [0, 1]
    assert parent.data.params["on_failure"] == "refuse" and report["failures"]["rate"] == {"baseline": 0.0, "lr": 0.0}
    assert "baseline" in report["verdict"] and ("detects" in report["verdict"] or "beats" in report["verdict"])
    if report["winner"] is None:  # nothing significant: nothing registered, the reason (with the MDE) on the parent
        assert parent.data.tags["convopt.registration_skipped"].startswith("no significant winner")
        assert "detects" in parent.data.tags["convopt.registration_skipped"]
        assert not client.search_registered_models()
    else:
        assert parent.data.tags["convopt.registered_version"] == "1"
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert {t.user_attrs["mlflow_run_id"] for t in study.trials} == {c.info.run_id for c in children}
    assert sorted(c.info.run_name for c in children) == ["ab-baseline-s0", "ab-baseline-s1", "ab-lr-s0", "ab-lr-s1"]

    # the live dashboard's read-only view of the study
    from convopt_mlflow.experiments.progress import list_studies, open_read_only, study_progress

    reader = open_read_only(storage)
    assert list_studies(reader) == ["tiny"]
    progress = study_progress(reader, "tiny")
    done = {"complete": 2, "running": 0, "failed": 0, "planned": 2}
    assert progress["arms"] == {"baseline": done, "lr": done} and progress["baseline"] == "baseline"
    assert progress["parent_run_id"] == parent.info.run_id and progress["verdict"] == report["verdict"]
    (lr,) = progress["comparisons"]
    assert lr["arm"] == "lr" and lr["difference_ci_low"] <= lr["mean_difference"] <= lr["difference_ci_high"]

    # re-running the same study (here in-process, without `mlflow run`) trains nothing and reports again
    code = cli.main(["ab-test", "--arms", "baseline,lr", "--seeds", "2", "--total-timesteps", "1024", "--data", DATA,
                     "--study", "tiny", "--storage", storage, "--set", TINY])
    assert code == 0, capsys.readouterr().err
    assert cell_counts(study) == {cell: {"COMPLETE": 1} for cell in
                                  [("baseline", 0), ("baseline", 1), ("lr", 0), ("lr", 1)]}
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == len(runs)  # no new child run (the parent is reused)


def test_an_interrupted_study_resumes_the_missing_cells_only(tmp_path, mlflow_uri):
    spec = spec_from_args("baseline,lr", 2, total_timesteps=1024, data=DATA,
                          overrides=dict(kv.split("=") for kv in TINY.split(",")))
    storage = get_storage(f"sqlite:///{tmp_path}/optuna.db")
    study = open_study(spec, storage, "partial")
    parent = open_run(experiment=None, run_id=None, tags={"convopt.role": "ab-parent"})
    run_cells(study, spec, parent.run_id, seeds=[0], checkpoint_root=str(tmp_path / "ckpt"))
    assert sorted(cell_counts(study)) == [("baseline", 0), ("lr", 0)]
    first = {r.run_id for r in completed_trials(study, spec)}
    run_cells(study, spec, parent.run_id, checkpoint_root=str(tmp_path / "ckpt"))
    assert cell_counts(study) == {c: {"COMPLETE": 1} for c in spec.cells}
    assert first < {r.run_id for r in completed_trials(study, spec)}
    parent.end("FINISHED")
