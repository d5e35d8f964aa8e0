"""Run lifecycle for the training coordinator: open, log to, and end MLflow runs.

Everything goes through :class:`mlflow.tracking.MlflowClient`; no fluent
"active run" is set, so nothing leaks between runs that share a process
(A/B trials, tuning trials, tests).

Example (``MLFLOW_TRACKING_URI`` names the store):
    >>> handle = open_run(experiment="convopt", run_id=None, tags={"convopt.role": "train"})
    >>> handle.log_params({"ppo.learning_rate": 3e-5})
    ParamsLogged(written=1, unchanged=0, conflicts={})
    >>> handle.log_params({"ppo.learning_rate": 1e-4}).conflicts   # params are immutable
    {'ppo.learning_rate': ('3e-05', '0.0001')}
    >>> handle.end("FINISHED")
    >>> handle.client.get_run(handle.run_id).info.status
    'FINISHED'
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence, TypeVar

import mlflow
from mlflow.entities import LifecycleStage, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH, MAX_TAG_VAL_LENGTH

from convopt_mlflow.errors import ConfigError, RunNotFoundError, UserError
from convopt_mlflow.tracking.cleanup import cleanup_stale_runs
from convopt_mlflow.tracking.context import convopt_tags
from convopt_mlflow.tracking.datasets import frame_schema, log_dataset  # noqa: F401 - re-exported
from convopt_mlflow.tracking.experiments import mark_training_experiment

__all__ = [
    "CONFIG_ARTIFACT",
    "DEFAULT_EXPERIMENT",
    "END_STATUSES",
    "ParamsLogged",
    "RunHandle",
    "cleanup_stale_runs",
    "get_run_config",
    "log_dataset",
    "open_run",
    "param_value",
    "require_existing_store",
    "resolve_tracking_uri",
]

#: Artifact path of the full training config, written by the coordinator.
CONFIG_ARTIFACT = "config.json"
#: Experiment of runs that name none (and no MLFLOW_EXPERIMENT_ID/NAME, no ``mlflow run`` run).
DEFAULT_EXPERIMENT = "convopt"
END_STATUSES = ("FINISHED", "FAILED", "KILLED")
_TRUNCATED = "...[truncated]"
_NOT_FOUND_CODES = {ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), ErrorCode.Name(INVALID_PARAMETER_VALUE)}

_T = TypeVar("_T")


def resolve_tracking_uri() -> str:
    """The tracking URI MLflow will use: ``MLFLOW_TRACKING_URI``, ``mlflow.set_tracking_uri``,
    or MLflow 3's default, ``sqlite:///<cwd>/mlflow.db`` (``./mlruns`` only when that
    directory already holds file-store data)."""
    return mlflow.get_tracking_uri()


def require_existing_store(uri: str | None = None) -> str:
    """The tracking URI, refusing (UserError) a local sqlite store that does not exist yet.

    MLflow creates ``./mlflow.db`` on first contact; a command that only reads (``promote``,
    ``predict``, ``runs cleanup``) must not leave one behind in a folder that had none.
    """
    uri = uri or resolve_tracking_uri()
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):].split("?", 1)[0]
        if path and not os.path.exists(path):
            raise UserError(f"no MLflow store here: {path} does not exist; run this where you trained, "
                            f"or point MLFLOW_TRACKING_URI at your store")
    return uri


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, marked when cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(_TRUNCATED)] + _TRUNCATED


def param_value(value: Any) -> str:
    """How a config value is stored as an MLflow param: ``str(value)``, truncated to 6,000 chars."""
    return _truncate(str(value), MAX_PARAM_VAL_LENGTH)


def _is_not_found(error: MlflowException) -> bool:
    return error.error_code in _NOT_FOUND_CODES


def _get_live_run(client: MlflowClient, run_id: str):
    """The run ``run_id``; RunNotFoundError if it does not exist or is deleted."""
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        if _is_not_found(error):
            raise RunNotFoundError(
                f"MLflow run {run_id!r} does not exist at {client.tracking_uri}"
            ) from None
        raise
    if run.info.lifecycle_stage == LifecycleStage.DELETED:
        raise RunNotFoundError(f"MLflow run {run_id!r} is deleted; restore it or start a new run")
    return run


@dataclass(frozen=True)
class ParamsLogged:
    """What :meth:`RunHandle.log_params` did.

    Attributes:
        written: params newly logged.
        unchanged: params already on the run with the same value (skipped).
        conflicts: key -> (value on the run, value asked for), for params already
            on the run with another value. MLflow params are immutable, so these
            were not written; the caller decides whether that is an error.
    """

    written: int
    unchanged: int
    conflicts: Mapping[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class RunHandle:
    """An open MLflow run and the client that writes to it.

    Attributes:
        run_id: the MLflow run id.
        client: the client bound to the run's tracking URI.
        experiment_id: the run's experiment.
        artifact_uri: the run's artifact root.
    """

    run_id: str
    client: MlflowClient
    experiment_id: str
    artifact_uri: str

    def log_params(self, flat: Mapping[str, Any]) -> ParamsLogged:
        """Log flattened config params, 100 per request; params already on the run are skipped.

        Values are stringified and truncated to MLflow's 6,000-character limit
        (full values belong in the ``config.json`` artifact).
        """
        existing = self.client.get_run(self.run_id).data.params
        new: list[Param] = []
        unchanged = 0
        conflicts: dict[str, tuple[str, str]] = {}
        for key, raw in flat.items():
            value = param_value(raw)
            old = existing.get(key)
            if old is None:
                new.append(Param(key, value))
            elif old == value:
                unchanged += 1
            else:
                conflicts[key] = (old, value)
        for chunk in _chunks(new, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=list(chunk))
        return ParamsLogged(written=len(new), unchanged=unchanged, conflicts=conflicts)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set (or overwrite) tags, 100 per request; values stringified, truncated to 8,000 chars."""
        entities = [RunTag(key, _truncate(str(value), MAX_TAG_VAL_LENGTH)) for key, value in tags.items()]
        for chunk in _chunks(entities, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=list(chunk))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload the local file or directory ``path`` under ``artifact_path``."""
        self.client.log_artifact(self.run_id, os.fspath(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Write ``text`` as the artifact ``artifact_file`` (e.g. ``"report.md"``)."""
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, dictionary: Mapping[str, Any], artifact_file: str) -> None:
        """Write ``dictionary`` as JSON (or YAML for ``.yaml``/``.yml``) artifact ``artifact_file``."""
        self.client.log_dict(self.run_id, dict(dictionary), artifact_file)

    def log_metrics(self, values: Mapping[str, float], step: int) -> int:
        """Log finite ``values`` at ``step`` in one batch; returns the points written."""
        from .writer import metrics_batch

        return metrics_batch(self.run_id, values, step, self.client)

    def end(self, status: str) -> None:
        """Terminate the run with ``status``: ``"FINISHED"``, ``"FAILED"`` or ``"KILLED"``."""
        if status not in END_STATUSES:
            raise ValueError(f"end status must be one of {END_STATUSES}, got {status!r}")
        self.client.set_terminated(self.run_id, status)

    def last_logged_step(self) -> int:
        """The largest step of any metric on the run, or -1 when it has none.

        One ``get_run``: every MLflow store keeps, per metric key, the point with
        the largest ``(step, timestamp, value)`` as the run's latest metric, so
        the maximum over those is the maximum over all histories.
        """
        metrics = self.client.get_run(self.run_id).data.to_proto().metrics
        return max((int(m.step) for m in metrics), default=-1)


