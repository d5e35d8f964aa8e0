"""convopt-mlflow: convergence optimization for PPO trading agents, tracked in MLflow.

Public names are imported lazily so ``import convopt_mlflow`` stays cheap::

    from convopt_mlflow import AdvancedLRScheduler, ConvergenceMonitor, ConvergenceCallback, MLflowOutputFormat
    model = convopt_mlflow.load_model("models:/convopt-ensemble@champion")  # every file verified first
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "OptimizedTrainingConfig": "config",
    "build_config": "config",
    "PRESETS": "config",
    "UserError": "errors",
    "ConfigError": "errors",
    "DataValidationError": "errors",
    "load_bars": "data",
    "compute_features": "data",
    "generate_market": "data",
    "TradingVecEnv": "env",
    "TradingEnv": "env",
    "MarketCore": "env",
    "AdvancedLRScheduler": "components",
    "ConvergenceMonitor": "components",
    "ConvergenceState": "components",
    "MonitorThresholds": "components",
    "ConvergenceCallback": "training.callbacks",
    "ValidationEvalCallback": "training.callbacks",
    "CheckpointCallback": "training.callbacks",
    "ConvoptPPO": "training.ppo",
    "install_scheduler": "training.schedule",
    "MLflowOutputFormat": "tracking",
    "load_model": "tracking",
    "train": "training.coordinator",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'convopt_mlflow' has no attribute {name!r}")
