"""MLflow glue: the only package that imports mlflow.

Names are loaded lazily, so ``import convopt_mlflow.tracking`` costs nothing
until one is used (importing mlflow takes about a second).

- :class:`MLflowOutputFormat`, :func:`metrics_batch`: SB3 logger output, one batch per dump.
- :func:`open_run`, :class:`RunHandle`, :func:`log_dataset`, :func:`get_run_config`,
  :func:`resolve_tracking_uri`: run lifecycle; :func:`warm_tracking_store`: the store's imports ahead of time.
- :func:`cleanup_stale_runs`: end runs whose process died as KILLED.
- :func:`open_child_run`, :func:`child_runs`, :func:`end_run_if_running`, :func:`metric_history`:
  A/B parent and child runs.
- :class:`ConvoptRunContextProvider`, :func:`convopt_tags`: convopt tags on every run.
- :func:`log_policy_model`, :func:`policy_spec`, :func:`build_policy`: the pyfunc model.
- :func:`load_model`, :func:`register_verified_model`: loading and registering with every
  file of the model checked against hashes kept outside it.
- :mod:`.registration` (ensembles of verified seed models, aliases) and :mod:`.promotion`
  (``convopt promote``: the champion moved on evidence, compare-and-set).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

__all__ = [
    "ConvoptRunContextProvider",
    "MLflowOutputFormat",
    "ParamsLogged",
    "RunHandle",
    "cleanup_stale_runs",
    "convopt_tags",
    "get_run_config",
    "log_dataset",
    "metrics_batch",
    "open_run",
    "resolve_tracking_uri",
    "warm_tracking_store",
    "get_run_tags",
    "run_experiment_name",
    "log_policy_model",
    "policy_spec",
    "build_policy",
    "load_model",
    "register_verified_model",
    "child_runs",
    "end_run_if_running",
    "metric_history",
    "open_child_run",
    "read_json_artifact",
    "run_status",
    "RunState",
    "get_run_state",
    "metric_steps",
    "finished_model_uri",
    "describe_run",
    "read_summary",
]

_HOME = {
    "ConvoptRunContextProvider": "context",
    "convopt_tags": "context",
    "MLflowOutputFormat": "writer",
    "metrics_batch": "writer",
    "ParamsLogged": "runs",
    "RunHandle": "runs",
    "get_run_config": "runs",
    "log_dataset": "runs",
    "open_run": "runs",
    "resolve_tracking_uri": "runs",
    "warm_tracking_store": "warm",
    "cleanup_stale_runs": "cleanup",
    "get_run_tags": "runs",
    "run_experiment_name": "runs",
    "log_policy_model": "model",
    "policy_spec": "model",
    "build_policy": "model",
    "load_model": "registry",
    "register_verified_model": "registry",
    "child_runs": "ab",
    "end_run_if_running": "ab",
    "metric_history": "ab",
    "open_child_run": "ab",
    "read_json_artifact": "ab",
    "run_status": "ab",
    "RunState": "run_state",
    "get_run_state": "run_state",
    "metric_steps": "run_state",
    "finished_model_uri": "run_state",
    "describe_run": "describe",
    "read_summary": "describe",
}

if TYPE_CHECKING:
    from convopt_mlflow.tracking.cleanup import cleanup_stale_runs
    from convopt_mlflow.tracking.context import ConvoptRunContextProvider, convopt_tags
    from convopt_mlflow.tracking.runs import (
        ParamsLogged,
        RunHandle,
        get_run_config,
        log_dataset,
        open_run,
        resolve_tracking_uri,
    )
    from convopt_mlflow.tracking.warm import warm_tracking_store
    from convopt_mlflow.tracking.writer import MLflowOutputFormat, metrics_batch


__getattr__, __dir__ = lazy_attributes(globals(), _HOME)
