"""The train split's regime labels, computed once per (returns, detector settings, code).

The meta controller labels every train bar with an online change-point detector (Bayesian,
causal, with run-length pruning: about 10 us of CPU per bar, 2-5 s for a 200k-bar split). The
labels depend only on the returns fed, where they start, the detector's settings and its code, so they are kept
under a sha256 of exactly those:

- in the process (an A/B or tune worker labels each market once), and
- on disk under ``cache_dir`` (``$CONVOPT_CACHE_DIR``, default ``.convopt/cache`` next to the
  default checkpoint root), so the next run on the same market reuses them.

A disk entry is one ``.npz`` written to a temporary file and renamed into place, holding the
labels, the declared change bars and the detector's state after the last bar (so feeding more
bars later continues exactly as if it had labelled them itself), with the labels' sha256. An entry
that does not read back whole and matching is ignored and recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..components import bocpd, bocpd_fast, changepoint, meta

__all__ = ["label_train_split", "default_cache_dir"]

_KEPT: dict[str, dict[str, Any]] = {}
_CODE: list[str] = []


def default_cache_dir() -> Path:
    return Path(os.environ.get("CONVOPT_CACHE_DIR", ".convopt/cache"))


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
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = _KEPT.get(key) or _read(folder / f"labels-{key[:32]}.npz", key)
    if entry is None:
        controller.detect_regime_change(returns, first_bar=start)
        entry = {"labels": controller.labels.copy(), "change_bars": list(controller.change_bars),
                 "first_bar": controller.first_bar, "scale": controller.detector.scale,
                 "detector": controller.detector.state_dict()}
        _write(folder / f"labels-{key[:32]}.npz", key, entry)
    else:
        detector = changepoint.BayesianChangePointDetector(entry["scale"], hazard=controller.hazard,
                                                           confirm=controller.confirm)
        detector.load_state_dict(entry["detector"])
        controller.detector, controller.first_bar = detector, int(entry["first_bar"])
        controller.labels, controller.change_bars = entry["labels"].copy(), list(entry["change_bars"])
    _KEPT[key] = entry


def _key(controller: Any, returns: np.ndarray, start: int) -> str:
    if not _CODE:  # the detector's and the controller's code: a change to either is a new key
        modules = (changepoint, bocpd, bocpd_fast, meta)
        _CODE.append(hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in modules)).hexdigest())
    digest = hashlib.sha256(_CODE[0].encode())
    digest.update(json.dumps([int(start), controller.hazard, controller.confirm, returns.size]).encode())
    digest.update(returns.tobytes())
    return digest.hexdigest()


def _read(path: Path, key: str) -> dict[str, Any] | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            labels, head = stored["labels"].copy(), json.loads(str(stored["head"]))
    except Exception:  # noqa: BLE001 - missing, truncated or foreign: label afresh
        return None
    if head.get("key") != key or head.get("labels_sha256") != hashlib.sha256(labels.tobytes()).hexdigest():
        return None
    return {"labels": labels, **{k: head[k] for k in ("change_bars", "first_bar", "scale", "detector")}}


def _write(path: Path, key: str, entry: dict[str, Any]) -> None:
    """Best effort: a cache that cannot be written only costs the next run the labelling."""
    head = {"key": key, "labels_sha256": hashlib.sha256(entry["labels"].tobytes()).hexdigest(),
            **{k: entry[k] for k in ("change_bars", "first_bar", "scale", "detector")}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".labels-", suffix=".npz", delete=False) as tmp:
            np.savez(tmp, labels=entry["labels"], head=np.array(json.dumps(head)))
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)
    except OSError:
        try:
            os.unlink(tmp.name)
        except (OSError, UnboundLocalError):
            pass
