"""Pure convergence-optimization logic (numpy/scipy only; no SB3, MLflow or Optuna).

Each module holds one part of the design; the SB3 glue feeds them plain numbers
and applies what they return.
"""
from convopt_mlflow.components.augmentation import AugmentationConfig, TradingDataAugmentation
from convopt_mlflow.components.convergence import DEFAULT_STRATEGIES, ConvergenceMonitor
from convopt_mlflow.components.convergence_types import ACTIONS, ConvergenceState, Intervention, MonitorThresholds
from convopt_mlflow.components.curriculum import CurriculumLearningSystem
from convopt_mlflow.components.lr_schedule import SCHEDULE_TYPES, AdvancedLRScheduler
from convopt_mlflow.components.meta import MetaLearningController
from convopt_mlflow.components.regularization import RegularizationSchedule

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
