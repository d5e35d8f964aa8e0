"""Hashes of every file of a model artifact, kept outside the artifact (run and version tags).

MLflow executes a models-from-code artifact's ``model_code.py`` when it loads it, so a
check that lives inside the artifact cannot protect the artifact. The sha256 of each file
(MLmodel, model_code.py, policy.json, member weights, requirements, ...) is recorded at
logging time in a tag of the training run, copied into the tags of every registered
version, and checked against a downloaded copy before anything is loaded from it.

Tag value (JSON, keys sorted): ``{"model_id": "m-...", "files": {"<relative path>": "<sha256>"}}``.
A value longer than MLflow's 8,000-character run-tag limit is split over
``<key>.0``, ``<key>.1``, ... with ``<key>`` holding ``{"parts": n}``.

One file is not part of the model: ``registered_model_meta`` at the root, a note
(registered name and version) that MLflow writes into whatever it downloads or loads
through a ``models:/`` URI; on a local store that is the stored artifact itself. Nothing
reads it; it is neither hashed nor kept in a verified copy (:data:`UNHASHED`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from convopt_mlflow.training.checkpoints import sha256_file
from convopt_mlflow.errors import UserError

__all__ = [
    "MODEL_HASHES_TAG",
    "ModelIntegrityError",
    "artifact_hashes",
    "decode_hashes",
    "encode_hashes",
    "file_sha256",
    "hashes_tag",
    "verify_artifact",
]

MODEL_HASHES_TAG = "convopt.model_files_sha256"
TAG_VALUE_LIMIT = 8000  # MLflow's run-tag limit (registry version tags allow 100,000)
#: Root-level files MLflow itself adds to a model directory on download.
UNHASHED = ("registered_model_meta",)


class ModelIntegrityError(UserError):
    """A model artifact that is missing, malformed, or whose files do not match their recorded sha256."""


#: Hex sha256 of a file's bytes: the one helper the checkpoint store uses too.
file_sha256 = sha256_file


def hashes_tag(name: str = "model") -> str:
    """The run tag holding the hashes of the model logged under ``name``."""
    return MODEL_HASHES_TAG if name == "model" else f"{MODEL_HASHES_TAG}.{name}"


def artifact_hashes(root: str | os.PathLike) -> dict[str, str]:
    """``{posix relative path: sha256}`` of every file under ``root`` (``__pycache__`` and
    :data:`UNHASHED` skipped)."""
    root = Path(root)
    return {
        path.relative_to(root).as_posix(): file_sha256(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.relative_to(root).parts
        and path.relative_to(root).as_posix() not in UNHASHED
    }


def encode_hashes(key: str, model_id: str, files: Mapping[str, str]) -> dict[str, str]:
    """The tags recording ``files`` under ``key`` (split when over the tag value limit)."""
    value = json.dumps({"model_id": model_id, "files": dict(files)}, sort_keys=True, separators=(",", ":"))
    if len(value) <= TAG_VALUE_LIMIT:
        return {key: value}
    parts = [value[i: i + TAG_VALUE_LIMIT] for i in range(0, len(value), TAG_VALUE_LIMIT)]
    return {key: json.dumps({"parts": len(parts)}), **{f"{key}.{i}": part for i, part in enumerate(parts)}}


def decode_hashes(tags: Mapping[str, str], key: str, where: str) -> tuple[str, dict[str, str]]:
    """``(model_id, files)`` recorded under ``key`` in ``tags``.

    Raises:
        ModelIntegrityError: no record (naming ``where`` it was looked for), or a malformed one.
    """
    if key not in tags:
        raise ModelIntegrityError(
            f"{where} has no tag {key!r} recording the sha256 of the model's files; refusing to load a model "
            f"whose integrity cannot be checked (log it with convopt's log_policy_model and register it "
            f"with register_verified_model)"
        )
    try:
        value = tags[key]
        head = json.loads(value)
        if isinstance(head, dict) and set(head) == {"parts"}:
            value = "".join(tags[f"{key}.{i}"] for i in range(int(head["parts"])))
            head = json.loads(value)
        model_id, files = str(head["model_id"]), dict(head["files"])
        if not files or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise ValueError("no files")
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelIntegrityError(f"malformed model hash record in tag {key!r} of {where}: {exc!r}") from None
    return model_id, files


def verify_artifact(root: str | os.PathLike, expected: Mapping[str, str], what: str) -> None:
    """Check that ``root`` holds exactly the files of ``expected``, each with its sha256.

    Reads bytes only; nothing under ``root`` is imported or unpickled. The :data:`UNHASHED`
    files are deleted from ``root`` (a copy the caller owns) so that none is left unchecked.

    Raises:
        ModelIntegrityError: naming the first file (sorted) that is changed, missing or unrecorded.
    """
    for name in UNHASHED:
        Path(root, name).unlink(missing_ok=True)
    actual = artifact_hashes(root)
    for path in sorted(set(expected) | set(actual)):
        if path not in actual:
            raise ModelIntegrityError(f"{what}: file {path!r} is recorded but missing from the artifact")
        if path not in expected:
            raise ModelIntegrityError(f"{what}: file {path!r} is in the artifact but its sha256 was never recorded; "
                                      f"refusing to load a modified model")
        if actual[path] != expected[path]:
            raise ModelIntegrityError(
                f"{what}: sha256 mismatch for {path!r}: recorded {expected[path]}, the file has {actual[path]}. "
                f"Refusing to load a modified or corrupted model."
            )
