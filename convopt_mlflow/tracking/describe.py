"""A run's description in the MLflow UI and its end-of-run summary, read back from the run.

- :func:`read_summary`: the run's latest metrics and tags as a
  :class:`~convopt_mlflow.evaluation.summary.RunSummary`;
- :func:`describe_run`: that summary as markdown in the run's description
  (``mlflow.note.content``, shown at the top of the run page).
"""
from __future__ import annotations

from mlflow.tracking import MlflowClient

from convopt_mlflow.evaluation.summary import DASHBOARD_ARTIFACTS, RunSummary, run_note

__all__ = ["NOTE_TAG", "describe_run", "metric_series", "read_summary"]

NOTE_TAG = "mlflow.note.content"


def _artifact_paths(client: MlflowClient, run_id: str) -> list[str]:
    """The run's artifacts that :data:`DASHBOARD_ARTIFACTS` names (two listings, no downloads)."""
    held: set[str] = set()
    for folder in sorted({p.rpartition("/")[0] for p in DASHBOARD_ARTIFACTS}):
        try:
            held.update(f.path for f in client.list_artifacts(run_id, folder or None))
        except Exception:  # noqa: BLE001 - a listing failure only drops the links
            continue
    return [p for p in DASHBOARD_ARTIFACTS if p in held]


def read_summary(run_id: str, client: MlflowClient | None = None, *, status: str | None = None) -> RunSummary:
    """What run ``run_id`` shows: latest metric values, tags, name, and dashboards it holds.

    ``status`` overrides the stored one (the run is summarised just before it ends).
    """
    client = client if client is not None else MlflowClient()
    run = client.get_run(run_id)
    tags = dict(run.data.tags)
    data = run.data.params.get("data.source") or tags.get("convopt.data.digest", "?")
    return RunSummary(run_id=run_id, run_name=run.info.run_name or run_id[:8],
                      preset=tags.get("convopt.preset", "custom"), data=data,
                      status=status or run.info.status, metrics=dict(run.data.metrics), tags=tags,
                      tracking_uri=client.tracking_uri, experiment_id=run.info.experiment_id,
                      artifacts=_artifact_paths(client, run_id))


def describe_run(run_id: str, client: MlflowClient | None = None, *, status: str | None = None) -> RunSummary:
    """Write the run's markdown description (``mlflow.note.content``); return the summary it shows."""
    client = client if client is not None else MlflowClient()
    summary = read_summary(run_id, client, status=status)
    client.set_tag(run_id, NOTE_TAG, run_note(summary))
    return summary


def metric_series(run_id: str, client: MlflowClient | None = None, *, keys: tuple[str, ...] = (),
                  prefixes: tuple[str, ...] = ()) -> dict:
    """``key -> (steps, values)`` (numpy, sorted by step) of the run's metrics named in ``keys``
    or starting with one of ``prefixes``; one full history read per key that exists."""
    import numpy as np

    client = client if client is not None else MlflowClient()
    present = client.get_run(run_id).data.metrics
    out = {}
    for key in sorted(present):
        if key in keys or key.startswith(prefixes or ("\0",)):
            points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
            out[key] = (np.array([m.step for m in points], dtype=np.float64),
                        np.array([m.value for m in points], dtype=np.float64))
    return out
