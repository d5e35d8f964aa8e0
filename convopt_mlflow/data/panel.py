"""The market panel: synthetic mechanisms beyond the regime market, each with a finite state its oracle knows.

Each mechanism is a ``synthetic:mechanism=<name>,...`` spec (``n_bars``, ``seed``, ``freq`` and ``start``
apply; the planted-signal keys belong to the default ``regimes`` mechanism, :mod:`.synthetic`). Each
keeps a per-bar discrete state ``s[t]`` known at the close of bar t, and its dynamics are a finite
Markov chain (:class:`ChainDynamics`): the expected next log return is ``mean[s[t]]`` and the next
state is drawn from ``transition[s[t]]``. That is all the generator itself can predict; the true
oracle (``evaluation/true_oracle.py``, :func:`~convopt_mlflow.evaluation.true_oracle.solve_chain_plan`)
is the cost-aware optimum on that chain.

* ``noise``: ``r[t] = s * e[t]``, iid Gaussian. No edge: the oracle is flat (one state, mean 0).
* ``garch``: GARCH(1,1) volatility clustering, ``h[t] = w + a r[t-1]^2 + b h[t-1]``, mean 0. The
  bars show the clustering (returns, ranges), but no direction: the oracle is flat.
* ``trend``: a slow trend under heavy noise: drift ``TREND_SNR * s`` per bar whose sign flips with
  probability ``TREND_HAZARD`` per bar (mean 1/hazard bars). States: the sign. The price history
  shows the trend only over thousands of bars (per-bar signal/noise ``TREND_SNR``).
* ``spike``: the edge is in the bars: with probability ``SPIKE_PROB`` a bar is a spike, with
  ``SPIKE_VOLUME`` times the volume and ``SPIKE_RANGE`` times the wicks; the next bar continues the
  spike bar's direction by ``SPIKE_EDGE * s``. States: 0 calm, 1 up-spike, 2 down-spike; no
  published signal column (the agent sees it through ``volume_z``, ``range_ratio`` and ``return_z``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtr

from convopt_mlflow.data.synthetic import (
    ANNUAL_VOL,
    START_PRICE,
    UNIFORM_LOADINGS,
    SyntheticMarket,
    _generator,
    _timestamps,
    generate_market,
)
from convopt_mlflow.errors import ConfigError

REGIMES = "regimes"
GARCH_ALPHA, GARCH_BETA = 0.08, 0.90
TREND_SNR, TREND_HAZARD = 0.03, 1.0 / 3000.0
SPIKE_PROB, SPIKE_EDGE, SPIKE_VOLUME, SPIKE_RANGE = 0.1, 0.4, 4.0, 3.0
_SECONDS_PER_YEAR = 365.25 * 86_400.0


@dataclass(frozen=True)
class ChainDynamics:
    """A finite Markov chain of states: ``mean[s]`` is ``E[r[t+1] | s[t] = s]`` (log return per bar),
    ``transition[s][s']`` is ``P(s[t+1] = s' | s[t] = s)``. Hashable (tuples), so plans cache per chain."""

    mean: tuple[float, ...]
    transition: tuple[tuple[float, ...], ...]


def generate_synthetic(*, mechanism: str = REGIMES, **params) -> SyntheticMarket:
    """Generate the market of a parsed ``synthetic:`` spec: the regime market or a panel mechanism."""
    if mechanism == REGIMES:
        return generate_market(**params)
    if mechanism not in MECHANISMS:
        raise ConfigError(f"unknown synthetic mechanism {mechanism!r}; known: {', '.join([REGIMES, *MECHANISMS])}")
    if float(params.get("signal_ic", 0.0)) != 0.0 or params.get("signal_regimes", UNIFORM_LOADINGS) != UNIFORM_LOADINGS:
        raise ConfigError(f"signal_ic and signal_regimes belong to mechanism=regimes, not mechanism={mechanism}")
    return MECHANISMS[mechanism](params["n_bars"], params["seed"], freq=params.get("freq", "1h"),
                                 start=params.get("start", "2015-01-05"))


def _setup(n_bars, seed, freq, start):
    index = _timestamps(n_bars, freq, start)
    rng = _generator(seed)
    bar_years = (index[-1] - index[0]).total_seconds() / _SECONDS_PER_YEAR / (n_bars - 1)
    return index, rng, ANNUAL_VOL * np.sqrt(bar_years)


def noise_market(n_bars: int, seed, *, freq: str = "1h", start: str = "2015-01-05") -> SyntheticMarket:
    """Pure Gaussian noise at ``ANNUAL_VOL``: no edge; the right verdict is ``no_edge``."""
    index, rng, vol = _setup(n_bars, seed, freq, start)
    returns = vol * rng.standard_normal(n_bars)
    return _market(index, returns, np.full(n_bars, vol), np.ones(n_bars), np.zeros(n_bars, np.intp),
                   ChainDynamics((0.0,), ((1.0,),)), rng)


def garch_market(n_bars: int, seed, *, freq: str = "1h", start: str = "2015-01-05") -> SyntheticMarket:
    """GARCH(1,1) with unconditional volatility ``ANNUAL_VOL`` and mean 0: clustering without direction."""
    index, rng, vol = _setup(n_bars, seed, freq, start)
    shocks = rng.standard_normal(n_bars).tolist()
    omega = vol**2 * (1.0 - GARCH_ALPHA - GARCH_BETA)
    h, r = vol**2, 0.0
    sigma = np.empty(n_bars)
    returns = np.empty(n_bars)
    for t in range(n_bars):  # a plain float loop: ~0.2 s per 300k bars
        h = omega + GARCH_ALPHA * r * r + GARCH_BETA * h
        s = h**0.5
        r = s * shocks[t]
        sigma[t], returns[t] = s, r
    return _market(index, returns, sigma, np.ones(n_bars), np.zeros(n_bars, np.intp),
                   ChainDynamics((0.0,), ((1.0,),)), rng)


def trend_market(n_bars: int, seed, *, freq: str = "1h", start: str = "2015-01-05") -> SyntheticMarket:
    """A drift of ``TREND_SNR`` volatilities per bar whose sign flips with probability ``TREND_HAZARD``."""
    index, rng, vol = _setup(n_bars, seed, freq, start)
    flips = rng.random(n_bars) < TREND_HAZARD
    flips[0] = False
    first = int(rng.integers(2))
    states = (first + np.cumsum(flips)) % 2  # 0 up, 1 down
    sign = 1.0 - 2.0 * states
    drift = TREND_SNR * vol
    returns = drift * sign + vol * rng.standard_normal(n_bars)
    h = TREND_HAZARD
    keep = (1.0 - 2.0 * h) * drift  # E[sign[t+1] | sign[t]] = (1 - 2h) sign[t]
    chain = ChainDynamics((keep, -keep), ((1.0 - h, h), (h, 1.0 - h)))
    return _market(index, returns, np.full(n_bars, vol), np.ones(n_bars), states, chain, rng)


def spike_market(n_bars: int, seed, *, freq: str = "1h", start: str = "2015-01-05") -> SyntheticMarket:
    """Spike bars (high volume, wide range) are followed by a bar that continues their direction.

    ``r[t+1] = s * (SPIKE_EDGE * d[t] + e[t+1])`` with ``d[t]`` = +1 after an up-spike, -1 after a
    down-spike, 0 otherwise. A spike's direction is the sign of its own return, so (with
    ``P(r > 0 | d) = Phi(SPIKE_EDGE * d)``) the state is an exact Markov chain.
    """
    index, rng, vol = _setup(n_bars, seed, freq, start)
    spikes = rng.random(n_bars) < SPIKE_PROB
    spikes[0] = False  # bar 0 has no return
    noise = rng.standard_normal(n_bars)
    returns = np.empty(n_bars)
    states = np.zeros(n_bars, np.intp)
    direction = 0.0
    for t, (e, spike) in enumerate(zip(noise.tolist(), spikes.tolist())):  # r[t] depends on the state at t-1
        r = vol * (SPIKE_EDGE * direction + e)
        returns[t] = r
        direction = (1.0 if r > 0 else -1.0) if spike else 0.0
        states[t] = 0 if not spike else (1 if r > 0 else 2)
    edge = SPIKE_EDGE * vol
    p = SPIKE_PROB
    rows = []
    for d in (0.0, 1.0, -1.0):  # state 0, 1, 2
        up = float(ndtr(SPIKE_EDGE * d))
        rows.append((1.0 - p, p * up, p * (1.0 - up)))
    chain = ChainDynamics((0.0, edge, -edge), tuple(rows))
    wicks = np.where(spikes, SPIKE_RANGE, 1.0)
    return _market(index, returns, np.full(n_bars, vol), wicks, states, chain, rng,
                   volume_scale=np.where(spikes, SPIKE_VOLUME, 1.0))


MECHANISMS = {"noise": noise_market, "garch": garch_market, "trend": trend_market, "spike": spike_market}


def _market(index, returns, sigma, wicks, states, chain: ChainDynamics, rng, *, volume_scale=None) -> SyntheticMarket:
    returns = np.asarray(returns, dtype=np.float64)
    returns[0] = 0.0
    states = np.asarray(states, dtype=np.intp)
    expected = np.asarray(chain.mean)[states]
    expected[-1] = 0.0
    n = returns.size
    close = START_PRICE * np.exp(np.cumsum(returns))
    previous = np.concatenate([[START_PRICE], close[:-1]])
    open_ = previous * np.exp(0.05 * sigma * rng.standard_normal(n))
    wick_up, wick_down = np.abs(rng.standard_normal((2, n))) * 0.5 * sigma * wicks
    scale = np.ones(n) if volume_scale is None else volume_scale
    frame = pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * np.exp(wick_up),
                          "low": np.minimum(open_, close) * np.exp(-wick_down), "close": close,
                          "volume": 1e6 * scale * np.exp(0.3 * rng.standard_normal(n))}, index=index)
    return SyntheticMarket(frame=frame, regimes=None, signal=None, expected_next_return=expected,
                           chain=chain, states=states)


#: The panel: name -> data source. Six synthetic mechanisms (each with its true oracle) and two real markets.
PANEL = {
    "planted": "synthetic:n_bars=300000,seed=11,signal_ic=0.05",
    "regime-signal": "synthetic:n_bars=300000,seed=11,signal_ic=0.05,signal_regimes=1:-1:0",
    "trend": "synthetic:mechanism=trend,n_bars=300000,seed=12",
    "garch": "synthetic:mechanism=garch,n_bars=300000,seed=13",
    "spike": "synthetic:mechanism=spike,n_bars=300000,seed=14",
    "noise": "synthetic:mechanism=noise,n_bars=300000,seed=15",
    "eurusd-1h": "eurusd-1h",
    "googl-1d": "googl-1d",
}
