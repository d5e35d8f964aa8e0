"""Helpers shared by the benchmark scripts."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def package_identity() -> dict[str, str]:
    """Where ``convopt_mlflow`` was imported from and a sha256 over its .py sources (the code measured)."""
    import hashlib

    import convopt_mlflow

    root = Path(convopt_mlflow.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return {"path": str(root), "sources_sha256": digest.hexdigest()[:16]}


def machine_info() -> dict[str, Any]:
    """The machine and code a result was measured on."""
    import torch

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "package": package_identity()}


def write_result(doc: dict[str, Any], out: Path | None) -> None:
    """Write a benchmark's JSON result to ``out`` (when given) and say where."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1, default=str))
        print(f"wrote {out}")
