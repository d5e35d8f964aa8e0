"""The train split's regime labels are computed once per (returns, detector settings, code) and
restored exactly: in the process, from disk, and never from an entry that does not match."""
from __future__ import annotations

import numpy as np

from convopt_mlflow.components.meta import MetaLearningController
from convopt_mlflow.training import labelling
from convopt_mlflow.training.labelling import label_train_split


def _returns(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(0, 1e-3, n // 2), rng.normal(0, 4e-3, n - n // 2)]


def _state(meta):
    return meta.labels.tolist(), list(meta.change_bars), meta.first_bar, meta.detector.state_dict()


def test_labels_restored_from_the_process_and_from_disk_equal_a_fresh_labelling(tmp_path, monkeypatch):
    returns, more = _returns(), _returns(400, seed=1)
    fresh = MetaLearningController({"seed": 0})
    fresh.detect_regime_change(returns[100:2900], first_bar=100)  # what the labelling itself does
    monkeypatch.setattr(labelling, "_KEPT", {})
    first = MetaLearningController({"seed": 0})
    label_train_split(first, returns, (0, 2900), warmup=100, cache_dir=tmp_path)
    assert _state(first) == _state(fresh) and len(list(tmp_path.glob("labels-*.npz"))) == 1
    again = MetaLearningController({"seed": 0})
    label_train_split(again, returns, (0, 2900), warmup=100, cache_dir=tmp_path)
    assert _state(again) == _state(fresh) and again.detector is not first.detector
    monkeypatch.setattr(labelling, "_KEPT", {})  # a new process: only the disk entry is left
    disk = MetaLearningController({"seed": 0})
    label_train_split(disk, returns, (0, 2900), warmup=100, cache_dir=tmp_path)
    assert _state(disk) == _state(fresh)
    for meta in (fresh, disk):  # the detector goes on exactly as if it had labelled the bars itself
        meta.detect_regime_change(more)
    assert _state(disk) == _state(fresh)


def test_other_returns_settings_or_a_damaged_entry_label_afresh(tmp_path, monkeypatch):
    returns = _returns()
    monkeypatch.setattr(labelling, "_KEPT", {})
    label_train_split(MetaLearningController({"seed": 0}), returns, (0, 3000), cache_dir=tmp_path)
    other = MetaLearningController({"seed": 0, "confirm": 25})
    label_train_split(other, returns, (0, 3000), cache_dir=tmp_path)
    shifted = returns.copy()
    shifted[-1] *= 2
    label_train_split(MetaLearningController({"seed": 0}), shifted, (0, 3000), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("labels-*.npz"))) == 3  # three keys
    expected = MetaLearningController({"seed": 0, "confirm": 25})
    expected.detect_regime_change(returns, first_bar=0)
    assert _state(other) == _state(expected)
    monkeypatch.setattr(labelling, "_KEPT", {})
    for path in tmp_path.glob("labels-*.npz"):
        path.write_bytes(path.read_bytes()[:200])  # truncated
    damaged = MetaLearningController({"seed": 0, "confirm": 25})
    label_train_split(damaged, returns, (0, 3000), cache_dir=tmp_path)
    assert _state(damaged) == _state(expected)
