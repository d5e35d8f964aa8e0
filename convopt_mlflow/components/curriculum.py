"""Curriculum learning: which episode windows training draws from, easy first (pure numpy/pandas).

The curriculum never touches the data. It scores every candidate episode start once
(:mod:`convopt_mlflow.components.difficulty`), and a stage is a *pool* of allowed start bars:
switching a stage hands the env a new pool to draw episode starts from (the glue calls
``TradingVecEnv.set_start_sampler``); features are never recomputed and bars never copied.

A stage is a dict: ``name``, ``max`` (component -> highest allowed percentile rank; see
:data:`~convopt_mlflow.components.difficulty.COMPONENTS` and ``difficulty``) and, for the
last stage, ``hard_quantile`` / ``hard_weight`` (starts at least that hard appear
``hard_weight`` times in the pool, so they are drawn that much more often) and ``augment``
(the stage asks for augmented episodes where augmentation is on).

Progression (``progression_criteria["triggers"]``, any of):

- ``steps``: the design's schedule, stage k from ``step_fractions[k-1] * total_steps`` on;
- ``performance``: the tracked score (``metric``, the validation score by default) reaches
  ``threshold`` after at least ``min_stage_fraction * total_steps`` steps in the stage;
- ``monitor``: the convergence monitor's ``advance_curriculum`` (:meth:`request_advance`).

When the score collapses (falls ``collapse_margin`` below the score the stage was entered
with), the curriculum steps back one stage, at most ``max_step_backs`` times, and the
step schedule then waits ``hold_fraction * total_steps`` steps before moving it on again.
One stage change at a time; each is a :class:`StageChange` kept in :attr:`changes`.

**The run ends on the full distribution** (``final_share``, default 0.5): the last ``final_share`` of
``total_steps`` draws episode starts uniformly from every scored start (the whole train split, no
hard-start weighting), whatever the stage; the stages (and the ``steps`` schedule, compressed into the
first ``1 - final_share`` of the run) play out before that, and no stage moves after it. Why: the
difficulty score ranks windows mostly by volatility, so the early stages over-sample one regime (on the
panel's regime markets the first stage holds 68-71% trend-regime bars against 45% in the split, and
almost no high-volatility ones), and the design's schedule left only the last 10% of a run, hard starts
doubled, for the distribution the policy is tested on (``docs/guides/market-panel.md``). The switch is
taken at the first decision point (the glue's update boundary, ``decision_interval`` env steps apart)
after which an episode could start at or past ``full_from_step``, so no episode starting in the last
share comes from a stage pool (the pool changes up to one interval early, at a boundary that a resumed
run, whose rollouts are shifted, may place differently). The switch step, :attr:`full_since`, is
``full_from_step`` itself, the same in a fresh and a resumed run; the decision is a
:class:`StageChange` with ``source == target`` at the decision point. ``final_share=0`` is the design's
curriculum unchanged.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from convopt_mlflow.components.difficulty import COMPONENTS, WindowDifficulty, score_windows
from convopt_mlflow.errors import ConfigError

__all__ = ["CurriculumLearningSystem", "DEFAULT_STAGES", "StageChange", "default_stages"]

#: The reference design's five stages, easiest first.
DEFAULT_STAGES: tuple[dict[str, Any], ...] = (
    {"name": "clear_trends", "max": {"trend": 0.4, "noise": 0.5, "difficulty": 0.35}},
    {"name": "moderate_volatility", "max": {"volatility": 0.6, "difficulty": 0.55}},
    {"name": "noisy_patterns", "max": {"volatility": 0.8, "difficulty": 0.75}},
    {"name": "volatile_regime_changes", "max": {"difficulty": 0.92}},
    {"name": "full_adversarial", "max": {}, "hard_quantile": 0.9, "hard_weight": 2, "augment": True},
)
#: The design's step schedule of the five stages (25/50/75/90%).
DEFAULT_STEP_FRACTIONS = (0.25, 0.5, 0.75, 0.9)
TRIGGERS = ("steps", "performance", "monitor")
_CRITERIA_DEFAULTS: dict[str, Any] = {
    "total_steps": 0, "step_fractions": None, "threshold": 0.1, "metric": "eval_score", "triggers": TRIGGERS,
    "min_stage_fraction": 0.05, "collapse_margin": 1.0, "max_step_backs": 2, "hold_fraction": 0.1,
    "min_pool": 64, "final_share": 0.5, "decision_interval": 0,
}


def default_stages(n_stages: int = 5) -> list[dict[str, Any]]:
    """The design's five stages, or ``n`` stages capped at difficulty ranks ``1/n, 2/n, ...``."""
    if n_stages == len(DEFAULT_STAGES):
        return [dict(s) for s in DEFAULT_STAGES]
    if n_stages < 1:
        raise ConfigError(f"curriculum needs at least 1 stage, got {n_stages}")
    stages = [{"name": f"difficulty_le_{(k + 1) / n_stages:.2f}", "max": {"difficulty": (k + 1) / n_stages}}
              for k in range(n_stages - 1)]
    return stages + [dict(DEFAULT_STAGES[-1])]


