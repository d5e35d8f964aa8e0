"""Seed-paired scores of an A/B study, with failed cells treated as outcomes.

Pure: numpy only. A cell (arm, seed) the study gave up on is an outcome of its arm. Keeping
only the seeds that every arm completed would condition on success and favour unstable
arms, so no seed is dropped silently; the study's failure rule decides:

- ``refuse`` (the default): the comparison runs over the seeds every arm completed, the
  seeds it left out are listed with their failed cells, and an arm with a failed cell (or
  compared with a baseline that has one) is never registered.
- ``worst``: a failed cell scores the worst primary value observed in the study (any arm,
  any seed), so every pair is kept and an arm pays for its failures.

Example:
    >>> records = [{"arm": a, "seed": s, "value": v} for a, s, v in
    ...            [("base", 0, 1.0), ("base", 1, 2.0), ("lr", 0, 3.0)]]
    >>> failed = [{"arm": "lr", "seed": 1, "reason": "diverged"}]
    >>> p = paired_scores(records, ["base", "lr"], failed, rule="worst")
    >>> p.seeds, p.scores["lr"].tolist(), p.filled
    ([0, 1], [3.0, 1.0], [('lr', 1)])
    >>> p = paired_scores(records, ["base", "lr"], failed)
    >>> p.seeds, p.dropped
    ([0], {1: 'lr failed (diverged)'})
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .spec import ON_FAILURE


@dataclass(frozen=True)
class Pairing:
    """``scores``: ``{arm: (seeds,)}`` over ``seeds``; what the failure rule filled or left out."""

    scores: dict[str, np.ndarray]
    seeds: list[int]
    rule: str = "refuse"
    filled: list[tuple[str, int]] = field(default_factory=list)
    """Failed cells scored by the ``worst`` rule."""
    fill_value: float | None = None
    dropped: dict[int, str] = field(default_factory=dict)
    """Seeds left out of the comparison, and why (a failed or an unfinished cell)."""


def paired_scores(records: Sequence[Mapping[str, Any]], arms: Sequence[str],
                  failed: Sequence[Mapping[str, Any]] = (), *, rule: str = "refuse") -> Pairing:
    """Primary scores paired by seed over every seed any arm reached (common random numbers).

    Args:
        records: one per COMPLETE cell: ``arm``, ``seed``, ``value``.
        arms: the arms compared (others in ``records`` or ``failed`` are ignored).
        failed: one per given-up cell: ``arm``, ``seed``, ``reason``.
        rule: ``refuse`` or ``worst`` (see the module docstring).
    """
    if rule not in ON_FAILURE:
        raise ValueError(f"rule must be one of {ON_FAILURE}; got {rule!r}")
    done: dict[str, dict[int, float]] = {arm: {} for arm in arms}
    for r in records:
        if r["arm"] in done:
            done[r["arm"]][int(r["seed"])] = float(r["value"])
    lost = {(f["arm"], int(f["seed"])): str(f.get("reason", "failed")) for f in failed if f["arm"] in done}
    reached = sorted({s for values in done.values() for s in values} | {s for _, s in lost})
    worst = min((float(r["value"]) for r in records), default=None)
    seeds, filled, dropped = [], [], {}
    for seed in reached:
        missing = [arm for arm in arms if seed not in done[arm]]
        failures = [arm for arm in missing if (arm, seed) in lost]
        unfinished = [arm for arm in missing if (arm, seed) not in lost]
        if unfinished or (failures and (rule == "refuse" or worst is None)):
            why = [f"{arm} failed ({lost[(arm, seed)]})" for arm in failures] + [f"{arm} unfinished" for arm in unfinished]
            dropped[seed] = "; ".join(why)
            continue
        seeds.append(seed)
        filled += [(arm, seed) for arm in failures]
    scores = {arm: np.array([done[arm].get(s, worst) for s in seeds], dtype=float) for arm in arms}
    return Pairing(scores, seeds, rule, filled, worst if filled else None, dropped)


def failure_summary(records: Sequence[Mapping[str, Any]], failed: Sequence[Mapping[str, Any]],
                    arms: Sequence[str], rule: str) -> dict[str, Any]:
    """The report's ``failures`` block: the rule, the failed cells, and each arm's failure rate.

    An arm's failure rate is its failed cells over the cells it ran to an end (complete or failed).

    Example:
        >>> failure_summary([{"arm": "a", "seed": 0}], [{"arm": "b", "seed": 0, "reason": "x"}], ["a", "b"],
        ...                 "refuse")["rate"]
        {'a': 0.0, 'b': 1.0}
    """
    cells = [{"arm": f["arm"], "seed": int(f["seed"]), "reason": str(f.get("reason", "failed"))} for f in failed]
    rate = {}
    for arm in arms:
        n_failed = sum(c["arm"] == arm for c in cells)
        n_done = sum(r["arm"] == arm for r in records) + n_failed
        rate[arm] = n_failed / n_done if n_done else 0.0
    return {"rule": rule, "cells": cells, "rate": rate}


def describe_failures(cells: Sequence[Mapping[str, Any]]) -> str:
    """``"lr seed 3 (diverged), lr seed 4 (diverged)"``: every failed cell by name."""
    return ", ".join(f"{c['arm']} seed {c['seed']} ({c['reason']})" for c in cells)
