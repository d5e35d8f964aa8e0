"""Verified registration and loading of convopt models.

:func:`load_model` is the safe way to load a convopt pyfunc: it downloads the artifact,
checks the sha256 of every file against the record kept *outside* the artifact (a tag of
the training run for ``runs:/`` and ``models:/<model_id>``, the version's tags for
registered models), and only then lets MLflow load, and so execute, the verified copy.

The copy lives in a private directory (:func:`private_dir`, mode 0o700) that no other
user can write to between the check and the load; it holds exactly the recorded files
(compiled bytecode deleted, anything else unrecorded refused: :func:`.integrity.verify_artifact`),
and the model code is imported with ``sys.dont_write_bytecode`` set, so no ``.pyc`` is
written next to it or read from it (:func:`load_verified_copy`).

Example (``model_uri`` is ``runs:/<run_id>/model`` of a logged convopt model, ``bars`` OHLC bars):
    >>> version = register_verified_model(model_uri, "convopt-ensemble", tags={"convopt.arm": "full"})
    >>> version.version, version.tags["convopt.arm"], version.tags["convopt.no_edge"]
    (1, 'full', 'false')
    >>> MlflowClient().set_registered_model_alias("convopt-ensemble", "challenger", version.version)
    >>> decisions = load_model("models:/convopt-ensemble@challenger").predict(bars)
    >>> len(decisions) == len(bars), sorted(set(decisions["position"].dropna()) - {-1, 0, 1})
    (True, [])
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from convopt_mlflow.errors import DataValidationError, UserError
from convopt_mlflow.tracking.integrity import (
    MODEL_HASHES_TAG,
    ModelIntegrityError,
    decode_hashes,
    encode_hashes,
    hashes_tag,
    verify_artifact,
)

__all__ = ["ModelNotFoundError", "RegistryReadError", "is_not_found", "load_model", "load_verified_copy",
           "no_edge_of_runs", "predict_bars", "private_dir", "register_verified_model", "resolve_model"]

_RUNS = re.compile(r"^runs:/(?P<run_id>[^/]+)/(?P<name>[^/].*?)/?$")
_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)/?$")
_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)/?$")
_LOGGED = re.compile(r"^models:/(?P<model_id>m-[0-9a-f]+)/?$")
NO_EDGE_TAG = "convopt.no_edge"
"""``"true"`` on a run (and every version registered from it) without an edge over flat on validation."""
_FORMS = "runs:/<run_id>/model, models:/<name>@<alias>, models:/<name>/<version> or models:/<model_id>"


class ModelNotFoundError(UserError):
    """A model URI that names no run, model, version or alias in the tracking store."""


class RegistryReadError(UserError):
    """The tracking store or registry failed a read (a timeout, a 403, a server error): not "absent"."""


def is_not_found(exc: MlflowException) -> bool:
    """Whether ``exc`` says the thing read does not exist (``RESOURCE_DOES_NOT_EXIST``), nothing else."""
    return exc.error_code == "RESOURCE_DOES_NOT_EXIST"


def read_error(exc: MlflowException, what: str) -> RegistryReadError:
    """The error to raise when reading ``what`` failed for another reason than its absence."""
    return RegistryReadError(f"cannot read {what} from the tracking store {mlflow.get_tracking_uri()!r}: "
                             f"{exc.error_code}: {exc.message.splitlines()[0] if exc.message else exc!s}; "
                             f"nothing was changed. Check the tracking server, its URL and your credentials")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model URI's artifact lives and the hashes recorded for it outside the artifact.

    Attributes:
        uri: the URI as given.
        artifact_uri: the artifact's own location (a version is pinned, an alias resolved once).
        model_id: the MLflow LoggedModel id.
        files: ``{relative path: sha256}`` of every file of the artifact.
        source_run_id: the run that logged the model.
        where: the record the hashes came from, for messages.
    """

    uri: str
    artifact_uri: str
    model_id: str
    files: dict[str, str]
    source_run_id: str | None
    where: str


