"""What a training run returns (:func:`convopt_mlflow.training.coordinator.train`, an ensemble run)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainResult"]


@dataclass
class TrainResult:
    run_id: str
    status: str
    exit_code: int
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    no_edge: bool = False
    """The shipped model does not beat staying flat on validation."""
    test_pnl: Any = None
    """Per-bar net log PnL of the shipped policy on test where the trainer made it (an ensemble's
    combination, which no single policy walks); None: walk the model."""
