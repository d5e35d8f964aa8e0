"""The policy network's spec, and the inference-only policy rebuilt from it.

:func:`policy_spec` describes an SB3 PPO ``MlpPolicy`` (or sb3-contrib's recurrent policy) as JSON;
:func:`build_policy` rebuilds that network on CPU for inference, without a torch optimizer. The
model format (:mod:`convopt_mlflow.tracking.model`) stores the spec in ``policy.json``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import FlattenExtractor
from torch import nn

from convopt_mlflow.recurrent import (
    build_recurrent_policy,
    is_recurrent,
    recurrent_spec,
)
from convopt_mlflow.tracking.integrity import ModelIntegrityError

__all__ = ["action_names", "build_policy", "policy_spec"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


def action_names(long_only: bool) -> tuple[str, ...]:
    """Names of the action indices: ``("flat", "long")`` or ``("short", "flat", "long")``."""
    return ("flat", "long") if long_only else ("short", "flat", "long")


# ------------------------------------------------------------------ network spec
def policy_spec(model: Any) -> dict:
    """Describe an SB3 PPO ``MlpPolicy`` so :func:`build_policy` can rebuild it.

    Args:
        model: an SB3 ``PPO`` (or subclass) whose policy is an ``ActorCriticPolicy`` with a
            flat ``Box`` observation, a ``Discrete`` action space and a ``FlattenExtractor``.

    Returns:
        ``{"obs_size": int, "n_actions": int, "net_arch": {"pi": [...], "vf": [...]},
        "activation": "tanh" | "relu"}`` (JSON-ready), plus ``"recurrent": {...}`` (LSTM size and
        layers, :func:`convopt_mlflow.recurrent.recurrent_spec`) for sb3-contrib's recurrent policy.

    Raises:
        ValueError: for any policy this model format cannot rebuild exactly.
    """
    policy = model.policy
    if not isinstance(policy, ActorCriticPolicy) or policy.use_sde:
        raise ValueError(f"expected an SB3 ActorCriticPolicy without gSDE, got {type(policy).__name__}")
    obs_space, act_space = policy.observation_space, policy.action_space
    if not isinstance(obs_space, spaces.Box) or len(obs_space.shape) != 1:
        raise ValueError(f"expected a flat Box observation space, got {obs_space}")
    if not isinstance(act_space, spaces.Discrete) or int(act_space.start) != 0:
        raise ValueError(f"expected a Discrete action space starting at 0, got {act_space}")
    if policy.features_extractor_class is not FlattenExtractor:
        raise ValueError(f"expected FlattenExtractor, got {policy.features_extractor_class.__name__}")
    activation = next((k for k, v in _ACTIVATIONS.items() if policy.activation_fn is v), None)
    if activation is None:
        raise ValueError(f"unsupported activation {policy.activation_fn.__name__}; use one of {sorted(_ACTIVATIONS)}")
    arch = policy.net_arch
    pi, vf = (arch.get("pi", []), arch.get("vf", [])) if isinstance(arch, dict) else (arch, arch)
    spec = {
        "obs_size": int(obs_space.shape[0]),
        "n_actions": int(act_space.n),
        "net_arch": {"pi": [int(n) for n in pi], "vf": [int(n) for n in vf]},
        "activation": activation,
    }
    return spec | ({"recurrent": recurrent_spec(policy)} if is_recurrent(policy) else {})


def _zero_lr(_progress_remaining: float) -> float:
    return 0.0


class _NoOptimizer:
    """What an inference-only policy holds in SB3's ``optimizer`` slot: nothing that can step.

    SB3 builds ``optimizer_class(parameters, lr=...)`` with every policy. A torch optimizer's
    first construction in a process imports ``torch._dynamo`` (and sympy): 1.2-1.5 s of CPU
    (measured in a fresh process), paid by every process that only loads a model (an
    ensemble's parent, a served or promoted model) for an optimizer it never uses.
    """

    def __init__(self, params: Any, lr: float = 0.0, **_kwargs: Any) -> None:
        self.lr = lr


def build_policy(spec: Mapping[str, Any]) -> ActorCriticPolicy:
    """Rebuild the network described by :func:`policy_spec` on CPU, in eval mode.

    The result accepts ``load_state_dict`` of the original policy's state_dict exactly
    (same keys and shapes). It is for inference: its optimizer is a placeholder that cannot
    step (:class:`_NoOptimizer`; a recurrent policy keeps SB3's, learning rate 0).

    Raises:
        ModelIntegrityError: a malformed spec (e.g. from a hand-edited policy.json).
    """
    try:
        obs_size, n_actions = int(spec["obs_size"]), int(spec["n_actions"])
        arch = {key: [int(n) for n in spec["net_arch"][key]] for key in ("pi", "vf")}
        activation = _ACTIVATIONS[spec["activation"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelIntegrityError(f"malformed policy spec {dict(spec)!r}: {exc!r}") from None
    if obs_size < 1 or n_actions < 2 or any(n < 1 for n in arch["pi"] + arch["vf"]):
        raise ModelIntegrityError(f"malformed policy spec {dict(spec)!r}: sizes must be positive")
    obs_space, act_space = spaces.Box(-np.inf, np.inf, (obs_size,), np.float32), spaces.Discrete(n_actions)
    if "recurrent" in spec:  # an LSTM policy (sb3-contrib's RecurrentActorCriticPolicy)
        try:
            policy = build_recurrent_policy(obs_space, act_space, _zero_lr, arch, activation, spec["recurrent"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelIntegrityError(f"malformed recurrent policy spec {dict(spec)!r}: {exc!r}") from None
    else:
        policy = ActorCriticPolicy(observation_space=obs_space, action_space=act_space, lr_schedule=_zero_lr,
                                   net_arch=arch, activation_fn=activation, optimizer_class=_NoOptimizer,
                                   ortho_init=False)  # the weights come from a state_dict
    policy.set_training_mode(False)
    return policy.to("cpu")
