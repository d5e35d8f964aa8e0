"""Pure numpy market mechanics shared by the vectorised and the single trading env.

Conventions (bars are integer row indices into the arrays):

- ``features[t]`` is known at the close of bar ``t``; ``log_returns[t] = log(close[t] / close[t-1])``.
- A decision is taken at the close of bar ``t``. Its observation is the window
  ``features[t-window+1 : t+1]`` flattened row-major (oldest bar first) followed by the
  position held coming into the decision, float32, shape ``(window * F + 1,)``.
- Deciding position ``p_t`` at bar ``t`` earns
  ``p_t * log_returns[t+1] - cost_bps * 1e-4 * |p_t - p_{t-1}|`` (a log return, unitless).
- An episode starts flat at bar ``t0`` and takes exactly ``episode_length`` decisions
  ``t0 .. t0+episode_length-1``. Every decision bar lies in the split's half-open
  ``bar_range`` and every reward needs ``t+1 < stop``; windows may look back before the
  split's start, but never before bar ``warmup`` (features before it are invalid).

Windows are read through a strided, read-only view of ``features`` (row ``t-window+1`` of
the view *is* the flattened window ending at ``t``), so no window is ever stored as a copy.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from convopt_mlflow.errors import ConfigError, DataValidationError

__all__ = ["MarketCore"]

_LEVELS_LONG_SHORT = np.array([-1.0, 0.0, 1.0])
_LEVELS_LONG_ONLY = np.array([0.0, 1.0])


class MarketCore:
    """Market arrays plus the rules that turn (bar, position, action) into obs and reward.

    Args:
        features: float32 ``(n_bars, F)`` feature matrix (converted if needed; not copied
            when already C-contiguous float32).
        log_returns: float64 ``(n_bars,)``; ``log_returns[t] = log(close[t]/close[t-1])``.
        window: bars per observation window (>= 1).
        episode_length: decisions per episode (>= 1).
        cost_bps: transaction cost in basis points per unit of position change.
        long_only: actions ``{0: flat, 1: long}`` instead of ``{0: short, 1: flat, 2: long}``.
        bar_range: half-open ``(start, stop)`` bars of the split episodes are drawn from;
            default the whole series.
        warmup: first bar whose features are valid; windows never reach before it.

    Raises:
        ConfigError: bad sizes, or a range too short for ``window + episode_length``.
        DataValidationError: non-finite features or returns inside the usable span.

    Examples:
        >>> import numpy as np
        >>> core = MarketCore(np.zeros((10, 2), np.float32), np.zeros(10), window=3,
        ...                   episode_length=4, cost_bps=1.0)
        >>> core.observation_size, core.start_bounds
        (7, (2, 5))
    """

    def __init__(
        self,
        features: np.ndarray,
        log_returns: np.ndarray,
        *,
        window: int,
        episode_length: int,
        cost_bps: float,
        long_only: bool = False,
        bar_range: tuple[int, int] | None = None,
        warmup: int = 0,
    ):
        features = np.ascontiguousarray(features, dtype=np.float32)
        log_returns = np.ascontiguousarray(log_returns, dtype=np.float64)
        if features.ndim != 2:
            raise ConfigError(f"features must be 2-D (n_bars, n_features), got shape {features.shape}")
        if log_returns.shape != (features.shape[0],):
            raise ConfigError(
                f"log_returns must have shape ({features.shape[0]},) to match features, got {log_returns.shape}"
            )
        n_bars = features.shape[0]
        window, episode_length, warmup = int(window), int(episode_length), int(warmup)
        if window < 1 or episode_length < 1:
            raise ConfigError(f"window ({window}) and episode_length ({episode_length}) must be >= 1")
        if not (np.isfinite(cost_bps) and cost_bps >= 0):
            raise ConfigError(f"cost_bps must be a finite number >= 0, got {cost_bps}")
        if warmup < 0:
            raise ConfigError(f"warmup must be >= 0, got {warmup}")
        start, stop = (0, n_bars) if bar_range is None else (int(bar_range[0]), int(bar_range[1]))
        if not 0 <= start < stop <= n_bars:
            raise ConfigError(f"bar_range ({start}, {stop}) must satisfy 0 <= start < stop <= n_bars={n_bars}")

        lo = max(start, warmup + window - 1)
        hi = stop - 1 - episode_length
        if hi < lo:
            raise ConfigError(
                f"bar_range ({start}, {stop}) is too short for window={window} and episode_length="
                f"{episode_length} (warmup={warmup}): the first decision bar is {lo}, so an episode needs "
                f"stop >= {lo + episode_length + 1} (one more bar for the last reward), but stop is {stop}"
            )
        _check_finite(features, log_returns, first_window_bar=lo - window + 1, lo=lo, stop=stop)

        # Read-only views: the caller's arrays keep their own flags.
        self.features = features.view()
        self.features.flags.writeable = False
        self.log_returns = log_returns.view()
        self.log_returns.flags.writeable = False
        self.window = window
        self.episode_length = episode_length
        self.cost_bps = float(cost_bps)
        self.cost_rate = self.cost_bps * 1e-4
        self.long_only = bool(long_only)
        self.bar_range = (start, stop)
        self.warmup = warmup
        self.n_bars = n_bars
        self.n_features = features.shape[1]
        self.window_size = window * self.n_features
        self.first_observable_bar = warmup + window - 1
        self._start_bounds = (lo, hi)
        levels = _LEVELS_LONG_ONLY if long_only else _LEVELS_LONG_SHORT
        self._levels = levels.copy()
        self._levels.flags.writeable = False
        # Exact bounds of every observation an episode of this split can produce.
        span = features[lo - window + 1 : stop]
        low, high = span.min(axis=0), span.max(axis=0)
        self._obs_low = np.append(np.tile(low, window), levels.min()).astype(np.float32)
        self._obs_high = np.append(np.tile(high, window), levels.max()).astype(np.float32)
        # Row r of `windows` is features[r : r+window] flattened: a view, never a copy.
        itemsize = features.itemsize
        self.windows = as_strided(
            features,
            shape=(n_bars - window + 1, self.window_size),
            strides=(self.n_features * itemsize, itemsize),
            writeable=False,
        )

    # ----------------------------------------------------------------- shapes
    @property
    def observation_size(self) -> int:
        """Length of one observation: ``window * n_features + 1`` (the +1 is the position)."""
        return self.window_size + 1

    @property
    def position_levels(self) -> np.ndarray:
        """Position for each action index (read-only float64): ``[-1, 0, 1]`` or ``[0, 1]``."""
        return self._levels

    @property
    def observation_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``(observation_size,)`` low/high over every window episodes of this split read."""
        return self._obs_low.copy(), self._obs_high.copy()

    @property
    def n_actions(self) -> int:
        return len(self._levels)

    @property
    def start_bounds(self) -> tuple[int, int]:
        """``(lo, hi)``, both inclusive: the bars an episode may start at."""
        return self._start_bounds

    # ------------------------------------------------------------- mechanics
    def observe(self, t: np.ndarray, position: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Observations for decision bars ``t`` (int, ``(n,)``) holding ``position`` (``(n,)``).

        Returns float32 ``(n, observation_size)``, written into ``out`` when given.
        Raises IndexError for a bar whose window is not fully observable.
        """
        t = np.asarray(t, dtype=np.intp).reshape(-1)
        if t.size and (t.min() < self.first_observable_bar or t.max() >= self.n_bars):
            raise IndexError(
                f"observation bars must lie in [{self.first_observable_bar}, {self.n_bars}), "
                f"got [{t.min()}, {t.max()}]"
            )
        if out is None:
            out = np.empty((t.size, self.observation_size), dtype=np.float32)
        self.observe_unchecked(t - (self.window - 1), np.asarray(position).reshape(-1), out)
        return out

    def observe_unchecked(self, rows: np.ndarray, position: np.ndarray, out: np.ndarray) -> None:
        """Fast path: ``rows = t - window + 1`` (already valid), fills ``out`` in place."""
        out[:, : self.window_size] = self.windows[rows]
        out[:, self.window_size] = position

    def step(
        self, t: np.ndarray, prev_position: np.ndarray, action: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply ``action`` (int, ``(n,)``) decided at bars ``t`` while holding ``prev_position``.

        Returns ``(position, reward)``, both float64 ``(n,)``; the reward is the log return
        ``position * log_returns[t+1] - cost_bps * 1e-4 * |position - prev_position|``.
        """
        t = np.asarray(t, dtype=np.intp).reshape(-1)
        action = np.asarray(action).reshape(-1)
        if action.size and (action.min() < 0 or action.max() >= self.n_actions):
            raise IndexError(f"actions must lie in [0, {self.n_actions}), got [{action.min()}, {action.max()}]")
        if t.size and (t.min() < 0 or t.max() + 1 >= self.n_bars):
            raise IndexError(f"decision bars must lie in [0, {self.n_bars - 1}), got [{t.min()}, {t.max()}]")
        position = self._levels[action]
        reward = np.empty(t.size)
        self.reward_unchecked(t + 1, np.asarray(prev_position, dtype=np.float64).reshape(-1), position, reward)
        return position, reward

    def reward_unchecked(
        self,
        next_bar: np.ndarray,
        prev_position: np.ndarray,
        position: np.ndarray,
        out: np.ndarray,
        scratch: np.ndarray | None = None,
    ) -> None:
        """Fast path of :meth:`step`'s reward for valid ``next_bar = t + 1``; writes float64 ``out``.

        ``scratch`` (float64, same shape as ``out``) avoids a temporary when given.
        """
        if scratch is None:
            scratch = np.empty_like(out)
        self.log_returns.take(next_bar, out=out, mode="clip")  # bars are valid by contract
        out *= position
        np.subtract(position, prev_position, out=scratch)
        np.abs(scratch, out=scratch)
        scratch *= self.cost_rate
        out -= scratch

    def action_rewards(self, next_bar: np.ndarray, prev_position: np.ndarray) -> np.ndarray:
        """The reward of every action, float64 ``(n, n_actions)``, for valid ``next_bar = t + 1``.

        Column a is what :meth:`step` would return for action a: the market is exogenous, so
        one bar's return prices every action. ``prev_position`` may be ``(n,)`` or ``(n, 1)``.
        """
        returns = self.log_returns.take(np.asarray(next_bar, dtype=np.intp).reshape(-1, 1), mode="clip")
        held = np.asarray(prev_position, dtype=np.float64).reshape(-1, 1)
        return returns * self._levels - self.cost_rate * np.abs(self._levels - held)

    def action_observations(self, rows: np.ndarray) -> np.ndarray:
        """The next observation under every action, float32 ``(n, n_actions, observation_size)``,
        for valid window rows ``rows = t + 1 - window + 1`` of the next bar: one window, each position level."""
        rows = np.asarray(rows, dtype=np.intp).reshape(-1)
        out = np.empty((rows.size, self.n_actions, self.observation_size), dtype=np.float32)
        out[:, :, : self.window_size] = self.windows[rows][:, None, :]
        out[:, :, self.window_size] = self._levels
        return out

    def sample_starts(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` episode start bars drawn uniformly from :attr:`start_bounds` (int64)."""
        lo, hi = self._start_bounds
        return rng.integers(lo, hi + 1, size=n)

    def check_starts(self, starts: np.ndarray) -> np.ndarray:
        """Return ``starts`` as intp, raising ValueError if any lies outside :attr:`start_bounds`."""
        starts = np.asarray(starts).reshape(-1)
        if starts.dtype.kind not in "iu":
            raise ValueError(f"episode starts must be integers, got dtype {starts.dtype}")
        lo, hi = self._start_bounds
        if starts.size and (starts.min() < lo or starts.max() > hi):
            raise ValueError(f"episode starts must lie in [{lo}, {hi}], got [{starts.min()}, {starts.max()}]")
        return starts.astype(np.intp, copy=False)


def _check_finite(features: np.ndarray, log_returns: np.ndarray, *, first_window_bar: int, lo: int, stop: int) -> None:
    """Reject NaN/inf in the features any window can read or the returns any reward can use."""
    problems = []
    bad_rows = np.flatnonzero(~np.isfinite(features[first_window_bar:stop]).all(axis=1)) + first_window_bar
    if bad_rows.size:
        problems.append(f"non-finite features at bars {_first(bad_rows)}")
    bad_bars = np.flatnonzero(~np.isfinite(log_returns[lo + 1 : stop])) + lo + 1
    if bad_bars.size:
        problems.append(f"non-finite log returns at bars {_first(bad_bars)}")
    if problems:
        raise DataValidationError("env arrays", problems)


def _first(rows: np.ndarray, k: int = 10) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:k])
    return shown + (f" ... ({rows.size} in all)" if rows.size > k else "")
