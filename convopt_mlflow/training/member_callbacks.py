"""The SB3 callbacks a worker adds to an ensemble member's run (:mod:`.ensemble_member`), apart so that
the ensemble's parent, which only names the member function, does not import SB3."""
from __future__ import annotations

import os
import signal

from stable_baselines3.common.callbacks import BaseCallback

__all__ = ["Fault", "KeepModel"]


class KeepModel(BaseCallback):
    """Holds on to the model, whose policy carries the shipped weights once ``train`` returns."""

    def _on_step(self) -> bool:
        return True


class Fault(BaseCallback):
    """Test hook: kill or fail this member after its first rollout."""

    def __init__(self, action: str):
        super().__init__()
        self.action = action

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError("injected member fault (CONVOPT_ENSEMBLE_FAULTS)")
