"""The one PPO extension: an update that survives running out of memory or a non-finite forward pass.

It also opts in (``probe_clips``) to letting :class:`~convopt_mlflow.training.probe.GradientProbe`
do the gradient clipping, so the pre-clip gradient norm is measured at no extra cost.

Everything else (LR schedule, gradient probe, monitor, checkpoints) plugs into
plain SB3 PPO through constructor arguments and callbacks. Only two things have
to wrap SB3's loop itself:

- Out of memory: a ``MemoryError`` (or torch's out-of-memory error) during an
  update halves ``batch_size`` and runs the update again, down to
  ``min_batch_size``. Each halving is recorded in ``memory_events`` so the
  monitor can log a ``reduce_batch_size`` intervention.
- Non-finite values: non-finite parameters (checked once before every rollout and
  every update) or non-finite logits (torch's ``Categorical`` raises ``ValueError``
  on them, inside ``collect_rollouts`` or ``train``) are a divergence event. When a
  ``divergence_handler`` is set (``ConvergenceCallback`` sets one that rolls back),
  it is called with ``(phase, where)``; the rollout is then collected again from
  the restored weights, or the update is skipped. Without a handler SB3's own
  behaviour is kept (the ``ValueError`` propagates).
"""
from __future__ import annotations

import gc
from typing import Any, Callable

import torch
from stable_baselines3 import PPO

from .param_watch import nonfinite_parameters

_OOM = (MemoryError, torch.OutOfMemoryError)
#: torch.distributions' message when a distribution parameter holds NaN/inf.
_INVALID = "found invalid values"


class ConvoptPPO(PPO):
    """SB3 PPO whose update halves ``batch_size`` and retries on out-of-memory, and which turns
    non-finite parameters or logits into a call of ``divergence_handler(phase, where)``."""

    probe_clips = True

    def __init__(self, *args: Any, min_batch_size: int = 8, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.min_batch_size = min_batch_size
        self.memory_events: list[dict[str, float]] = []
        self.divergence_handler: Callable[[str, str], None] | None = None

    def collect_rollouts(self, *args: Any, **kwargs: Any) -> bool:
        while True:  # bounded: every handled event is a rollback, and rollbacks are limited
            where = self._nonfinite_params()
            if where is None:
                try:
                    return super().collect_rollouts(*args, **kwargs)
                except ValueError as exc:
                    where = self._nonfinite_forward(exc)
            self.divergence_handler("rollout", where)  # type: ignore[misc]

    def train(self) -> None:
        where = self._nonfinite_params()
        if where is None:
            try:
                return self._train_retrying_oom()
            except ValueError as exc:
                where = self._nonfinite_forward(exc)
        self.divergence_handler("update", where)  # type: ignore[misc]
        # the update is skipped: its rollout was scored by weights that no longer exist

    def _train_retrying_oom(self) -> None:
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

    def _nonfinite_params(self) -> str | None:
        """"parameters <names>" when a handler is set and some parameter is not finite, else None."""
        if self.divergence_handler is None:
            return None
        names = nonfinite_parameters(self.policy)
        return f"parameters {', '.join(names)}" if names else None

    def _nonfinite_forward(self, exc: ValueError) -> str:
        """Where a forward pass's ``ValueError`` came from; re-raises any other ``ValueError``."""
        if self.divergence_handler is None or _INVALID not in str(exc):
            raise exc
        names = nonfinite_parameters(self.policy)
        return f"parameters {', '.join(names)}" if names else "logits of the policy (finite parameters)"
