"""The train split's regime labels, computed once per (returns, detector settings, code).

The meta controller labels every train bar with an online change-point detector (Bayesian,
causal, with run-length pruning: about 6 us of CPU per bar, 1.0-1.2 s for the 180k-bar train split of
benchmarks/bench_regime_cost.py on a loaded machine). The
labels depend only on the returns fed, where they start, the detector's settings and its code, so they are kept
under a sha256 of exactly those:

- in the process (an A/B or tune worker labels each market once), and
- on disk under ``cache_dir`` (``$CONVOPT_CACHE_DIR``, default ``.convopt/cache`` next to the
  default checkpoint root), so the next run on the same market reuses them.

A disk entry is one ``.npz`` written to a temporary file and renamed into place, holding the
labels, the declared change bars and the detector's state after the last bar (so feeding more
bars later continues exactly as if it had labelled them itself), in :mod:`convopt_mlflow.disk_cache`'s format. An entry
that does not read back whole and matching is ignored and recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..components import bocpd, bocpd_fast, changepoint, meta
from ..disk_cache import code_digest, default_cache_dir, read_entry, write_entry

__all__ = ["label_train_split", "default_cache_dir"]

_KEPT: dict[str, dict[str, Any]] = {}
_CODE: list[str] = []


def label_train_split(controller: Any, log_returns: np.ndarray, train: tuple[int, int], warmup: int = 0, *,
                      cache_dir: str | os.PathLike | None = None) -> None:
    """Run the controller's online detector over the train split's per-bar log returns, in order
    (or restore what that run left, from the process or the disk cache)."""
    start, stop = max(int(train[0]), int(warmup)), int(train[1])
    returns = np.asarray(log_returns[start:stop], dtype=np.float64)
    if controller.detector is not None or controller.labels.size:  # a controller mid-stream: feed it
        controller.detect_regime_change(returns, first_bar=start)
        return
    key = _key(controller, returns, start)
    path = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / f"labels-{key[:32]}.npz"
    entry = _KEPT.get(key) or _read(path, key)
    if entry is None:
        controller.detect_regime_change(returns, first_bar=start)
        entry = {"labels": controller.labels.copy(), "change_bars": list(controller.change_bars),
                 "first_bar": controller.first_bar, "scale": controller.detector.scale,
                 "detector": controller.detector.state_dict()}
        write_entry(path, key, {"labels": entry["labels"]}, {k: entry[k] for k in _HEAD})
    else:
        detector = changepoint.BayesianChangePointDetector(entry["scale"], hazard=controller.hazard,
                                                           confirm=controller.confirm)
        detector.load_state_dict(entry["detector"])
        controller.detector, controller.first_bar = detector, int(entry["first_bar"])
        controller.labels, controller.change_bars = entry["labels"].copy(), list(entry["change_bars"])
    _KEPT[key] = entry


def _key(controller: Any, returns: np.ndarray, start: int) -> str:
    if not _CODE:  # the detector's and the controller's code: a change to either is a new key
        _CODE.append(code_digest((changepoint, bocpd, bocpd_fast, meta)))
    digest = hashlib.sha256(_CODE[0].encode())
    digest.update(json.dumps([int(start), controller.hazard, controller.confirm, returns.size]).encode())
    digest.update(returns.tobytes())
    return digest.hexdigest()


_HEAD = ("change_bars", "first_bar", "scale", "detector")


def _read(path: Path, key: str) -> dict[str, Any] | None:
    stored = read_entry(path, key)
    if stored is None or "labels" not in stored[0]:
        return None
    arrays, head = stored
    return {"labels": arrays["labels"], **{k: head[k] for k in _HEAD}}
