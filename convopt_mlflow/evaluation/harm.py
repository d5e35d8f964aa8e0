"""Harm at run time: a run with components on whose shipped model ends below flat on validation.

The reference a run can afford without a second training run is **flat** (validation Sharpe 0):

* it is what ``baseline`` can always reach: PPO that learns nothing useful on a costly market learns to
  stay flat, and the run's model choice (``training/selection.py``) ships the best-by-validation
  weights, so a shipped validation Sharpe below 0 means that *no* weights this run evaluated beat
  doing nothing;
* in the panel study of issue 22 the components that hurt (``augment``, ``curriculum``, ``full``)
  ended below flat on validation (mean -0.56 to -1.52) where ``baseline`` ended above it (+0.95).

A run's own monitor trend is a weaker reference: the monitor is off in most presets, and a score that
falls from its own early peak says nothing about what ``baseline`` would have reached.

The warning also needs an edge to exist: on a synthetic market the true oracle must earn a positive
validation Sharpe (``benchmark/val/oracle/sharpe > 0``); on a market where the oracle is flat (pure
noise, GARCH) ending below flat is the expected cost of trading noise, not a component's harm, and
``convopt.no_edge`` already says so. Real data has no oracle: below flat there warns too.

A run with no component on (``baseline``, ``baseline-3e-5``) is the reference itself: no warning.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["HARM_TAG", "components_on", "harm_warning"]

HARM_TAG = "convopt.harm_warning"


def components_on(cfg: Any) -> tuple[str, ...]:
    """The optional components a config turns on, by name (empty for ``baseline`` and ``baseline-3e-5``)."""
    aug = getattr(cfg, "augment", None)
    checks = {
        "scheduler": cfg.scheduler_enabled,
        "monitor": cfg.monitor.enabled,
        "curriculum": cfg.curriculum_enabled,
        "replay": cfg.replay_enabled,
        "augment": (cfg.noise_injection_prob > 0 or cfg.time_warp_prob > 0 or cfg.feature_dropout_prob > 0
                    or (aug is not None and aug.synthetic_prob > 0)),
        "meta": cfg.meta_enabled,
        "counterfactual": cfg.counterfactual.enabled,
        "direct": cfg.direct.enabled,
        "ensemble": cfg.ensemble_size > 1,
    }
    return tuple(name for name, on in checks.items() if on)


def harm_warning(components: tuple[str, ...] | list[str], metrics: Mapping[str, float]) -> str | None:
    """The reason to warn, or None: components on, validation Sharpe below flat, and an edge to find.

    Args:
        components: what :func:`components_on` returned for the run's config.
        metrics: the run's final metrics (``backtest/val/sharpe``; ``benchmark/val/oracle/sharpe`` on a
            synthetic market).

    Examples:
        >>> harm_warning(("curriculum",), {"backtest/val/sharpe": -0.7, "benchmark/val/oracle/sharpe": 6.6})[:40]
        'validation Sharpe -0.7 is below flat (0)'
        >>> harm_warning((), {"backtest/val/sharpe": -0.7}) is None  # baseline is the reference
        True
        >>> harm_warning(("augment",), {"backtest/val/sharpe": -0.7, "benchmark/val/oracle/sharpe": 0.0}) is None
        True
    """
    if not components:
        return None
    val = metrics.get("backtest/val/sharpe")
    if val is None or not math.isfinite(val) or not val < 0.0:
        return None
    oracle = metrics.get("benchmark/val/oracle/sharpe")
    if oracle is not None and not oracle > 0.0:
        return None  # nothing to find: below flat is the cost of trading noise (convopt.no_edge says it)
    edge = (f"the market's true oracle earns {oracle:.3g} there" if oracle is not None
            else "real data, no oracle")
    return (f"validation Sharpe {val:.3g} is below flat (0) with {', '.join(components)} on ({edge}); "
            f"baseline can always stay flat, so a component may be hurting here: compare with "
            f"`convopt ab-test --arms baseline,<this preset>` on this data")
