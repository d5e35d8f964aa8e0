"""Apply the monitor's interventions to a live SB3 model.

The monitor (pure) decides; this actuator does. Each ``apply`` returns a short
text describing what was actually done, which is logged next to the decision.
"""
from __future__ import annotations

from typing import Any

from .checkpoints import CheckpointStore, NoCheckpointError
from .control import StopRequest
from .schedule import ScaledSchedule, scale_lr


class TrainingDiverged(RuntimeError):
    """Divergence persisted after ``max_rollbacks`` rollbacks; the run ends FAILED."""


class InterventionActuator:
    """Turns ``Intervention`` decisions into changes of the model and its schedules.

    Args:
        scheduler: the installed AdvancedLRScheduler, or None (LR actions are then skipped).
        regularization: a RegularizationSchedule for entropy / weight decay, or None.
        store: checkpoint store used by ``rollback`` and by ``early_stop`` (best-by-eval).
        stop: shared stop request set by ``early_stop``.
        max_rollbacks: rollbacks allowed before :class:`TrainingDiverged` is raised.
        lr_reduce_factor: multiplier applied to the LR by ``lr_reduce`` and ``rollback``.
        plasticity: a :class:`~convopt_mlflow.training.plasticity.PlasticitySurgeon` for
            ``shrink_perturb`` / ``reset_head``; None builds a default one (fraction 0.2, seed 0).
        curriculum: a ``CurriculumDriver`` (training/curriculum.py) that ``advance_curriculum`` asks, or None.
    """

    def __init__(self, *, scheduler: Any = None, regularization: Any = None, store: CheckpointStore | None = None,
                 stop: StopRequest | None = None, max_rollbacks: int = 3, lr_reduce_factor: float = 0.5,
                 plasticity: Any = None, curriculum: Any = None):
        self.scheduler = scheduler
        self.regularization = regularization
        self.store = store
        self.stop = stop or StopRequest()
        self.max_rollbacks = max_rollbacks
        self.lr_reduce_factor = lr_reduce_factor
        self.curriculum = curriculum
        self.rollbacks = 0
        self.last_rollback_step: int | None = None  # step of the checkpoint the last rollback restored
        self.skipped_checkpoints: list[dict[str, Any]] = []
        self.plasticity = plasticity

    def state_dict(self, model: Any) -> dict[str, Any]:
        """What a checkpoint must carry so a resumed run keeps its rollback budget and lowered LR."""
        schedule = model.lr_schedule
        return {"rollbacks": self.rollbacks, "last_rollback_step": self.last_rollback_step,
                "lr_scale": schedule.scale if isinstance(schedule, ScaledSchedule) else None}

    def load_state_dict(self, state: dict[str, Any], model: Any) -> None:
        self.rollbacks = int(state.get("rollbacks", 0))
        self.last_rollback_step = state.get("last_rollback_step")
        if state.get("lr_scale") is not None:
            scale_lr(model, float(state["lr_scale"]))

    def note_skipped(self, skipped: list, *, at_step: int) -> None:
        """Record checkpoints skipped as corrupt (``(entry, reason)`` pairs) when loading at ``at_step``."""
        self.skipped_checkpoints.extend({"step": e.step, "reason": r, "at": at_step} for e, r in skipped)

    def apply(self, action: str, model: Any, step: int) -> str:
        handler = getattr(self, f"_{action}", None)
        if handler is None:
            return "not applicable"
        return handler(model, step)

    # ---------------------------------------------------------------- actions
    def _lr_restart(self, model: Any, step: int) -> str:
        if self.scheduler is None:
            return "skipped: no scheduler"
        blocker = self.scheduler.restart_blocker(step)
        if blocker is not None or not self.scheduler.restart(step):
            return f"skipped: {blocker or 'the schedule refused the restart'}"
        return f"new LR cycle from step {step}"

    def _lr_reduce(self, model: Any, step: int) -> str:
        return self._lower_lr(model)

    def _lower_lr(self, model: Any) -> str:
        """Scale the LR by ``lr_reduce_factor``: through the scheduler, or else a scaled SB3 schedule."""
        if self.scheduler is not None:
            self.scheduler.reduce(self.lr_reduce_factor)
            return f"LR scaled by {self.lr_reduce_factor}"
        scale = scale_lr(model, self.lr_reduce_factor)
        return f"LR scaled by {self.lr_reduce_factor} (schedule x{scale:.3g})"

    def _increase_entropy(self, model: Any, step: int) -> str:
        if self.regularization is None or not self.regularization.increase_entropy():
            return "skipped: entropy coefficient at its bound"
        model.ent_coef = self.regularization.ent_coef
        return f"ent_coef -> {model.ent_coef:.3g}"

    def _increase_regularization(self, model: Any, step: int) -> str:
        if self.regularization is None or not self.regularization.increase_regularization():
            return "skipped: regularization at its bounds"
        model.ent_coef = self.regularization.ent_coef
        for group in model.policy.optimizer.param_groups:
            group["weight_decay"] = self.regularization.weight_decay
        return f"ent_coef -> {model.ent_coef:.3g}, weight_decay -> {self.regularization.weight_decay:.3g}"

    def _reduce_batch_size(self, model: Any, step: int) -> str:
        return f"batch_size now {model.batch_size}"  # ConvoptPPO already halved it and retried

    def _shrink_perturb(self, model: Any, step: int) -> str:
        return self._surgeon().apply("shrink_perturb", model, step)

    def _reset_head(self, model: Any, step: int) -> str:
        return self._surgeon().apply("reset_head", model, step)

    def _surgeon(self) -> Any:
        if self.plasticity is None:
            from .plasticity import PlasticitySurgeon

            self.plasticity = PlasticitySurgeon()
        return self.plasticity

    def pop_health(self) -> dict[str, Any] | None:
        """Before/after parameter health of the action just applied (plasticity actions only), once."""
        return self.plasticity.pop_health() if self.plasticity is not None else None

    def _advance_curriculum(self, model: Any, step: int) -> str:
        if self.curriculum is None:
            return "skipped: curriculum not enabled"
        return self.curriculum.advance(step, "advance_curriculum")

    def _early_stop(self, model: Any, step: int) -> str:
        note = "stopping"
        if self.store is not None and self.store.best() is not None:
            entry = self.store.best()
            try:
                state = self.store.load(entry)
                load_weights(model, state)
                self._keep_weight_decay(model)
                note = f"restored best-by-eval checkpoint of step {entry.step}; stopping"
            except Exception as exc:  # a corrupt best checkpoint must not turn a stop into a crash
                self.skipped_checkpoints.append({"step": entry.step, "reason": str(exc), "at": step})
        self.stop.request(f"early_stop at step {step}")
        return note

    def _keep_weight_decay(self, model: Any) -> None:
        """Loading an optimizer state dict also loads its old weight_decay; the schedule's value stays in force
        (like ``model.ent_coef``, which a checkpoint does not hold)."""
        if self.regularization is not None:
            for group in model.policy.optimizer.param_groups:
                group["weight_decay"] = self.regularization.weight_decay

    def _rollback(self, model: Any, step: int) -> str:
        if self.rollbacks >= self.max_rollbacks:
            raise TrainingDiverged(
                f"training diverged again after {self.rollbacks} rollback(s) (run.max_rollbacks={self.max_rollbacks})"
            )
        if self.store is None:
            raise TrainingDiverged("training diverged and no checkpoint store is configured for rollback")
        entry, state, skipped = self._rollback_target()
        self.note_skipped(skipped, at_step=step)
        load_weights(model, state)
        self._keep_weight_decay(model)
        self.rollbacks += 1
        self.last_rollback_step = entry.step
        lr_note = self._lower_lr(model)
        skip_note = f" (skipped {len(skipped)} corrupt)" if skipped else ""
        return f"restored checkpoint of step {entry.step}{skip_note}, {lr_note}; rollback {self.rollbacks}/{self.max_rollbacks}"

    def _rollback_target(self):
        """The newest good checkpoint; after an earlier rollback, the newest one older than the
        checkpoint that rollback restored (a divergence that came back was already building there),
        or that same one again when nothing older is left."""
        try:
            if self.last_rollback_step is not None:
                try:
                    return self.store.load_latest_good(max_step=self.last_rollback_step - 1)
                except NoCheckpointError:
                    pass
            return self.store.load_latest_good()
        except NoCheckpointError as exc:
            raise TrainingDiverged(f"training diverged and no usable checkpoint exists: {exc}") from exc


def load_weights(model: Any, state: dict) -> None:
    """Restore policy and optimizer state only (timesteps and RNG keep going)."""
    model.policy.load_state_dict(state["policy"])
    model.policy.optimizer.load_state_dict(state["optimizer"])
