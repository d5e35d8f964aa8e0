"""Deterministic walk of a policy over every decision bar of a range (backtests, pyfunc)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from convopt_mlflow.env.core import MarketCore
from convopt_mlflow.errors import ConfigError

__all__ = ["PositionPath", "deterministic_positions"]


@dataclass(frozen=True)
class PositionPath:
    """Positions a policy took, one per decision bar.

    Attributes:
        bars: int ``(n,)`` decision bars, consecutive.
        positions: float64 ``(n,)``; ``positions[i]`` is held from the close of ``bars[i]``
            to the close of ``bars[i] + 1``, earning ``log_returns[bars[i] + 1]``.
    """

    bars: np.ndarray
    positions: np.ndarray


def deterministic_positions(
    core: MarketCore,
    act: Callable[[np.ndarray], np.ndarray],
    bar_range: tuple[int, int],
) -> PositionPath:
    """Walk ``act`` over every decision bar ``t`` in ``[max(start, first observable), stop - 1)``.

    The walk starts flat and feeds each chosen position back into the next observation,
    so it is sequential: one ``act`` call per bar. The last bar of the range is not a
    decision bar because its return lies outside the range. ``bar_range`` is independent
    of ``core.bar_range`` (a core built on the training split can backtest any split).

    Args:
        core: the market (window, features, position levels).
        act: maps a float32 ``(1, core.observation_size)`` batch to an action index array
            (shape ``(1,)`` or anything holding one integer). The batch is one buffer
            reused for every call: copy it if you keep it.
        bar_range: half-open ``(start, stop)`` bars, ``stop <= core.n_bars``.

    Raises:
        ConfigError: the range is out of bounds or holds no decision bar.
    """
    start, stop = int(bar_range[0]), int(bar_range[1])
    if not 0 <= start < stop <= core.n_bars:
        raise ConfigError(f"bar_range ({start}, {stop}) must satisfy 0 <= start < stop <= n_bars={core.n_bars}")
    first = max(start, core.first_observable_bar)
    if first >= stop - 1:
        raise ConfigError(
            f"bar_range ({start}, {stop}) holds no decision bar: the first observable bar is "
            f"{core.first_observable_bar} (window={core.window}, warmup={core.warmup}) and the last "
            f"decision bar is {stop - 2}"
        )
    bars = np.arange(first, stop - 1)
    positions = np.empty(bars.size)
    levels = core.position_levels
    obs = np.empty((1, core.observation_size), dtype=np.float32)
    position = 0.0
    for i, t in enumerate(bars.tolist()):
        core.observe_unchecked(t - core.window + 1, position, obs)
        action = int(np.asarray(act(obs)).reshape(-1)[0])
        if not 0 <= action < levels.size:
            raise ValueError(f"act returned action {action}; valid actions are 0..{levels.size - 1}")
        position = float(levels[action])
        positions[i] = position
    return PositionPath(bars=bars, positions=positions)
