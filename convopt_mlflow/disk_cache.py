"""One entry format for the results a run computes from its inputs and keeps for the next run
(regime labels, the true oracle's plan, the threshold rule, the gzipped plotly.js of the run's pages).

An entry is one ``.npz`` under the cache folder (``$CONVOPT_CACHE_DIR``, default ``.convopt/cache``):
named arrays plus a JSON head holding the entry's key and the sha256 of its arrays. It is written
to a temporary file, fsynced and renamed into place; one that does not read back whole with the
expected key and digest (missing, truncated, foreign, from other code) reads as None, and the
caller computes afresh. Writing is best effort: a cache that cannot be written only costs the next
run the computation.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

__all__ = ["code_digest", "default_cache_dir", "read_entry", "write_entry"]


def default_cache_dir() -> Path:
    return Path(os.environ.get("CONVOPT_CACHE_DIR", ".convopt/cache"))


def code_digest(modules: Iterable[Any]) -> str:
    """sha256 of the modules' source: a change to the code that computes an entry is a new key."""
    return hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in modules)).hexdigest()


def _arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode() + str(arrays[name].dtype).encode() + str(arrays[name].shape).encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def read_entry(path: Path, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The entry's arrays and head, or None unless it reads back whole under ``key``."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name].copy() for name in stored.files if name != "head"}
            head = json.loads(str(stored["head"]))
    except Exception:  # noqa: BLE001 - missing, truncated or foreign: compute afresh
        return None
    if head.get("key") != key or head.get("arrays_sha256") != _arrays_sha256(arrays):
        return None
    return arrays, head


def write_entry(path: Path, key: str, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
    """Keep ``arrays`` and the JSON-able ``values`` under ``key`` at ``path`` (best effort)."""
    head = {"key": key, "arrays_sha256": _arrays_sha256(arrays), **values}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}-", suffix=".npz",
                                         delete=False) as tmp:
            np.savez(tmp, head=np.array(json.dumps(head)), **arrays)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)
    except OSError:
        if tmp is not None:
            try:
                os.unlink(tmp.name)
            except OSError:
                pass
