"""The one PPO extension: an update that survives running out of memory.

It also opts in (``probe_clips``) to letting :class:`~convopt_mlflow.training.probe.GradientProbe`
do the gradient clipping, so the pre-clip gradient norm is measured at no extra cost.

Everything else (LR schedule, gradient probe, monitor, checkpoints) plugs into
plain SB3 PPO through constructor arguments and callbacks. Only the retry has
to wrap ``train()`` itself: a ``MemoryError`` (or torch's out-of-memory error)
during an update halves ``batch_size`` and runs the update again, down to
``min_batch_size``. Each halving is recorded in ``memory_events`` so the
monitor can log a ``reduce_batch_size`` intervention.
"""
from __future__ import annotations

import gc
from typing import Any

import torch
from stable_baselines3 import PPO

_OOM = (MemoryError, torch.OutOfMemoryError)


class ConvoptPPO(PPO):
    """SB3 PPO whose update halves ``batch_size`` and retries on out-of-memory."""

    probe_clips = True

    def __init__(self, *args: Any, min_batch_size: int = 8, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.min_batch_size = min_batch_size
        self.memory_events: list[dict[str, float]] = []

    def train(self) -> None:
        while True:
            try:
                super().train()
                return
            except _OOM as exc:
                if self.batch_size // 2 < self.min_batch_size:
                    raise
                gc.collect()
                old = self.batch_size
                self.batch_size = old // 2
                self.memory_events.append(
                    {"step": float(self.num_timesteps), "old_batch_size": float(old),
                     "new_batch_size": float(self.batch_size), "error": type(exc).__name__}
                )
