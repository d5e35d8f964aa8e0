"""What a run already holds, read back before a resume or a finalization repeats work.

- :func:`get_run_state`: status, tags, the largest metric step, and whether the
  process that trains it may still be alive (the same test as ``convopt runs cleanup``).
- :func:`metric_steps`: the latest step of every metric key.
- :func:`finished_model_uri`: the run's complete logged model, if any; half-written ones
  (a kill during logging) are deleted so a new one can take their place.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from convopt_mlflow.tracking.cleanup import stale_reason
from convopt_mlflow.tracking.runs import _get_live_run

__all__ = ["RunState", "finished_model_uri", "get_run_state", "metric_steps"]


@dataclass(frozen=True)
class RunState:
    """``alive``: why the run's process may still be training it; None when it is not RUNNING
    or its process is gone."""

    status: str
    tags: dict[str, str]
    last_step: int
    alive: str | None


def get_run_state(run_id: str, *, older_than_s: float = 600.0, client: MlflowClient | None = None) -> RunState:
    """RunNotFoundError when the run does not exist or is deleted."""
    client = client if client is not None else MlflowClient()
    run = _get_live_run(client, run_id)
    tags = dict(run.data.tags)
    last_step = max((int(m.step) for m in run.data.to_proto().metrics), default=-1)
    alive = None
    if run.info.status == "RUNNING":
        if stale_reason(run, socket.gethostname(), int(time.time() * 1000), older_than_s) is None:
            alive = (f"process {tags.get('convopt.pid', '?')} on host {tags.get('convopt.host', '?')} "
                     "may still be training it")
    return RunState(run.info.status, tags, last_step, alive)


def metric_steps(handle: Any) -> dict[str, int]:
    """Metric key -> the largest step it was logged at."""
    metrics = handle.client.get_run(handle.run_id).data.to_proto().metrics
    return {m.key: int(m.step) for m in metrics}


def finished_model_uri(handle: Any) -> str | None:
    """``models:/<id>`` of the run's READY logged model, or None. PENDING or FAILED models
    of the run (left by a kill while logging) are deleted."""
    models = handle.client.search_logged_models(
        [handle.experiment_id], filter_string=f"source_run_id = '{handle.run_id}'")
    ready = [m for m in models if m.status == LoggedModelStatus.READY]
    for model in models:
        if model.status != LoggedModelStatus.READY:
            handle.client.delete_logged_model(model.model_id)
    return f"models:/{ready[0].model_id}" if ready else None
