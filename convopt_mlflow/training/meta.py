"""SB3 glue of the meta-learning controller: regime labels from the train split, adaptations every
``adaptation_frequency`` env steps, applied through the model's schedule objects.

Where each multiplier goes:

- LR: a :class:`MultipliedSchedule` around the model's ``lr_schedule`` (the scheduler's adapter, or
  SB3's constant schedule). When the actuator has installed a :class:`ScaledSchedule` (LR lowered
  without a scheduler) the multiplier goes *under* it, so the actuator's scale keeps composing and
  checkpointing as before. ``PPO.train()`` re-applies the schedule every update, so the optimizer's
  ``param_groups`` and the logged ``lr`` carry the product.
- ``ent_coef``: :meth:`RegularizationSchedule.set_ent_scale`; ``model.ent_coef`` is set from the
  schedule, so the monitor's ``increase_entropy`` and a resume keep the multiplier.
- clip range: a :class:`MultipliedSchedule` around SB3's ``clip_range`` schedule.

Rollbacks restore weights and optimizer state only, so the multipliers in force survive them; a
resume restores the controller (its decision in force) and the regularization schedule from the
checkpoint, and the schedules are re-wrapped at training start. A controller that raises is
disabled by the :class:`ComponentGuard` and every multiplier returns to 1 (baseline behaviour).
"""
from __future__ import annotations

import math
from typing import Any, Callable


from ..components.changepoint import REGIMES
from .callbacks import _UpdateCallback
from .control import ComponentGuard
from .labelling import label_train_split  # noqa: F401  (re-exported: the coordinator labels through it)
from .schedule import ScaledSchedule


class MultipliedSchedule:
    """SB3 ``Schedule`` that multiplies another by ``multiplier``, optionally clamped to ``[low, high]``.

    Example:
        >>> sched = MultipliedSchedule(lambda progress: 0.2)
        >>> sched.multiplier = 0.75
        >>> sched(1.0)
        0.15000000000000002
    """

    def __init__(self, base: Any, multiplier: float = 1.0, *, low: float | None = None, high: float | None = None):
        self.base, self.multiplier, self.low, self.high = base, float(multiplier), low, high

    def __call__(self, progress_remaining: float) -> float:
        value = self.multiplier * float(self.base(progress_remaining))
        if self.multiplier != 1.0:  # only the multiplier is bounded; the base keeps its own behaviour
            value = min(max(value, self.low if self.low is not None else -math.inf),
                        self.high if self.high is not None else math.inf)
        return value


def wrap_lr_schedule(model: Any, *, low: float | None = None, high: float | None = None) -> MultipliedSchedule:
    """Install (once) a :class:`MultipliedSchedule` in ``model``'s LR schedule chain; returns it."""
    scaled = isinstance(model.lr_schedule, ScaledSchedule)
    holder, attr = (model.lr_schedule, "base") if scaled else (model, "lr_schedule")
    current = getattr(holder, attr)
    if not isinstance(current, MultipliedSchedule):
        current = MultipliedSchedule(current, low=low, high=high)
        setattr(holder, attr, current)
    return current


def wrap_clip_range(model: Any) -> MultipliedSchedule:
    if not isinstance(model.clip_range, MultipliedSchedule):
        model.clip_range = MultipliedSchedule(model.clip_range)
    return model.clip_range




