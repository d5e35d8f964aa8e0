"""MLflow side of an A/B study: the parent run, its child runs, and reading them back.

The Optuna side (``convopt_mlflow.experiments``) calls these; it never imports mlflow.
A child run is nested under the parent with MLflow's own ``mlflow.parentRunId`` tag,
so the UI groups it and ``search_runs`` on ``tags.mlflow.parentRunId`` finds it.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Mapping

from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from .runs import quiet_artifact_transfers
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from convopt_mlflow.tracking.runs import RunHandle, open_run

__all__ = ["child_runs", "end_run_if_running", "metric_history", "open_child_run", "read_json_artifact",
           "run_status"]

_RUNNING = RunStatus.to_string(RunStatus.RUNNING)


def open_child_run(parent_run_id: str, *, tags: Mapping[str, str], run_name: str,
                   client: MlflowClient | None = None) -> RunHandle:
    """Create a RUNNING run in the parent's experiment, tagged as its child."""
    client = client if client is not None else MlflowClient()
    parent = client.get_run(parent_run_id)
    experiment = client.get_experiment(parent.info.experiment_id).name
    return open_run(experiment=experiment, run_id=None, run_name=run_name, client=client,
                    tags={**tags, MLFLOW_PARENT_RUN_ID: parent_run_id})


def end_run_if_running(run_id: str, status: str, *, reason: str = "", client: MlflowClient | None = None) -> bool:
    """End ``run_id`` with ``status`` when it is still RUNNING; True when it did. Missing runs are ignored."""
    client = client if client is not None else MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return False
    if run.info.status != _RUNNING:
        return False
    if reason:
        client.set_tag(run_id, "convopt.stop_reason", reason[:5000])
    client.set_terminated(run_id, status)
    return True


def run_status(run_id: str, client: MlflowClient | None = None) -> str:
    client = client if client is not None else MlflowClient()
    return client.get_run(run_id).info.status


def metric_history(run_id: str, key: str, client: MlflowClient | None = None) -> list[tuple[int, float]]:
    """``[(step, value)]`` of one metric, sorted by step (the last value logged at a step wins)."""
    client = client if client is not None else MlflowClient()
    points = sorted(client.get_metric_history(run_id, key), key=lambda p: (p.step, p.timestamp))
    return sorted({int(p.step): float(p.value) for p in points}.items())


def read_json_artifact(run_id: str, path: str, client: MlflowClient | None = None) -> Any:
    """The JSON artifact ``path`` of ``run_id``, parsed; None when it is missing."""
    client = client if client is not None else MlflowClient()
    with tempfile.TemporaryDirectory(prefix="convopt-ab-") as tmp:
        try:
            with quiet_artifact_transfers():
                local = client.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError):
            return None
        return json.loads(Path(local).read_text())


def child_runs(parent_run_id: str, client: MlflowClient | None = None) -> list[Any]:
    """Runs whose ``mlflow.parentRunId`` is ``parent_run_id`` (any status)."""
    client = client if client is not None else MlflowClient()
    parent = client.get_run(parent_run_id)
    return list(client.search_runs([parent.info.experiment_id],
                                   filter_string=f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent_run_id}'",
                                   max_results=10000))
