"""Model Registry: register a logged model as a new version of a registered model.

Versions carry their evidence as tags; promotion moves aliases (``challenger``,
``champion``), never the deprecated stages, and is not done here.

Example:
    >>> version = register_model_version("models:/m-0123", "convopt-ensemble",
    ...                                  {"convopt.data.digest": "ab12", "convopt.preset": "ensemble"})  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Mapping

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

__all__ = ["register_model_version"]

_EXISTS = (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS))


def register_model_version(model_uri: str, name: str, tags: Mapping[str, Any],
                           client: MlflowClient | None = None) -> str:
    """Register ``model_uri`` (``models:/<model_id>`` from ``log_policy_model``) as a new version of ``name``.

    The registered model is created when missing (two workers may race: the loser reuses it).
    Tag values are stringified. Returns the new version number as a string.
    """
    client = client if client is not None else MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in _EXISTS:
            raise
    run_id, model_id, source = None, None, model_uri
    if model_uri.startswith("models:/m-"):
        model_id = model_uri[len("models:/"):].split("/")[0]
        logged = client.get_logged_model(model_id)
        run_id, source = logged.source_run_id, logged.artifact_location
    version = client.create_model_version(name, source, run_id=run_id, model_id=model_id,
                                          tags={k: str(v) for k, v in tags.items()})
    return str(version.version)
