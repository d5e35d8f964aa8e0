"""Helpers shared by the benchmark scripts."""
from __future__ import annotations

from pathlib import Path


def package_identity() -> dict[str, str]:
    """Where ``convopt_mlflow`` was imported from and a sha256 over its .py sources (the code measured)."""
    import hashlib

    import convopt_mlflow

    root = Path(convopt_mlflow.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return {"path": str(root), "sources_sha256": digest.hexdigest()[:16]}