def _experiment_id(client: MlflowClient, name: str | None) -> str:
    """Id of the experiment ``name``, created when missing; when None, ``MLFLOW_EXPERIMENT_ID``,
    then ``MLFLOW_EXPERIMENT_NAME``, then :data:`DEFAULT_EXPERIMENT`."""
    if name is None:
        env_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
        if env_id:
            return env_id
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name)
        except MlflowException as error:
            # Another worker created it between our lookup and our create.
            if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == LifecycleStage.DELETED:
        raise ConfigError(
            f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments restore) "
            "or choose another experiment name"
        )
    return experiment.experiment_id


def open_run(
    *,
    experiment: str | None,
    run_id: str | None,
    tags: Mapping[str, str],
    run_name: str | None = None,
    client: MlflowClient | None = None,
) -> RunHandle:
    """Open a run to train in: reuse ``run_id`` or create a new run.

    Args:
        experiment: experiment name, created when missing; None uses
            ``MLFLOW_EXPERIMENT_ID``/``MLFLOW_EXPERIMENT_NAME``, else ``convopt``
            (:data:`DEFAULT_EXPERIMENT`). Ignored when ``run_id`` is given.
        run_id: an existing run (``MLFLOW_RUN_ID`` from ``mlflow run``, or a
            resume). It must exist and not be deleted, else RunNotFoundError;
            a terminated run is set back to RUNNING.
        tags: tags to set on the run (on a reused run they overwrite).
        run_name: name of a new run; on a reused run, renames it when given.
        client: the client to use; ``MlflowClient()`` when None.

    Every run also gets MLflow's context tags (user, source, git) and
    :func:`convopt_tags`.
    Its experiment is tagged as a training experiment (``mlflow.experimentKind``), so MLflow 3's
    UI opens it on the runs table, unless it already has a kind.
    """
    client = client if client is not None else MlflowClient()
    all_tags = {**convopt_tags(), **{k: str(v) for k, v in tags.items()}}
    if run_id is not None:
        run = _get_live_run(client, run_id)
        if run.info.status != RunStatus.to_string(RunStatus.RUNNING):
            client.update_run(run_id, status="RUNNING")
        if run_name:
            client.update_run(run_id, name=run_name)
        handle = RunHandle(run_id, client, run.info.experiment_id, run.info.artifact_uri)
        handle.set_tags(all_tags)
        mark_training_experiment(client, run.info.experiment_id)
        return handle
    experiment_id = _experiment_id(client, experiment)
    mark_training_experiment(client, experiment_id)
    run = client.create_run(experiment_id, tags=resolve_tags(all_tags), run_name=run_name)
    return RunHandle(run.info.run_id, client, experiment_id, run.info.artifact_uri)


