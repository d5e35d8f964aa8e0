"""Registering an ensemble built from verified seed models, and reading/moving registry aliases.

:func:`verified_members` reads a logged convopt model's member weights only after every
file of its artifact matched the hashes kept outside it (:mod:`.integrity`), and loads
them with ``torch.load(weights_only=True)``: tensors, never pickled Python objects.
:func:`register_ensemble` logs the members as one model on a run, registers it with
:func:`~convopt_mlflow.tracking.registry.register_verified_model` and points an alias at
the new version.

Guards:

- an alias moves only by compare-and-set under the registered model's lock
  (:mod:`.locks`), the same for ``challenger`` as for ``champion`` (:func:`move_alias`);
- every registered version carries ``convopt.no_edge`` from its source runs;
- :func:`study_version` finds the version an A/B study already registered, so that a
  re-run study reuses it instead of registering its winner again;
- a failed registry read (a timeout, a 403) is an error, never "no alias"
  (:class:`~convopt_mlflow.tracking.registry.RegistryReadError`).

Example (``model_uris``: ``runs:/<run_id>/model`` of two seed runs, ``parent_run_id``: the study's run):
    >>> version = register_ensemble(parent_run_id, model_uris,
    ...     name="convopt-ensemble", tags={"convopt.arm": "full"},
    ...     combination={"method": "mean_prob", "weights": [0.5, 0.5]})
    >>> alias_version("convopt-ensemble", "challenger") == str(version.version)  # aliases read back as str
    True
    >>> len(verified_members(f"models:/convopt-ensemble/{version.version}").members)  # both seeds' weights
    2
"""
from __future__ import annotations

import json
import time
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
from convopt_mlflow.tracking.locks import Claim, release, try_claim
from convopt_mlflow.tracking.registry import (
    ModelNotFoundError,
    _download_verified,
    NO_EDGE_TAG,
    is_not_found,
    no_edge_of_runs,
    private_dir,
    read_error,
    resolve_model,
)

__all__ = ["AliasMove", "ModelMembers", "alias_version", "ensemble_sources", "get_version", "move_alias",
           "no_edge_of_runs", "register_ensemble", "register_members", "set_alias", "set_version_tags",
           "study_version", "verified_members"]

STUDY_PARENT_TAG = "convopt.ab_parent_run"
#: Seconds an alias move waits for another holder of the lock before giving up.
LOCK_WAIT_S = 30.0

ENSEMBLE_NAME = "ensemble"
"""Name of the ensemble model logged on the A/B parent run (``runs:/<parent>/ensemble``)."""


