"""Install an :class:`AdvancedLRScheduler` as an SB3 model's learning-rate schedule.

``PPO.train()`` calls ``self.lr_schedule(progress_remaining)`` at every update and
writes the result into the optimizer, overwriting anything set by hand. So the
adaptive scheduler is installed *as* that schedule: a picklable callable that
maps SB3's ``progress_remaining`` back to the environment timestep
(``step = (1 - progress_remaining) * total_timesteps``, exact for SB3's formula
``1 - num_timesteps / total_timesteps``) and asks the scheduler for the LR there.
"""
from __future__ import annotations

import math
from typing import Any

from stable_baselines3.common.utils import FloatSchedule


class SchedulerSchedule:
    """SB3 ``Schedule`` backed by a stateful scheduler (``get_lr(step) -> float``).

    Example:
        >>> from convopt_mlflow.components import AdvancedLRScheduler
        >>> scheduler = AdvancedLRScheduler(3e-4, "cosine", min_lr=1e-5, max_lr=3e-4, total_steps=1000)
        >>> sched = SchedulerSchedule(scheduler, total_timesteps=1000)
        >>> round(sched(1.0), 6), round(sched(0.5), 6), round(sched(0.0), 6)   # steps 0, 500, 1000
        (0.0003, 0.000155, 1e-05)
    """

    def __init__(self, scheduler: Any, total_timesteps: int, *, guard: Any = None, fallback_lr: float | None = None):
        self.scheduler = scheduler
        self.total_timesteps = int(total_timesteps)
        self.guard = guard
        self.fallback_lr = float(fallback_lr if fallback_lr is not None else scheduler.base_lr)
        self.last_step = 0
        self.last_lr = float("nan")

    def step_for(self, progress_remaining: float) -> int:
        return int(round((1.0 - float(progress_remaining)) * self.total_timesteps))

    def __call__(self, progress_remaining: float) -> float:
        self.last_step = self.step_for(progress_remaining)
        if self.guard is None:
            self.last_lr = float(self.scheduler.get_lr(self.last_step))
        else:  # the adaptive scheduler is optional: if it fails, fall back to a constant LR
            self.last_lr = float(self.guard.call("scheduler", self._checked_lr, fallback=self.fallback_lr,
                                                 step=self.last_step))
        return self.last_lr

    def _checked_lr(self) -> float:
        lr = float(self.scheduler.get_lr(self.last_step))
        if not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"scheduler returned a non-positive or non-finite LR {lr!r}")
        return lr


def install_scheduler(model: Any, scheduler: Any, total_timesteps: int, *, guard: Any = None,
                      fallback_lr: float | None = None) -> SchedulerSchedule:
    """Make ``scheduler`` the model's LR schedule; returns the installed adapter."""
    adapter = SchedulerSchedule(scheduler, total_timesteps, guard=guard, fallback_lr=fallback_lr)
    model.learning_rate = adapter
    model.lr_schedule = FloatSchedule(adapter)
    return adapter


class ScaledSchedule:
    """SB3 ``Schedule`` that multiplies another one by ``scale``: how the LR is lowered without a scheduler.

    ``PPO.train()`` re-applies ``lr_schedule`` at every update, so a lower LR written into the
    optimizer's ``param_groups`` would last one update; this object is installed as the schedule.

    Example:
        >>> sched = ScaledSchedule(lambda progress: 3e-4)
        >>> sched.scale *= 0.5
        >>> sched(1.0)
        0.00015
    """

    def __init__(self, base: Any, scale: float = 1.0):
        self.base = base
        self.scale = float(scale)

    def __call__(self, progress_remaining: float) -> float:
        return self.scale * float(self.base(progress_remaining))


def scale_lr(model: Any, factor: float) -> float:
    """Multiply ``model``'s LR schedule by ``factor`` (installing a :class:`ScaledSchedule` once); returns the scale."""
    if not isinstance(model.lr_schedule, ScaledSchedule):
        model.lr_schedule = ScaledSchedule(model.lr_schedule)
    model.lr_schedule.scale *= float(factor)
    return model.lr_schedule.scale
