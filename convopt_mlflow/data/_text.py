"""Small formatting helpers shared by the data modules (row lists, durations)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

#: How many row numbers a problem line shows before it says "and N more".
MAX_ROWS_SHOWN = 5


def format_rows(positions: Sequence[int] | np.ndarray) -> str:
    """Name rows by their 1-based data row number, compressing long lists.

    Args:
        positions: 0-based positions of the rows in the frame (data row 1 is
            the first row after a CSV header).

    >>> format_rows([4])
    'row 5'
    >>> format_rows([4, 8, 11, 19, 32, 50, 60])
    'rows 5, 9, 12, 20, 33 and 2 more'
    """
    rows = [int(p) + 1 for p in positions]
    if len(rows) == 1:
        return f"row {rows[0]}"
    shown = ", ".join(str(r) for r in rows[:MAX_ROWS_SHOWN])
    rest = len(rows) - MAX_ROWS_SHOWN
    if rest > 0:
        return f"rows {shown} and {rest} more"
    head, _, last = shown.rpartition(", ")
    return f"rows {head} and {last}"


def format_timedelta(delta: pd.Timedelta) -> str:
    """A compact, readable duration: '1h', '1d', '2d 2h', '15min', '1.5s'.

    >>> format_timedelta(pd.Timedelta("2 days 02:00:00"))
    '2d 2h'
    """
    delta = pd.Timedelta(delta)
    if delta < pd.Timedelta(0):
        return "-" + format_timedelta(-delta)
    total_ns = delta.value
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        count, total_ns = divmod(total_ns, size * 10**9)
        if count:
            parts.append(f"{count}{unit}")
    if total_ns or not parts:
        parts.append(f"{total_ns / 1e9:g}s")
    return " ".join(parts)
