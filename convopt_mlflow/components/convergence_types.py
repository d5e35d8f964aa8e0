"""Data types of the convergence monitor: thresholds, its verdict, and an intervention.

Kept apart from :mod:`convopt_mlflow.components.convergence` so that each file
reads at once; import them from there or from ``convopt_mlflow.components``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping

from convopt_mlflow.errors import ConfigError

#: Every action the monitor may recommend; the glue knows how to apply each.
ACTIONS = (
    "lr_restart",
    "lr_reduce",
    "increase_entropy",
    "advance_curriculum",
    "rollback",
    "early_stop",
    "reduce_batch_size",
    "increase_regularization",
    "shrink_perturb",
    "reset_head",
)


@dataclass(frozen=True)
class MonitorThresholds:
    """When the monitor calls a signal; "updates" are PPO updates, "evals" validation evals."""

    monitoring_window: int = 20
    """Updates in the trend / plateau / baseline window; also the delay before an outcome is judged."""
    plateau_cv: float = 0.1
    """Loss plateau when std/mean(|loss|) over a full window is below this."""
    intervention_threshold: float = 0.3
    """A signal's severity in [0, 1] must reach this to recommend an action (not for divergence / OOM)."""
    grad_vanish: float = 1e-6
    """Pre-clip gradient norm below this = vanishing."""
    grad_explode: float = 1e3
    """Pre-clip gradient norm above this = exploding (absolute limit)."""
    grad_explode_factor: float = 10.0
    """... or above this times the running median of the previous window (relative limit)."""
    entropy_collapse_fraction: float = 0.05
    """Entropy below this fraction of the maximum entropy = collapse."""
    kl_spike: float = 0.1
    """approx_kl above this AND above ``kl_spike_factor`` x its running median = KL spike."""
    kl_spike_factor: float = 5.0
    """Relative part of the KL spike test (ignored until ``min_baseline`` values exist)."""
    value_loss_factor: float = 10.0
    """Value loss above this times its running median = value-loss explosion."""
    stagnation_patience: int = 5
    """Evals without a new best eval_score (and a non-rising trend) = stagnation."""
    early_stop_patience: int = 10
    """Evals without a new best before ``early_stop`` is recommended (if it is an enabled strategy)."""
    overfit_patience: int = 3
    """Consecutive evals with train rising, eval falling and the gap widening = overfitting."""
    eval_window: int = 5
    """Number of recent evals in the eval trend."""
    param_norm_factor: float = 10.0
    """Parameter norm above this times the first one seen = parameter-norm alarm."""
    logit_range_limit: float = 30.0
    """Policy logit range above this also raises the parameter alarm (saturated policy)."""
    min_baseline: int = 5
    """Previous values needed before a relative (x running median) test can fire."""

    def __post_init__(self) -> None:
        positive_ints = ("monitoring_window", "stagnation_patience", "early_stop_patience",
                         "overfit_patience", "eval_window", "min_baseline")
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"monitor threshold {name}={value!r} must be an integer >= 1")
        if self.eval_window < 2:
            raise ConfigError(f"monitor threshold eval_window={self.eval_window!r} must be >= 2")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in positive_ints:
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"monitor threshold {f.name}={value!r} must be a finite number > 0")
        if self.intervention_threshold > 1:
            raise ConfigError(f"monitor threshold intervention_threshold={self.intervention_threshold!r} must be <= 1")
        if self.entropy_collapse_fraction >= 1:
            raise ConfigError(
                f"monitor threshold entropy_collapse_fraction={self.entropy_collapse_fraction!r} must be < 1")

    @classmethod
    def coerce(cls, thresholds: "MonitorThresholds | Mapping[str, Any] | None") -> "MonitorThresholds":
        """Normalise None / a mapping of overrides / an instance into an instance."""
        if thresholds is None:
            return cls()
        if isinstance(thresholds, cls):
            return thresholds
        if isinstance(thresholds, Mapping):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(thresholds) - known)
            if unknown:
                raise ConfigError(f"unknown monitor threshold(s) {unknown}; known: {sorted(known)}")
            return cls(**dict(thresholds))
        raise ConfigError(f"monitor thresholds must be a mapping or MonitorThresholds, got {type(thresholds).__name__}")


#: The action of an :class:`Intervention` that records a signal no allowed action answers.
UNANSWERED = "none"


@dataclass(frozen=True)
class Intervention:
    """One action the monitor decided on, with why and the numbers that triggered it.

    ``action`` is :data:`UNANSWERED` (``"none"``) when a signal was detected but none of the
    actions that answer it is allowed: the decision to do nothing is recorded too.
    """

    step: int
    action: str
    reason: str
    values: Dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "action": self.action, "reason": self.reason, "values": dict(self.values)}


@dataclass
class ConvergenceState:
    """The monitor's verdict after one PPO update (the reference fields come first).

    Trends are least-squares slopes per update over the monitoring window:
    ``loss_trend`` in loss units, ``reward_trend`` in training-return units.
    ``learning_efficiency`` is the loss decrease per update per unit of learning
    rate. ``generalization_gap`` is the train-return slope minus the eval-score
    slope (both per update; > 0 means training improves faster than validation).
    Scores ``stability_score``, ``gradient_health``, ``divergence_risk`` and
    ``exploration_rate`` (entropy / max entropy) lie in [0, 1].
    """

    step: int
    loss_trend: float
    reward_trend: float
    stability_score: float
    plateau_detected: bool
    divergence_risk: float
    learning_efficiency: float
    exploration_rate: float
    gradient_health: float
    intervention_needed: bool
    recommended_actions: List[str]
    generalization_gap: float = 0.0
    overfitting_detected: bool = False
    stagnation_detected: bool = False
    entropy_collapse: bool = False
    grad_vanishing: bool = False
    grad_exploding: bool = False
    divergence_detected: bool = False
    kl_spike: bool = False
    value_loss_explosion: bool = False
    param_norm_alarm: bool = False
    reasons: Dict[str, str] = field(default_factory=dict)
    """action -> human-readable reason."""
    trigger_values: Dict[str, Dict[str, float]] = field(default_factory=dict)
    """action -> the numbers that triggered it (always finite)."""
    unanswered: Dict[str, str] = field(default_factory=dict)
    """signal -> why, for each detected signal that no allowed action answers."""

    def to_metrics(self) -> dict[str, float]:
        """Every numeric and boolean field except ``step`` as floats (bools 0.0/1.0).

        Non-finite values are left out. Keys carry no prefix; the glue adds
        ``convergence/``.
        """
        out: dict[str, float] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "step" or not isinstance(value, (bool, int, float)):
                continue
            value = float(value)
            if math.isfinite(value):
                out[f.name] = value
        return out
