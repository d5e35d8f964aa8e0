"""Checks of every config field: its type, its range or allowed names, and whether its
component exists yet. One rule per dotted key; ``problems(cfg)`` yields one message per
bad key, naming the key, the value and what is allowed."""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

from ..components.convergence_types import ACTIONS
from ..components.lr_schedule import SCHEDULE_TYPES
from ..components.replay import PRIORITY_STRATEGIES, REPLAY_MODES


@dataclass(frozen=True)
class Range:
    """``low <= value <= high``; an open end excludes the bound; None is unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        return (f"in {'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}"
                f"{')' if self.high_open else ']'}")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


POSITIVE = Range(0, low_open=True)
AT_LEAST_1 = Range(1)
NON_NEGATIVE = Range(0)
PROBABILITY = Range(0, 1)
UNIT = Range(0, 1, low_open=True)  # (0, 1]

#: dotted key -> Range for numbers, a tuple of allowed names for text (and tuples of text).
RULES: dict[str, Range | tuple[str, ...]] = {
    "base_learning_rate": UNIT, "min_learning_rate": UNIT, "max_learning_rate": UNIT,
    "lr_schedule_type": tuple(SCHEDULE_TYPES), "restart_period": AT_LEAST_1,
    "curriculum_stages": AT_LEAST_1, "stage_progression_threshold": Range(),
    "replay_buffer_size": AT_LEAST_1, "replay_ratio": PROBABILITY, "priority_alpha": PROBABILITY,
    "plateau_threshold": POSITIVE, "intervention_threshold": PROBABILITY, "monitoring_window": AT_LEAST_1,
    "noise_injection_prob": PROBABILITY, "time_warp_prob": PROBABILITY, "feature_dropout_prob": PROBABILITY,
    "ensemble_size": AT_LEAST_1, "diversity_penalty": NON_NEGATIVE, "meta_learning_rate": UNIT,
    "adaptation_frequency": AT_LEAST_1, "period_mult": AT_LEAST_1, "warmup_steps": NON_NEGATIVE,
    "data.val_fraction": Range(0, 0.5, True, True), "data.test_fraction": Range(0, 0.5, True, True),
    "data.holdout_fraction": Range(0, 0.5, high_open=True),
    "data.embargo_bars": NON_NEGATIVE, "data.vol_window": Range(2),
    "env.window": AT_LEAST_1, "env.episode_length": AT_LEAST_1, "env.cost_bps": Range(0, 10_000),
    "env.n_envs": AT_LEAST_1,
    "ppo.n_steps": AT_LEAST_1, "ppo.batch_size": Range(2), "ppo.n_epochs": AT_LEAST_1, "ppo.gamma": UNIT,
    "ppo.gae_lambda": UNIT, "ppo.clip_range": POSITIVE, "ppo.ent_coef": NON_NEGATIVE, "ppo.vf_coef": POSITIVE,
    "ppo.max_grad_norm": POSITIVE, "ppo.net_arch": AT_LEAST_1, "ppo.activation": ("tanh", "relu"),
    "ppo.weight_decay": NON_NEGATIVE, "ppo.torch_threads": AT_LEAST_1,
    "monitor.interventions": tuple(ACTIONS), "monitor.overfit_response": ("increase_regularization", "early_stop"),
    "monitor.max_ent_coef": NON_NEGATIVE, "monitor.max_weight_decay": NON_NEGATIVE,
    "monitor.shrink_perturb_fraction": UNIT, "monitor.plasticity_patience": AT_LEAST_1,
    "monitor.plasticity_cooldown": NON_NEGATIVE, "monitor.plasticity_dead_fraction": UNIT,
    "monitor.plasticity_logit_range": POSITIVE,
    "run.total_timesteps": AT_LEAST_1, "run.seed": Range(0, 2**32 - 1), "run.eval_freq": NON_NEGATIVE,
    "run.checkpoint_freq": NON_NEGATIVE, "run.keep_checkpoints": AT_LEAST_1, "run.max_rollbacks": NON_NEGATIVE,
    "env.observation": ("multiscale", "window"), "env.reward_scale": NON_NEGATIVE,
    "run.final_model": ("best", "last"),
    "ensemble.workers": NON_NEGATIVE, "ensemble.min_members": AT_LEAST_1, "ensemble.lr_factor": POSITIVE,
    "ensemble.ent_coef": NON_NEGATIVE, "ensemble.clip_range": POSITIVE, "ensemble.activations": ("tanh", "relu"),
    "ensemble.data_subsets": ("none", "bootstrap", "disjoint"), "ensemble.n_blocks": AT_LEAST_1,
    "replay_mode": REPLAY_MODES, "priority_strategy": PRIORITY_STRATEGIES, "replay_beta0": PROBABILITY,
    "curriculum.triggers": ("steps", "performance", "monitor"), "curriculum.min_stage_fraction": Range(0, 1, high_open=True),
    "curriculum.collapse_margin": POSITIVE, "curriculum.max_step_backs": NON_NEGATIVE,
    "curriculum.final_share": Range(0, 1, high_open=True),
    "counterfactual.baseline": ("critic", "policy_mean"),
    "direct.window": AT_LEAST_1, "direct.passes": AT_LEAST_1, "direct.batch_windows": AT_LEAST_1,
    "direct.lr": POSITIVE, "direct.objective": ("pnl", "sharpe", "batch_sharpe"),
    "direct.lr_schedule": ("constant", "linear"),
    "recurrent.lstm_hidden_size": AT_LEAST_1, "recurrent.n_lstm_layers": AT_LEAST_1,
    "augment.synthetic_prob": PROBABILITY, "augment.noise_level": NON_NEGATIVE,
    "augment.warp_factor": Range(0, 1, high_open=True), "augment.dropout_rate": UNIT, "augment.block_length": AT_LEAST_1,
}

def fields_of(cfg: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any, Any]]:
    """``(dotted key, value, type hint, default)`` of every leaf field of a config tree."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from fields_of(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value, hints[f.name], f.default


