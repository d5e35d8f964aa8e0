"""Stateful learning-rate schedule that the convergence monitor can steer.

SB3's ``PPO.train()`` re-applies ``lr_schedule`` on every update, so an adaptive
learning rate has to live in a schedule object; this is that object, written in
plain Python so that it pickles and its state fits in JSON.

Units: ``step`` is always the environment timestep (SB3's ``num_timesteps``);
learning rates are optimizer learning rates.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from convopt_mlflow.errors import ConfigError

SCHEDULE_TYPES = ("constant", "linear", "cosine", "cosine_with_restarts", "plateau", "multi_phase")
_DECAYING = ("linear", "cosine", "cosine_with_restarts", "multi_phase")


def _cosine(high: float, low: float, fraction: float) -> float:
    """Half-cosine from ``high`` (fraction 0) to ``low`` (fraction >= 1)."""
    fraction = min(max(fraction, 0.0), 1.0)
    return low + (high - low) * (1.0 + math.cos(math.pi * fraction)) / 2.0


class AdvancedLRScheduler:
    r"""Learning rate as a function of the env step, steered by monitor verdicts.

    With ``b = base_lr``, ``m = min_lr``, ``T = total_steps`` and ``s`` the step
    of the last :meth:`restart` (0 before any), the raw schedule is:

    - ``constant``: ``b``.
    - ``linear``: ``b + (m - b) * min((t - s) / H, 1)`` with ``H = max(T - s, 1)``.
    - ``cosine``: ``m + (b - m) * (1 + cos(pi * min((t - s) / H, 1))) / 2``.
    - ``cosine_with_restarts`` (SGDR, Loshchilov & Hutter 2017): with
      ``T_0 = restart_period`` and ``T_mult = period_mult``, ``t - s`` is split
      into finished cycles ``T_0, T_0*T_mult, ...`` and a position ``T_cur`` in
      the current cycle of length ``T_i``; ``lr = m + (b - m) * (1 + cos(pi *
      T_cur / T_i)) / 2`` - the same values as torch's
      ``CosineAnnealingWarmRestarts(T_0, T_mult, eta_min=m)`` at integer steps.
    - ``plateau``: ``b * p`` where ``p`` starts at 1 and is multiplied by
      ``plateau_factor`` whenever ``plateau_metric`` has not improved for
      ``plateau_patience`` :meth:`update` calls that carried it.
    - ``multi_phase``: with ``W = warmup_steps`` and ``F = round(finetune_fraction * T)``:
      ``m + (b - m) * t / W`` for ``t < W``; cosine from ``b`` to ``m`` over
      ``[W, T - F)``; then ``b * finetune_scale``. After a restart at ``s < T - F``
      the cosine runs from ``b`` over ``[s, T - F)``.

    The returned rate is ``clamp(raw * scale, min_lr, max_lr)``, where ``scale``
    is a persistent multiplier lowered by :meth:`reduce`; it is kept within
    ``[min_lr / b, max_lr / b]``.

    Extra keyword arguments beyond the reference design: ``plateau_mode``
    (``"max"``, ``"min"`` or ``"auto"``: minimise when the metric name contains
    "loss") and ``min_cycle_fraction`` (how far into a decay cycle a restart is
    allowed, see :meth:`restart_blocker`).

    Examples:
        >>> s = AdvancedLRScheduler(1e-3, "cosine", min_lr=0.0, max_lr=1e-3, total_steps=100)
        >>> s.get_lr(0), s.get_lr(50), s.get_lr(100)
        (0.001, 0.0005, 0.0)
        >>> s.reduce(0.5); s.get_lr(0)
        0.0005
    """

    def __init__(
        self,
        base_lr: float,
        schedule_type: str = "cosine_with_restarts",
        *,
        min_lr: float = 1e-7,
        max_lr: float = 1e-4,
        total_steps: int = 1_000_000,
        restart_period: int = 500_000,
        period_mult: float = 1.0,
        warmup_steps: int = 0,
        finetune_fraction: float = 0.1,
        finetune_scale: float = 0.1,
        plateau_factor: float = 0.5,
        plateau_patience: int = 3,
        plateau_metric: str = "eval_score",
        plateau_mode: str = "auto",
        min_cycle_fraction: float = 0.25,
    ):
        self.base_lr = float(base_lr)
        self.schedule_type = schedule_type
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.restart_period = int(restart_period)
        self.period_mult = float(period_mult)
        self.warmup_steps = int(warmup_steps)
        self.finetune_fraction = float(finetune_fraction)
        self.finetune_scale = float(finetune_scale)
        self.plateau_factor = float(plateau_factor)
        self.plateau_patience = int(plateau_patience)
        self.plateau_metric = plateau_metric
        self.plateau_mode = plateau_mode
        self.min_cycle_fraction = float(min_cycle_fraction)
        self._validate()
        self._finetune_start = self.total_steps - int(round(self.finetune_fraction * self.total_steps))
        self._minimize = plateau_mode == "min" or (plateau_mode == "auto" and "loss" in plateau_metric)
        # Mutable state: everything below goes into state_dict().
        self.scale = 1.0
        self.plateau_scale = 1.0
        self.cycle_start = 0
        self.restarted = False
        self.best: float | None = None
        self.bad_updates = 0
        self.last_update_step: int | None = None
        self.last_step = 0

    def _validate(self) -> None:
        def need(ok: bool, field: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"lr scheduler: {field}={getattr(self, field)!r} {why}")

        need(self.schedule_type in SCHEDULE_TYPES, "schedule_type", f"is not one of {', '.join(SCHEDULE_TYPES)}")
        need(math.isfinite(self.base_lr) and self.base_lr > 0, "base_lr", "must be a finite number > 0")
        need(math.isfinite(self.min_lr) and self.min_lr >= 0, "min_lr", "must be a finite number >= 0")
        need(math.isfinite(self.max_lr) and self.max_lr > 0, "max_lr", "must be a finite number > 0")
        need(self.min_lr <= self.base_lr, "min_lr", f"must be <= base_lr ({self.base_lr!r})")
        need(self.base_lr <= self.max_lr, "base_lr", f"must be <= max_lr ({self.max_lr!r})")
        need(self.total_steps > 0, "total_steps", "must be > 0")
        need(self.restart_period > 0, "restart_period", "must be > 0")
        need(math.isfinite(self.period_mult) and self.period_mult >= 1, "period_mult", "must be >= 1")
        need(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        need(0 <= self.finetune_fraction < 1, "finetune_fraction", "must be in [0, 1)")
        need(math.isfinite(self.finetune_scale) and self.finetune_scale > 0, "finetune_scale", "must be > 0")
        need(0 < self.plateau_factor < 1, "plateau_factor", "must be in (0, 1)")
        need(self.plateau_patience >= 1, "plateau_patience", "must be >= 1")
        need(isinstance(self.plateau_metric, str) and bool(self.plateau_metric), "plateau_metric", "must be a metric name")
        need(self.plateau_mode in ("auto", "min", "max"), "plateau_mode", "must be 'auto', 'min' or 'max'")
        need(0 <= self.min_cycle_fraction <= 1, "min_cycle_fraction", "must be in [0, 1]")
        if self.schedule_type == "multi_phase":
            fine = int(round(self.finetune_fraction * self.total_steps))
            need(self.warmup_steps + fine < self.total_steps, "warmup_steps",
                 f"plus the fine-tune steps ({fine}) must leave a cosine phase before total_steps={self.total_steps}")

    # ------------------------------------------------------------------ schedule
    def _sgdr_position(self, elapsed: int) -> tuple[float, float]:
        """(T_cur, T_i) for ``elapsed`` steps since the cycle start."""
        period = float(self.restart_period)
        if self.period_mult == 1.0:
            return float(elapsed % self.restart_period), period
        position = float(elapsed)
        while position >= period:
            position -= period
            period *= self.period_mult
        return position, period

    def _cycle(self, step: int) -> tuple[float, float] | None:
        """(steps into the current decay cycle, cycle length), or None without a decay."""
        elapsed = max(step - self.cycle_start, 0)
        kind = self.schedule_type
        if kind in ("linear", "cosine"):
            return float(elapsed), float(max(self.total_steps - self.cycle_start, 1))
        if kind == "cosine_with_restarts":
            return self._sgdr_position(elapsed)
        if kind == "multi_phase":
            start = self.cycle_start if self.restarted else self.warmup_steps
            if step < start or step >= self._finetune_start:
                return None
            return float(step - start), float(max(self._finetune_start - start, 1))
        return None

    def _raw_lr(self, step: int) -> float:
        base, low, kind = self.base_lr, self.min_lr, self.schedule_type
        if kind == "constant":
            return base
        if kind == "plateau":
            return base * self.plateau_scale
        if kind == "multi_phase":
            if step >= self._finetune_start:
                return base * self.finetune_scale
            if not self.restarted and step < self.warmup_steps:
                return low + (base - low) * step / self.warmup_steps
            if self.restarted and step < self.cycle_start:
                return base
        position, length = self._cycle(step)  # type: ignore[misc]
        if kind == "linear":
            return base + (low - base) * min(position / length, 1.0)
        return _cosine(base, low, position / length)

    def get_lr(self, step: int, metrics: Mapping[str, Any] | None = None) -> float:
        """Learning rate at env step ``step``; first feeds ``metrics`` to :meth:`update`.

        For a given step and state the result is the same on every call. The
        value is always within ``[min_lr, max_lr]``.
        """
        step = int(step)
        if metrics is not None:
            self.update(metrics, step=step)
        self.last_step = step
        lr = self._raw_lr(step) * self.scale
        return float(min(max(lr, self.min_lr), self.max_lr))

    # --------------------------------------------------------------- adaptation
    def update(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Plateau bookkeeping; call once per PPO update.

        ``metrics[plateau_metric]``, when present and finite, either improves on
        the best value so far (counter reset) or adds one to the counter of
        non-improving updates. For ``plateau`` schedules, ``plateau_patience``
        such updates multiply the rate by ``plateau_factor`` and reset the
        counter. A second call with the same ``step`` (argument or
        ``metrics["step"]``) is ignored, so :meth:`get_lr` stays idempotent.
        """
        if step is None and metrics.get("step") is not None:
            step = int(metrics["step"])
        if step is not None:
            if step == self.last_update_step:
                return
            self.last_update_step = int(step)
        try:
            value = float(metrics.get(self.plateau_metric))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return
        if not math.isfinite(value):
            return
        improved = self.best is None or (value < self.best if self._minimize else value > self.best)
        if improved:
            self.best, self.bad_updates = value, 0
            return
        self.bad_updates += 1
        if self.schedule_type == "plateau" and self.bad_updates >= self.plateau_patience:
            self.plateau_scale = max(self.plateau_scale * self.plateau_factor, self.min_lr / self.base_lr)
            self.bad_updates = 0

    def restart_blocker(self, step: int) -> str | None:
        """Why an ``lr_restart`` at ``step`` should not happen, or None when it may.

        A restart is refused for ``constant`` schedules, in the ``multi_phase``
        fine-tune phase, and while less than ``min_cycle_fraction`` of the current
        decay cycle has run (so a restart cannot follow a restart, or the warm
        start of a cycle, too soon). ``plateau`` schedules may always restart.

        Examples:
            >>> s = AdvancedLRScheduler(1.0, "cosine_with_restarts", min_lr=0.0, max_lr=1.0, restart_period=100)
            >>> s.restart_blocker(10)
            'only 10% of the current LR cycle has run (min_cycle_fraction 0.25)'
            >>> s.restart_blocker(30) is None
            True
        """
        step = int(step)
        if self.schedule_type == "constant":
            return "a constant schedule has no cycle to restart"
        if self.schedule_type == "multi_phase" and step >= self._finetune_start:
            return "the multi_phase fine-tune phase does not restart"
        cycle = self._cycle(step)
        if cycle is not None and cycle[0] < self.min_cycle_fraction * cycle[1]:
            return (f"only {cycle[0] / cycle[1]:.0%} of the current LR cycle has run "
                    f"(min_cycle_fraction {self.min_cycle_fraction:g})")
        return None

    def restart(self, step: int) -> bool:
        """Begin a new decay cycle at ``step`` (an ``lr_restart`` intervention).

        Decaying schedules restart from ``base_lr``; ``plateau`` undoes its
        reductions. Returns False (and changes nothing) for ``constant`` and
        during the ``multi_phase`` fine-tune phase. It does not check
        :meth:`restart_blocker`'s cycle gate; the caller does.
        """
        step = int(step)
        if self.schedule_type == "constant":
            return False
        if self.schedule_type == "multi_phase" and step >= self._finetune_start:
            return False
        if self.schedule_type == "plateau":
            self.plateau_scale = 1.0
        self.cycle_start, self.restarted, self.bad_updates = step, True, 0
        return True

    def reduce(self, factor: float = 0.5) -> None:
        """Multiply the persistent scale by ``factor`` in (0, 1] (``lr_reduce`` / ``rollback``)."""
        factor = float(factor)
        if not (0 < factor <= 1):
            raise ValueError(f"reduce factor must be in (0, 1], got {factor!r}")
        self.scale = max(self.scale * factor, self.min_lr / self.base_lr)

    # -------------------------------------------------------------- persistence
    _STATE = ("scale", "plateau_scale", "cycle_start", "restarted", "best", "bad_updates",
              "last_update_step", "last_step")

    def state_dict(self) -> dict[str, Any]:
        """Mutable state as JSON-serialisable primitives (the config is the constructor's)."""
        return {name: getattr(self, name) for name in self._STATE}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; unknown keys are a ``ValueError``."""
        unknown = set(state) - set(self._STATE)
        if unknown:
            raise ValueError(f"unknown lr scheduler state keys: {sorted(unknown)}")
        for name in self._STATE:
            if name in state:
                setattr(self, name, state[name])

    def __repr__(self) -> str:
        return (f"AdvancedLRScheduler(base_lr={self.base_lr!r}, schedule_type={self.schedule_type!r}, "
                f"scale={self.scale!r})")
