"""Plotly pages as run artifacts, with one copy of plotly.js per run.

Each page loads the run's shared bundle (:data:`~convopt_mlflow.evaluation.figures.PLOTLY_BUNDLE`)
instead of embedding its 4.8 MB, so a run's HTML artifacts stay under 5 MB in total and
still render offline inside MLflow's artifact viewer (see
:func:`~convopt_mlflow.evaluation.figures.shared_plotly_loader`).
"""
from __future__ import annotations

import functools
import hashlib
import posixpath
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from convopt_mlflow.disk_cache import default_cache_dir, read_entry, write_entry
from convopt_mlflow.evaluation.figures import PLOTLY_BUNDLE, pack_plotly, plotly_bundle, plotly_bundle_js, write_html

__all__ = ["bundle_script", "log_figure", "log_plotly_bundle", "packed_plotly"]

_HAVE_BUNDLE: set[tuple[str, str]] = set()  # (tracking uri, run id) known to hold the bundle


def log_plotly_bundle(handle: Any) -> None:
    """Log plotly.js at :data:`PLOTLY_BUNDLE` unless the run holds it already (once per run)."""
    key = (str(handle.client.tracking_uri), handle.run_id)
    if key in _HAVE_BUNDLE:
        return
    folder, name = posixpath.split(PLOTLY_BUNDLE)
    held = {f.path for f in handle.client.list_artifacts(handle.run_id, folder)}
    if PLOTLY_BUNDLE not in held:
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / name
            copy.write_text(bundle_script(), encoding="ascii")
            handle.log_artifact(copy, folder)
    _HAVE_BUNDLE.add(key)


def packed_plotly(cache_dir: str | Path | None = None) -> bytes:
    """:func:`~convopt_mlflow.evaluation.figures.pack_plotly` of the installed plotly.js, kept in the
    cache folder (:mod:`convopt_mlflow.disk_cache`) under the sha256 of plotly.js and of the packing:
    gzipping 4.8 MB at level 9 costs every run 0.15 s of CPU, reading it back about 0.01 s."""
    source = plotly_bundle().read_bytes()
    key = hashlib.sha256(b"gzip-9-mtime-0\0" + source).hexdigest()
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"plotly-{key[:32]}.npz"
    stored = read_entry(path, key)
    if stored is not None and "gzip" in stored[0]:
        return stored[0]["gzip"].tobytes()
    packed = pack_plotly(source)
    write_entry(path, key, {"gzip": np.frombuffer(packed, dtype=np.uint8)}, {})
    return packed


@functools.lru_cache(maxsize=1)
def bundle_script() -> str:
    """The shared plotly.js script of this process's runs (:func:`packed_plotly`, made into the page's
    script once per process: a worker's later runs neither read the cache folder nor encode it again)."""
    return plotly_bundle_js(packed_plotly())


def log_figure(handle: Any, fig: Any, artifact_dir: str, file_name: str) -> str:
    """Log ``fig`` as ``<artifact_dir>/<file_name>``, loading the run's shared plotly.js; returns that path."""
    page = posixpath.join(artifact_dir, file_name)
    log_plotly_bundle(handle)
    with tempfile.TemporaryDirectory() as tmp:
        handle.log_artifact(write_html(fig, Path(tmp) / file_name, run_id=handle.run_id, page=page), artifact_dir)
    return page
