"""A trading VecEnv whose episodes can play a transformed copy of their window.

Each env owns one *slot* of a small arena: the ``window - 1 + episode_length + 1`` feature
rows and log returns its current episode reads. At an episode's start the slot is filled
from the market (one small copy), and an :class:`EpisodeSource` may overwrite it with an
augmented copy: one segment feature computation per augmented episode. Stepping is
:class:`TradingVecEnv`'s own code on a :class:`MarketCore` over the arena, so an episode
costs nothing extra per step, augmented or not. Without augmentation the coordinator uses
the plain :class:`TradingVecEnv` and none of this runs.

Memory: ``n_envs * (window + episode_length) * n_features`` float32 for the arena, plus
per augmented episode a segment of ``warmup + window + episode_length`` bars.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import numpy as np

from .core import MarketCore
from .vec_env import StartSampler, TradingVecEnv

__all__ = ["AugmentedVecEnv", "EpisodeSource", "SegmentAugmenter"]


class EpisodeSource(Protocol):
    def fill(self, start: int, features: np.ndarray, log_returns: np.ndarray) -> None:
        """Overwrite (or leave) the episode starting at bar ``start``: ``features`` float32
        ``(window - 1 + episode_length + 1, F)`` rows from bar ``start - window + 1`` on, and
        ``log_returns`` float64 of the same bars, both already holding the market's values."""


class AugmentedVecEnv(TradingVecEnv):
    """:class:`TradingVecEnv` whose episodes are played from per-env slots filled by ``episodes``.

    Bars in the API (``start_sampler``, :attr:`current_bars`) stay bars of the market ``core``.

    Args:
        core: the market (its split and start bounds).
        episodes: fills each new episode's slot; None plays the market unchanged.
        on_error: called with the exception when ``episodes`` raises; the env then drops
            ``episodes`` for the rest of the run and plays the market unchanged.
        (other arguments as :class:`TradingVecEnv`)
    """

    def __init__(self, core: MarketCore, n_envs: int, seed: int | None = None,
                 start_sampler: StartSampler | None = None, reward_scale: float = 1.0, *,
                 episodes: EpisodeSource | None = None, on_error: Callable[[BaseException], None] | None = None):
        super().__init__(core, n_envs, seed=seed, start_sampler=start_sampler, reward_scale=reward_scale)
        self.market = core
        self.episodes = episodes
        self.on_error = on_error
        self.slot = core.window + core.episode_length  # rows of one episode: window - 1 + length + 1
        self._arena = np.zeros((self.num_envs * self.slot, core.n_features), dtype=np.float32)
        self._arena_returns = np.zeros(self.num_envs * self.slot)
        self.core = MarketCore(self._arena, self._arena_returns, window=core.window,
                               episode_length=core.episode_length, cost_bps=core.cost_bps, long_only=core.long_only)
        self._starts = np.zeros(self.num_envs, dtype=np.intp)

    @property
    def current_bars(self) -> np.ndarray:
        """Market bar of each env's next decision (copy, int ``(n_envs,)``)."""
        return self._starts + self._ep_length

    def set_start_sampler(self, fn: StartSampler | None) -> None:
        self._start_sampler = fn or self.market.sample_starts

    def _begin(self, envs: np.ndarray) -> None:
        starts = self.market.check_starts(self._start_sampler(self._rng, envs.size))
        if starts.size != envs.size:
            raise ValueError(f"start_sampler returned {starts.size} starts for {envs.size} envs")
        first_rows = envs * self.slot
        for start, row in zip(starts.tolist(), first_rows.tolist()):
            self._load(row, start)
        self._starts[envs] = starts
        self._rows[envs] = first_rows
        self._t[envs] = first_rows + (self.market.window - 1)
        self._next[envs] = self._t[envs] + 1
        self._pos[envs] = 0.0
        self._ep_return[envs] = 0.0
        self._ep_length[envs] = 0
        self._steps_to_done = self.market.episode_length - int(self._ep_length.max())

    def _load(self, row: int, start: int) -> None:
        """Fill the slot at arena ``row`` with the episode starting at market bar ``start``."""
        first = start - (self.market.window - 1)
        features = self._arena[row: row + self.slot]
        log_returns = self._arena_returns[row: row + self.slot]
        features[:] = self.market.features[first: first + self.slot]
        log_returns[:] = self.market.log_returns[first: first + self.slot]
        if self.episodes is None:
            return
        try:
            self.episodes.fill(start, features, log_returns)
        except Exception as exc:  # noqa: BLE001 - an optional component must not end the run
            self.episodes = None
            features[:] = self.market.features[first: first + self.slot]
            log_returns[:] = self.market.log_returns[first: first + self.slot]
            if self.on_error is None:
                raise
            self.on_error(exc)


class SegmentAugmenter:
    """:class:`EpisodeSource` that augments episodes with a ``TradingDataAugmentation``.

    Per episode it draws the transforms (``augmentation.decide``). When they change bars, it
    cuts the episode's bars with ``lookback`` bars of warm-up before them, transforms them
    (``augmentation.apply``), recomputes their features with ``featurize`` and writes the
    episode's rows and log returns; feature dropout zeroes the dropped features' columns.

    Args:
        columns: the market's bar columns (open, high, low, close, then the rest), each float64
            ``(n_bars,)``; views of the frame's columns, so nothing of the data is copied.
        augmentation: decides and applies (see components/augmentation.py).
        featurize: float64 ``(T, C)`` segment -> float32 ``(T, F)`` observed features, exactly
            as the market's feature matrix is computed (rows before ``lookback`` are unused).
        lookback: feature warm-up in bars (the observed features' ``warmup``).
        window: bars per observation window.
        groups: for each base feature (what dropout drops), the observed columns built from it.
    """

    def __init__(self, columns: Sequence[np.ndarray], augmentation: Any,
                 featurize: Callable[[np.ndarray], np.ndarray], *, lookback: int, window: int,
                 groups: Sequence[Sequence[int]]):
        self.columns = list(columns)
        self.augmentation = augmentation
        self.featurize = featurize
        self.lookback = int(lookback)
        self.window = int(window)
        self.groups = [np.asarray(g, dtype=np.intp) for g in groups]
        self.last: Any = None

    def fill(self, start: int, features: np.ndarray, log_returns: np.ndarray) -> None:
        decision = self.augmentation.decide(len(self.groups))
        self.last = decision
        if decision.changes_bars:
            first = start - (self.window - 1) - self.lookback
            if first < 0:
                raise ValueError(f"episode at bar {start} has fewer than {self.lookback} bars of feature warm-up")
            stop = first + self.lookback + features.shape[0]
            segment = self.augmentation.apply(np.column_stack([c[first:stop] for c in self.columns]), decision)
            features[:] = self.featurize(segment)[self.lookback:]
            close = np.log(segment[self.lookback - 1:, 3])
            log_returns[:] = np.diff(close)
        for group in decision.dropped:
            features[:, self.groups[group]] = 0.0
