"""The market's oracles, solved once per (inputs, code) and kept on disk across runs.

Every run on a synthetic market solves the true oracle's Bellman equation (about 3,400 sweeps,
about 1 s) and, on a planted-signal market, fits the threshold rule's theta over the train split
(256 candidates, about 1 s): together about a fifth of a short run's fixed cost. Both depend only
on their inputs and on the code that computes them, so they are kept under a sha256 of exactly
those, in the same cache folder as the regime labels (:func:`.labelling.default_cache_dir`):

- ``oracle-plan-<key>.npz``: the solved :class:`~convopt_mlflow.evaluation.true_oracle.Plan`;
- ``oracle-rule-<key>.npz``: the fitted :class:`~convopt_mlflow.evaluation.oracle.OracleRule`.

An entry is written to a temporary file, fsynced and renamed into place, with the sha256 of its
arrays and its key in its head; one that does not read back whole and matching (truncated, foreign,
from other code) is ignored and the oracle solved afresh. Restored values are bit-identical to a
fresh solve (``np.savez`` keeps float64 exactly; the rule's floats round-trip through JSON's repr).
Within a process ``solve_plan``'s own ``lru_cache`` keeps working as before.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..evaluation import oracle as rule_code
from ..evaluation import true_oracle as plan_code
from ..evaluation.oracle import OracleRule
from ..evaluation.true_oracle import Plan
from .labelling import default_cache_dir

__all__ = ["cached_plan", "cached_rule"]

_CODE: dict[str, str] = {}


def cached_plan(solve: Callable[[], Plan], *, inputs: Any, cache_dir: str | os.PathLike | None = None) -> Plan:
    """``solve()``, or the plan an earlier ``solve()`` with the same ``inputs`` (a repr-exact
    description: dynamics, cost, levels) and the same ``true_oracle`` code left on disk."""
    key = _key(plan_code, repr(inputs).encode())
    path = _folder(cache_dir) / f"oracle-plan-{key[:32]}.npz"
    stored = _read(path, key)
    if stored is not None:
        arrays, head = stored
        for array in arrays.values():  # read-only, as the solver's own (shared) plans are
            array.flags.writeable = False
        return Plan(arrays["continuation"], arrays["z_grid"], arrays["levels"], int(head["iterations"]))
    plan = solve()
    _write(path, key, {"continuation": plan.continuation, "z_grid": plan.z_grid, "levels": plan.levels},
           {"iterations": int(plan.iterations)})
    return plan


def cached_rule(fit: Callable[[], OracleRule], *, signal: np.ndarray, next_log_returns: np.ndarray,
                settings: dict[str, Any], cache_dir: str | os.PathLike | None = None) -> OracleRule:
    """``fit()``, or the rule an earlier ``fit()`` on the same signal, returns and ``settings``
    (cost, annualization, long-only) with the same ``oracle`` code left on disk."""
    data = np.ascontiguousarray(signal, dtype=np.float64).tobytes() + b"|" + \
        np.ascontiguousarray(next_log_returns, dtype=np.float64).tobytes()
    key = _key(rule_code, json.dumps(settings, sort_keys=True).encode() + b"|" + data)
    path = _folder(cache_dir) / f"oracle-rule-{key[:32]}.npz"
    stored = _read(path, key)
    if stored is not None:
        head = stored[1]
        return OracleRule(float(head["theta"]), float(head["train_sharpe"]), bool(head["long_only"]))
    rule = fit()
    _write(path, key, {}, {"theta": float(rule.theta), "train_sharpe": float(rule.train_sharpe),
                           "long_only": bool(rule.long_only)})
    return rule


def _folder(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def _key(module: Any, inputs: bytes) -> str:
    name = module.__name__
    if name not in _CODE:  # the solver's code: a change to it is a new key
        _CODE[name] = hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()
    return hashlib.sha256(_CODE[name].encode() + b"|" + inputs).hexdigest()


def _arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode() + str(arrays[name].dtype).encode() + str(arrays[name].shape).encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def _read(path: Path, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name].copy() for name in stored.files if name != "head"}
            head = json.loads(str(stored["head"]))
    except Exception:  # noqa: BLE001 - missing, truncated or foreign: solve afresh
        return None
    if head.get("key") != key or head.get("arrays_sha256") != _arrays_sha256(arrays):
        return None
    return arrays, head


def _write(path: Path, key: str, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
    """Best effort: a cache that cannot be written only costs the next run the solve."""
    head = {"key": key, "arrays_sha256": _arrays_sha256(arrays), **values}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".oracle-", suffix=".npz", delete=False) as tmp:
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
