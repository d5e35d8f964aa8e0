"""Validation: every problem class, with its row numbers, reported together in one error."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from convopt_mlflow.data import load_bars, validate_frame
from convopt_mlflow.errors import ConfigError, DataValidationError

HEADER = "Date,Open,High,Low,Close,Volume"


def good_rows(n: int) -> list[list[str]]:
    """n valid daily bars: dates 2024-01-01 + i days, open 10, high 11, low 9, close 10.5, volume 100."""
    return [[str(pd.Timestamp("2024-01-01") + pd.Timedelta(days=i))[:10], "10", "11", "9", "10.5", "100"]
            for i in range(n)]


def write(tmp_path, rows, header=HEADER, name="bars.csv"):
    path = tmp_path / name
    path.write_text("\n".join([header, *(",".join(r) for r in rows)]) + "\n")
    return path


def problems_of(path, **kwargs) -> list[str]:
    with pytest.raises(DataValidationError) as caught:
        load_bars(str(path), **kwargs)
    assert str(path.resolve()) in str(caught.value)
    return caught.value.problems


def test_good_file_loads_with_canonical_columns(tmp_path):
    bars = load_bars(str(write(tmp_path, good_rows(5))))
    assert list(bars.frame.columns) == ["open", "high", "low", "close", "volume"]
    assert bars.frame.index.name == "timestamp"
    assert str(bars.frame.index.dtype) == "datetime64[ns]"
    assert bars.frame.dtypes.eq(np.float64).all()
    assert bars.name == "bars"


def test_every_row_problem_is_reported_together_with_its_rows(tmp_path):
    rows = good_rows(20)
    rows[2][0] = "2024-13-45"                        # row 3: does not parse
    rows[5][0] = rows[4][0]                          # row 6: repeats row 5
    rows[7][0], rows[8][0] = rows[8][0], rows[7][0]  # row 9: earlier than row 8
    rows[9][1] = ""                                  # row 10: open missing
    rows[10][2] = "inf"                              # row 11: high infinite
    rows[11][4] = "-1"                               # row 12: close negative
    rows[13][2] = "10.2"                             # row 14: high below max(open, close) = 10.5
    rows[15][3] = "10.3"                             # row 16: low above min(open, close) = 10
    rows[17][5] = "-5"                               # row 18: negative volume
    rows[19][0] = "2024-03-15"                       # row 20: 56-day gap after row 19 (2024-01-19)
    problems = problems_of(write(tmp_path, rows), min_bars=100)
    assert problems == [
        "too few bars: need at least 100, found 20",
        "timestamps in 'Date' do not parse at row 3 (first: '2024-13-45')",
        "timestamps in 'Date' are not increasing: earlier than the row before at row 9",
        "timestamps in 'Date' repeat an earlier timestamp at row 6",
        "gaps longer than max_gap=30D between consecutive bars ending at row 20 (largest 56d, ending at row 20)",
        "'Open' is missing, not a number or infinite at row 10",
        "'High' is missing, not a number or infinite at row 11",
        "'Close' is zero or negative at row 12",
        "high is below max(open, close) at row 14",
        "low is above min(open, close) at row 16",
        "'Volume' is negative at row 18",
    ]


def test_long_row_lists_are_compressed(tmp_path):
    rows = good_rows(30)
    for i in range(3, 30, 2):  # rows 4, 6, ..., 30: 14 rows
        rows[i][1] = "0"
    (problem,) = problems_of(write(tmp_path, rows))
    assert problem == "'Open' is zero or negative at rows 4, 6, 8, 10, 12 and 9 more"


def test_two_rows_read_naturally(tmp_path):
    rows = good_rows(5)
    rows[1][3] = rows[3][3] = "10.4"
    assert problems_of(write(tmp_path, rows)) == ["low is above min(open, close) at rows 2 and 4"]


def test_missing_and_ambiguous_columns_come_with_row_problems(tmp_path):
    rows = [[r[0], r[1], r[1], r[3], r[4]] for r in good_rows(4)]
    rows[1][3] = "-9"
    problems = problems_of(write(tmp_path, rows, header="Date,Open,open,Low,Close"))
    assert problems[0] == "ambiguous column 'open': 'Open', 'open'; keep one"
    assert problems[1].startswith("missing column 'high' (columns found: 'Date', 'Open', 'open', 'Low', 'Close')")
    assert problems[2:] == ["'Low' is zero or negative at row 2"]


def test_missing_and_ambiguous_timestamps(tmp_path):
    rows = [[r[0], "00:00", *r[1:]] for r in good_rows(3)]
    problems = problems_of(write(tmp_path, rows, header="Date,Time,Open,High,Low,Close,Volume"))
    assert problems == ["ambiguous timestamp column: 'Date', 'Time'; keep one"]
    problems = problems_of(write(tmp_path, [r[1:] for r in good_rows(3)], header="Open,High,Low,Close,Volume"))
    assert len(problems) == 1 and problems[0].startswith("missing timestamp column")


def test_numeric_timestamps_are_rejected(tmp_path):
    rows = good_rows(3)
    for i, row in enumerate(rows):
        row[0] = str(1_700_000_000 + 3600 * i)
    assert problems_of(write(tmp_path, rows)) == ["timestamps in 'Date' hold numbers, not dates"]


def test_max_gap_and_min_bars_limits(tmp_path):
    rows = good_rows(4)
    rows[3][0] = "2024-01-10"  # 7 days after row 3
    path = write(tmp_path, rows)
    assert load_bars(str(path)).n_bars == 4
    assert load_bars(str(path), max_gap=None, min_bars=4).n_bars == 4
    assert problems_of(path, max_gap="6D") == [
        "gaps longer than max_gap=6D between consecutive bars ending at row 4 (largest 7d, ending at row 4)"
    ]
    assert problems_of(path, min_bars=5) == ["too few bars: need at least 5, found 4"]
    assert problems_of(write(tmp_path, good_rows(1))) == ["too few bars: need at least 2, found 1"]
    with pytest.raises(ConfigError, match="max_gap"):
        load_bars(str(path), max_gap="soon")
    with pytest.raises(ConfigError, match="min_bars"):
        load_bars(str(path), min_bars=-1)


def test_non_numeric_feature_column_is_a_problem(tmp_path):
    rows = [[*r, "0.5"] for r in good_rows(3)]
    rows[2][6] = "high"
    problems = problems_of(write(tmp_path, rows, header=HEADER + ",feat_x"))
    assert problems == ["'feat_x' is missing, not a number or infinite at row 3"]


def test_frame_with_tz_aware_index_becomes_naive_utc():
    index = pd.date_range("2024-01-01 09:00", periods=3, freq="1h", tz="Europe/Berlin", name="Datetime")
    raw = pd.DataFrame({"OPEN": 1.0, "HIGH": 2.0, "LOW": 0.5, "CLOSE": 1.5}, index=index)
    frame = validate_frame(raw, source="frame")
    assert list(frame.index) == list(pd.date_range("2024-01-01 08:00", periods=3, freq="1h"))
    assert list(frame.columns) == ["open", "high", "low", "close"]


def test_frame_rows_are_numbered_by_position():
    index = pd.DatetimeIndex(["2024-01-01", "2024-01-02", pd.NaT], name="timestamp")
    raw = pd.DataFrame({"open": 1.0, "high": [2.0, 0.9, 2.0], "low": 0.5, "close": 1.5}, index=index)
    with pytest.raises(DataValidationError) as caught:
        validate_frame(raw, source="frame")
    assert caught.value.problems == [
        "timestamps in index 'timestamp' do not parse at row 3 (first: 'NaT')",
        "high is below max(open, close) at row 2",
    ]


def test_feature_columns_get_a_lower_case_prefix_and_must_be_unique(tmp_path):
    rows = [[*r, "0.5"] for r in good_rows(3)]
    bars = load_bars(str(write(tmp_path, rows, header=HEADER + ",FEAT_Carry")))
    assert bars.frame.columns[-1] == "feat_Carry"
    rows = [[*r, "0.5", "0.7"] for r in good_rows(3)]
    problems = problems_of(write(tmp_path, rows, header=HEADER + ",FEAT_x,feat_x"))
    assert problems == ["ambiguous column 'feat_x': 'FEAT_x', 'feat_x'; keep one"]