def resolve_model(model_uri: str, client: MlflowClient | None = None) -> ResolvedModel:
    """Resolve a model URI to its artifact location and its recorded file hashes.

    Raises:
        ModelNotFoundError: an unsupported URI, or a run, model, version or alias that does not exist.
        ModelIntegrityError: no hash record, or one recorded for another model.
    """
    client = client or MlflowClient()
    uri = str(model_uri).strip()
    if m := _RUNS.match(uri):
        run = _get(lambda: client.get_run(m["run_id"]), f"run {m['run_id']!r}")
        model_id, files = decode_hashes(run.data.tags, hashes_tag(m["name"]), f"run {m['run_id']}")
        return _logged(client, uri, model_id, files, f"run {m['run_id']}")
    if m := _LOGGED.match(uri):
        logged = _get(lambda: client.get_logged_model(m["model_id"]), f"logged model {m['model_id']!r}")
        where = f"run {logged.source_run_id} (source of {m['model_id']})"
        run = _get(lambda: client.get_run(logged.source_run_id), f"run {logged.source_run_id!r}")
        model_id, files = decode_hashes(run.data.tags, hashes_tag(logged.name), where)
        if model_id != m["model_id"]:
            raise ModelIntegrityError(f"{where} records file hashes for model {model_id}, not {m['model_id']}; "
                            f"it was logged again under the name {logged.name!r}")
        return _logged(client, uri, model_id, files, where)
    if m := _ALIAS.match(uri):
        version = _get(lambda: client.get_model_version_by_alias(m["name"], m["alias"]),
                       f"alias {m['alias']!r} of registered model {m['name']!r}")
    elif m := _VERSION.match(uri):
        version = _get(lambda: client.get_model_version(m["name"], m["version"]),
                       f"version {m['version']} of registered model {m['name']!r}")
    else:
        raise ModelNotFoundError(f"unsupported model URI {uri!r}: use {_FORMS}")
    where = f"registered model {version.name!r} version {version.version}"
    model_id, files = decode_hashes(version.tags, MODEL_HASHES_TAG, where)
    artifact_uri = client.get_model_version_download_uri(version.name, version.version)
    return ResolvedModel(uri, artifact_uri, model_id, files, version.run_id, where)


def _logged(client: MlflowClient, uri: str, model_id: str, files: dict[str, str], where: str) -> ResolvedModel:
    logged = _get(lambda: client.get_logged_model(model_id), f"logged model {model_id!r} (recorded in {where})")
    return ResolvedModel(uri, logged.artifact_location, model_id, files, logged.source_run_id, where)


#: Error codes that say the thing named does not exist (or cannot, as named): the user's to fix.
#: A missing alias is INVALID_PARAMETER_VALUE in MLflow's registry store.
_ABSENT = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def _get(fetch, what: str):
    try:
        return fetch()
    except MlflowException as exc:
        if exc.error_code not in _ABSENT:
            raise read_error(exc, what) from None
        raise ModelNotFoundError(f"{what} not found in the tracking store {mlflow.get_tracking_uri()!r} "
                                 f"({exc.message.splitlines()[0]})") from None


@contextlib.contextmanager
def private_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory only this user can read, write or enter (mode 0o700); removed on exit.

    Raises:
        ModelIntegrityError: the directory is not private (another owner, or other users
            may write to it), which ``mkdtemp`` never produces.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        os.chmod(path, 0o700)
        info = path.lstat()
        if not stat.S_ISDIR(info.st_mode) or stat.S_IMODE(info.st_mode) != 0o700 or (
                hasattr(os, "getuid") and info.st_uid != os.getuid()):
            raise ModelIntegrityError(f"the temporary directory {path} is not private (mode "
                                      f"{oct(stat.S_IMODE(info.st_mode))}); refusing to load a model from it")
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _download_verified(resolved: ResolvedModel, dst: Path) -> str:
    """Download into ``dst`` (from :func:`private_dir`) and verify; the copy then holds exactly the recorded files."""
    local = mlflow.artifacts.download_artifacts(artifact_uri=resolved.artifact_uri, dst_path=str(dst))
    verify_artifact(local, resolved.files, f"model {resolved.uri} (hashes from {resolved.where})")
    return local


def load_verified_copy(local: str | os.PathLike) -> mlflow.pyfunc.PyFuncModel:
    """``mlflow.pyfunc.load_model`` of a verified copy, importing its code without writing bytecode.

    ``sys.dont_write_bytecode`` is set for the duration and then restored, so loading leaves
    no ``__pycache__`` in the copy.
    """
    previous = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        return mlflow.pyfunc.load_model(os.fspath(local))
    finally:
        sys.dont_write_bytecode = previous