@contextlib.contextmanager
def quiet_artifact_transfers() -> Iterator[None]:
    """MLflow's artifact progress bars off for the block (they print when the input
    example is validated, after everything else the run prints)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    previous = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def get_run_config(run_id: str, client: MlflowClient | None = None) -> dict[str, Any]:
    """The ``config.json`` artifact of run ``run_id``, parsed.

    Raises:
        RunNotFoundError: the run, or its ``config.json``, does not exist.
    """
    client = client if client is not None else MlflowClient()
    _get_live_run(client, run_id)
    with tempfile.TemporaryDirectory(prefix="convopt-config-") as tmp:
        try:
            with quiet_artifact_transfers():
                local = client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
            with open(local, encoding="utf-8") as stream:
                config = json.load(stream)
        except (MlflowException, OSError, ValueError) as error:
            raise RunNotFoundError(
                f"MLflow run {run_id!r} has no readable {CONFIG_ARTIFACT} artifact ({error})"
            ) from None
    if not isinstance(config, dict):
        raise RunNotFoundError(f"{CONFIG_ARTIFACT} of MLflow run {run_id!r} is not a JSON object")
    return config


def get_run_tags(run_id: str, client: MlflowClient | None = None) -> dict[str, str]:
    """Tags of run ``run_id``; RunNotFoundError if it does not exist or is deleted."""
    client = client if client is not None else MlflowClient()
    return dict(_get_live_run(client, run_id).data.tags)


def run_experiment_name(run_id: str, client: MlflowClient | None = None) -> str:
    """Name of the experiment holding run ``run_id``."""
    client = client if client is not None else MlflowClient()
    run = _get_live_run(client, run_id)
    return client.get_experiment(run.info.experiment_id).name
