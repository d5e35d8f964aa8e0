"""Load bars from a bundled sample, a CSV/Parquet file or a synthetic spec."""
from __future__ import annotations

import importlib.resources
from pathlib import Path

import pandas as pd

from convopt_mlflow.data.bars import Bars
from convopt_mlflow.data.panel import MECHANISMS, REGIMES, generate_synthetic
from convopt_mlflow.data.synthetic import UNIFORM_LOADINGS
from convopt_mlflow.data.validation import validate_frame
from convopt_mlflow.errors import ConfigError, DataValidationError, UserError

#: Real samples shipped in the gym-anytrading wheel (MIT licence).
BUNDLED = {
    "eurusd-1h": "datasets/data/FOREX_EURUSD_1H_ASK.csv",
    "googl-1d": "datasets/data/STOCKS_GOOGL.csv",
}
DEFAULT_DATASET = "eurusd-1h"
SYNTHETIC_PREFIX = "synthetic"
#: Defaults of a "synthetic:..." spec; each key is also a keyword of data.panel.generate_synthetic.
SYNTHETIC_DEFAULTS = {"n_bars": 20_000, "seed": 0, "signal_ic": 0.0, "freq": "1h", "start": "2015-01-05",
                      "signal_regimes": UNIFORM_LOADINGS, "mechanism": REGIMES}
_PARQUET_SUFFIXES = (".parquet", ".pq")


def load_bars(source: str = DEFAULT_DATASET, *, min_bars: int = 0, max_gap: str | None = "30D") -> Bars:
    """Load and validate bars.

    Args:
        source: "eurusd-1h" (the default), "googl-1d", a path to a ``.csv`` or
            ``.parquet`` file, or a spec ``"synthetic:n_bars=50000,seed=1,signal_ic=0.05"``
            (keys: n_bars, seed, signal_ic, freq, start, signal_regimes, mechanism; defaults in
            :data:`SYNTHETIC_DEFAULTS`; ``mechanism=noise|garch|trend|spike`` picks a panel
            market of ``data/panel.py``).
        min_bars: the fewest bars the caller needs.
        max_gap: the longest allowed time between consecutive bars, or None.

    Raises:
        UserError: the file is missing, unreadable or of an unsupported kind.
        ConfigError: a bad synthetic spec key or value.
        DataValidationError: every problem found in the data, with row numbers.

    Examples:
        >>> bars = load_bars("googl-1d")
        >>> bars.n_bars, round(bars.periods_per_year)
        (2335, 252)
    """
    source = str(source).strip()
    if source in BUNDLED:
        raw, name, resolved = _read_bundled(source), source, f"gym_anytrading:{BUNDLED[source]}"
    elif source == SYNTHETIC_PREFIX or source.startswith(SYNTHETIC_PREFIX + ":"):
        params = parse_synthetic_spec(source)
        raw = generated_market(params).frame.copy()  # the cached market stays as generated
        name, resolved = SYNTHETIC_PREFIX, format_synthetic_spec(params)
    else:
        path = _resolve_path(source)
        raw, name, resolved = _read_file(path), path.stem, str(path)
    frame = validate_frame(raw, source=resolved, min_bars=min_bars, max_gap=max_gap)
    return Bars.from_frame(frame, name=name, source=resolved)


def generated_market(params: dict):
    """``generate_synthetic(**params)``, generated once per process for the same parameters.

    A run reads the same synthetic market twice (its bars, then the regimes and the planted
    signal the bars do not show), and a long-lived worker reads it once per trial; generation
    is deterministic, so the second read is the first one's result. Callers must not modify it.
    """
    key = repr(sorted(params.items()))
    if key not in _GENERATED:
        while len(_GENERATED) >= 2:  # a 300k-bar market is ~20 MB: keep the last two
            _GENERATED.pop(next(iter(_GENERATED)))
        _GENERATED[key] = generate_synthetic(**params)
    return _GENERATED[key]


_GENERATED: dict = {}


