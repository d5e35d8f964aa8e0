"""Sources: bundled samples, CSV/Parquet files, synthetic specs; identity (digest) and description."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from convopt_mlflow.data import describe_bars, load_bars, parse_synthetic_spec
from convopt_mlflow.data.loading import format_synthetic_spec
from convopt_mlflow.errors import ConfigError, DataValidationError, UserError


@pytest.fixture(scope="module")
def eurusd():
    return load_bars("eurusd-1h")


def test_bundled_eurusd_reads_day_first_timestamps(eurusd):
    assert eurusd.n_bars == 6225
    assert eurusd.name == "eurusd-1h"
    assert eurusd.source == "gym_anytrading:datasets/data/FOREX_EURUSD_1H_ASK.csv"
    assert list(eurusd.frame.columns) == ["open", "high", "low", "close", "volume"]
    # "01.01.2017 22:00:00.000", then "02.01.2017 00:00:00.000" is 2 January, not 1 February.
    assert eurusd.frame.index[0] == pd.Timestamp("2017-01-01 22:00")
    assert eurusd.frame.index[2] == pd.Timestamp("2017-01-02 00:00")
    assert eurusd.frame.index[-1] == pd.Timestamp("2017-12-29 21:00")
    assert eurusd.frame["close"].iloc[0] == 1.05227
    span = pd.Timestamp("2017-12-29 21:00") - pd.Timestamp("2017-01-01 22:00")
    span_years = span.total_seconds() / (365.25 * 86400)
    assert eurusd.periods_per_year == pytest.approx(6225 / span_years)


def test_bundled_googl_keeps_close_and_ignores_adj_close():
    bars = load_bars("googl-1d")
    assert bars.n_bars == 2335
    assert list(bars.frame.columns) == ["open", "high", "low", "close", "volume"]
    assert bars.frame["close"].iloc[0] == 196.946945
    assert 250 < bars.periods_per_year < 254


def test_describe_bars(eurusd):
    info = describe_bars(eurusd)
    assert info["n_bars"] == 6225
    assert (info["start"], info["end"]) == ("2017-01-01T22:00:00", "2017-12-29T21:00:00")
    assert info["bar_frequency"] == "1h"
    assert info["largest_gap"] == "2d 2h"  # a weekend: Friday 21:00 to Sunday 23:00 (ask data)
    assert info["n_gaps"] == 52
    assert info["digest"] == eurusd.digest and len(eurusd.digest) == 16
    assert info["columns"] == ["open", "high", "low", "close", "volume"]


def test_digest_is_stable_and_content_sensitive(tmp_path, eurusd):
    assert load_bars("eurusd-1h").digest == eurusd.digest
    path = tmp_path / "copy.csv"
    eurusd.frame.to_csv(path)
    assert load_bars(str(path)).digest == eurusd.digest
    changed = eurusd.frame.copy()
    changed.iloc[100, changed.columns.get_loc("close")] += 1e-5
    changed.to_csv(path)
    assert load_bars(str(path)).digest != eurusd.digest


def test_parquet_round_trip(tmp_path, eurusd):
    path = tmp_path / "EURUSD hourly.parquet"
    eurusd.frame.to_parquet(path)
    bars = load_bars(str(path))
    pd.testing.assert_frame_equal(bars.frame, eurusd.frame)
    assert (bars.name, bars.source, bars.digest) == ("EURUSD hourly", str(path.resolve()), eurusd.digest)


def test_tolerant_csv_layouts(tmp_path):
    frame = pd.DataFrame(
        {"OPEN": [1.0, 1.1], "hIgh": [1.2, 1.3], "Low": [0.9, 1.0], "Adj_Close": [1.1, 1.2], "feat_x": [0.5, -0.5]},
        index=pd.DatetimeIndex(["2024-01-01", "2024-01-02"]),
    )
    path = tmp_path / "unnamed.csv"
    frame.to_csv(path)  # an unnamed first column holds the timestamps
    bars = load_bars(str(path))
    assert list(bars.frame.columns) == ["open", "high", "low", "close", "feat_x"]
    assert bars.frame["close"].tolist() == [1.1, 1.2]  # Adj Close stands in for a missing close
    assert bars.frame["feat_x"].tolist() == [0.5, -0.5]
    assert bars.frame.index[1] == pd.Timestamp("2024-01-02")

    path.write_text("Gmt time,Open,High,Low,Close,Adj Close\n01.02.2024 10:00:00,1,2,1,1.5,99\n"
                    "01.02.2024 11:00:00,1.5,2,1,1.2,99\n")
    bars = load_bars(str(path))
    assert bars.frame["close"].tolist() == [1.5, 1.2]  # Close wins over Adj Close
    assert bars.frame.index[0] == pd.Timestamp("2024-02-01 10:00")
    assert "volume" not in bars.frame.columns


def test_file_errors(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(UserError, match="no such data file.*nope.csv"):
        load_bars(str(missing))
    text = tmp_path / "bars.txt"
    text.write_text("x")
    with pytest.raises(UserError, match=r"unsupported data file type '\.txt'"):
        load_bars(str(text))
    with pytest.raises(UserError, match="is not a file"):
        load_bars(str(tmp_path))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataValidationError, match="the file is empty"):
        load_bars(str(empty))
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match="cannot read"):
        load_bars(str(broken))


def test_synthetic_spec_parsing():
    assert parse_synthetic_spec("synthetic") == {
        "n_bars": 20_000, "seed": 0, "signal_ic": 0.0, "freq": "1h", "start": "2015-01-05", "signal_regimes": "1:1:1",
        "mechanism": "regimes"}
    params = parse_synthetic_spec("synthetic: n_bars=1.29e6, seed=7,signal_ic=0.05,freq=1D,start=2001-02-03")
    assert params == {"n_bars": 1_290_000, "seed": 7, "signal_ic": 0.05, "freq": "1D", "start": "2001-02-03",
                      "signal_regimes": "1:1:1", "mechanism": "regimes"}
    regime = parse_synthetic_spec("synthetic:signal_ic=0.05,signal_regimes=1:-1:0")
    assert regime["signal_regimes"] == "1:-1:0"
    assert format_synthetic_spec(regime).endswith(",signal_regimes=1:-1:0")
    assert "signal_regimes" not in format_synthetic_spec(params)
    with pytest.raises(ConfigError, match="unknown synthetic spec key 'bars'"):
        parse_synthetic_spec("synthetic:bars=10")
    with pytest.raises(ConfigError, match=r"n_bars='12.5' is not a valid int"):
        parse_synthetic_spec("synthetic:n_bars=12.5")
    with pytest.raises(ConfigError, match=r"signal_ic='high' is not a valid float"):
        parse_synthetic_spec("synthetic:signal_ic=high")
    with pytest.raises(ConfigError, match="'seed' given twice"):
        parse_synthetic_spec("synthetic:seed=1,seed=2")
    with pytest.raises(ConfigError, match="'n_bars' is not key=value"):
        parse_synthetic_spec("synthetic:n_bars")


def test_synthetic_source_loads_and_is_reproducible():
    bars = load_bars("synthetic:n_bars=500,seed=3,signal_ic=0.1")
    assert (bars.name, bars.n_bars) == ("synthetic", 500)
    assert bars.source == "synthetic:n_bars=500,seed=3,signal_ic=0.1,freq=1h,start=2015-01-05"
    assert bars.frame.columns[-1] == "feat_signal"
    assert bars.periods_per_year == pytest.approx(500 / (499 / 8766))
    assert load_bars("synthetic:seed=3,n_bars=500,signal_ic=0.1").digest == bars.digest
    assert load_bars("synthetic:n_bars=500,seed=4,signal_ic=0.1").digest != bars.digest
    with pytest.raises(ConfigError, match="signal_ic must be in"):
        load_bars("synthetic:signal_ic=0.9")
    with pytest.raises(ConfigError, match="freq must be"):
        load_bars("synthetic:freq=fortnightly")
    with pytest.raises(DataValidationError, match="need at least 1000, found 500"):
        load_bars("synthetic:n_bars=500", min_bars=1000)
    assert np.isfinite(bars.frame.to_numpy()).all()


def test_a_synthetic_market_is_generated_once_per_process_and_its_bars_are_a_copy():
    """A run reads its synthetic market twice (bars; regimes and signal): the second read is the first's."""
    from convopt_mlflow.config import build_config
    from convopt_mlflow.data.loading import generated_market, parse_synthetic_spec
    from convopt_mlflow.training.setup import load_market

    spec = "synthetic:n_bars=3000,seed=21,signal_ic=0.05"
    cfg = build_config("baseline", [f"data.source={spec}"])
    market = load_market(cfg)
    cached = generated_market(parse_synthetic_spec(spec))
    assert market._generated is cached  # the regimes come from the market the bars came from
    assert generated_market(parse_synthetic_spec("synthetic:signal_ic=0.05,seed=21,n_bars=3000")) is cached
    market.bars.frame.iloc[0, 0] = -1.0  # a caller changing its bars does not change the cache
    assert cached.frame.iloc[0, 0] != -1.0
    pd.testing.assert_frame_equal(load_bars(spec).frame, load_market(cfg).bars.frame)
