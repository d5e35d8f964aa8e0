"""Validated market bars and their identity (name, source, content digest)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from convopt_mlflow.data._text import format_timedelta

SECONDS_PER_YEAR = 365.25 * 86_400.0
#: A spacing this many times the median spacing counts as a gap in describe_bars.
GAP_FACTOR = 3.0


@dataclass(frozen=True, eq=False)
class Bars:
    """Validated OHLC(V) bars, as returned by :func:`load_bars`.

    Attributes:
        frame: tz-naive ``DatetimeIndex`` named "timestamp", strictly increasing;
            float64 columns open, high, low, close (prices, positive, with
            low <= min(open, close) and high >= max(open, close)), then
            ``volume`` when the source has one, then any ``feat_*`` columns:
            exogenous features known at the bar's close. Treat it as read-only.
        name: short dataset name ("eurusd-1h", "googl-1d", a file stem, "synthetic").
        source: what was loaded: a resolved path, a bundled resource or a spec.
        digest: first 16 hex chars of the sha256 of the index and columns.
        periods_per_year: bars per year, n_bars / span in years (hourly FX is
            about 6,200, daily equities about 252); used to annualise Sharpe.

    Example:
        >>> frame = pd.DataFrame(
        ...     {"open": [1.0, 1.1], "high": [1.2, 1.2], "low": [0.9, 1.0], "close": [1.1, 1.15]},
        ...     index=pd.DatetimeIndex(["2024-01-01", "2024-01-02"], name="timestamp"))
        >>> Bars.from_frame(frame, name="tiny", source="doctest").n_bars
        2
    """

    frame: pd.DataFrame
    name: str
    source: str
    digest: str
    periods_per_year: float

    @property
    def n_bars(self) -> int:
        """Number of bars (rows of ``frame``)."""
        return len(self.frame)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, name: str, source: str) -> Bars:
        """Wrap an already canonical frame (see :func:`validate_frame`), computing digest and annualisation."""
        return cls(
            frame=frame,
            name=name,
            source=source,
            digest=frame_digest(frame),
            periods_per_year=periods_per_year(frame.index),
        )


def frame_digest(frame: pd.DataFrame, length: int = 16) -> str:
    """sha256 (hex, first ``length`` chars) of the index in ns and each named float64 column."""
    sha = hashlib.sha256()
    index = pd.DatetimeIndex(frame.index).as_unit("ns")
    sha.update(b"timestamp\0")
    sha.update(np.ascontiguousarray(index.asi8, dtype="<i8").tobytes())
    for column in frame.columns:
        sha.update(f"\0{column}\0".encode())
        sha.update(np.ascontiguousarray(frame[column].to_numpy(), dtype="<f8").tobytes())
    return sha.hexdigest()[:length]


def periods_per_year(index: pd.DatetimeIndex) -> float:
    """Bars per year: ``len(index)`` divided by the span from first to last bar, in years."""
    span = (index[-1] - index[0]).total_seconds() / SECONDS_PER_YEAR
    return float(len(index) / span)


def describe_bars(bars: Bars) -> dict:
    """A JSON-ready summary for ``convopt data check``.

    Keys: name, source, n_bars, start, end (ISO text), bar_frequency (median
    spacing, e.g. "1h"), n_gaps (spacings longer than 3x the median),
    largest_gap, columns, digest, periods_per_year.
    """
    index = pd.DatetimeIndex(bars.frame.index).as_unit("ns")
    steps = np.diff(index.asi8)
    median = int(np.median(steps))
    return {
        "name": bars.name,
        "source": bars.source,
        "n_bars": bars.n_bars,
        "start": index[0].isoformat(),
        "end": index[-1].isoformat(),
        "bar_frequency": format_timedelta(pd.Timedelta(median, unit="ns")),
        "n_gaps": int(np.count_nonzero(steps > GAP_FACTOR * median)),
        "largest_gap": format_timedelta(pd.Timedelta(int(steps.max()), unit="ns")),
        "columns": [str(c) for c in bars.frame.columns],
        "digest": bars.digest,
        "periods_per_year": round(bars.periods_per_year, 3),
    }
