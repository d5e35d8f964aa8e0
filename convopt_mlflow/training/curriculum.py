"""SB3 glue of curriculum learning: stage pools into the env, stage changes into MLflow.

:class:`CurriculumDriver` owns the link between the pure
:class:`~convopt_mlflow.components.curriculum.CurriculumLearningSystem` and the training env:
it installs the current stage's start pool as the env's start sampler (a sampler drawing
uniformly from the pool array; nothing is recomputed or copied), applies stage changes, and
answers the monitor's ``advance_curriculum`` through the actuator. Every call into the
component runs under the shared :class:`ComponentGuard`: a component that raises is disabled,
the env goes back to uniform starts, and the event becomes a ``disable_component`` row.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..components.curriculum import CurriculumLearningSystem, default_stages
from ..components.ensemble import block_starts
from .callbacks import _UpdateCallback
from .control import ComponentGuard

NAME = "curriculum"


def build_curriculum(cfg: Any) -> CurriculumLearningSystem | None:
    """The curriculum of a config (windows not scored yet: see :func:`start_curriculum`); None when disabled."""
    if not cfg.curriculum_enabled:
        return None
    return CurriculumLearningSystem(default_stages(cfg.curriculum_stages), {
        "total_steps": cfg.run.total_timesteps, "threshold": cfg.stage_progression_threshold,
        "triggers": tuple(cfg.curriculum.triggers), "min_stage_fraction": cfg.curriculum.min_stage_fraction,
        "collapse_margin": cfg.curriculum.collapse_margin, "max_step_backs": cfg.curriculum.max_step_backs,
        "final_share": cfg.curriculum.final_share,
        "decision_interval": cfg.ppo.n_steps * cfg.env.n_envs,  # the pool is set once per rollout
    })


def start_curriculum(curriculum: CurriculumLearningSystem | None, cfg: Any, market: Any, env: Any,
                     guard: ComponentGuard) -> "CurriculumDriver | None":
    """Score the train split's episode windows (under ``guard``) and return the driver of ``env``."""
    if curriculum is None:
        return None
    frame, core = market.bars.frame, market.cores["train"]
    guard.call(NAME, curriculum.score_windows, market.features.log_returns, frame["high"].to_numpy(),
               frame["low"].to_numpy(), frame["close"].to_numpy(), core.start_bounds, core.episode_length,
               vol_window=cfg.data.vol_window, fallback=None)
    allowed = None
    if cfg.ensemble.train_blocks:  # an ensemble member keeps to its own blocks of the train split
        allowed = block_starts(core.start_bounds, cfg.ensemble.train_blocks, cfg.ensemble.n_blocks)
    return CurriculumDriver(curriculum, env, guard, allowed=allowed)


def pool_sampler(pool: np.ndarray):
    """A ``StartSampler`` drawing episode starts uniformly from ``pool`` (repeats weigh more)."""

    def sample(rng: np.random.Generator, k: int) -> np.ndarray:
        return pool[rng.integers(0, pool.size, size=k)]

    return sample


class CurriculumDriver:
    """Applies a curriculum's stage to a training env, under a :class:`ComponentGuard`.

    ``allowed``: start bars the env may use at all (an ensemble member's blocks); each stage's
    pool is cut to them (and left whole if nothing of it is allowed).
    """

    def __init__(self, curriculum: CurriculumLearningSystem, env: Any, guard: ComponentGuard,
                 allowed: np.ndarray | None = None):
        self.curriculum = curriculum
        self.env = env
        self.guard = guard
        self.allowed = allowed
        self.sink: Any = None
        """``pool -> None``: where the stage's pool goes instead of the env's start sampler (scenario
        replay, which then prioritizes inside it); ``None`` is handed ``allowed`` once disabled."""
        self._installed: int | None = None
        self.record: Any = None  # (key, value) -> None; set by CurriculumCallback to SB3's logger.record

    @property
    def active(self) -> bool:
        return self.guard.active(NAME)

    def install(self, step: int = 0) -> None:
        """Hand the env the pool in force (if it changed): the stage's, or the whole split in the run's
        final share; uniform starts once disabled."""
        if not self.active:
            if self._installed is not None:
                if self.sink is not None:
                    self.sink(self.allowed)
                else:
                    self.env.set_start_sampler(None)
                self._installed = None
            return
        self.guard.call(NAME, self.curriculum.check_final_share, step, fallback=None, step=step)
        pool = self.guard.call(NAME, lambda: self.curriculum.pool, fallback=None, step=step)
        if pool is None:
            self.install(step)  # disabled just now
            return
        if self._installed != self.curriculum.pool_key:
            if self.allowed is not None:
                kept = pool[np.isin(pool, self.allowed)]
                pool = kept if kept.size else pool
            if self.sink is not None:
                self.sink(pool)
            else:
                self.env.set_start_sampler(pool_sampler(pool))
            self._installed = self.curriculum.pool_key

    def update(self, step: int, performance: dict[str, float]) -> None:
        """Let the curriculum apply its triggers at ``step``, then install the resulting stage."""
        self.guard.call(NAME, self.curriculum.get_current_stage, step, performance, fallback=None, step=step)
        self.install(step)

    def advance(self, step: int, reason: str) -> str:
        """The monitor's ``advance_curriculum``: what was done, as a sentence for the interventions table."""
        if not self.active:
            return "skipped: curriculum disabled"
        change = self.guard.call(NAME, self.curriculum.request_advance, step, f"monitor: {reason}",
                                 fallback="curriculum failed", step=step)
        self.install(step)
        if isinstance(change, str):
            return f"skipped: {change}"
        self.log()
        return f"stage {change.source} -> {change.target} ({self.curriculum.stages[change.target]['name']})"


    def log(self) -> None:
        """Record ``curriculum/stage`` (1-based, as the design numbers them), ``curriculum/pool_size`` and
        ``curriculum/full_distribution`` (1 once episodes start anywhere in the train split: its first
        step at 1 is the switch step, also a row of the curriculum's ``changes``)."""
        if self.record is not None and self.active:
            self.record("curriculum/stage", float(self.curriculum.stage + 1))
            self.record("curriculum/pool_size", float(self.curriculum.pool.size))
            self.record("curriculum/full_distribution", float(self.curriculum.on_full_distribution))


class CurriculumCallback(_UpdateCallback):
    """After each update: feed the latest validation score to the curriculum, install its stage and
    record it. ``curriculum/stage`` at step s is the stage the episodes after update s start in
    (an ``advance_curriculum`` applied at the same boundary records over it).

    Must run after the validation eval and before the callback that dumps the logs.
    """

    def __init__(self, driver: CurriculumDriver):
        super().__init__()
        self.driver = driver

    def _init_callback(self) -> None:
        super()._init_callback()
        self.driver.record = self.logger.record

    def _on_update(self) -> None:
        score = self.logger.name_to_value.get("eval/score")  # only on updates that evaluated
        performance = {"eval_score": float(score)} if score is not None and math.isfinite(score) else {}
        self.driver.update(self.num_timesteps, performance)
        self.driver.log()
