"""Our runs land in `convopt`, tagged so that MLflow 3 opens them on the training-runs view."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from mlflow.tracking import MlflowClient

from convopt_mlflow.tracking import open_run
from convopt_mlflow.tracking.experiments import (
    EXPERIMENT_KIND_TAG,
    TRAINING_KIND,
    ConvoptProjectExperimentProvider,
    is_this_project,
)

ROOT = Path(__file__).resolve().parents[2]


def test_open_run_marks_the_experiment_as_training(store):
    handle = open_run(experiment="kind-test", run_id=None, tags={}, client=store.client)
    handle.end("FINISHED")
    assert store.client.get_experiment_by_name("kind-test").tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    # a kind the user chose is kept
    eid = store.client.create_experiment("user-kind", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    open_run(experiment="user-kind", run_id=None, tags={}, client=store.client).end("FINISHED")
    assert store.client.get_experiment(eid).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_provider_is_only_in_context_inside_mlflow_run_of_this_project(tmp_path):
    assert is_this_project(ROOT) and not is_this_project(tmp_path)
    assert ConvoptProjectExperimentProvider().in_context() is False  # not inside `mlflow run`
    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert entry["mlflow.default_experiment_provider"]["convopt"] == \
        "convopt_mlflow.tracking.experiments:ConvoptProjectExperimentProvider"


# The mlflow CLI with the provider registered as its entry point does once the package is installed.
_MLFLOW_CLI = ("import sys; from convopt_mlflow.tracking.experiments import register_provider; register_provider(); "
               "from mlflow.cli import cli; sys.argv[0] = 'mlflow'; cli()")


def test_mlflow_run_lands_in_convopt_as_a_training_experiment(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=uri, PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    proc = subprocess.run([sys.executable, "-c", _MLFLOW_CLI, "run", str(ROOT), "--env-manager", "local",
                           "-e", "data_check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("convopt")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["mlflow.project.entryPoint"] == "data_check"
    assert not client.search_runs(["0"])  # nothing in Default
