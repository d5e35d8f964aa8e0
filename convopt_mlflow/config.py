"""Configuration: one tree of frozen dataclasses, presets and ``key=value`` overrides.

``OptimizedTrainingConfig`` keeps every field of the reference design at its top
level (same names), and adds sub-trees for data, environment, PPO, the monitor
and the run itself. The whole tree is logged once as flattened MLflow params and
as a ``config.json`` artifact whose hash is kept as a param.

Overrides address fields by dotted path, e.g. ``ppo.batch_size=128`` or
``base_learning_rate=1e-4``. Tuple fields take ``+``-separated items, e.g.
``ppo.net_arch=64+64``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .errors import ConfigError

SCHEDULE_TYPES = ("constant", "linear", "cosine", "cosine_with_restarts", "plateau", "multi_phase")
INTERVENTIONS = (
    "lr_restart",
    "lr_reduce",
    "increase_entropy",
    "advance_curriculum",
    "rollback",
    "early_stop",
    "reduce_batch_size",
    "increase_regularization",
)


@dataclass(frozen=True)
class DataConfig:
    source: str = "eurusd-1h"
    """Bundled name (eurusd-1h, googl-1d), a CSV/Parquet path, or a ``synthetic:k=v,...`` spec."""
    val_fraction: float = 0.15
    """Share of bars in the validation split (chronological, after train)."""
    test_fraction: float = 0.15
    """Share of bars in the test split (the last bars)."""
    embargo_bars: int = 24
    """Bars left out between consecutive splits so windows never straddle them."""
    vol_window: int = 20
    """Trailing window (bars) of the rolling-volatility features."""
    max_gap: str = "30D"
    """Largest gap allowed between consecutive bars (pandas Timedelta string); 'none' disables."""


@dataclass(frozen=True)
class EnvConfig:
    window: int = 32
    """Bars of features in each observation."""
    episode_length: int = 256
    """Decisions per training episode (random window of the train split)."""
    cost_bps: float = 1.0
    """Transaction cost in basis points per unit of position change."""
    long_only: bool = False
    """Positions {flat, long} instead of {short, flat, long}."""
    n_envs: int = 8
    """Environments stepped together in one vectorized array operation."""


@dataclass(frozen=True)
class PPOConfig:
    n_steps: int = 256
    """Steps per environment per rollout (rollout size = n_steps * n_envs)."""
    batch_size: int = 256
    """Minibatch size of each gradient step."""
    n_epochs: int = 10
    """Passes over each rollout."""
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    """Entropy bonus coefficient (SB3 default 0.0); interventions may raise it."""
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    net_arch: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the policy and value networks."""
    activation: str = "tanh"
    """tanh or relu."""
    weight_decay: float = 0.0
    """Adam weight decay; the increase_regularization intervention may raise it."""
    torch_threads: int = 1
    """torch.set_num_threads; 1 is as fast as more on small MLPs."""


@dataclass(frozen=True)
class MonitorConfig:
    enabled: bool = False
    """Run the convergence monitor and apply its interventions."""
    interventions: tuple[str, ...] = ("lr_restart", "lr_reduce", "increase_entropy", "rollback", "reduce_batch_size")
    """Actions the monitor may take (see INTERVENTIONS)."""
    overfit_response: str = "increase_regularization"
    """increase_regularization or early_stop."""
    max_ent_coef: float = 0.05
    """Upper bound for the entropy coefficient raised by interventions."""
    max_weight_decay: float = 1e-3
    """Upper bound for weight decay raised by increase_regularization."""
    param_watch: bool = True
    """Track parameter norms, dead units and logit range every update."""


@dataclass(frozen=True)
class RunConfig:
    total_timesteps: int = 100_000
    """Environment steps of the whole run."""
    seed: int = 0
    """Seeds torch, numpy and the environments."""
    experiment: str = ""
    """MLflow experiment name; empty uses MLflow's default resolution."""
    eval_freq: int = 25_000
    """Environment steps between validation evaluations (0 disables)."""
    checkpoint_freq: int = 50_000
    """Environment steps between checkpoints (0 disables)."""
    keep_checkpoints: int = 3
    """Number of most recent checkpoints kept (the best-by-eval one is kept too)."""
    max_rollbacks: int = 3
    """Rollbacks allowed before the run stops FAILED."""
    progress_bar: bool = True
    """Show a console progress bar."""


