"""A run's bars, read and checked before anything heavy: ``convopt train`` reads them before it
starts an ensemble's workers, so bad data is one message and exit code 2 before any process exists.

Imports only the config and the data package (pandas), no torch.
"""
from __future__ import annotations

import math

from ..config import OptimizedTrainingConfig
from ..data import Bars, load_bars


def min_bars_needed(cfg: OptimizedTrainingConfig) -> int:
    """Bars needed for feature warm-up + one training episode + small val/test/holdout splits."""
    train_need = 3 * cfg.data.vol_window + cfg.env.window + cfg.env.episode_length + 2
    share = 1.0 - cfg.data.val_fraction - cfg.data.test_fraction - cfg.data.holdout_fraction
    gaps = 3 if cfg.data.holdout_fraction > 0 else 2
    return int(math.ceil(train_need / share)) + gaps * cfg.data.embargo_bars


def read_bars(cfg: OptimizedTrainingConfig) -> Bars:
    """``data.source``'s bars, checked for length and gaps as ``cfg`` asks."""
    max_gap = None if cfg.data.max_gap.lower() in ("", "none", "off") else cfg.data.max_gap
    return load_bars(cfg.data.source, min_bars=min_bars_needed(cfg), max_gap=max_gap)
