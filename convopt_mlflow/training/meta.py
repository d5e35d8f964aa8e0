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

Stratified mode (a :class:`StrataPlan` given; config ``meta_stratified``): at training start and at
every adaptation the callback asks :meth:`~convopt_mlflow.components.meta.MetaLearningController.adapt_stratum`
for the next block's stratum and multipliers, installs a start sampler that draws only that
stratum's episode windows, and restarts every env there (a time-limit truncation at the update
boundary: the previous rollout already bootstrapped from its last observation). ``meta/regime`` is
the stratum of the update's samples; the eval callback's results carry ``score_<stratum>`` (the
validation Sharpe on that stratum's bars) that reward each stratum's bandit.

Rollbacks restore weights and optimizer state only, so the multipliers in force survive them; a
resume restores the controller (its decision in force) and the regularization schedule from the
checkpoint, and the schedules are re-wrapped at training start. A controller that raises is
disabled by the :class:`ComponentGuard` and every multiplier returns to 1 (baseline behaviour).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..components.changepoint import REGIMES
from ..components.strata import STRATA, combine_labels, start_pools
from ..components.trend_detector import TrendDetector
from .callbacks import _UpdateCallback
from .control import ComponentGuard
from .evaluate import stratum_scores
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




#: validation bars a stratum needs to be scheduled (its score rewards its bandit)
MIN_VAL_BARS = 32


@dataclass
class StrataPlan:
    """What stratified rollouts need: the stratum of every bar, the train starts of each stratum, their shares."""

    codes: np.ndarray
    pools: dict[str, np.ndarray]
    shares: dict[str, float]

    def sampler(self, regime: str, base: Callable[[np.random.Generator, int], np.ndarray], *, uniform: bool):
        """Start sampler of ``regime``'s windows. ``uniform`` (``base`` is the env's uniform default):
        uniformly from the stratum's pool. Otherwise (a curriculum stage's pool, replay, an ensemble
        member's blocks) ``base``'s draws restricted to the stratum: 32 tries per start, kept starts
        resampled when too few, and ``base``'s own draws when none falls in the stratum (the other
        component's pool wins over the stratum)."""
        pool = self.pools[regime]
        in_pool = np.zeros(int(self.codes.size), dtype=bool)
        in_pool[pool] = True

        def draw(rng: np.random.Generator, k: int) -> np.ndarray:
            if uniform:
                return rng.choice(pool, size=k).astype(np.int64)
            tries = np.asarray(base(rng, 32 * k), dtype=np.int64).reshape(-1)
            ok = tries[in_pool[np.clip(tries, 0, in_pool.size - 1)]]
            if ok.size == 0:
                return tries[:k]
            return ok[:k] if ok.size >= k else np.concatenate([ok, rng.choice(ok, size=k - ok.size)])

        draw.stratum, draw.base = regime, base  # type: ignore[attr-defined]
        return draw


def build_strata(controller: Any, market: Any) -> StrataPlan:
    """Label every bar up to the end of the validation split (BOCPD continued over val, the trend
    detector over everything, both causal) and group the train starts by episode stratum."""
    returns = np.asarray(market.features.log_returns, dtype=np.float64)
    stop = int(market.splits.val[1])
    end = controller.first_bar + controller.labels.size
    if controller.labels.size and end < stop:
        controller.detect_regime_change(returns[end:stop])  # val bars: labelled as a live observer would
    vol = np.full(stop, REGIMES.index("normal"), dtype=np.int8)
    first, labels = controller.first_bar, controller.labels
    vol[first:first + labels.size] = labels[:max(stop - first, 0)]
    codes = np.full(returns.size, STRATA.index("neutral"), dtype=np.int8)
    codes[:stop] = combine_labels(TrendDetector().probabilities(returns[:stop]), vol)
    core = market.cores["train"]
    pools = start_pools(codes, core.start_bounds, core.episode_length)
    # a stratum too rare in validation could never reward its bandit: it gets no blocks
    val = np.bincount(codes[market.splits.val[0]:stop], minlength=len(STRATA))
    pools = {name: pool if val[k] >= MIN_VAL_BARS else pool[:0] for k, (name, pool) in enumerate(pools.items())}
    total = sum(p.size for p in pools.values()) or 1
    return StrataPlan(codes, pools, {name: pool.size / total for name, pool in pools.items()})


def stratum_scored(evaluate: Callable[[Any], dict], market: Any, plan: StrataPlan, *, cost_bps: float):
    """``evaluate`` plus the per-stratum validation Sharpes ``score_<stratum>`` of the same walk."""

    def scored(policy: Any) -> dict:
        return {**evaluate(policy), **stratum_scores(policy, market, plan.codes, STRATA, cost_bps=cost_bps)}

    return scored


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
        strata: a :class:`StrataPlan` for stratified rollouts (controller built with ``stratified=True``), or None.
        evaluate: ``policy -> {"score_<stratum>": ...}``; stratified runs score the untrained policy
            once at the start, so the first block of every stratum has a score to be rewarded against.
    """

    def __init__(self, controller: Any, *, regularization: Any = None, guard: ComponentGuard | None = None,
                 record: Callable[..., None] | None = None, scores: Callable[[], list] | None = None,
                 lr_bounds: tuple[float, float] | None = None, strata: StrataPlan | None = None,
                 evaluate: Callable[[Any], dict] | None = None, verbose: int = 0):
        super().__init__(verbose)
        self.controller = controller
        self.regularization = regularization
        self.guard = guard or ComponentGuard()
        self.record = record or (lambda *args, **kwargs: None)
        self.scores = scores or (lambda: [])
        self.lr_bounds = lr_bounds
        self.strata = strata
        self.evaluate = evaluate or (lambda policy: {})
        self.reverted = False

    def _on_training_start(self) -> None:
        low, high = self.lr_bounds or (None, None)
        self.lr = wrap_lr_schedule(self.model, low=low, high=high)
        self.clip = wrap_clip_range(self.model)
        freq = self.controller.adaptation_frequency
        self._next = (self.model.num_timesteps // freq + 1) * freq
        self._last_adapt = self.controller.current.step
        step, first = self.model.num_timesteps, None
        if self.strata is not None and self.guard.active("meta"):
            if self.controller.pending is None:  # a new run: the first block, its stratum's score before it
                first = self.guard.call("meta", lambda: self._next_block(self.evaluate(self.model.policy)),
                                        fallback=None, step=step)
            else:  # a resume: the block in force again, with fresh episodes in its stratum
                self.guard.call("meta", self._enter, self.controller.current.regime, fallback=None, step=step)
        if self.guard.active("meta"):
            self._set(self.controller.current.multipliers())  # a resume: the decision in force again
        if first is not None:
            self._log(first, step)

    def _set(self, multipliers: dict[str, float]) -> None:
        self.lr.multiplier = multipliers["lr"]
        self.clip.multiplier = multipliers["clip_range"]
        if self.regularization is not None:
            self.model.ent_coef = self.regularization.set_ent_scale(multipliers["ent_coef"])

    def _next_block(self, score_row: dict | None) -> Any:
        scores = None if score_row is None else {name: score_row.get(f"score_{name}") for name in STRATA}
        chosen = self.controller.adapt_stratum(self.model.num_timesteps, scores, self.strata.shares)
        self._enter(chosen.regime)
        return chosen

    def _enter(self, regime: str) -> None:
        """Episodes from now on start in ``regime``'s windows; every env starts one now."""
        venv = self.model.env.unwrapped
        base = venv.start_sampler
        base = getattr(base, "base", base)
        default = getattr(venv, "market", venv.core).sample_starts  # the augmented env draws from `market`
        venv.set_start_sampler(self.strata.sampler(regime, base, uniform=base == default))
        self.model._last_obs = venv.restart()
        self.model._last_episode_starts = np.ones(venv.num_envs, dtype=bool)

    def _on_update(self) -> None:
        step = self.num_timesteps
        if not self.guard.active("meta"):
            if not self.reverted:  # disabled: back to baseline behaviour, once
                self._set({"lr": 1.0, "ent_coef": 1.0, "clip_range": 1.0})
                if self.strata is not None:  # and uniform (or the base sampler's) episode starts
                    venv = self.model.env.unwrapped
                    venv.set_start_sampler(getattr(venv.start_sampler, "base", venv.start_sampler))
                self.reverted = True
            return
        if self.strata is not None:
            return self._on_stratified_update(step)
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

    def _on_stratified_update(self, step: int) -> None:
        self.logger.record("meta/regime", float(STRATA.index(self.controller.current.regime)))
        if step < self._next:
            return
        while self._next <= step:
            self._next += self.controller.adaptation_frequency
        new = [row for row in self.scores() if row.get("step", -1) > self._last_adapt]
        chosen = self.guard.call("meta", self._next_block, new[-1] if new else None, fallback=None, step=step)
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
        values = {"regime": float(self.controller.regimes.index(chosen.regime)), **chosen.multipliers()}
        self.record("meta_adapt", chosen.reason, values, applied, step)
        arms = list(self.controller.adjustments)
        self.logger.record("meta/arm", float(arms.index(chosen.arm)))
        for name, value in chosen.multipliers().items():
            self.logger.record(f"meta/{name}_mult", value)
        for regime in (self.controller.regimes if self.strata is not None else (chosen.regime,)):
            for key, value in self.controller.bandit_summary(regime).items():
                self.logger.record(f"meta/{regime}/{key}", value)
        reward = getattr(self.controller, "last_reward", None)
        if self.strata is not None and reward is not None:
            self.logger.record("meta/reward", reward["reward"])
            self.logger.record(f"meta/{reward['regime']}/reward", reward["reward"])
        pending = self.controller.pending or {}
        if pending.get("score_before") is not None:
            self.logger.record("meta/score_before", float(pending["score_before"]))
