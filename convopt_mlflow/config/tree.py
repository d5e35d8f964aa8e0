"""The config tree: frozen dataclasses with field docstrings, validated on construction."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

from ..components.convergence_types import ACTIONS
from ..components.lr_schedule import SCHEDULE_TYPES
from ..errors import ConfigError

# the components own these names; the config only validates against them
INTERVENTIONS = ACTIONS


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
    """Bars of history each observation covers (see ``observation``)."""
    observation: str = "multiscale"
    """multiscale: trailing means of each feature over 1, 2, 4, ... window bars (compact);
    window: the raw features of the last ``window`` bars, flattened."""
    reward_scale: float = 0.0
    """Multiplier of the rewards the agent learns from (its metrics stay in log returns);
    0 means auto: 1 / std of the train split's per-bar log returns."""
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
    final_model: str = "best"
    """Weights the run ships: best (the best-by-validation checkpoint, when it beats the last
    weights on validation) or last (whatever the last update left)."""
    async_logging: bool = False
    """Send each rollout's MLflow batch from a writer thread. Worth it against a remote tracking
    server; on local sqlite the writer competes with training for the GIL and measured slower."""


@dataclass(frozen=True)
class EnsembleConfig:
    """Ensemble training (used when ``ensemble_size`` > 1); see components/ensemble.py."""

    workers: int = 0
    """Members trained at once, each in its own process with one torch thread; 0 = os.cpu_count()."""
    min_members: int = 2
    """Members that must finish for the ensemble to be built; fewer ends the ensemble run FAILED."""
    registry_name: str = "convopt-ensemble"
    """Registered model that receives a new version per ensemble with a validation edge."""
    register: bool = True
    """Register the ensemble model (never when its validation Sharpe is <= 0)."""
    lr_factor: tuple[float, ...] = (0.5, 2.0)
    """Bounds of each member's learning-rate multiplier (log-uniform); equal bounds: no jitter."""
    ent_coef: tuple[float, ...] = (0.0, 0.01)
    """Bounds of each member's entropy coefficient (uniform)."""
    clip_range: tuple[float, ...] = (0.1, 0.3)
    """Bounds of each member's PPO clip range (uniform)."""
    net_archs: tuple[str, ...] = ()
    """Member network variations, e.g. 64x64+128x128 (member i takes item i mod n); empty keeps ppo.net_arch.
    The logged model holds one network spec, so members with other shapes cannot be packed into it."""
    activations: tuple[str, ...] = ()
    """Member activation variations (tanh, relu), cycled like net_archs; empty keeps ppo.activation."""
    data_subsets: str = "bootstrap"
    """none, bootstrap (blocks of the train split drawn with replacement) or disjoint (contiguous shares)."""
    n_blocks: int = 10
    """Contiguous blocks the train split's episode starts are cut into for data_subsets."""
    train_blocks: tuple[int, ...] = ()
    """Set per member by the ensemble: the train blocks this run's episodes start in; empty = all."""


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
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)

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
    if cfg.env.observation not in ("multiscale", "window"):
        yield f"env.observation must be multiscale or window (got {cfg.env.observation!r})"
    if not (math.isfinite(cfg.env.reward_scale) and cfg.env.reward_scale >= 0):
        yield f"env.reward_scale must be >= 0, 0 meaning auto (got {cfg.env.reward_scale!r})"
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
    if cfg.run.final_model not in ("best", "last"):
        yield f"run.final_model must be best or last (got {cfg.run.final_model!r})"
    if cfg.run.keep_checkpoints < 1:
        yield "run.keep_checkpoints must be >= 1"
    yield from _ensemble_problems(cfg)


def _ensemble_problems(cfg: OptimizedTrainingConfig) -> Iterable[str]:
    ens = cfg.ensemble
    if cfg.ensemble_size < 1:
        yield f"ensemble_size must be >= 1 (got {cfg.ensemble_size})"
    if cfg.diversity_penalty < 0:
        yield f"diversity_penalty must be >= 0 (got {cfg.diversity_penalty})"
    if ens.workers < 0:
        yield f"ensemble.workers must be >= 0, 0 meaning the cpu count (got {ens.workers})"
    if cfg.ensemble_size > 1 and not 1 <= ens.min_members <= cfg.ensemble_size:
        yield f"ensemble.min_members must be in [1, ensemble_size={cfg.ensemble_size}] (got {ens.min_members})"
    if not ens.registry_name.strip():
        yield "ensemble.registry_name must not be empty"
    for name, floor in (("lr_factor", "> 0"), ("clip_range", "> 0"), ("ent_coef", ">= 0")):
        bounds = getattr(ens, name)
        positive = all(b > 0 if floor == "> 0" else b >= 0 for b in bounds)
        if len(bounds) != 2 or not all(math.isfinite(b) for b in bounds) or not positive or bounds[0] > bounds[1]:
            yield (f"ensemble.{name} must be two finite bounds low+high with low <= high, each {floor} "
                   f"(got {'+'.join(map(str, bounds))!r})")
    for arch in ens.net_archs:
        parts = arch.split("x")
        if not all(p.isdigit() and int(p) > 0 for p in parts):
            yield f"ensemble.net_archs items are layer sizes joined by x, e.g. 64x64 (got {arch!r})"
    bad = [a for a in ens.activations if a not in ("tanh", "relu")]
    if bad:
        yield f"ensemble.activations must be tanh or relu (got {bad})"
    if ens.data_subsets not in ("none", "bootstrap", "disjoint"):
        yield f"ensemble.data_subsets must be none, bootstrap or disjoint (got {ens.data_subsets!r})"
    if ens.n_blocks < 1:
        yield f"ensemble.n_blocks must be >= 1 (got {ens.n_blocks})"
    if any(not 0 <= b < ens.n_blocks for b in ens.train_blocks):
        yield f"ensemble.train_blocks must lie in [0, ensemble.n_blocks={ens.n_blocks}) (got {ens.train_blocks})"