def _type_ok(value: Any, kind: Any) -> bool:
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        return isinstance(value, tuple) and all(_type_ok(v, item) for v in value)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def kind_name(kind: Any) -> str:
    if typing.get_origin(kind) is tuple:
        return f"'+'-separated {typing.get_args(kind)[0].__name__}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(kind, str(kind))


def suggest(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean `x`?)`` for the closest candidates, or ``""``."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(f'`{c}`' for c in close)}?)" if close else ""


def _choice_problem(key: str, value: Any, allowed: Sequence[str]) -> str | None:
    items = value if isinstance(value, tuple) else (value,)
    bad = [v for v in items if v not in allowed]
    if not bad:
        return None
    hint = suggest(bad[0], allowed) if len(bad) == 1 else ""
    return f"{key}={_show(value)}: {', '.join(map(repr, bad))} is not allowed{hint}; choose from {', '.join(allowed)}"


def _show(value: Any) -> str:
    return "+".join(map(str, value)) if isinstance(value, tuple) else repr(value)


def _field_problem(key: str, value: Any, kind: Any, default: Any) -> str | None:
    if not _type_ok(value, kind):
        return f"{key}={_show(value)}: expected {kind_name(kind)}"
    rule = RULES.get(key)
    if isinstance(rule, Range):
        items = value if isinstance(value, tuple) else (value,)
        if isinstance(value, tuple) and not items:
            return f"{key}: needs at least one value, each {rule}"
        if not all(rule.holds(v) for v in items):
            return f"{key}={_show(value)}: must be {rule}"
    elif rule is not None:
        problem = _choice_problem(key, value, rule)
        if problem:
            return problem
    return None


def problems(cfg: Any) -> Iterator[str]:
    """One message per field that breaks its rule, then the cross-field checks."""
    field_problems = [p for p in (_field_problem(*field) for field in fields_of(cfg)) if p]
    yield from field_problems
    if field_problems:  # cross-field checks need well-typed fields
        return
    if cfg.min_learning_rate > cfg.max_learning_rate:
        yield f"min_learning_rate={cfg.min_learning_rate!r} must not exceed max_learning_rate={cfg.max_learning_rate!r}"
    elif cfg.scheduler_enabled and not cfg.min_learning_rate <= cfg.base_learning_rate <= cfg.max_learning_rate:
        yield (f"base_learning_rate={cfg.base_learning_rate!r}: with scheduler_enabled it must be in "
               f"[min_learning_rate, max_learning_rate] = [{cfg.min_learning_rate!r}, {cfg.max_learning_rate!r}]")
    if "advance_curriculum" in cfg.monitor.interventions and not cfg.curriculum_enabled:
        yield (f"monitor.interventions={_show(cfg.monitor.interventions)}: advance_curriculum needs "
               "curriculum_enabled=true")
    if cfg.curriculum_enabled and not cfg.curriculum.triggers:
        yield "curriculum.triggers: needs at least one of steps, performance, monitor"
    if cfg.data.val_fraction + cfg.data.test_fraction + cfg.data.holdout_fraction >= 0.9:
        yield (f"data.val_fraction + data.test_fraction + data.holdout_fraction = "
               f"{cfg.data.val_fraction + cfg.data.test_fraction + cfg.data.holdout_fraction:g}: must be below 0.9 "
               "so that training keeps at least a tenth of the bars")
    if not cfg.data.source.strip():
        yield "data.source='': needs a bundled name, a CSV/Parquet path or a synthetic:k=v,... spec"
    yield from _ensemble_problems(cfg)
    for key in ("context_momentum", "context_ewm"):
        if getattr(cfg.env, key) and not cfg.env.context_features:
            yield (f"env.{key}=true needs env.context_features=true: its columns are part of the context "
                   "features")
    augmented = max(cfg.noise_injection_prob, cfg.time_warp_prob, cfg.feature_dropout_prob) > 0
    if cfg.replay_enabled and cfg.replay_mode == "transition" and augmented:
        yield ("replay_mode='transition' with augmentation: replayed observations are rebuilt from the "
               "unaugmented market, so their stored behaviour log-probabilities would not match them; use "
               "replay_mode=scenario, or set noise_injection_prob, time_warp_prob and feature_dropout_prob to 0")
    if cfg.replay_enabled and cfg.replay_mode == "transition" and cfg.replay_ratio > 0.9:
        yield (f"replay_ratio={cfg.replay_ratio!r}: transition replay adds replay_ratio / (1 - replay_ratio) "
               "replayed samples per fresh one, so it must be at most 0.9")
    if cfg.counterfactual.enabled and cfg.replay_enabled:
        yield ("counterfactual.enabled=true with replay_enabled=true: both replace PPO's update and cannot be "
               "combined; set one of them to false")
    yield from _direct_problems(cfg)
    yield from _recurrent_problems(cfg)
    if cfg.meta_enabled and cfg.run.eval_freq <= 0:
        yield (f"run.eval_freq={cfg.run.eval_freq}: meta_enabled needs validation evaluations (run.eval_freq > 0): "
               "the controller learns from the change of the validation score")


