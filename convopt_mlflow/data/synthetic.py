"""Seeded synthetic markets: Markov regimes, jumps, and an optional planted signal.

The log return of bar t (``r[t] = log(close[t] / close[t-1])``) is

    r[t] = drift[t] + s[t] * noise[t] + jump[t] + c * s[t] * z[t-1]

* regimes follow a Markov chain over {0 trend, 1 mean reversion, 2 high
  volatility}: a regime lasts a geometric number of bars (mean
  ``MEAN_DURATION`` bars) and then moves to one of the other two at random;
* ``s[t]`` is the per-bar volatility: ``ANNUAL_VOL`` scaled to the bar length,
  times ``VOL_MULTIPLIER[regime]``;
* trend segments carry a drift of ``TREND_DRIFT * s`` per bar with a random
  sign per segment; mean-reversion segments have MA(1) noise with coefficient
  ``-MEAN_REVERSION`` (unit variance kept); high-volatility segments jump more;
* jumps arrive with probability ``JUMP_PROB[regime]`` per bar, size
  ``N(0, (JUMP_SCALE * base vol)^2)``;
* ``z`` is a unit-variance AR(1) signal with half-life ``signal_halflife`` bars,
  published as ``feat_signal[t] = z[t]`` at the close of bar t. The loading
  ``c`` is solved from the realised moments of the rest of the return so that
  ``corr(z[t], r[t+1])`` equals ``signal_ic`` in expectation;
* with ``signal_regimes`` the loading depends on the regime of the bar the
  return is earned in: ``c * L[regime[t]]``, e.g. ``1:-1:0`` makes the signal
  momentum-like in trend regimes, reversed in mean-reverting ones and useless in
  high volatility. The agent sees ``z`` but not the regime, so it must infer the
  regime from price history; the oracle knows it (``effective_signal``).

``expected_next_return[t]`` is ``E[r[t+1] | state at the close of bar t]``: what the generator
itself can predict of the next bar (see :func:`expected_next_returns`). The true oracle
(``evaluation/true_oracle.py``) trades on it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from convopt_mlflow.errors import ConfigError

ANNUAL_VOL = 0.10
VOL_MULTIPLIER = np.array([1.0, 0.8, 2.5])
MEAN_DURATION = np.array([400.0, 400.0, 100.0])
TREND_DRIFT = 0.05
MEAN_REVERSION = 0.3
JUMP_PROB = np.array([0.002, 0.002, 0.01])
JUMP_SCALE = 6.0
START_PRICE = 100.0
UNIFORM_LOADINGS = "1:1:1"
MAX_SIGNAL_IC = 0.5
_SECONDS_PER_YEAR = 365.25 * 86_400.0


@dataclass(frozen=True)
class MarketDynamics:
    """What the generator knows about how its state moves: the model the true oracle plans with.

    The expected next log return at a bar in regime g is ``a + b * z[t] + c * e[t]`` with the
    coefficients of :meth:`coefficients`; between bars the regime ends with probability
    ``hazard[g]`` (then moves to one of the other two at random; a new trend segment draws its
    drift sign at random), ``z`` follows its AR(1) with coefficient ``rho``, and ``e`` is iid N(0, 1).

    Attributes:
        vol: ``(3,)`` per-bar volatility of each regime.
        hazard: ``(3,)`` probability per bar that a regime's segment ends.
        drift: size of a trend segment's drift per bar (log return; its sign is per segment).
        reversal: coefficient of ``e[t]`` in ``r[t+1]`` when bar t+1 is mean-reverting.
        signal_coef: ``(3,)`` coefficient of ``z[t]`` in ``r[t+1]`` when bar t+1 is in regime k (0 without signal).
        rho: AR(1) coefficient of the signal (0 without signal).
    """

    vol: tuple[float, float, float]
    hazard: tuple[float, float, float]
    drift: float
    reversal: float
    signal_coef: tuple[float, float, float]
    rho: float


@dataclass(frozen=True, eq=False)
class SyntheticMarket:
    """A generated market.

    Attributes:
        frame: ``(n_bars, 5 or 6)`` OHLCV bars, positive prices satisfying the
            OHLC invariants, ``DatetimeIndex`` named "timestamp"; plus
            ``feat_signal`` when ``signal_ic > 0``.
        regimes: ``int8[n_bars]``, 0 trend, 1 mean reversion, 2 high volatility.
        signal: ``float64[n_bars]``, the planted signal (same as ``feat_signal``), or None.
        effective_signal: ``float64[n_bars]``, what ``z[t]`` means for ``r[t+1]`` given the
            regime of bar t: ``L[regime[t]] * z[t]`` (equals ``signal`` without ``signal_regimes``).
        expected_next_return: ``float64[n_bars]``, the true conditional expected next log
            return ``E[r[t+1] | state at bar t]`` (see :func:`expected_next_returns`); 0 at the last bar.
        trend_direction: ``int8[n_bars]``, the drift sign (+1/-1) of a trend bar's segment, 0 elsewhere.
        dynamics: how the state moves (:class:`MarketDynamics`).
        chain: a panel mechanism's finite-state dynamics (``data/panel.py``'s ``ChainDynamics``), else None;
            then ``regimes`` is None.
        states: ``intp[n_bars]``, the panel mechanism's state at each bar (what its oracle knows), else None.
    """

    frame: pd.DataFrame
    regimes: np.ndarray | None
    signal: np.ndarray | None
    effective_signal: np.ndarray | None = None
    expected_next_return: np.ndarray | None = None
    trend_direction: np.ndarray | None = None
    dynamics: MarketDynamics | None = None
    chain: object | None = None
    states: np.ndarray | None = None


def generate_market(
    n_bars: int,
    seed: int | np.random.Generator,
    *,
    signal_ic: float = 0.0,
    freq: str = "1h",
    start: str = "2015-01-05",
    signal_halflife: float = 10.0,
    signal_regimes: str = UNIFORM_LOADINGS,
) -> SyntheticMarket:
    """Generate ``n_bars`` bars of a regime-switching market (vectorized; ~1 s per million bars).

    Args:
        n_bars: number of bars, at least 2.
        seed: int seed or a ``np.random.Generator`` (consumed).
        signal_ic: target correlation of ``feat_signal[t]`` with ``r[t+1]``, in [0, 0.5].
        freq: pandas frequency of the bars ("1h", "1D", "B", "15min").
        start: timestamp of the first bar.
        signal_halflife: persistence of the signal in bars (AR(1) half-life), > 0.
        signal_regimes: the signal's loading per regime (trend:mean-reversion:high-vol), each
            in [-1, 1], e.g. ``"1:-1:0"``; ``signal_ic`` is the IC where the loading is +-1.

    Examples:
        >>> market = generate_market(1000, seed=0, signal_ic=0.1)
        >>> market.frame.shape, market.regimes.dtype
        ((1000, 6), dtype('int8'))
    """
    index = _timestamps(n_bars, freq, start)
    if not 0.0 <= float(signal_ic) <= MAX_SIGNAL_IC:
        raise ConfigError(f"signal_ic must be in [0, {MAX_SIGNAL_IC}], got {signal_ic!r}")
    if not float(signal_halflife) > 0:
        raise ConfigError(f"signal_halflife must be positive, got {signal_halflife!r}")
    loadings = parse_loadings(signal_regimes)
    rng = _generator(seed)
    bar_years = (index[-1] - index[0]).total_seconds() / _SECONDS_PER_YEAR / (n_bars - 1)
    base_vol = ANNUAL_VOL * np.sqrt(bar_years)

    regimes, segment = _regimes(n_bars, rng)
    vol = base_vol * VOL_MULTIPLIER[regimes]
    returns, drift, innovations = _returns_without_signal(regimes, segment, vol, base_vol, rng)
    signal = effective = None
    coefficient = 0.0
    if signal_ic > 0:
        signal = _ar1(n_bars, 0.5 ** (1.0 / signal_halflife), rng)
        coefficient = _signal_loading(returns[1:], vol[1:], signal_ic)
        returns[1:] += coefficient * loadings[regimes[1:]] * vol[1:] * signal[:-1]
        effective = loadings[regimes] * signal
    returns[0] = 0.0
    expected = expected_next_returns(regimes, drift, innovations, base_vol,
                                     signal=signal, signal_loadings=coefficient * loadings)

    frame = _bars(index, returns, vol, regimes, rng)
    if signal is not None:
        frame["feat_signal"] = signal
    vol_k = base_vol * VOL_MULTIPLIER
    dynamics = MarketDynamics(
        vol=tuple(vol_k.tolist()), hazard=tuple((1.0 / MEAN_DURATION).tolist()), drift=TREND_DRIFT * float(vol_k[0]),
        reversal=-MEAN_REVERSION * float(vol_k[1]) / float(np.hypot(1.0, MEAN_REVERSION)),
        signal_coef=tuple((vol_k * coefficient * loadings).tolist()),
        rho=0.5 ** (1.0 / signal_halflife) if signal is not None else 0.0)
    direction = np.sign(drift).astype(np.int8)
    return SyntheticMarket(frame=frame, regimes=regimes, signal=signal, effective_signal=effective,
                           expected_next_return=expected, trend_direction=direction, dynamics=dynamics)


def expected_next_returns(regimes: np.ndarray, drift: np.ndarray, innovations: np.ndarray, base_vol: float, *,
                          signal: np.ndarray | None = None, signal_loadings: np.ndarray | None = None) -> np.ndarray:
    """``E[r[t+1] | state at the close of bar t]`` per bar (float64 ``(n_bars,)``, log return per bar).

    The state is what the generator holds at bar t: the regime ``g = regimes[t]``, the trend
    segment's drift ``drift[t]``, the noise innovation ``e[t]`` (``innovations``) and the signal
    ``z[t]``. What it cannot know is drawn after t: whether the regime ends (hazard
    ``p = 1 / MEAN_DURATION[g]`` per bar, memoryless), the next segment's drift sign (+-1 at
    random, mean 0), the next innovation and jumps (mean 0). So, with ``s_k`` the volatility of
    regime k and ``P(k | g)`` = ``1 - p`` for k = g, ``p / 2`` for each other regime,

        E[r[t+1]] = sum_k P(k | g) * ( [k = g] drift[t]
                                       - [k = 1] s_k * MEAN_REVERSION * e[t] / hypot(1, MEAN_REVERSION)
                                       + c_k * s_k * z[t] )

    where ``c_k = signal_loadings[k]`` (the solved loading times the regime's loading). The last
    bar has no next return: 0.
    """
    regimes = np.asarray(regimes, dtype=np.intp)
    n_bars = regimes.size
    hazard = 1.0 / MEAN_DURATION[regimes]
    stay = 1.0 - hazard
    vol = base_vol * VOL_MULTIPLIER  # (3,) per regime
    reversal = -MEAN_REVERSION * np.asarray(innovations, dtype=np.float64) / np.hypot(1.0, MEAN_REVERSION)
    z = np.zeros(n_bars) if signal is None else np.asarray(signal, dtype=np.float64)
    loads = np.zeros(3) if signal_loadings is None else np.asarray(signal_loadings, dtype=np.float64)
    expected = stay * np.asarray(drift, dtype=np.float64)
    for k in range(3):  # the next bar's regime k
        prob = np.where(regimes == k, stay, hazard / 2.0)
        expected += prob * (vol[k] * loads[k] * z + (vol[k] * reversal if k == 1 else 0.0))
    expected[-1] = 0.0
    return expected


def parse_loadings(text: str) -> np.ndarray:
    """``"1:-1:0"`` -> ``array([1., -1., 0.])``: the signal loading of each of the 3 regimes.

    >>> parse_loadings("1:-0.5:0").tolist()
    [1.0, -0.5, 0.0]
    """
    parts = str(text).split(":")
    try:
        values = np.array([float(p) for p in parts])
    except ValueError:
        values = np.array([])
    if values.size != 3 or not np.all(np.abs(values) <= 1.0):
        raise ConfigError(f"signal_regimes must be three loadings in [-1, 1] joined by ':' "
                          f"(trend:mean-reversion:high-vol, e.g. 1:-1:0), got {text!r}")
    return values


def oracle_sharpe(frame_or_bars, *, cost_bps: float, periods_per_year: float) -> float:
    """Annualised Sharpe of the oracle policy ``position[t] = sign(feat_signal[t])``.

    The position taken at the close of bar t earns the next log return
    ``log(close[t+1] / close[t])``; each bar pays ``cost_bps * 1e-4 * |position[t] -
    position[t-1]|`` (starting flat). Sharpe = mean / std (ddof=1) of the per-bar
    net P&L times ``sqrt(periods_per_year)``.

    Args:
        frame_or_bars: a frame with close and feat_signal columns, or a :class:`Bars`.
        cost_bps: cost per unit of position change, in basis points.
        periods_per_year: bars per year (e.g. ``bars.periods_per_year``).
    """
    frame = getattr(frame_or_bars, "frame", frame_or_bars)
    if "feat_signal" not in frame.columns:
        raise ConfigError("oracle_sharpe needs a feat_signal column (a synthetic market with signal_ic > 0)")
    close = frame["close"].to_numpy(dtype=np.float64)
    position = np.sign(frame["feat_signal"].to_numpy(dtype=np.float64)[:-1])
    turnover = np.abs(np.diff(position, prepend=0.0))
    pnl = position * np.diff(np.log(close)) - cost_bps * 1e-4 * turnover
    std = pnl.std(ddof=1)
    return 0.0 if std == 0 else float(pnl.mean() / std * np.sqrt(periods_per_year))


def _timestamps(n_bars: int, freq: str, start: str) -> pd.DatetimeIndex:
    if isinstance(n_bars, bool) or not isinstance(n_bars, (int, np.integer)) or n_bars < 2:
        raise ConfigError(f"n_bars must be an integer of at least 2, got {n_bars!r}")
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"freq must be a pandas frequency such as '1h' or '1D', got {freq!r}") from exc
    try:
        first = pd.Timestamp(start)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"start must be a timestamp such as '2015-01-05', got {start!r}") from exc
    if pd.isna(first) or first.tzinfo is not None:
        raise ConfigError(f"start must be a tz-naive timestamp such as '2015-01-05', got {start!r}")
    try:
        index = pd.date_range(first, periods=int(n_bars), freq=offset, name="timestamp", unit="ns")
    except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime) as exc:
        raise ConfigError(f"cannot lay out {n_bars} bars of freq {freq!r} from {start!r}: {exc}") from exc
    if not index.is_monotonic_increasing or index[-1] == index[0]:
        raise ConfigError(f"freq must move time forward, got {freq!r}")
    return index


def _generator(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


def _regimes(n_bars: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Regime per bar and segment id per bar; each segment moves to a different regime."""
    states = np.empty(0, dtype=np.int64)
    durations = np.empty(0, dtype=np.int64)
    state = int(rng.integers(3))
    while durations.sum() < n_bars:
        count = int(n_bars / MEAN_DURATION.min()) + 16
        chunk = (state + np.concatenate([[0], np.cumsum(rng.integers(1, 3, count - 1))])) % 3
        states = np.concatenate([states, chunk])
        durations = np.concatenate([durations, rng.geometric(1.0 / MEAN_DURATION[chunk])])
        state = int((chunk[-1] + rng.integers(1, 3)) % 3)
    segment = np.repeat(np.arange(states.size), durations)[:n_bars]
    return states[segment].astype(np.int8), segment


def _returns_without_signal(regimes, segment, vol, base_vol, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns, the trend drift per bar and the raw noise innovations ``e`` (what the state knows)."""
    n_bars = regimes.size
    direction = rng.choice([-1.0, 1.0], size=int(segment[-1]) + 1)
    drift = np.where(regimes == 0, TREND_DRIFT * vol * direction[segment], 0.0)
    innovations = rng.standard_normal(n_bars)
    reverting = (innovations - MEAN_REVERSION * np.concatenate([[0.0], innovations[:-1]])) / np.hypot(1.0, MEAN_REVERSION)
    noise = np.where(regimes == 1, reverting, innovations)
    jumps = (rng.random(n_bars) < JUMP_PROB[regimes]) * rng.standard_normal(n_bars) * JUMP_SCALE * base_vol
    return drift + vol * noise + jumps, drift, innovations


def _ar1(n_bars: int, rho: float, rng: np.random.Generator) -> np.ndarray:
    """Stationary unit-variance AR(1): z[0] ~ N(0,1), z[t] = rho z[t-1] + sqrt(1-rho^2) u[t]."""
    shocks = rng.standard_normal(n_bars)
    # pandas' recursive EWM (adjust=False) runs y[t] = rho y[t-1] + (1 - rho) x[t] in C, with y[0] = x[0].
    shocks[1:] *= np.sqrt(1.0 - rho**2) / (1.0 - rho)
    return pd.Series(shocks).ewm(alpha=1.0 - rho, adjust=False).mean().to_numpy()


def _signal_loading(rest: np.ndarray, vol: np.ndarray, ic: float) -> float:
    """Solve c in corr(z, rest + c s z) = ic: c E[s] / sqrt(Var(rest) + c^2 E[s^2]) = ic."""
    mean_s, mean_s2 = vol.mean(), np.mean(vol**2)
    return float(ic * rest.std() / np.sqrt(mean_s**2 - ic**2 * mean_s2))


def _bars(index, returns, vol, regimes, rng) -> pd.DataFrame:
    close = START_PRICE * np.exp(np.cumsum(returns))
    previous = np.concatenate([[START_PRICE], close[:-1]])
    open_ = previous * np.exp(0.05 * vol * rng.standard_normal(close.size))
    wick_up, wick_down = np.abs(rng.standard_normal((2, close.size))) * 0.5 * vol
    high = np.maximum(open_, close) * np.exp(wick_up)
    low = np.minimum(open_, close) * np.exp(-wick_down)
    volume = 1e6 * VOL_MULTIPLIER[regimes] * np.exp(0.3 * rng.standard_normal(close.size))
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )
