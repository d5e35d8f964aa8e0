"""SB3 glue of market augmentation: the augmented training env and its ``augment/*`` metrics.

The pure :class:`~convopt_mlflow.components.augmentation.TradingDataAugmentation` decides and
transforms; :class:`~convopt_mlflow.env.augmented.AugmentedVecEnv` plays each episode from
its own slot; this module wires them to a config and a market and logs what happened.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..components.augmentation import TradingDataAugmentation
from ..data.features import (
    segment_observation_values, uses_context_ewm, uses_context_features, uses_context_momentum,
    uses_regime_features,
)
from ..env.augmented import AugmentedVecEnv, SegmentAugmenter
from .callbacks import _UpdateCallback

PRICE_COLUMNS = ("open", "high", "low", "close")


def build_augmentation(cfg: Any) -> TradingDataAugmentation | None:
    """The augmentation component of a config, or None when every probability is 0."""
    probs = (cfg.noise_injection_prob, cfg.time_warp_prob, cfg.feature_dropout_prob, cfg.augment.synthetic_prob)
    if not any(p > 0 for p in probs):
        return None
    return TradingDataAugmentation({
        "noise_injection_prob": cfg.noise_injection_prob, "time_warp_prob": cfg.time_warp_prob,
        "feature_dropout_prob": cfg.feature_dropout_prob, "synthetic_prob": cfg.augment.synthetic_prob,
        "noise_level": cfg.augment.noise_level, "warp_factor": cfg.augment.warp_factor,
        "dropout_rate": cfg.augment.dropout_rate, "block_length": cfg.augment.block_length,
        "vol_window": cfg.data.vol_window, "seed": cfg.run.seed,
    })


def augmented_env(cfg: Any, market: Any, augmentation: TradingDataAugmentation, *, sampler: Any = None,
                  reward_scale: float = 1.0, on_error: Callable[[BaseException], None] | None = None) -> AugmentedVecEnv:
    """The training env whose episodes ``augmentation`` transforms (train split bars only)."""
    frame = market.bars.frame
    names = [c for c in PRICE_COLUMNS] + [c for c in frame.columns if c not in PRICE_COLUMNS]
    columns = [frame[c].to_numpy(dtype=np.float64) for c in names]  # views: nothing copied
    start, stop = market.splits.train
    augmentation.set_bootstrap_source(np.column_stack([c[start:stop] for c in columns])
                                      if cfg.augment.synthetic_prob > 0 else None)
    volume_z = "volume_z" in market.base_feature_names

    def featurize(segment: np.ndarray) -> np.ndarray:
        return segment_observation_values(segment, names, vol_window=cfg.data.vol_window,
                                          observation=cfg.env.observation, history=cfg.env.window,
                                          volume_z=volume_z,
                                          regime_features=uses_regime_features(market.base_feature_names),
                                          context_features=uses_context_features(market.base_feature_names),
                                          context_momentum=uses_context_momentum(market.base_feature_names),
                                          context_ewm=uses_context_ewm(market.base_feature_names))

    observed = market.features.names
    groups = [[j for j, name in enumerate(observed) if name.rsplit("@", 1)[0] == base]
              for base in market.base_feature_names]
    core = market.cores["train"]
    source = SegmentAugmenter(columns, augmentation, featurize, lookback=market.features.warmup,
                              window=core.window, groups=groups)
    return AugmentedVecEnv(core, cfg.env.n_envs, seed=cfg.run.seed, start_sampler=sampler,
                           reward_scale=reward_scale, episodes=source, on_error=on_error)


class AugmentCallback(_UpdateCallback):
    """Records ``augment/*`` once per update: episodes begun since the last update and the share
    of them each transform touched (``augment/noise``, ``augment/time_warp``, ``augment/synthetic``,
    ``augment/dropout``), plus ``augment/episodes_total``."""

    def __init__(self, augmentation: TradingDataAugmentation, active: Callable[[], bool] = lambda: True):
        super().__init__()
        self.augmentation = augmentation
        self.active = active
        self._seen = dict(augmentation.counts)

    def _init_callback(self) -> None:
        super()._init_callback()
        self._seen = dict(self.augmentation.counts)  # after a resume: counts restored from the checkpoint

    def _on_update(self) -> None:
        counts = self.augmentation.counts
        episodes = counts["episodes"] - self._seen["episodes"]
        if not self.active():
            return
        self.logger.record("augment/episodes", float(episodes))
        self.logger.record("augment/episodes_total", float(counts["episodes"]))
        for name in ("noise", "time_warp", "synthetic", "dropout"):
            share = (counts[name] - self._seen[name]) / episodes if episodes else 0.0
            self.logger.record(f"augment/{name}", float(share))
        self._seen = dict(counts)
