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

Verification is an allow-list: after :func:`verify_artifact` the copy holds exactly the
recorded files. Compiled bytecode (every ``__pycache__`` directory and ``.pyc`` file) is
never recorded and is *deleted* from the copy first: Python's import system would run an
unchecked-hash ``.pyc`` instead of the verified ``model_code.py`` without comparing the
two. Any other file that was not recorded makes the whole artifact refused, with every
such file named.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Mapping

from convopt_mlflow.hashing import sha256_file
from convopt_mlflow.errors import UserError

__all__ = [
    "MODEL_HASHES_TAG",
    "ModelIntegrityError",
    "artifact_hashes",
    "decode_hashes",
    "strip_bytecode",
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


def _is_bytecode(relative: Path) -> bool:
    return "__pycache__" in relative.parts or relative.suffix == ".pyc"


def _files(root: Path) -> list[Path]:
    """Every file under ``root``, as paths relative to it, sorted."""
    return sorted(path.relative_to(root) for path in root.rglob("*") if path.is_file() or path.is_symlink())


def artifact_hashes(root: str | os.PathLike) -> dict[str, str]:
    """``{posix relative path: sha256}`` of every file under ``root`` to record at logging time.

    Compiled bytecode (``__pycache__``, ``.pyc``) and :data:`UNHASHED` are not part of a
    model and are never recorded (a verified copy deletes them, :func:`strip_bytecode`).
    """
    root = Path(root)
    return {
        relative.as_posix(): file_sha256(root / relative)
        for relative in _files(root)
        if not _is_bytecode(relative) and relative.as_posix() not in UNHASHED
    }


def strip_bytecode(root: str | os.PathLike) -> list[str]:
    """Delete every ``__pycache__`` directory and ``.pyc`` file under ``root``; return what went (sorted).

    Only for a copy the caller owns: an artifact's bytecode is never imported.
    """
    root = Path(root)
    removed = [relative.as_posix() for relative in _files(root) if _is_bytecode(relative)]
    for folder in sorted(root.rglob("__pycache__"), key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
        else:
            folder.unlink(missing_ok=True)
    for path in root.rglob("*.pyc"):
        path.unlink(missing_ok=True)
    return removed


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

    Reads bytes only; nothing under ``root`` is imported or unpickled. ``root`` must be a
    copy the caller owns: the :data:`UNHASHED` files and all compiled bytecode
    (:func:`strip_bytecode`) are deleted from it first, so that afterwards it holds exactly
    the recorded files or this raises.

    Raises:
        ModelIntegrityError: naming every file that is in the artifact but was never
            recorded; else the first file (sorted) that is missing or changed.
    """
    for name in UNHASHED:
        Path(root, name).unlink(missing_ok=True)
    strip_bytecode(root)
    present = [relative.as_posix() for relative in _files(Path(root))]
    extra = [path for path in present if path not in expected]
    if extra:
        named = ", ".join(repr(path) for path in extra)
        raise ModelIntegrityError(
            f"{what}: file {named} is in the artifact but its sha256 was never recorded; refusing to load a "
            f"modified model" if len(extra) == 1 else
            f"{what}: files {named} are in the artifact but their sha256 were never recorded; refusing to load "
            f"a modified model"
        )
    actual = {path: file_sha256(Path(root, path)) for path in present}
    for path in sorted(expected):
        if path not in actual:
            raise ModelIntegrityError(f"{what}: file {path!r} is recorded but missing from the artifact")
        if actual[path] != expected[path]:
            raise ModelIntegrityError(
                f"{what}: sha256 mismatch for {path!r}: recorded {expected[path]}, the file has {actual[path]}. "
                f"Refusing to load a modified or corrupted model."
            )
