"""Pure convergence-optimization logic (numpy/scipy only; no SB3, MLflow or Optuna).

Each module holds one part of the design; the SB3 glue feeds them plain numbers
and applies what they return.
"""
from __future__ import annotations

from ..lazy import lazy_attributes

# Loaded on first use (PEP 562): importing one component (the config imports the monitor's
# types) must not import them all; the meta controller's change-point detector alone brings
# scipy.linalg, which a run without the controller never uses.
_HOME = {
    "augmentation": ("AugmentationConfig", "TradingDataAugmentation"),
    "convergence": ("DEFAULT_STRATEGIES", "ConvergenceMonitor"),
    "convergence_types": ("ACTIONS", "ConvergenceState", "Intervention", "MonitorThresholds"),
    "curriculum": ("CurriculumLearningSystem",),
    "lr_schedule": ("SCHEDULE_TYPES", "AdvancedLRScheduler"),
    "meta": ("MetaLearningController",),
    "regularization": ("RegularizationSchedule",),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}

__all__ = [
    "ACTIONS",
    "DEFAULT_STRATEGIES",
    "SCHEDULE_TYPES",
    "AdvancedLRScheduler",
    "AugmentationConfig",
    "ConvergenceMonitor",
    "ConvergenceState",
    "CurriculumLearningSystem",
    "Intervention",
    "MetaLearningController",
    "MonitorThresholds",
    "RegularizationSchedule",
    "TradingDataAugmentation",
]

__getattr__, __dir__ = lazy_attributes(globals(), _MODULE_OF)
