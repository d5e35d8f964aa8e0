"""Tolerant reading of a bar table's layout: which column is what, and timestamp parsing.

Column names are matched in any case, with ``_`` and spaces treated alike
("Adj_Close", "adj close", "ADJ CLOSE"). The timestamps may sit in the index or
in one column named date, time, timestamp, datetime, date time, gmt time or
local time; an unnamed first column (what ``DataFrame.to_csv`` writes for an
unnamed index) is used only when no named one exists.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable

import numpy as np
import pandas as pd

PRICE_COLUMNS = ("open", "high", "low", "close")
TIME_KEYS = ("date", "time", "timestamp", "datetime", "date time", "gmt time", "local time")
_ALIASES = {name: name for name in (*PRICE_COLUMNS, "volume")} | {
    "adj close": "adj close",
    "adjclose": "adj close",
    "adjusted close": "adj close",
}
INDEX = object()  # marker: the timestamps are the frame's index

#: Formats tried, in order, on a sample of the timestamp text; the one that
#: parses the most sample values wins (ties go to the earlier one, so
#: "01/02/2020" reads month-first, and dotted dates read day-first).
_TIME_FORMATS = (
    "ISO8601",
    "%d.%m.%Y %H:%M:%S.%f",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
    "%Y%m%d",
)
_SAMPLE = 1000


def feature_name(label: Hashable) -> str:
    """Canonical name of an exogenous feature column: the ``feat_`` prefix in lower case."""
    return "feat_" + str(label)[5:]


def column_key(label: Hashable) -> str:
    """Normalise a column label for matching: lower case, '_' as space, single spaces."""
    return " ".join(str(label).strip().lower().replace("_", " ").split())


@dataclass
class Layout:
    """Where each canonical field lives in a raw frame.

    ``time`` is :data:`INDEX`, a column label, or None when missing/ambiguous.
    ``close_from_adj`` is True when ``close`` is read from an Adj Close column.
    """

    time: object = None
    prices: dict[str, Hashable] = field(default_factory=dict)
    volume: Hashable | None = None
    features: list[Hashable] = field(default_factory=list)
    close_from_adj: bool = False


def _names(labels) -> str:
    return ", ".join(repr(str(label)) for label in labels)


def resolve_layout(frame: pd.DataFrame, problems: list[str]) -> Layout:
    """Find the timestamp, OHLC, volume and ``feat_*`` columns; append layout problems.

    A close price is required; when only an Adj Close column exists it is used
    as close (the OHLC invariants are then checked against it). When both
    exist, Adj Close is ignored: mixing adjusted closes with unadjusted
    open/high/low would break the bar's own geometry.
    """
    layout = Layout()
    by_name: dict[str, list[Hashable]] = {}
    for label in frame.columns:
        canonical = _ALIASES.get(column_key(label))
        if canonical is not None:
            by_name.setdefault(canonical, []).append(label)
        elif str(label).lower().startswith("feat_"):
            layout.features.append(label)

    if "close" not in by_name and "adj close" in by_name:
        by_name["close"] = by_name.pop("adj close")
        layout.close_from_adj = True
    for name in (*PRICE_COLUMNS, "volume"):
        labels = by_name.get(name, [])
        if len(labels) > 1:
            problems.append(f"ambiguous column {name!r}: {_names(labels)}; keep one")
        elif labels and name == "volume":
            layout.volume = labels[0]
        elif labels:
            layout.prices[name] = labels[0]
        elif name != "volume":
            problems.append(f"missing column {name!r} (columns found: {_names(frame.columns)})")
    features: dict[str, list[Hashable]] = {}
    for label in layout.features:
        features.setdefault(feature_name(label), []).append(label)
    for name, labels in features.items():
        if len(labels) > 1:
            problems.append(f"ambiguous column {name!r}: {_names(labels)}; keep one")

    layout.time = _resolve_time(frame, problems)
    return layout


def _resolve_time(frame: pd.DataFrame, problems: list[str]) -> object:
    candidates: list[object] = []
    names: list[str] = []
    index_name = frame.index.name
    if isinstance(frame.index, pd.DatetimeIndex) or (
        index_name is not None and column_key(index_name) in TIME_KEYS
    ):
        candidates.append(INDEX)
        names.append(f"index {str(index_name)!r}")
    for label in frame.columns:
        if column_key(label) in TIME_KEYS:
            candidates.append(label)
            names.append(repr(str(label)))
    if not candidates and len(frame.columns) and _is_unnamed(frame.columns[0]):
        return frame.columns[0]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        problems.append(f"ambiguous timestamp column: {', '.join(names)}; keep one")
    else:
        problems.append(
            "missing timestamp column: name it one of "
            f"{', '.join(TIME_KEYS)}, or put the timestamps in the index"
        )
    return None


def _is_unnamed(label: Hashable) -> bool:
    key = column_key(label)
    return key == "" or key.startswith("unnamed: 0")


def time_label(layout: Layout, frame: pd.DataFrame) -> str:
    """How problem lines name the timestamps: the column, or the index."""
    if layout.time is INDEX:
        return f"index {str(frame.index.name)!r}" if frame.index.name is not None else "index"
    return repr(str(layout.time))


def parse_timestamps(raw: pd.Series | pd.Index) -> tuple[np.ndarray | None, str | None]:
    """Parse timestamps to tz-naive UTC ``datetime64[ns]`` with NaT where a value fails.

    Returns ``(values, None)``, or ``(None, reason)`` when the column cannot
    hold timestamps at all (it is numeric). Time-zone-aware values are
    converted to UTC and the zone dropped.
    """
    series = pd.Series(raw, copy=False).reset_index(drop=True)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pd.api.types.is_datetime64_dtype(series.dtype):
        pass
    elif pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        return None, "hold numbers, not dates"
    else:
        text = series.astype("string").str.strip()
        series = pd.to_datetime(text, format=_best_format(text), errors="coerce", utc=True)
        series = series.dt.tz_localize(None)
    return series.to_numpy(dtype="datetime64[ns]"), None


def _best_format(text: pd.Series) -> str:
    sample = text.dropna().iloc[:_SAMPLE]
    best, best_count = _TIME_FORMATS[0], -1
    for fmt in _TIME_FORMATS:
        count = int(pd.to_datetime(sample, format=fmt, errors="coerce", utc=True).notna().sum())
        if count > best_count:
            best, best_count = fmt, count
        if count == len(sample):
            break
    return best