def parse_synthetic_spec(spec: str) -> dict:
    """Parse ``"synthetic:key=value,..."`` into generate_synthetic keywords (defaults filled in).

    Raises:
        ConfigError: naming an unknown or repeated key, or a value of the wrong kind.

    >>> parse_synthetic_spec("synthetic:n_bars=5000,signal_ic=0.05")["n_bars"]
    5000
    """
    params = dict(SYNTHETIC_DEFAULTS)
    _, _, body = spec.partition(":")
    seen: set[str] = set()
    for item in filter(None, (part.strip() for part in body.split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not key:
            raise ConfigError(f"synthetic spec item {item!r} is not key=value (in {spec!r})")
        if key not in SYNTHETIC_DEFAULTS:
            raise ConfigError(f"unknown synthetic spec key {key!r}; known keys: {', '.join(SYNTHETIC_DEFAULTS)}")
        if key in seen:
            raise ConfigError(f"synthetic spec key {key!r} given twice in {spec!r}")
        seen.add(key)
        params[key] = _convert(key, value)
    if params["mechanism"] != REGIMES:
        if params["mechanism"] not in MECHANISMS:
            raise ConfigError(f"unknown synthetic mechanism {params['mechanism']!r}; "
                              f"known: {', '.join([REGIMES, *MECHANISMS])}")
        if "signal_ic" in seen or "signal_regimes" in seen:
            raise ConfigError(f"signal_ic and signal_regimes belong to mechanism={REGIMES}, "
                              f"not mechanism={params['mechanism']} (in {spec!r})")
    return params


def format_synthetic_spec(params: dict) -> str:
    """The canonical spec text of parsed parameters (used as the Bars source).

    ``signal_regimes`` and ``mechanism`` appear only when they are not the defaults, so the sources of
    markets generated before they existed keep their text; a panel mechanism's spec has no signal keys.
    """
    panel = params.get("mechanism", REGIMES) != REGIMES
    hidden = {"signal_regimes": UNIFORM_LOADINGS, "mechanism": REGIMES}
    keys = [k for k in SYNTHETIC_DEFAULTS
            if not (k in hidden and params.get(k, hidden[k]) == hidden[k]) and not (panel and k.startswith("signal_"))]
    if panel:
        keys.insert(0, keys.pop(keys.index("mechanism")))
    return SYNTHETIC_PREFIX + ":" + ",".join(f"{key}={params[key]}" for key in keys)


def _convert(key: str, value: str):
    kind = type(SYNTHETIC_DEFAULTS[key])
    if kind is str:
        if not value:
            raise ConfigError(f"synthetic spec {key} is empty")
        return value
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if kind is int and number.is_integer():  # accepts "1290000", "1_290_000" and "1.29e6"
        return int(number)
    if kind is float and number == number:
        return number
    raise ConfigError(f"synthetic spec {key}={value!r} is not a valid {kind.__name__}")


def _read_bundled(name: str) -> pd.DataFrame:
    try:
        resource = importlib.resources.files("gym_anytrading").joinpath(BUNDLED[name])
    except ModuleNotFoundError:
        raise UserError(
            f"dataset {name!r} ships with gym-anytrading; install it (pip install gym-anytrading)"
        ) from None
    with resource.open("r", encoding="utf-8") as handle:
        return pd.read_csv(handle)


def _resolve_path(source: str) -> Path:
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise UserError(
            f"no such data file: {str(path)!r} (bundled datasets: {', '.join(BUNDLED)}; "
            f"or a spec such as 'synthetic:n_bars=50000,seed=0,signal_ic=0.05')"
        )
    if not path.is_file():
        raise UserError(f"data source {str(path)!r} is not a file")
    if path.suffix.lower() not in (".csv", *_PARQUET_SUFFIXES):
        raise UserError(f"unsupported data file type {path.suffix!r} for {str(path)!r}: use .csv or .parquet")
    return path


def _read_file(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataValidationError(str(path), ["the file is empty"]) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise UserError(f"cannot read {str(path)!r}: {exc}") from None
