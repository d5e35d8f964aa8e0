"""Registering an ensemble built from verified seed models, and reading/moving registry aliases.

:func:`verified_members` reads a logged convopt model's member weights only after every
file of its artifact matched the hashes kept outside it (:mod:`.integrity`), and loads
them with ``torch.load(weights_only=True)``: tensors, never pickled Python objects.
:func:`register_ensemble` logs the members as one model on a run, registers it with
:func:`~convopt_mlflow.tracking.registry.register_verified_model` and points an alias at
the new version.

Example:
    >>> version = register_ensemble(parent_run_id, ["runs:/<a>/model", "runs:/<b>/model"],
    ...     name="convopt-ensemble", tags={"convopt.arm": "full"},
    ...     combination={"method": "mean_prob", "weights": [0.5, 0.5]})       # doctest: +SKIP
    >>> alias_version("convopt-ensemble", "challenger") == version.version     # doctest: +SKIP
    True
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from convopt_mlflow.errors import ConfigError
from convopt_mlflow.tracking.integrity import ModelIntegrityError
from convopt_mlflow.tracking.model import FEATURE_KEYS, POLICY_FILE, log_policy_model
from convopt_mlflow.tracking.registry import ModelNotFoundError, _download_verified, private_dir, resolve_model

__all__ = ["ModelMembers", "alias_version", "ensemble_sources", "get_version", "register_ensemble",
           "register_members", "set_alias", "set_version_tags", "verified_members"]

ENSEMBLE_NAME = "ensemble"
"""Name of the ensemble model logged on the A/B parent run (``runs:/<parent>/ensemble``)."""


@dataclass
class ModelMembers:
    """A verified model's member state_dicts, network spec, feature config and input example."""

    members: list[dict[str, torch.Tensor]]
    spec: dict
    feature_config: dict
    input_example: Any


def verified_members(model_uri: str, client: MlflowClient | None = None) -> ModelMembers:
    """Download ``model_uri``, check every file's sha256, then read its members (weights only).

    Raises:
        ModelNotFoundError: no such run, model, version or alias.
        ModelIntegrityError: missing hashes or a changed, missing or added file.
    """
    resolved = resolve_model(model_uri, client)
    with private_dir("convopt-members-") as tmp:
        local = Path(_download_verified(resolved, tmp))  # nothing is read before this passes
        try:
            description = json.loads((local / "artifacts" / POLICY_FILE).read_text(encoding="utf-8"))
            files = [local / "artifacts" / entry["file"] for entry in description["members"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelIntegrityError(f"model {model_uri}: unreadable {POLICY_FILE}: {exc!r}") from None
        members = [torch.load(path, weights_only=True, map_location="cpu") for path in files]
        example = Model.load(str(local)).load_input_example(str(local))
    features = {key: description["features"][key] for key in FEATURE_KEYS if key in description["features"]}
    features.setdefault("observation", "window")  # format /1 models observed raw windows
    return ModelMembers(members, description["spec"], features, example)


def ensemble_sources(model_uris: Sequence[str], client: MlflowClient | None = None) -> list[ModelMembers]:
    """Verify and read every model of ``model_uris``; they must share one network spec and feature config.

    Raises:
        ConfigError: no model, or models that do not share a spec and feature config.
        ModelNotFoundError, ModelIntegrityError: as in :func:`verified_members`.
    """
    client = client or MlflowClient()
    if not model_uris:
        raise ConfigError("an ensemble needs at least one source model")
    sources = [verified_members(uri, client) for uri in model_uris]
    first = sources[0]
    for uri, other in zip(model_uris[1:], sources[1:]):
        if other.spec != first.spec or other.feature_config != first.feature_config:
            raise ConfigError(f"{uri} has another network or feature config than {model_uris[0]}; "
                              f"an ensemble's members must share them")
    return sources


def register_members(run_id: str, sources: Sequence[ModelMembers], *, name: str, tags: Mapping[str, str],
                     combination: Mapping[str, Any] | None, alias: str | None = "challenger",
                     client: MlflowClient | None = None) -> ModelVersion:
    """Log every member of ``sources`` (from :func:`ensemble_sources`) as one model on ``run_id`` and register it.

    The model is ``runs:/<run_id>/ensemble``, registered as a new version of ``name`` with
    ``tags`` (plus the file hashes); ``alias`` is pointed at it.
    """
    from convopt_mlflow.tracking.registry import register_verified_model

    first = sources[0]
    members = [state for source in sources for state in source.members]
    uri = log_policy_model(run_id, name=ENSEMBLE_NAME, members=members, spec=first.spec,
                           feature_config=first.feature_config, input_example=first.input_example,
                           combination=combination)
    version = register_verified_model(uri, name, tags=tags)
    if alias:
        set_alias(name, alias, version.version, client)
    return version


def register_ensemble(run_id: str, model_uris: Sequence[str], *, name: str, tags: Mapping[str, str],
                      combination: Mapping[str, Any] | None, alias: str | None = "challenger",
                      client: MlflowClient | None = None) -> ModelVersion:
    """Build one ensemble from the members of ``model_uris``, log it on ``run_id``, register it.

    :func:`ensemble_sources` then :func:`register_members`: every source model is verified
    before its weights are read, and all must share one network spec and feature config.

    Raises:
        ConfigError: no model, or models that do not share a spec and feature config.
        ModelNotFoundError, ModelIntegrityError: as in :func:`verified_members`.
    """
    client = client or MlflowClient()
    return register_members(run_id, ensemble_sources(model_uris, client), name=name, tags=tags,
                            combination=combination, alias=alias, client=client)


def alias_version(name: str, alias: str, client: MlflowClient | None = None) -> str | None:
    """The version ``alias`` of registered model ``name`` points at; None when unset (or no model)."""
    client = client or MlflowClient()
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def get_version(name: str, ref: str, client: MlflowClient | None = None) -> ModelVersion:
    """Version ``ref`` of ``name``: a version number or an alias.

    Raises:
        ModelNotFoundError: naming the missing model, version or alias.
    """
    client = client or MlflowClient()
    try:
        if str(ref).isdigit():
            return client.get_model_version(name, str(ref))
        return client.get_model_version_by_alias(name, ref)
    except MlflowException:
        what = f"version {ref}" if str(ref).isdigit() else f"alias {ref!r}"
        try:
            client.get_registered_model(name)
        except MlflowException:
            raise ModelNotFoundError(f"no registered model {name!r} in the tracking store; "
                                     f"register one with `convopt ab-test` (a significant winner)") from None
        raise ModelNotFoundError(f"registered model {name!r} has no {what}") from None


def set_alias(name: str, alias: str, version: str, client: MlflowClient | None = None) -> None:
    (client or MlflowClient()).set_registered_model_alias(name, alias, str(version))


def set_version_tags(name: str, version: str, tags: Mapping[str, Any], client: MlflowClient | None = None) -> None:
    client = client or MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))
