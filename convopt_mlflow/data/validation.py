"""Strict validation of market bars: every problem, with row numbers, in one error.

Rows are named by their 1-based data row number: row 1 is the first row after a
CSV header (for a frame, the first row by position). All checks run before
anything is raised, so the user sees the whole list at once.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from convopt_mlflow.data._schema import (
    INDEX,
    PRICE_COLUMNS,
    feature_name,
    parse_timestamps,
    resolve_layout,
    time_label,
)
from convopt_mlflow.data._text import format_rows, format_timedelta
from convopt_mlflow.errors import ConfigError, DataValidationError

#: Fewer bars than this cannot define a span, returns or an annualisation.
MIN_POSSIBLE_BARS = 2


def validate_frame(
    frame: pd.DataFrame,
    *,
    source: str,
    min_bars: int = 0,
    max_gap: str | None = "30D",
) -> pd.DataFrame:
    """Check a raw bar table and return it in canonical form.

    Args:
        frame: the table as read: timestamps in the index or a column, OHLC
            columns in any case, optional volume and ``feat_*`` columns.
        source: what was loaded, for the error message.
        min_bars: the fewest bars the caller needs (window + episode + splits);
            at least 2 are always required.
        max_gap: the longest allowed time between consecutive bars, as a pandas
            Timedelta string ("30D", "6h"); None disables the check.

    Returns:
        A frame with a tz-naive ``DatetimeIndex`` named "timestamp" (strictly
        increasing, ns resolution) and float64 columns open, high, low, close,
        then volume if present, then the ``feat_*`` columns in source order.

    Raises:
        DataValidationError: listing every problem found, each with its rows.
        ConfigError: if ``min_bars`` or ``max_gap`` themselves are invalid.
    """
    limit = _parse_max_gap(max_gap)
    if not isinstance(min_bars, (int, np.integer)) or isinstance(min_bars, bool) or min_bars < 0:
        raise ConfigError(f"min_bars must be a non-negative integer, got {min_bars!r}")

    problems: list[str] = []
    layout = resolve_layout(frame, problems)
    need = max(int(min_bars), MIN_POSSIBLE_BARS)
    if len(frame) < need:
        problems.append(f"too few bars: need at least {need}, found {len(frame)}")

    stamps = None
    if layout.time is not None:
        raw = frame.index if layout.time is INDEX else frame[layout.time]
        stamps = _check_timestamps(raw, time_label(layout, frame), limit, max_gap, problems)

    columns: dict[str, np.ndarray] = {}
    for name in PRICE_COLUMNS:
        if name in layout.prices:
            columns[name] = _check_numbers(frame[layout.prices[name]], problems, positive=True)
    if len(columns) == len(PRICE_COLUMNS):
        _check_ohlc(columns, problems)
    if layout.volume is not None:
        columns["volume"] = _check_numbers(frame[layout.volume], problems, positive=False)
    for label in layout.features:
        columns[feature_name(label)] = _check_numbers(frame[label], problems, positive=None)

    if problems:
        raise DataValidationError(source, problems)
    index = pd.DatetimeIndex(stamps, name="timestamp")
    return pd.DataFrame(columns, index=index)


def _parse_max_gap(max_gap: str | None) -> pd.Timedelta | None:
    if max_gap is None:
        return None
    try:
        limit = pd.Timedelta(max_gap)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"max_gap must be a duration such as '30D' or '6h', got {max_gap!r}") from exc
    if pd.isna(limit) or limit <= pd.Timedelta(0):
        raise ConfigError(f"max_gap must be a positive duration, got {max_gap!r}")
    return limit


def _check_timestamps(raw, label: str, limit, max_gap, problems: list[str]) -> np.ndarray | None:
    stamps, reason = parse_timestamps(raw)
    if stamps is None:
        problems.append(f"timestamps in {label} {reason}")
        return None
    valid = ~np.isnat(stamps)
    if not valid.all():
        bad = np.flatnonzero(~valid)
        first = pd.Series(raw, copy=False).iloc[bad[0]]
        problems.append(f"timestamps in {label} do not parse at {format_rows(bad)} (first: {str(first)!r})")
    positions = np.flatnonzero(valid)
    ns = stamps[valid].astype("int64")
    steps = np.diff(ns)
    backwards = positions[1:][steps < 0]
    if backwards.size:
        problems.append(
            f"timestamps in {label} are not increasing: earlier than the row before at {format_rows(backwards)}"
        )
    repeats = positions[pd.Series(ns).duplicated().to_numpy()]
    if repeats.size:
        problems.append(f"timestamps in {label} repeat an earlier timestamp at {format_rows(repeats)}")
    if limit is not None and steps.size:
        too_long = steps > limit.value
        if too_long.any():
            rows = positions[1:][too_long]
            worst = int(np.argmax(np.where(too_long, steps, np.iinfo(np.int64).min)))
            problems.append(
                f"gaps longer than max_gap={max_gap} between consecutive bars ending at {format_rows(rows)} "
                f"(largest {format_timedelta(pd.Timedelta(int(steps[worst]), unit='ns'))}, "
                f"ending at row {positions[worst + 1] + 1})"
            )
    return stamps


def _check_numbers(series: pd.Series, problems: list[str], *, positive: bool | None) -> np.ndarray:
    """Coerce a column to float64 and report non-finite values.

    ``positive=True`` (prices) also rejects zero and negatives, ``positive=False``
    (volume) rejects negatives, ``None`` (features) only requires finiteness.
    """
    name = repr(str(series.name))
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(values)
    if not finite.all():
        problems.append(f"{name} is missing, not a number or infinite at {format_rows(np.flatnonzero(~finite))}")
    with np.errstate(invalid="ignore"):
        if positive is True:
            bad = np.flatnonzero(finite & (values <= 0))
            if bad.size:
                problems.append(f"{name} is zero or negative at {format_rows(bad)}")
        elif positive is False:
            bad = np.flatnonzero(finite & (values < 0))
            if bad.size:
                problems.append(f"{name} is negative at {format_rows(bad)}")
    return values


def _check_ohlc(prices: dict[str, np.ndarray], problems: list[str]) -> None:
    o, h, l, c = (prices[name] for name in PRICE_COLUMNS)
    with np.errstate(invalid="ignore"):
        # Rows with a bad price are already reported; judging their geometry would repeat them.
        usable = np.isfinite(o) & np.isfinite(h) & np.isfinite(l) & np.isfinite(c)
        usable &= (o > 0) & (h > 0) & (l > 0) & (c > 0)
        high_bad = np.flatnonzero(usable & (h < np.maximum(o, c)))
        low_bad = np.flatnonzero(usable & (l > np.minimum(o, c)))
    if high_bad.size:
        problems.append(f"high is below max(open, close) at {format_rows(high_bad)}")
    if low_bad.size:
        problems.append(f"low is above min(open, close) at {format_rows(low_bad)}")
