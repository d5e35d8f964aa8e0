"""File digests shared by the checkpoint store (training/) and the model integrity record (tracking/).

It sits below both, so neither layer reaches into the other for it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["sha256_file"]


def sha256_file(path: str | Path, *, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of the file at ``path``, read in ``chunk_bytes`` chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
