"""Whether promotion may judge on a set of bars: never on bars a model learned or was selected on.

Pure logic over the split boundaries that every training run records (see
:func:`~convopt_mlflow.data.splits.split_boundaries`). The bars a promotion evaluates on
must not overlap any source run's ``train`` or ``val`` range, of either model; bars that
overlap a source run's ``test`` range were already used by an A/B verdict, which the
promotion records (``bars_reused``) rather than hides.

Ranges of runs on the same data (same digest) are compared as bar indices. Runs on other
data (another digest: a longer file, a newer download) are compared by time, first to last
bar inclusive: the digest cannot tell whether those bars are the same market, so any
shared time counts as shared bars.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import pandas as pd

__all__ = ["EvaluationBars", "SplitCheck", "check_evaluation_bars"]

PROMOTION_SPLITS = ("holdout", "test")
FORBIDDEN = ("train", "val")
"""Splits whose bars a model learned from or was selected on: promotion never judges there."""


@dataclass(frozen=True)
class EvaluationBars:
    """The bars a promotion judges on: ``split`` of the data with ``digest``, ``[start, stop)``,
    timestamps ``first`` to ``last`` (ISO, inclusive)."""

    split: str
    digest: str
    start: int
    stop: int
    first: str
    last: str


@dataclass(frozen=True)
class SplitCheck:
    """``conflicts``: why the bars may not be used (empty: they may); ``reused_by``: the source
    runs whose test split (an A/B verdict's bars) they overlap."""

    conflicts: tuple[str, ...]
    reused_by: tuple[str, ...]

    @property
    def bars_reused(self) -> bool:
        return bool(self.reused_by)


def check_evaluation_bars(bars: EvaluationBars, sources: Mapping[str, Mapping[str, Any] | None]) -> SplitCheck:
    """Check ``bars`` against every source run's recorded splits.

    Args:
        bars: what the promotion would evaluate on.
        sources: ``label -> record`` per source run (label names the model and run, e.g.
            ``"version 2 (run abc)"``); a record is ``{"digest", "splits": {name: {"start",
            "stop", "first", "last"} | None}}``, or None when the run recorded no boundaries.

    Example:
        >>> bars = EvaluationBars("holdout", "d", 900, 1000, "2024-02-07T12:00:00", "2024-02-11T15:00:00")
        >>> run = {"digest": "d", "splits": {"train": {"start": 0, "stop": 570}, "val": {"start": 580, "stop": 730},
        ...        "test": {"start": 740, "stop": 890}, "holdout": {"start": 900, "stop": 1000}}}
        >>> check_evaluation_bars(bars, {"version 1": run})
        SplitCheck(conflicts=(), reused_by=())
        >>> test = EvaluationBars("test", "d", 740, 890, "", "")
        >>> check_evaluation_bars(test, {"version 1": run}).bars_reused
        True
        >>> check_evaluation_bars(EvaluationBars("test", "d", 700, 890, "", ""), {"version 1": run}).conflicts
        ("bars 700:890 overlap version 1's val split (bars 700:730)",)
    """
    conflicts: list[str] = []
    reused: list[str] = []
    for label, record in sources.items():
        if record is None:
            conflicts.append(f"{label} recorded no split boundaries (trained before runs recorded them), so its "
                             "training and validation bars are unknown")
            continue
        for name, bounds in record["splits"].items():
            if bounds is None or name not in (*FORBIDDEN, "test"):
                continue
            shared = _shared(bars, record["digest"], bounds)
            if shared is None:
                continue
            if name in FORBIDDEN:
                conflicts.append(f"bars {bars.start}:{bars.stop} overlap {label}'s {name} split ({shared})")
            else:
                reused.append(label)
    return SplitCheck(tuple(conflicts), tuple(dict.fromkeys(reused)))


def _shared(bars: EvaluationBars, digest: str, bounds: Mapping[str, Any]) -> str | None:
    """What ``bars`` share with one recorded split, described, or None."""
    if digest == bars.digest:
        lo, hi = max(bars.start, int(bounds["start"])), min(bars.stop, int(bounds["stop"]))
        return f"bars {lo}:{hi}" if lo < hi else None
    lo = max(pd.Timestamp(bars.first), pd.Timestamp(bounds["first"]))
    hi = min(pd.Timestamp(bars.last), pd.Timestamp(bounds["last"]))
    if lo > hi:
        return None
    return f"{lo.isoformat()} to {hi.isoformat()}, on data with digest {digest} (this data: {bars.digest})"
