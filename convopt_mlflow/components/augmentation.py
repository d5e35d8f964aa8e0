"""Market data augmentation, decided and applied once per episode (pure numpy).

A *segment* is the bars one episode reads: float64 ``(T, C)`` with columns
``open, high, low, close`` (positive prices) followed by any other per-bar columns
(volume, exogenous ``feat_*``). Every price transform works on the bar's parts:

- ``r[t] = log(close[t] / close[t-1])``, the close-to-close log return;
- ``gap[t] = log(open[t] / close[t-1])`` (``gap[0] = 0``: bar 0's open is kept);
- ``up[t] = log(high[t] / max(open, close)[t]) >= 0`` and ``down[t] = log(min(open, close)[t] / low[t]) >= 0``,

and rebuilds the bars from them, so ``low <= min(open, close) <= max(open, close) <= high``
and positive prices hold after every transform by construction.

**Causality.** Every transform is causal: bar ``t`` of the output depends only on bars
``<= t`` of its input (and on random numbers drawn independently of the bars). An env that
observes the augmented bars up to ``t`` and is paid the augmented return from ``t`` to
``t + 1`` therefore never sees a piece of the return it is paid on. Property tests perturb
the bars after ``t`` and check that nothing at or before ``t`` changes, and check on random
walks that no transform creates autocorrelation or sign persistence that the walk lacks.

Transforms (each drawn per episode with its probability, in this order):

- **synthetic** (``synthetic_prob``): a stationary block bootstrap (Politis & Romano 1994;
  geometric block lengths of mean ``block_length`` bars) of whole bars (return, bar shape and
  other columns together, so ``feat[t]`` stays paired with ``r[t+1]`` inside a block) from
  :meth:`TradingDataAugmentation.set_bootstrap_source`'s bars (only bar 0 of the segment is
  kept), else from the segment itself, causally: output bar ``t`` is drawn among the
  segment's bars ``1 .. t`` (a block starts at a bar no later than its first output bar);
- **time warp** (``time_warp_prob``): a monotone warp ``tau`` of the time axis with local speed
  in ``[1 - warp_factor, 1 + warp_factor]``, fixed end points and ``tau[t] <= t`` (the warped
  clock never runs ahead of the bars). Output bar ``t`` is the input *sampled and held* at
  ``j[t] = floor(tau[t])``, the latest input bar at or before ``tau[t]``: where ``j`` advances,
  the output bar aggregates the input bars ``j[t-1] + 1 .. j[t]`` (open of the first, highest
  high, lowest low, close of the last, so its log return is the sum of theirs); where ``j``
  holds, it is a flat bar at the held close (return 0). The other columns are those of bar
  ``j[t]``. No output bar blends in a later bar, so the return an episode is paid from ``t`` to
  ``t + 1`` (input bars ``j[t] + 1 .. j[t+1]``) shares nothing with what it saw at ``t``;
- **noise injection** (``noise_injection_prob``): ``r[t] += noise_level * vol[t] * N(0, 1)``
  where ``vol[t]`` is the trailing RMS return over bars ``t - vol_window + 1 .. t`` (local
  volatility, never a later bar); wicks, gaps and other columns are kept;
- **feature dropout** (``feature_dropout_prob``): each observed feature is masked (set to 0)
  with probability ``dropout_rate`` for the whole episode (at least one masked, one kept);
  it acts on features, not on bars, so it is returned as indices in the decision.

All randomness comes from one ``np.random.Generator`` seeded by ``seed``; its state is in
:meth:`~TradingDataAugmentation.state_dict`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from convopt_mlflow.errors import ConfigError

__all__ = ["AugmentationConfig", "EpisodeAugmentation", "TradingDataAugmentation", "check_ohlc"]

TRANSFORMS = ("synthetic", "time_warp", "noise", "dropout")


@dataclass(frozen=True)
class AugmentationConfig:
    noise_injection_prob: float = 0.3
    """Probability that an episode's returns get volatility-scaled noise."""
    time_warp_prob: float = 0.2
    """Probability that an episode's time axis is warped."""
    feature_dropout_prob: float = 0.1
    """Probability that an episode masks some of its observed features."""
    synthetic_prob: float = 0.0
    """Probability that an episode plays a block-bootstrapped synthetic scenario."""
    noise_level: float = 0.5
    """Noise standard deviation as a multiple of the local volatility."""
    warp_factor: float = 0.3
    """Largest relative change of the local speed of time, in [0, 1)."""
    dropout_rate: float = 0.25
    """Share of observed features masked in a dropout episode."""
    block_length: float = 24.0
    """Mean block length (bars) of the stationary bootstrap."""
    vol_window: int = 20
    """Trailing bars of the local volatility that scales the noise."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("noise_injection_prob", "time_warp_prob", "feature_dropout_prob", "synthetic_prob",
                     "dropout_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"augmentation {name}={getattr(self, name)!r} must be in [0, 1]")
        if not 0.0 <= self.warp_factor < 1.0:
            raise ConfigError(f"augmentation warp_factor={self.warp_factor!r} must be in [0, 1)")
        if self.noise_level < 0 or self.block_length < 1 or self.vol_window < 2:
            raise ConfigError("augmentation needs noise_level >= 0, block_length >= 1 and vol_window >= 2")

    @classmethod
    def coerce(cls, config: "AugmentationConfig | Mapping[str, Any] | None") -> "AugmentationConfig":
        if config is None or isinstance(config, cls):
            return config or cls()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(f"unknown augmentation setting(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(config))


@dataclass(frozen=True)
class EpisodeAugmentation:
    """What one episode gets: the transforms drawn and the feature columns masked."""

    synthetic: bool = False
    time_warp: bool = False
    noise: bool = False
    dropped: tuple[int, ...] = ()

    @property
    def changes_bars(self) -> bool:
        """True when the bars differ from the data (features must be recomputed)."""
        return self.synthetic or self.time_warp or self.noise

    def to_dict(self) -> dict[str, Any]:
        return {"synthetic": self.synthetic, "time_warp": self.time_warp, "noise": self.noise,
                "dropped": list(self.dropped)}


class TradingDataAugmentation:
    """Per-episode augmentation of OHLC segments with the configured probabilities.

    Args:
        augmentation_config: an :class:`AugmentationConfig` or a mapping of its fields.

    Examples:
        >>> aug = TradingDataAugmentation({"noise_injection_prob": 1.0, "seed": 3})
        >>> close = 100 * np.exp(np.cumsum(np.full(50, 1e-3)))
        >>> bars = np.column_stack([close, close * 1.002, close * 0.998, close])
        >>> noisy = aug.apply_noise_injection(bars, 1.0)
        >>> check_ohlc(noisy), noisy.shape, bool(np.allclose(noisy[:, 3], close))
        (True, (50, 4), False)
    """

    def __init__(self, augmentation_config: AugmentationConfig | Mapping[str, Any] | None = None):
        self.config = AugmentationConfig.coerce(augmentation_config)
        self.rng = np.random.default_rng(self.config.seed)
        self.counts = dict.fromkeys(("episodes", *TRANSFORMS), 0)
        self._source: np.ndarray | None = None

    # -------------------------------------------------------------- decisions
    def decide(self, n_features: int) -> EpisodeAugmentation:
        """Draw one episode's transforms; ``n_features`` observed features may be dropped."""
        cfg, rng = self.config, self.rng
        synthetic, warp, noise, dropout = rng.random(4) < (cfg.synthetic_prob, cfg.time_warp_prob,
                                                          cfg.noise_injection_prob, cfg.feature_dropout_prob)
        dropped: tuple[int, ...] = ()
        if dropout and n_features >= 2:
            mask = rng.random(n_features) < cfg.dropout_rate
            if not mask.any():
                mask[rng.integers(n_features)] = True
            if mask.all():
                mask[rng.integers(n_features)] = False
            dropped = tuple(int(i) for i in np.flatnonzero(mask))
        decision = EpisodeAugmentation(bool(synthetic), bool(warp), bool(noise), dropped)
        self.counts["episodes"] += 1
        for name, on in zip(TRANSFORMS, (decision.synthetic, decision.time_warp, decision.noise, bool(dropped))):
            self.counts[name] += int(on)
        return decision

    def apply(self, segment: np.ndarray, decision: EpisodeAugmentation) -> np.ndarray:
        """The segment with the decision's bar transforms applied (a new array; dropout not included)."""
        out = np.asarray(segment, dtype=np.float64)
        if decision.synthetic:
            out = self.block_bootstrap(out)
        if decision.time_warp:
            out = self.time_warp_sequences(out, self.config.warp_factor)
        if decision.noise:
            out = self.apply_noise_injection(out, self.config.noise_level)
        return out

    def augment_batch(self, batch: np.ndarray) -> np.ndarray:
        """Augment each segment of ``batch`` (``(B, T, C)`` or one ``(T, C)``) as its own episode.

        Feature dropout is drawn too (and counted) but acts on observed features, not bars.
        """
        batch = np.asarray(batch, dtype=np.float64)
        if batch.ndim == 2:
            return self.augment_batch(batch[None])[0]
        return np.stack([self.apply(seg, self.decide(seg.shape[1])) for seg in batch])

    # ------------------------------------------------------------- transforms
    def apply_noise_injection(self, data: np.ndarray, noise_level: float) -> np.ndarray:
        """Add ``noise_level`` x local-volatility Gaussian noise to the close-to-close returns."""
        parts = _decompose(data)
        r = parts["r"]
        window = self.config.vol_window
        c2 = np.concatenate([[0.0], np.cumsum(r * r)])
        idx = np.arange(r.size)
        first = np.maximum(idx - window + 1, 1)
        vol = np.sqrt((c2[idx + 1] - c2[first]) / np.maximum(idx + 1 - first, 1))
        vol[0] = 0.0
        noise = self.rng.standard_normal(r.size) * float(noise_level) * vol
        parts["r"] = r + noise
        return _compose(parts)

    def time_warp_sequences(self, sequences: np.ndarray, warp_factor: float) -> np.ndarray:
        """Causal monotone time warp of a ``(T, C)`` segment or a ``(B, T, C)`` batch (one warp each):
        bar ``t`` is the segment sampled and held at ``floor(tau[t]) <= t`` (see the module doc)."""
        sequences = np.asarray(sequences, dtype=np.float64)
        if sequences.ndim == 3:
            return np.stack([self.time_warp_sequences(seq, warp_factor) for seq in sequences])
        _decompose(sequences)  # validates the bars
        tau = monotone_warp(sequences.shape[0], float(warp_factor), self.rng)
        return sample_and_hold(sequences, np.floor(tau).astype(np.intp))

    def block_bootstrap(self, segment: np.ndarray) -> np.ndarray:
        """A same-length scenario of bootstrapped bars, starting from the segment's first bar."""
        segment = np.asarray(segment, dtype=np.float64)
        source = self._source if self._source is not None else segment
        parts = _decompose(segment)
        n, m = segment.shape[0], source.shape[0] - 1  # bar 0 of the source has no return
        if m < 1 or n < 2:
            return segment.copy()
        # from the segment itself: output bar t only from bars 1..t (causal); else anywhere in the source
        causal = self._source is None
        picks = stationary_bootstrap_indices(n - 1, m, self.config.block_length, self.rng, causal=causal) + 1
        pool = _decompose_bars(source[picks], source[picks - 1, 3])  # only the drawn bars: O(n), not O(N)
        out = {"first": parts["first"], "r": np.concatenate([[0.0], pool["r"]]),
               "gap": np.concatenate([[0.0], pool["gap"]]),
               "up": np.concatenate([parts["up"][:1], pool["up"]]),
               "down": np.concatenate([parts["down"][:1], pool["down"]]),
               "extra": np.concatenate([parts["extra"][:1], pool["extra"]])}
        return _compose(out)

    def set_bootstrap_source(self, bars: np.ndarray | None) -> None:
        """Bars ``(N, C)`` (same columns as the segments; e.g. the train split) to bootstrap from."""
        self._source = None if bars is None else np.asarray(bars, dtype=np.float64)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "counts": dict(self.counts)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.counts.update({k: int(v) for k, v in state.get("counts", {}).items()})


def monotone_warp(n: int, warp_factor: float, rng: np.random.Generator, knots: int = 4) -> np.ndarray:
    """Strictly increasing ``tau`` (float64 ``(n,)``) with ``tau[0] = 0``, ``tau[-1] = n - 1`` and
    ``tau[t] <= t`` (the warped clock never runs ahead of the bars, so sampling at it is causal).

    The local speed ``diff(tau)`` interpolates ``knots`` speeds drawn in ``[1 - w, 1 + w]``,
    rescaled so the end points stay fixed; wherever that path would run ahead of ``t``, ``tau``
    follows ``t`` instead (speed 1).
    """
    if n < 2:
        return np.zeros(n)
    speeds = 1.0 + warp_factor * rng.uniform(-1.0, 1.0, knots)
    speed = np.interp(np.linspace(0, knots - 1, n - 1), np.arange(knots), speeds)
    tau = np.concatenate([[0.0], np.cumsum(speed)])
    tau *= (n - 1) / tau[-1]
    tau[-1] = n - 1
    # the minimum of two increasing paths: still strictly increasing, speeds between theirs
    return np.minimum(tau, np.arange(n, dtype=np.float64))


def sample_and_hold(segment: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Bars of ``segment`` (``(T, C)``) resampled at input bars ``source`` (int ``(T,)``, non-decreasing,
    ``source[0] = 0``, ``source[-1] = T - 1``).

    Output bar ``t > 0`` covers input bars ``source[t-1] + 1 .. source[t]``: when that range is
    non-empty it is their aggregate bar (open of the first, max high, min low, close of the
    last); when empty, a flat bar at the held close. Other columns are those of bar
    ``source[t]``. Output bar 0 is input bar 0. With ``source[t] <= t`` this is causal: output
    bar ``t`` reads no input bar after ``t``.
    """
    seg = np.asarray(segment, dtype=np.float64)
    last = np.asarray(source, dtype=np.intp)
    n = seg.shape[0]
    if last.shape != (n,) or (n and (last[0] != 0 or last[-1] != n - 1)) or (np.diff(last) < 0).any():
        raise ValueError("source must be non-decreasing bar indices from 0 to T - 1")
    out = seg[last].copy()  # bar 0 and the other columns: sampled and held
    close = seg[last, 3]
    out[1:, 0] = out[1:, 1] = out[1:, 2] = close[1:]  # held bars: flat at the held close
    moved = np.flatnonzero(np.diff(last) > 0) + 1
    if moved.size:
        first = last[moved - 1] + 1  # the moved bars' ranges tile bars 1 .. T - 1 in order
        out[moved, 0] = seg[first, 0]
        out[moved, 1] = np.maximum.reduceat(seg[:, 1], first)
        out[moved, 2] = np.minimum.reduceat(seg[:, 2], first)
    return out


def stationary_bootstrap_indices(n: int, m: int, block_length: float, rng: np.random.Generator, *,
                                 causal: bool = False) -> np.ndarray:
    """``n`` indices into ``range(m)``: blocks with uniform starts and geometric lengths (mean
    ``block_length``), wrapping around at ``m`` (Politis & Romano 1994).

    ``causal``: index ``i`` is at most ``i`` (a block starting at output ``i`` starts uniformly in
    ``0 .. min(i, m - 1)``), so resampling a series from itself never reads ahead; no wrap occurs.
    """
    if n <= 0:
        return np.zeros(0, dtype=np.intp)
    new_block = rng.random(n) < 1.0 / block_length
    new_block[0] = True
    block_id = np.cumsum(new_block) - 1
    first_of_block = np.flatnonzero(new_block)
    if causal:
        block_starts = rng.integers(0, np.minimum(first_of_block, m - 1) + 1)
    else:
        block_starts = rng.integers(0, m, size=int(block_id[-1]) + 1)
    offset = np.arange(n) - first_of_block[block_id]
    return ((block_starts[block_id] + offset) % m).astype(np.intp)


def check_ohlc(segment: np.ndarray) -> bool:
    """True when every bar is finite, positive and ``low <= min(open, close) <= max(open, close) <= high``."""
    seg = np.asarray(segment)
    o, h, lo, c = seg[..., 0], seg[..., 1], seg[..., 2], seg[..., 3]
    return bool(np.isfinite(seg).all() and (lo > 0).all() and (lo <= np.minimum(o, c)).all()
                and (h >= np.maximum(o, c)).all())


def _decompose(segment: np.ndarray) -> dict[str, np.ndarray]:
    seg = np.asarray(segment, dtype=np.float64)
    if seg.ndim != 2 or seg.shape[1] < 4 or seg.shape[0] < 1:
        raise ValueError(f"a segment is (T, C >= 4) with open, high, low, close first; got shape {seg.shape}")
    parts = _decompose_bars(seg, np.concatenate([[seg[0, 0]], seg[:-1, 3]]))
    parts["r"][0] = parts["gap"][0] = 0.0
    parts["first"] = seg[0, :4].copy()
    return parts


def _decompose_bars(bars: np.ndarray, prev_close: np.ndarray) -> dict[str, np.ndarray]:
    """Return, gap, wicks and other columns of ``bars`` given each bar's previous close."""
    if not check_ohlc(bars) or not (np.isfinite(prev_close).all() and (prev_close > 0).all()):
        raise ValueError("segment bars must be finite, positive and satisfy low <= open, close <= high")
    o, h, lo, c = (np.log(bars[:, j]) for j in range(4))
    prev = np.log(prev_close)
    return {"r": c - prev, "gap": o - prev, "up": h - np.maximum(o, c), "down": np.minimum(o, c) - lo,
            "extra": bars[:, 4:].copy()}


def _compose(parts: Mapping[str, np.ndarray]) -> np.ndarray:
    """Rebuild bars from their parts; bar 0 keeps its open and close."""
    first = parts["first"]
    log_close = np.log(first[3]) + np.cumsum(parts["r"])
    log_open = np.empty_like(log_close)
    log_open[0] = np.log(first[0])
    log_open[1:] = log_close[:-1] + parts["gap"][1:]
    close, open_ = np.exp(log_close), np.exp(log_open)
    high = np.maximum(open_, close) * np.exp(np.maximum(parts["up"], 0.0))
    low = np.minimum(open_, close) * np.exp(-np.maximum(parts["down"], 0.0))
    return np.column_stack([open_, high, low, close, parts["extra"]])
