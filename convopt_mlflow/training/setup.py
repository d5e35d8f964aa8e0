"""Build everything a training run needs from a config, before any MLflow run exists.

Bad data or an impossible config raises a ``UserError`` here, so the CLI can exit 2
without having created a run.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from stable_baselines3.common.utils import LinearSchedule

from ..components.ensemble import block_start_sampler
from ..config import OptimizedTrainingConfig
from ..env import TradingVecEnv
from .augment import augmented_env
from .data_source import min_bars_needed, read_bars  # noqa: F401 - used here and from here
from .eager_torch import EagerAdam
from .guards import FiniteGuard
from .market import Market, load_market, next_log_returns, shared_market, split_record  # noqa: F401 - from here too
from .ppo import ConvoptPPO
from .counterfactual import CounterfactualPPO
from .direct import DirectLearner
from .replay import ReplayPPO

_ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


def reward_scale(cfg: OptimizedTrainingConfig, market: Market) -> float:
    """``env.reward_scale``, or with 0 (auto) 1 / std of the train split's per-bar log returns.

    Per-bar log returns are about 1e-4 to 1e-2: at that scale the critic barely learns and
    PPO does not learn to trade within its cost. The scale changes no optimal policy.
    """
    if cfg.env.reward_scale > 0:
        return float(cfg.env.reward_scale)
    start, stop = market.splits.train
    std = float(np.std(market.features.log_returns[max(start, market.features.warmup) + 1:stop]))
    return 1.0 / std if std > 0 else 1.0


def make_env(cfg: OptimizedTrainingConfig, market: Market, *, augmentation: Any = None,
             on_augment_error: Any = None) -> FiniteGuard:
    """The training env; with ``augmentation`` (a TradingDataAugmentation) its episodes may be augmented,
    and ``on_augment_error(exc)`` hears when augmentation fails (the env then plays the market unchanged)."""
    core = market.cores["train"]
    sampler = None
    if cfg.ensemble.train_blocks:  # an ensemble member trained on its own subset of the train split
        sampler = block_start_sampler(core.start_bounds, cfg.ensemble.train_blocks, cfg.ensemble.n_blocks)
    if augmentation is not None:
        try:
            return FiniteGuard(augmented_env(cfg, market, augmentation, sampler=sampler,
                                             reward_scale=reward_scale(cfg, market), on_error=on_augment_error))
        except Exception as exc:  # noqa: BLE001 - an optional component must not end the run
            if on_augment_error is None:
                raise
            on_augment_error(exc)  # then the plain env below
    return FiniteGuard(TradingVecEnv(core, cfg.env.n_envs, seed=cfg.run.seed, start_sampler=sampler,
                                     reward_scale=reward_scale(cfg, market)))


def direct_learning_rate(lr: float, schedule: str) -> float | Callable[[float], float]:
    """The direct learner's learning rate: ``lr``, or ``lr * progress_remaining`` (linear: SB3's own
    picklable ``LinearSchedule`` from ``lr`` to 0 over the whole run)."""
    return lr if schedule == "constant" else LinearSchedule(lr, 0.0, 1.0)


def make_model(cfg: OptimizedTrainingConfig, env: Any) -> ConvoptPPO:
    torch.set_num_threads(cfg.ppo.torch_threads)
    net = list(cfg.ppo.net_arch)
    # SB3's Adam (its eps of 1e-5 included) without the 1.2-1.5 s import of torch._dynamo (eager_torch.py)
    optimizer_kwargs: dict[str, Any] = {"eps": 1e-5}
    if cfg.ppo.weight_decay > 0:
        optimizer_kwargs["weight_decay"] = cfg.ppo.weight_decay
    policy_kwargs: dict[str, Any] = {
        "net_arch": {"pi": net, "vf": net},
        "activation_fn": _ACTIVATIONS[cfg.ppo.activation],
        "optimizer_class": EagerAdam, "optimizer_kwargs": optimizer_kwargs,
    }
    extra: dict[str, Any] = {}
    learning_rate = cfg.base_learning_rate
    if cfg.direct.enabled:  # PPO's rollout and update replaced; the policy (and the export) stay SB3's
        ppo_class: type[ConvoptPPO] = DirectLearner
        learning_rate = direct_learning_rate(cfg.direct.lr, cfg.direct.lr_schedule)
        extra = {"window": cfg.direct.window, "passes": cfg.direct.passes,
                 "batch_windows": cfg.direct.batch_windows, "objective": cfg.direct.objective}
    else:  # neither component on: not one line of either runs
        ppo_class = CounterfactualPPO if cfg.counterfactual.enabled else ReplayPPO if cfg.replay_enabled else ConvoptPPO
    policy = "MlpPolicy"
    if cfg.recurrent.enabled:  # an LSTM policy (training/recurrent.py); the config refuses what cannot run with it
        from .recurrent import ConvoptRecurrentPPO, recurrent_policy_kwargs

        ppo_class, policy = ConvoptRecurrentPPO, "MlpLstmPolicy"
        policy_kwargs.update(recurrent_policy_kwargs(cfg.recurrent))
    return ppo_class(
        policy, env, learning_rate=learning_rate, n_steps=cfg.ppo.n_steps,
        batch_size=cfg.ppo.batch_size, n_epochs=cfg.ppo.n_epochs, gamma=cfg.ppo.gamma,
        gae_lambda=cfg.ppo.gae_lambda, clip_range=cfg.ppo.clip_range, ent_coef=cfg.ppo.ent_coef,
        vf_coef=cfg.ppo.vf_coef, max_grad_norm=cfg.ppo.max_grad_norm, policy_kwargs=policy_kwargs,
        seed=cfg.run.seed, device="cpu", verbose=0, **extra,
    )
