"""Deterministic walk of a policy over every decision bar of a range (backtests, pyfunc)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from convopt_mlflow.choices import follow_choices
from convopt_mlflow.env.core import MarketCore
from convopt_mlflow.errors import ConfigError

__all__ = ["PositionPath", "deterministic_positions", "follow_choices", "policy_table"]


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


def policy_table(core: MarketCore, fn: Callable[[np.ndarray], np.ndarray], bars: np.ndarray, *,
                 chunk_bars: int = 4096) -> np.ndarray:
    """``fn`` on the observation of every (decision bar, held position) pair, in batches.

    A deterministic policy's choice at bar ``t`` depends only on the window ending at ``t``
    and the position held, so evaluating all ``len(bars) * n_levels`` observations at
    once and then following the choices (:func:`follow_choices`) gives exactly the
    sequential walk, with a handful of batched forward passes instead of one per bar.

    Returns:
        array ``(len(bars), n_levels, ...)``: ``out[i, h] = fn(obs(bars[i], levels[h]))``.
    """
    levels = core.position_levels
    out: np.ndarray | None = None
    for lo in range(0, bars.size, chunk_bars):
        t = bars[lo : lo + chunk_bars]
        for h, level in enumerate(levels):
            result = np.asarray(fn(core.observe(t, np.full(t.size, level))))
            if out is None:
                out = np.empty((bars.size, levels.size) + result.shape[1:], dtype=result.dtype)
            out[lo : lo + t.size, h] = result
    assert out is not None
    return out



def deterministic_positions(
    core: MarketCore,
    act: Callable[[np.ndarray], np.ndarray],
    bar_range: tuple[int, int],
) -> PositionPath:
    """Walk ``act`` over every decision bar ``t`` in ``[max(start, first observable), stop - 1)``.

    The walk starts flat and feeds each chosen position back into the next observation.
    ``act`` must be deterministic (a pure function of the observation), so the walk is
    computed from one batched evaluation of every (bar, held position) pair
    (:func:`policy_table`). The last bar of the range is not a decision bar because
    its return lies outside the range. ``bar_range`` is independent of
    ``core.bar_range`` (a core built on the training split can backtest any split).

    Args:
        core: the market (window, features, position levels).
        act: maps a float32 ``(n, core.observation_size)`` batch to ``n`` action indices.
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
    levels = core.position_levels
    choices = policy_table(core, lambda obs: np.asarray(act(obs)).reshape(-1).astype(np.intp), bars)
    if choices.min() < 0 or choices.max() >= levels.size:
        bad = int(choices.max() if choices.max() >= levels.size else choices.min())
        raise ValueError(f"act returned action {bad}; valid actions are 0..{levels.size - 1}")
    flat = int(np.flatnonzero(levels == 0.0)[0])
    positions = levels[follow_choices(choices, flat)].astype(np.float64)
    return PositionPath(bars=bars, positions=positions)