@dataclass
class ModelMembers:
    """A verified model's member state_dicts, network spec, feature config and input example."""

    members: list[dict[str, torch.Tensor]]
    spec: dict
    feature_config: dict
    input_example: Any
    source_run_id: str | None = None
    """The run that logged the model (its ``convopt.no_edge`` tag goes onto registered versions)."""


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
    return ModelMembers(members, description["spec"], features, example, resolved.source_run_id)


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
    ``tags`` plus the file hashes and ``convopt.no_edge`` (``"true"`` when any source run
    has it, see :func:`no_edge_of_runs`). ``alias`` is then moved to it by compare-and-set
    (:func:`move_alias`) against its version read before registering: if it moved meanwhile,
    or the lock stays held, it is left alone and the version records why in
    ``convopt.registration.alias_refused``.
    """
    from convopt_mlflow.tracking.registry import register_verified_model

    client = client or MlflowClient()
    expected = alias_version(name, alias, client) if alias else None
    first = sources[0]
    members = [state for source in sources for state in source.members]
    uri = log_policy_model(run_id, name=ENSEMBLE_NAME, members=members, spec=first.spec,
                           feature_config=first.feature_config, input_example=first.input_example,
                           combination=combination)
    runs = [s.source_run_id for s in sources if s.source_run_id] + _tag_runs(tags.get("convopt.source_runs", ""))
    no_edge = no_edge_of_runs(runs, client)
    version = register_verified_model(uri, name, tags={**tags, NO_EDGE_TAG: str(no_edge).lower()})
    if alias:
        move = move_alias(name, alias, str(version.version), expected, client)
        notes = {"convopt.registration.alias_refused": move.refusal} if move.refusal else {}
        if move.took_over:
            notes["convopt.registration.lock_takeover"] = move.took_over
        set_version_tags(name, str(version.version), notes, client)
    return client.get_model_version(name, str(version.version))  # with every tag set here


def _tag_runs(value: str) -> list[str]:
    return [run_id for run_id in value.split(",") if run_id]


def study_version(name: str, parent_run_id: str, client: MlflowClient | None = None) -> str | None:
    """The version of ``name`` that the A/B study with parent run ``parent_run_id`` registered, if any.

    Found by the version tag ``convopt.ab_parent_run``; the oldest when there are several.

    Raises:
        RegistryReadError: the registry fails the search.
    """
    client = client or MlflowClient()
    query = f"name = '{name}' and tags.`{STUDY_PARENT_TAG}` = '{parent_run_id}'"
    try:
        versions = client.search_model_versions(query)
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        raise read_error(exc, f"the versions of {name!r} registered by run {parent_run_id}") from None
    return str(min(int(v.version) for v in versions)) if versions else None


@dataclass(frozen=True)
class AliasMove:
    """What :func:`move_alias` did: ``refusal`` is "" when the alias moved; ``took_over`` a dead lock holder."""

    refusal: str = ""
    took_over: str = ""


def move_alias(name: str, alias: str, version: str, expected: str | None,
               client: MlflowClient | None = None) -> AliasMove:
    """Point ``name@alias`` at ``version`` if it still points at ``expected`` (None: unset), under the lock.

    Waits up to :data:`LOCK_WAIT_S` for another holder of the lock; a dead holder's lock
    is taken over (:func:`~convopt_mlflow.tracking.locks.try_claim`).
    """
    client = client or MlflowClient()
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        claim = try_claim(client, name, {"convopt.lock.alias": alias, "convopt.lock.to": version,
                                         "convopt.lock.from": expected or "none"},
                          f"held while convopt moves {name}@{alias}")
        if isinstance(claim, Claim):
            break
        if time.monotonic() > deadline:
            return AliasMove(f"{name}@{alias} not moved to version {version}: {claim.describe()}")
        time.sleep(0.2)
    try:
        current = alias_version(name, alias, client)
        if current != expected:
            return AliasMove(f"{name}@{alias} moved from version {expected or 'none'} to version {current or 'none'} "
                             f"while version {version} was registered; left at version {current or 'none'}",
                             claim.took_over)
        set_alias(name, alias, version, client)
        return AliasMove("", claim.took_over)
    finally:
        release(client, claim)


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
    """The version ``alias`` of registered model ``name`` points at; None when unset (or no model).

    "Unset" is established by a successful read (the model's aliases lack ``alias``) or by
    ``RESOURCE_DOES_NOT_EXIST`` for the model, nothing else.

    Raises:
        RegistryReadError: any other failure (a timeout, a 403, a server error).
    """
    client = client or MlflowClient()
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        raise read_error(exc, f"alias {alias!r} of registered model {name!r}") from None
    version = dict(aliases or {}).get(alias)
    return None if version is None else str(version)


def get_version(name: str, ref: str, client: MlflowClient | None = None) -> ModelVersion:
    """Version ``ref`` of ``name``: a version number or an alias.

    Raises:
        ModelNotFoundError: naming the missing model, version or alias.
    """
    client = client or MlflowClient()
    what = f"version {ref}" if str(ref).isdigit() else f"alias {ref!r}"
    try:
        if str(ref).isdigit():
            return client.get_model_version(name, str(ref))
        return client.get_model_version_by_alias(name, ref)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):  # a missing alias is the latter
            raise read_error(exc, f"{what} of registered model {name!r}") from None
        try:
            client.get_registered_model(name)
        except MlflowException as exc:
            if not is_not_found(exc):
                raise read_error(exc, f"registered model {name!r}") from None
            raise ModelNotFoundError(f"no registered model {name!r} in the tracking store; "
                                     f"register one with `convopt ab-test` (a significant winner)") from None
        raise ModelNotFoundError(f"registered model {name!r} has no {what}") from None


def set_alias(name: str, alias: str, version: str, client: MlflowClient | None = None) -> None:
    (client or MlflowClient()).set_registered_model_alias(name, alias, str(version))


def set_version_tags(name: str, version: str, tags: Mapping[str, Any], client: MlflowClient | None = None) -> None:
    client = client or MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))