@dataclass(frozen=True)
class StageChange:
    """One move of the curriculum: at env ``step``, from stage ``source`` to ``target`` (0-based)."""

    step: int
    source: int
    target: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CurriculumLearningSystem:
    """Stages of episode-start pools ordered by difficulty, and when to move between them.

    Args:
        stages: stage dicts (see the module docstring), easiest first; default :func:`default_stages`.
        progression_criteria: overrides of ``total_steps`` (env steps of the run; needed by
            the ``steps`` trigger and the dwell/hold fractions), ``step_fractions``
            (``len(stages) - 1`` increasing fractions; default 25/50/75/90% for five stages,
            else even), ``threshold``, ``metric``, ``triggers``, ``min_stage_fraction``,
            ``collapse_margin``, ``max_step_backs``, ``hold_fraction``, ``min_pool`` (a pool
            smaller than this falls back to the ``min_pool`` easiest starts), ``final_share`` (in
            [0, 1): the last share of ``total_steps`` starts anywhere; see the module docstring),
            ``decision_interval`` (env steps between the glue's calls, its rollout size; 0 = every step).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> r = rng.normal(0, 1e-3, 3000); close = 100 * np.exp(np.cumsum(r))
        >>> cur = CurriculumLearningSystem(progression_criteria={"total_steps": 1000})
        >>> cur.score_windows(r, close * 1.001, close * 0.999, close, (50, 2500), 100)
        >>> cur.get_current_stage(0)["name"], cur.get_current_stage(260)["name"]
        ('clear_trends', 'moderate_volatility')
        >>> bool(np.isin(cur.pool, np.arange(50, 2501)).all())
        True
    """

    def __init__(self, stages: Sequence[Mapping[str, Any]] | None = None,
                 progression_criteria: Mapping[str, Any] | None = None):
        self.stages = [dict(s) for s in (stages if stages is not None else default_stages())]
        if not self.stages:
            raise ConfigError("curriculum needs at least one stage")
        for stage in self.stages:
            unknown = set(stage.get("max", {})) - set(COMPONENTS) - {"difficulty"}
            if unknown:
                raise ConfigError(f"curriculum stage {stage.get('name')!r}: unknown component(s) {sorted(unknown)}")
        criteria = dict(_CRITERIA_DEFAULTS)
        unknown = set(progression_criteria or {}) - set(criteria)
        if unknown:
            raise ConfigError(f"unknown curriculum progression criteria {sorted(unknown)}; known: {sorted(criteria)}")
        criteria.update(progression_criteria or {})
        n = len(self.stages)
        if criteria["step_fractions"] is None:
            criteria["step_fractions"] = DEFAULT_STEP_FRACTIONS if n == 5 else tuple(k / n for k in range(1, n))
        fractions = tuple(float(f) for f in criteria["step_fractions"])
        if len(fractions) != n - 1 or any(not 0 < f < 1 for f in fractions) or list(fractions) != sorted(fractions):
            raise ConfigError(f"curriculum step_fractions {fractions} must be {n - 1} increasing fractions in (0, 1)")
        bad = set(criteria["triggers"]) - set(TRIGGERS)
        if bad:
            raise ConfigError(f"unknown curriculum trigger(s) {sorted(bad)}; choose from {', '.join(TRIGGERS)}")
        criteria["step_fractions"] = fractions
        share = _finite(criteria["final_share"])
        if share is None or not 0.0 <= share < 1.0:
            raise ConfigError(f"curriculum.final_share must be in [0, 1) (the share of the run trained on the whole "
                              f"train split at the end), got {criteria['final_share']!r}")
        if int(criteria["decision_interval"]) < 0:
            raise ConfigError(f"curriculum decision_interval must be >= 0, got {criteria['decision_interval']}")
        criteria["final_share"] = share
        self.criteria = criteria
        self.total_steps = int(criteria["total_steps"])
        self.windows: WindowDifficulty | None = None
        self._pool_cache: tuple[int, np.ndarray] | None = None
        self.stage = 0
        self.stage_start_step = 0
        self.hold_until = 0
        self.step_backs = 0
        self.best_in_stage: float | None = None
        self.entry_scores: dict[int, float] = {}
        self.changes: list[StageChange] = []
        self.full_since: int | None = None
        """Once switched: :attr:`full_from_step`, the env step from which every episode starts anywhere."""

    @property
    def full_from_step(self) -> int | None:
        """First env step of the final share (``ceil((1 - final_share) * total_steps)``); None when off."""
        share = self.criteria["final_share"]
        if share <= 0.0 or self.total_steps <= 0:
            return None
        return int(math.ceil((1.0 - share) * self.total_steps))

    @property
    def on_full_distribution(self) -> bool:
        return self.full_since is not None

    def check_final_share(self, step: int) -> StageChange | None:
        """Switch to the full distribution when an episode starting before the next decision point could
        start at or after :attr:`full_from_step`; the change made, else None."""
        start = self.full_from_step
        if self.full_since is not None or start is None:
            return None
        if int(step) + max(int(self.criteria["decision_interval"]), 1) - 1 < start:
            return None
        self.full_since = start
        change = StageChange(int(step), self.stage, self.stage,
                             f"full distribution: the last {self.criteria['final_share']:.0%} of {self.total_steps} "
                             f"steps (from step {start}) start anywhere in the train split")
        self.changes.append(change)
        self._pool_cache = None
        return change

    # --------------------------------------------------------------- windows
    def score_windows(self, log_returns: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                      start_bounds: tuple[int, int], episode_length: int, *, vol_window: int = 20) -> None:
        """Score every start in the inclusive ``start_bounds`` (see :func:`score_windows`)."""
        lo, hi = int(start_bounds[0]), int(start_bounds[1])
        self.windows = score_windows(log_returns, high, low, close, np.arange(lo, hi + 1), episode_length,
                                     vol_window=vol_window)
        self._pool_cache = None

    def stage_pool(self, index: int) -> np.ndarray:
        """int64 start bars of stage ``index`` (hard starts repeated ``hard_weight`` times)."""
        if self.windows is None:
            raise RuntimeError("call score_windows() before asking for a stage's pool")
        stage, ranks = self.stages[index], self.windows.ranks
        keep = np.ones(len(self.windows), dtype=bool)
        for name, cap in stage.get("max", {}).items():
            keep &= ranks[name] <= float(cap) + 1e-6
        min_pool = min(int(self.criteria["min_pool"]), len(self.windows))
        if keep.sum() < min_pool:  # too strict for this data: the easiest starts instead
            keep[:] = False
            keep[np.argsort(ranks["difficulty"], kind="stable")[:min_pool]] = True
        pool = self.windows.starts[keep]
        weight = int(stage.get("hard_weight", 1))
        if weight > 1:
            hard = self.windows.starts[keep & (ranks["difficulty"] >= float(stage.get("hard_quantile", 0.9)))]
            pool = np.concatenate([pool] + [hard] * (weight - 1))
        return pool

    @property
    def pool_key(self) -> int:
        """Which pool is in force: the stage index, or ``len(stages)`` for the full distribution."""
        return len(self.stages) if self.full_since is not None else self.stage

    @property
    def pool(self) -> np.ndarray:
        """The start bars in force (int64, read-only; cached until :attr:`pool_key` changes): the
        current stage's pool, or every scored start once on the full distribution."""
        if self._pool_cache is None or self._pool_cache[0] != self.pool_key:
            if self.full_since is not None:
                if self.windows is None:
                    raise RuntimeError("call score_windows() before asking for a stage's pool")
                pool = self.windows.starts.copy()
            else:
                pool = self.stage_pool(self.stage)
            pool.flags.writeable = False
            self._pool_cache = (self.pool_key, pool)
        return self._pool_cache[1]

    def generate_stage_data(self, stage: Mapping[str, Any] | int, base_data: pd.DataFrame | None = None) -> pd.DataFrame:
        """The stage's episode windows as a table (the data itself is never copied).

        One row per distinct start bar of the stage's pool: ``start`` (bar), ``timestamp``
        (when ``base_data`` is given: its index at that bar), ``weight`` (times in the pool),
        each component's rank and ``difficulty``.
        """
        if isinstance(stage, int):
            index = stage
        else:
            index = int(stage["index"]) if "index" in stage else [s["name"] for s in self.stages].index(stage["name"])
        starts, weight = np.unique(self.stage_pool(index), return_counts=True)
        rows = np.searchsorted(self.windows.starts, starts)
        table = pd.DataFrame({"start": starts, "weight": weight})
        if base_data is not None:
            table.insert(1, "timestamp", np.asarray(base_data.index)[starts])
        for name, ranks in self.windows.ranks.items():
            table[name] = ranks[rows]
        return table

    # ------------------------------------------------------------ progression
    def get_current_stage(self, step: int, performance: Mapping[str, float] | None = None) -> dict[str, Any]:
        """Apply the triggers at env ``step`` with the latest ``performance``; return the stage.

        ``performance`` holds ``metric`` (default ``eval_score``) only when a new score exists.
        The returned dict is the stage plus ``index`` and ``n_stages``. Once on the full
        distribution (:meth:`check_final_share`), no trigger moves the stage any more.
        """
        step = int(step)
        self.check_final_share(step)
        if self.full_since is not None:
            return self.current_stage
        score = _finite((performance or {}).get(self.criteria["metric"]))
        if score is not None:
            self.best_in_stage = score if self.best_in_stage is None else max(self.best_in_stage, score)
            entry = self.entry_scores.get(self.stage)
            if (self.stage > 0 and entry is not None and score < entry - float(self.criteria["collapse_margin"])
                    and self.step_backs < int(self.criteria["max_step_backs"])):
                self.step_backs += 1
                self.hold_until = step + int(float(self.criteria["hold_fraction"]) * self.total_steps)
                self._move(step, self.stage - 1, f"score {score:.3g} collapsed below entry score {entry:.3g}")
            elif "performance" in self.criteria["triggers"] and self.should_advance_stage({**performance, "step": step}):
                self._move(step, self.stage + 1, f"{self.criteria['metric']} {score:.3g} >= "
                                                 f"threshold {self.criteria['threshold']:.3g}")
        if "steps" in self.criteria["triggers"] and self.total_steps > 0 and step >= self.hold_until:
            staged = (1.0 - self.criteria["final_share"]) * self.total_steps  # the stages' part of the run
            scheduled = int(np.searchsorted(self.criteria["step_fractions"], step / staged, side="right"))
            if scheduled > self.stage:
                fraction = self.criteria["step_fractions"][self.stage]
                self._move(step, self.stage + 1, f"step {step} passed {fraction:.0%} of {staged:.0f}")
        return self.current_stage

    def should_advance_stage(self, metrics: Mapping[str, float]) -> bool:
        """True when the tracked score reaches ``threshold`` after the minimum dwell in this stage.

        ``metrics``: ``metric`` (the score) and ``step`` (env steps).
        """
        score = _finite(metrics.get(self.criteria["metric"]))
        if score is None or self.stage >= len(self.stages) - 1:
            return False
        return score >= float(self.criteria["threshold"]) and self._dwelt(int(metrics.get("step", 0)))

    def request_advance(self, step: int, reason: str = "requested") -> StageChange | str:
        """The monitor's ``advance_curriculum``: the change made, or why none was made."""
        if "monitor" not in self.criteria["triggers"]:
            return "monitor requests are not a trigger of this curriculum"
        if self.full_since is not None:
            return f"on the full distribution since step {self.full_since}"
        if self.stage >= len(self.stages) - 1:
            return "already at the last stage"
        if not self._dwelt(int(step)):
            return f"stage {self.stage} entered at step {self.stage_start_step}: minimum dwell not reached"
        return self._move(int(step), self.stage + 1, reason)

    @property
    def current_stage(self) -> dict[str, Any]:
        return {**self.stages[self.stage], "index": self.stage, "n_stages": len(self.stages)}

    def pop_changes(self, since: int) -> list[StageChange]:
        """Changes after the first ``since`` ones (the glue keeps its own count)."""
        return self.changes[since:]

    def _dwelt(self, step: int) -> bool:
        return step - self.stage_start_step >= float(self.criteria["min_stage_fraction"]) * self.total_steps

    def _move(self, step: int, target: int, reason: str) -> StageChange:
        change = StageChange(step, self.stage, target, reason)
        if target > self.stage and self.best_in_stage is not None:
            self.entry_scores[target] = self.best_in_stage
        self.stage, self.stage_start_step, self.best_in_stage = target, step, None
        self.changes.append(change)
        return change

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "stage_start_step": self.stage_start_step, "hold_until": self.hold_until,
                "step_backs": self.step_backs, "best_in_stage": self.best_in_stage,
                "entry_scores": {str(k): v for k, v in self.entry_scores.items()},
                "changes": [c.to_dict() for c in self.changes], "full_since": self.full_since}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        stage = int(state["stage"])
        if not 0 <= stage < len(self.stages):
            raise ValueError(f"checkpointed curriculum stage {stage} does not exist ({len(self.stages)} stages)")
        self.stage, self.stage_start_step = stage, int(state["stage_start_step"])
        self.hold_until, self.step_backs = int(state["hold_until"]), int(state["step_backs"])
        self.best_in_stage = _finite(state.get("best_in_stage"))
        self.entry_scores = {int(k): float(v) for k, v in state.get("entry_scores", {}).items()}
        self.changes = [StageChange(**c) for c in state.get("changes", [])]
        full_since = state.get("full_since")
        self.full_since = None if full_since is None else int(full_since)
        self._pool_cache = None


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