def load_model(model_uri: str) -> mlflow.pyfunc.PyFuncModel:
    """Load a convopt pyfunc after checking every file of its artifact; nothing unverified runs.

    Args:
        model_uri: ``runs:/<run_id>/model``, ``models:/<name>@<alias>``,
            ``models:/<name>/<version>`` or ``models:/<model_id>``.

    Returns:
        the ``mlflow.pyfunc.PyFuncModel``, loaded from a verified local copy (deleted
        once loaded: the weights are then in memory).

    Raises:
        ModelNotFoundError: no such run, model, version or alias (or an unsupported URI).
        ModelIntegrityError: no recorded hashes, or a file changed, missing or added,
            named in the message; raised before MLflow reads or executes anything.
            Compiled bytecode in the artifact is not refused but deleted from the copy.
    """
    resolved = resolve_model(model_uri)
    with private_dir("convopt-verified-") as tmp:
        local = _download_verified(resolved, tmp)
        return load_verified_copy(local)


def register_verified_model(model_uri: str, name: str, tags: Mapping[str, str] | None = None) -> ModelVersion:
    """Register a logged convopt model as a new version of ``name``, with its file hashes as tags.

    The artifact is downloaded and verified against the training run's record first, so
    a modified model is never registered. The version's tags are ``tags`` plus
    ``convopt.model_files_sha256`` (the record :func:`load_model` checks for ``models:/``
    URIs) and ``convopt.no_edge`` (unless ``tags`` sets it: ``"true"`` when the run that
    logged the model, or any run of ``tags["convopt.source_runs"]``, has it). The
    registered model is created if it does not exist.

    Args:
        model_uri: ``runs:/<run_id>/<name>``, ``models:/<model_id>``, or an existing version
            (``models:/<name>/<version>``, ``models:/<name>@<alias>``) to register again.
        name: the registered model name, e.g. ``convopt-ensemble``.
        tags: extra version tags (evidence: arm, study, p-values, ...).

    Raises:
        ModelNotFoundError, ModelIntegrityError: as in :func:`load_model`.
        RegistryReadError: a source run cannot be read.
    """
    resolved = resolve_model(model_uri)
    with private_dir("convopt-verified-") as tmp:
        _download_verified(resolved, tmp)
    version_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    if NO_EDGE_TAG not in version_tags:
        runs = [resolved.source_run_id or ""] + version_tags.get("convopt.source_runs", "").split(",")
        version_tags[NO_EDGE_TAG] = str(no_edge_of_runs([r for r in runs if r])).lower()
    version_tags.update(encode_hashes(MODEL_HASHES_TAG, resolved.model_id, resolved.files))
    with _registry_chatter_dropped():
        return mlflow.register_model(f"models:/{resolved.model_id}", name, tags=version_tags)


#: What ``mlflow.register_model`` prints on stderr about its own success; our callers say it once.
_CHATTER = ("Successfully registered model", "Created version '", "Registered model '")


@contextlib.contextmanager
def _registry_chatter_dropped():
    """Drop MLflow's own success lines from stderr while registering; anything else still shows."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer):
            yield
    finally:
        kept = [line for line in buffer.getvalue().splitlines(keepends=True) if not line.startswith(_CHATTER)]
        sys.stderr.write("".join(kept))


def no_edge_of_runs(run_ids: Sequence[str], client: MlflowClient | None = None) -> bool:
    """Whether any of ``run_ids`` is tagged ``convopt.no_edge=true`` (no edge over flat on validation).

    Raises:
        RegistryReadError: a run cannot be read (a missing run raises too: it cannot vouch).
    """
    client = client or MlflowClient()
    for run_id in dict.fromkeys(run_ids):
        try:
            tags = client.get_run(run_id).data.tags
        except MlflowException as exc:
            raise read_error(exc, f"source run {run_id!r}") from None
        if tags.get(NO_EDGE_TAG) == "true":
            return True
    return False


def predict_bars(model: mlflow.pyfunc.PyFuncModel, frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """``model.predict(frame)``, with MLflow's input-schema refusals reported as bad data.

    Raises:
        DataValidationError: bars the model refuses (too few, or missing a trained column).
    """
    try:
        return model.predict(frame)
    except MlflowException as exc:
        raise DataValidationError(source, [f"the model refuses these bars: {exc.message.splitlines()[0]}"]) from None