@dataclass(frozen=True)
class OptimizedTrainingConfig:
    # --- reference design fields (names and meaning kept) ---
    base_learning_rate: float = 3e-5
    """Base LR of the scheduler (the reference design's value)."""
    min_learning_rate: float = 1e-7
    max_learning_rate: float = 1e-4
    lr_schedule_type: str = "cosine_with_restarts"
    """One of constant, linear, cosine, cosine_with_restarts, plateau, multi_phase."""
    restart_period: int = 500_000
    """First SGDR cycle length in environment steps."""
    curriculum_enabled: bool = True
    curriculum_stages: int = 5
    stage_progression_threshold: float = 0.1
    replay_buffer_size: int = 1_000_000
    replay_ratio: float = 0.25
    priority_alpha: float = 0.6
    plateau_threshold: float = 0.1
    """Coefficient of variation of the loss over the window below which it is a plateau."""
    intervention_threshold: float = 0.3
    """Severity in [0, 1] above which non-emergency interventions fire."""
    monitoring_window: int = 20
    """PPO updates in the monitor's trend window (the reference gave no unit)."""
    noise_injection_prob: float = 0.3
    time_warp_prob: float = 0.2
    feature_dropout_prob: float = 0.1
    ensemble_size: int = 3
    diversity_penalty: float = 0.1
    meta_learning_rate: float = 1e-4
    adaptation_frequency: int = 10_000
    # --- extensions ---
    scheduler_enabled: bool = False
    """Install the AdvancedLRScheduler; off means a constant LR of base_learning_rate."""
    period_mult: float = 1.0
    """SGDR cycle-length multiplier after each restart."""
    warmup_steps: int = 0
    """Warm-up steps of the multi_phase schedule."""
    data: DataConfig = field(default_factory=DataConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise ConfigError("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def _problems(cfg: OptimizedTrainingConfig) -> Iterable[str]:
    positive = {
        "base_learning_rate": cfg.base_learning_rate,
        "min_learning_rate": cfg.min_learning_rate,
        "max_learning_rate": cfg.max_learning_rate,
        "restart_period": cfg.restart_period,
        "monitoring_window": cfg.monitoring_window,
        "env.window": cfg.env.window,
        "env.episode_length": cfg.env.episode_length,
        "env.n_envs": cfg.env.n_envs,
        "ppo.n_steps": cfg.ppo.n_steps,
        "ppo.batch_size": cfg.ppo.batch_size,
        "ppo.n_epochs": cfg.ppo.n_epochs,
        "ppo.torch_threads": cfg.ppo.torch_threads,
        "run.total_timesteps": cfg.run.total_timesteps,
        "data.vol_window": cfg.data.vol_window,
    }
    for name, value in positive.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            yield f"{name} must be > 0 (got {value!r})"
    if cfg.min_learning_rate > cfg.max_learning_rate:
        yield f"min_learning_rate ({cfg.min_learning_rate}) must not exceed max_learning_rate ({cfg.max_learning_rate})"
    if cfg.lr_schedule_type not in SCHEDULE_TYPES:
        yield f"lr_schedule_type must be one of {', '.join(SCHEDULE_TYPES)} (got {cfg.lr_schedule_type!r})"
    for name in ("val_fraction", "test_fraction"):
        value = getattr(cfg.data, name)
        if not 0 < value < 0.5:
            yield f"data.{name} must be in (0, 0.5) (got {value})"
    if cfg.data.embargo_bars < 0:
        yield f"data.embargo_bars must be >= 0 (got {cfg.data.embargo_bars})"
    for name in ("cost_bps",):
        if getattr(cfg.env, name) < 0:
            yield f"env.{name} must be >= 0"
    for name in ("gamma", "gae_lambda"):
        if not 0 < getattr(cfg.ppo, name) <= 1:
            yield f"ppo.{name} must be in (0, 1]"
    for name in ("clip_range", "vf_coef", "max_grad_norm"):
        if not getattr(cfg.ppo, name) > 0:
            yield f"ppo.{name} must be > 0"
    if cfg.ppo.ent_coef < 0 or cfg.ppo.weight_decay < 0:
        yield "ppo.ent_coef and ppo.weight_decay must be >= 0"
    if cfg.ppo.activation not in ("tanh", "relu"):
        yield f"ppo.activation must be tanh or relu (got {cfg.ppo.activation!r})"
    if not cfg.ppo.net_arch or any(n <= 0 for n in cfg.ppo.net_arch):
        yield f"ppo.net_arch needs one or more positive layer sizes (got {cfg.ppo.net_arch})"
    unknown = [a for a in cfg.monitor.interventions if a not in INTERVENTIONS]
    if unknown:
        yield f"monitor.interventions has unknown action(s) {unknown}; choose from {', '.join(INTERVENTIONS)}"
    if cfg.monitor.overfit_response not in ("increase_regularization", "early_stop"):
        yield "monitor.overfit_response must be increase_regularization or early_stop"
    for name in ("eval_freq", "checkpoint_freq", "max_rollbacks", "seed"):
        if getattr(cfg.run, name) < 0:
            yield f"run.{name} must be >= 0"
    if cfg.run.keep_checkpoints < 1:
        yield "run.keep_checkpoints must be >= 1"


# --------------------------------------------------------------------------- presets

_ALL_ACTIONS = ("lr_restart", "lr_reduce", "increase_entropy", "rollback", "early_stop", "reduce_batch_size",
                "increase_regularization")

PRESETS: dict[str, dict[str, Any]] = {
    # Plain SB3 PPO: SB3's default LR, constant, no monitor, no optional component.
    "baseline": {
        "base_learning_rate": 3e-4, "max_learning_rate": 3e-4, "scheduler_enabled": False,
        "curriculum_enabled": False, "replay_ratio": 0.0, "noise_injection_prob": 0.0, "time_warp_prob": 0.0,
        "feature_dropout_prob": 0.0, "ensemble_size": 1, "monitor.enabled": False,
    },
    # Plain SB3 PPO at the reference design's base LR (premature convergence is LR-dependent).
    "baseline-3e-5": {
        "base_learning_rate": 3e-5, "scheduler_enabled": False, "curriculum_enabled": False, "replay_ratio": 0.0,
        "noise_injection_prob": 0.0, "time_warp_prob": 0.0, "feature_dropout_prob": 0.0, "ensemble_size": 1,
        "monitor.enabled": False,
    },
    # Baseline + advanced LR scheduler + convergence monitor with interventions.
    "lr": {
        "base_learning_rate": 1e-4, "max_learning_rate": 3e-4, "scheduler_enabled": True,
        "lr_schedule_type": "cosine_with_restarts", "curriculum_enabled": False, "replay_ratio": 0.0,
        "noise_injection_prob": 0.0, "time_warp_prob": 0.0, "feature_dropout_prob": 0.0, "ensemble_size": 1,
        "monitor.enabled": True,
    },
    # Every component implemented so far; later components join this preset.
    "full": {
        "base_learning_rate": 1e-4, "max_learning_rate": 3e-4, "scheduler_enabled": True,
        "lr_schedule_type": "cosine_with_restarts", "monitor.enabled": True, "monitor.interventions": _ALL_ACTIONS,
    },
}


def build_config(preset: str = "baseline", overrides: Mapping[str, str] | Iterable[str] = ()) -> OptimizedTrainingConfig:
    """Build a config from a named preset plus ``key=value`` overrides (overrides win)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    values: dict[str, Any] = dict(PRESETS[preset])
    values.update(parse_overrides(overrides))
    return apply_values(OptimizedTrainingConfig(), values)


def parse_overrides(overrides: Mapping[str, str] | Iterable[str] | str) -> dict[str, str]:
    """Turn ``"a=1,b.c=x"`` or ``["a=1", "b.c=x"]`` into ``{"a": "1", "b.c": "x"}``.

    A text value may itself hold commas (``data.source=synthetic:n_bars=5000,seed=3``): a
    segment whose key is not a config key continues the previous text value.
    """
    if isinstance(overrides, Mapping):
        return {str(k).strip(): v for k, v in overrides.items()}
    items = [overrides] if isinstance(overrides, str) else list(overrides)
    defaults = flatten(OptimizedTrainingConfig())
    out: dict[str, str] = {}
    for item in items:
        last = None
        for pair in str(item).split(","):
            if not pair.strip():
                continue
            key, sep, value = pair.partition("=")
            key = key.strip()
            if last is not None and isinstance(defaults.get(last), str) and key not in defaults:
                out[last] = f"{out[last]},{pair.strip()}"
                continue
            if not sep or not key:
                raise ConfigError(f"override {pair.strip()!r} is not key=value (e.g. ppo.batch_size=128)")
            out[key] = value.strip()
            last = key
    return out


def apply_values(cfg: Any, values: Mapping[str, Any], prefix: str = "") -> Any:
    """Return a copy of ``cfg`` with dotted-path ``values`` coerced to each field's type."""
    nested: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    for key, value in values.items():
        head, _, rest = key.partition(".")
        full = prefix + key
        if head not in names:
            raise ConfigError(f"unknown config key {full!r}; see `convopt config keys` for the valid keys")
        if rest:
            if not dataclasses.is_dataclass(getattr(cfg, head)):
                raise ConfigError(f"unknown config key {full!r}: {prefix}{head} has no sub-fields")
            nested.setdefault(head, {})[rest] = value
        elif dataclasses.is_dataclass(getattr(cfg, head)):
            raise ConfigError(f"config key {full!r} is a section; set one of its fields, e.g. {full}.<field>=...")
        else:
            direct[head] = _coerce(full, value, hints[head])
    for head, sub in nested.items():
        direct[head] = apply_values(getattr(cfg, head), sub, f"{prefix}{head}.")
    return dataclasses.replace(cfg, **direct)


def _coerce(key: str, value: Any, kind: Any) -> Any:
    if not isinstance(value, str):
        return tuple(value) if typing.get_origin(kind) is tuple else value
    text = value.strip()
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            number = float(text)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind is float:
            number = float(text)
            if not math.isfinite(number):
                raise ValueError
            return number
        if typing.get_origin(kind) is tuple:
            item_type = typing.get_args(kind)[0]
            parts = [p for p in text.split("+") if p.strip()]
            return tuple(_coerce(key, p, item_type) for p in parts)
        return text
    except ValueError:
        name = getattr(kind, "__name__", str(kind))
        raise ConfigError(f"bad value {value!r} for {key}: expected {name}") from None


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten the config tree into ``{"ppo.batch_size": 256, ...}`` (tuples joined by '+')."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, key + "."))
        elif isinstance(value, tuple):
            out[key] = "+".join(str(v) for v in value)
        else:
            out[key] = value
    return out


def to_json(cfg: OptimizedTrainingConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True)


def config_hash(cfg: OptimizedTrainingConfig) -> str:
    """Short sha256 of the canonical JSON of the config."""
    return hashlib.sha256(to_json(cfg).encode()).hexdigest()[:12]


def from_dict(values: Mapping[str, Any]) -> OptimizedTrainingConfig:
    """Rebuild a config from ``dataclasses.asdict`` output (e.g. a run's config.json)."""
    flat: dict[str, Any] = {}

    def walk(d: Mapping[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, Mapping):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v

    walk(values, "")
    return apply_values(OptimizedTrainingConfig(), flat)


def field_docs(cls: type = OptimizedTrainingConfig, prefix: str = "") -> dict[str, str]:
    """Field docstrings (``{"ppo.batch_size": "Minibatch size ..."}``) parsed from the source, for --help."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, nxt in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name = node.target.id
            if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
                docs[prefix + name] = str(nxt.value.value)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            docs.update(field_docs(f.default_factory, f"{prefix}{f.name}."))  # type: ignore[arg-type]
    return docs