class MetaCallback(_UpdateCallback):
    """Every ``adaptation_frequency`` env steps: read the regime of the bars the envs are in, reward the
    last choice with the change of the validation score, apply the new choice's multipliers.

    Place it before the :class:`ConvergenceCallback` in the ``CallbackList``: its metrics then go out
    with the same per-rollout dump, and a failure is reported as ``disable_component`` the same update.

    Args:
        controller: a :class:`~convopt_mlflow.components.meta.MetaLearningController` (labels already fed).
        regularization: the run's ``RegularizationSchedule`` (receives the ``ent_coef`` multiplier), or None.
        guard: the run's shared ``ComponentGuard``.
        record: ``(action, reason, values, applied, step)`` -> None; writes the intervention row
            (``ConvergenceCallback.record_intervention``).
        scores: ``() -> list[dict]`` of validation results with ``step`` and ``score`` (the eval history).
        lr_bounds: ``(low, high)`` the multiplied LR is kept in (the scheduler's min/max LR), or None.
    """

    def __init__(self, controller: Any, *, regularization: Any = None, guard: ComponentGuard | None = None,
                 record: Callable[..., None] | None = None, scores: Callable[[], list] | None = None,
                 lr_bounds: tuple[float, float] | None = None, verbose: int = 0):
        super().__init__(verbose)
        self.controller = controller
        self.regularization = regularization
        self.guard = guard or ComponentGuard()
        self.record = record or (lambda *args, **kwargs: None)
        self.scores = scores or (lambda: [])
        self.lr_bounds = lr_bounds
        self.reverted = False

    def _on_training_start(self) -> None:
        low, high = self.lr_bounds or (None, None)
        self.lr = wrap_lr_schedule(self.model, low=low, high=high)
        self.clip = wrap_clip_range(self.model)
        freq = self.controller.adaptation_frequency
        self._next = (self.model.num_timesteps // freq + 1) * freq
        self._last_adapt = self.controller.current.step
        if self.guard.active("meta"):
            self._set(self.controller.current.multipliers())  # a resume: the decision in force again

    def _set(self, multipliers: dict[str, float]) -> None:
        self.lr.multiplier = multipliers["lr"]
        self.clip.multiplier = multipliers["clip_range"]
        if self.regularization is not None:
            self.model.ent_coef = self.regularization.set_ent_scale(multipliers["ent_coef"])

    def _on_update(self) -> None:
        step = self.num_timesteps
        if not self.guard.active("meta"):
            if not self.reverted:  # disabled: back to baseline behaviour, once
                self._set({"lr": 1.0, "ent_coef": 1.0, "clip_range": 1.0})
                self.reverted = True
            return
        regime = self.guard.call("meta", self._regime, fallback=None, step=step)
        if regime is None:
            return self._on_update()  # just disabled
        self.logger.record("meta/regime", float(REGIMES.index(regime)))
        if step < self._next:
            return
        while self._next <= step:
            self._next += self.controller.adaptation_frequency
        new = [row for row in self.scores() if row.get("step", -1) > self._last_adapt]
        score = float(new[-1]["score"]) if new else None
        chosen = self.guard.call("meta", self.controller.adapt, step, regime, score, fallback=None, step=step)
        if chosen is None:
            return self._on_update()
        self._last_adapt = step
        self._set(chosen.multipliers())
        self._log(chosen, step)

    def _regime(self) -> str:
        return self.controller.regime_of(self.model.env.unwrapped.current_bars)

    def _log(self, chosen: Any, step: int) -> None:
        lr_now = self.model.lr_schedule(self.model._current_progress_remaining)
        applied = (f"{chosen.arm}: LR x{chosen.lr:g} (-> {lr_now:.3g}), ent_coef x{chosen.ent_coef:g} "
                   f"(-> {float(self.model.ent_coef):.3g}), clip_range x{chosen.clip_range:g} "
                   f"(-> {self.clip(self.model._current_progress_remaining):.3g})")
        values = {"regime": float(REGIMES.index(chosen.regime)), **chosen.multipliers()}
        self.record("meta_adapt", chosen.reason, values, applied, step)
        arms = list(self.controller.adjustments)
        self.logger.record("meta/arm", float(arms.index(chosen.arm)))
        for name, value in chosen.multipliers().items():
            self.logger.record(f"meta/{name}_mult", value)
        for key, value in self.controller.bandit_summary(chosen.regime).items():
            self.logger.record(f"meta/{chosen.regime}/{key}", value)
        pending = self.controller.pending or {}
        if pending.get("score_before") is not None:
            self.logger.record("meta/score_before", float(pending["score_before"]))