def _direct_problems(cfg: Any) -> Iterator[str]:
    """The direct learner replaces PPO's rollout and update: what acts on those cannot run with it."""
    if not cfg.direct.enabled:
        return
    if cfg.direct.window > cfg.env.episode_length:
        yield (f"direct.window={cfg.direct.window}: must be <= env.episode_length={cfg.env.episode_length} "
               "(a window is drawn where an episode could start)")
    clashing = [name for name, on in (
        ("replay_enabled", cfg.replay_enabled), ("counterfactual.enabled", cfg.counterfactual.enabled),
        ("curriculum_enabled", cfg.curriculum_enabled), ("meta_enabled", cfg.meta_enabled),
        ("scheduler_enabled", cfg.scheduler_enabled),
        ("augmentation", max(cfg.noise_injection_prob, cfg.time_warp_prob, cfg.feature_dropout_prob) > 0)) if on]
    if clashing:
        yield (f"direct.enabled=true with {', '.join(clashing)}: the direct learner draws its own train windows "
               "and uses the constant direct.lr, so these PPO components cannot act on it; switch them off")


def _recurrent_problems(cfg: Any) -> Iterator[str]:
    """The recurrent policy trains with RecurrentPPO's own rollout and sequence update: the components
    that replace PPO's rollout or update, and the ensemble's member packing, cannot run with it."""
    if not cfg.recurrent.enabled:
        return
    clashing = [name for name, on in (
        ("counterfactual.enabled", cfg.counterfactual.enabled), ("direct.enabled", cfg.direct.enabled),
        ("replay_enabled", cfg.replay_enabled), ("ensemble_size>1", cfg.ensemble_size > 1)) if on]
    if clashing:
        yield (f"recurrent.enabled=true with {', '.join(clashing)}: the LSTM policy trains with RecurrentPPO's "
               "own rollout and sequence update, which these replace or cannot pack; switch them off or "
               "set recurrent.enabled=false")


def _ensemble_problems(cfg: Any) -> Iterator[str]:
    """Cross-field checks of the ensemble section (each field's own range is in RULES)."""
    ens = cfg.ensemble
    if cfg.ensemble_size > 1 and not ens.min_members <= cfg.ensemble_size:
        yield f"ensemble.min_members={ens.min_members}: must be <= ensemble_size={cfg.ensemble_size}"
    if not ens.registry_name.strip():
        yield "ensemble.registry_name='': needs a registered model name such as convopt-ensemble"
    for name in ("lr_factor", "clip_range", "ent_coef"):
        bounds = getattr(ens, name)
        if len(bounds) != 2 or bounds[0] > bounds[1]:
            yield f"ensemble.{name}={_show(bounds)}: needs two bounds low+high with low <= high"
    for arch in ens.net_archs:
        if not all(p.isdigit() and int(p) > 0 for p in arch.split("x")):
            yield f"ensemble.net_archs={_show(ens.net_archs)}: items are layer sizes joined by x, e.g. 64x64 (got {arch!r})"
    if any(not 0 <= b < ens.n_blocks for b in ens.train_blocks):
        yield f"ensemble.train_blocks={_show(ens.train_blocks)}: must lie in [0, ensemble.n_blocks={ens.n_blocks})"
