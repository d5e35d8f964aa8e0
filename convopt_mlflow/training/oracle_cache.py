"""The market's oracles, solved once per (inputs, code) and kept on disk across runs.

Every run on a synthetic market solves the true oracle's Bellman equation (about 3,400 sweeps,
about 1 s) and, on a planted-signal market, fits the threshold rule's theta over the train split
(256 candidates, about 1 s): together about a fifth of a short run's fixed cost. Both depend only
on their inputs and on the code that computes them, so they are kept under a sha256 of exactly
those, in the same cache folder and entry format as the regime labels (:mod:`convopt_mlflow.disk_cache`):

- ``oracle-plan-<key>.npz``: the solved :class:`~convopt_mlflow.evaluation.true_oracle.Plan`;
- ``oracle-rule-<key>.npz``: the fitted :class:`~convopt_mlflow.evaluation.oracle.OracleRule`.

An entry that does not read back whole and matching (truncated, foreign, from other code) is
ignored and the oracle solved afresh. Restored values are bit-identical to a
fresh solve (``np.savez`` keeps float64 exactly; the rule's floats round-trip through JSON's repr).
Within a process ``solve_plan``'s own ``lru_cache`` keeps working as before.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..evaluation import oracle as rule_code
from ..evaluation import true_oracle as plan_code
from ..evaluation.oracle import OracleRule
from ..evaluation.true_oracle import Plan
from ..disk_cache import code_digest, default_cache_dir, read_entry, write_entry

__all__ = ["cached_plan", "cached_rule"]

_CODE: dict[str, str] = {}


def cached_plan(solve: Callable[[], Plan], *, inputs: Any, cache_dir: str | os.PathLike | None = None) -> Plan:
    """``solve()``, or the plan an earlier ``solve()`` with the same ``inputs`` (a repr-exact
    description: dynamics, cost, levels) and the same ``true_oracle`` code left on disk."""
    key = _key(plan_code, repr(inputs).encode())
    path = _folder(cache_dir) / f"oracle-plan-{key[:32]}.npz"
    stored = read_entry(path, key)
    if stored is not None:
        arrays, head = stored
        for array in arrays.values():  # read-only, as the solver's own (shared) plans are
            array.flags.writeable = False
        return Plan(arrays["continuation"], arrays["z_grid"], arrays["levels"], int(head["iterations"]))
    plan = solve()
    write_entry(path, key, {"continuation": plan.continuation, "z_grid": plan.z_grid, "levels": plan.levels},
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
    stored = read_entry(path, key)
    if stored is not None:
        head = stored[1]
        return OracleRule(float(head["theta"]), float(head["train_sharpe"]), bool(head["long_only"]))
    rule = fit()
    write_entry(path, key, {}, {"theta": float(rule.theta), "train_sharpe": float(rule.train_sharpe),
                           "long_only": bool(rule.long_only)})
    return rule


def _folder(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def _key(module: Any, inputs: bytes) -> str:
    name = module.__name__
    if name not in _CODE:  # the solver's code: a change to it is a new key
        _CODE[name] = code_digest([module])
    return hashlib.sha256(_CODE[name].encode() + b"|" + inputs).hexdigest()
