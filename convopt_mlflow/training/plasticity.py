"""Plasticity surgery on a live SB3 actor-critic: ``shrink_perturb`` and ``reset_head``.

The decision (which signal, gating, cooldown) is pure and lives in
:mod:`convopt_mlflow.components.plasticity`; this module changes the weights.

A *fresh initialization* is exactly what SB3 itself would build: a new policy of the
model's ``policy_class`` with its ``policy_kwargs`` (orthogonal init, gains sqrt(2) for the
hidden layers, 0.01 for ``action_net``, 1 for ``value_net``), constructed under
``torch.manual_seed(seed)`` inside ``torch.random.fork_rng`` so the training RNG is left
exactly as it was. The seed is derived from the run seed and the env step
(:func:`surgery_seed`), so a resumed run repeats an intervention bit for bit and no RNG
state needs checkpointing.

Adam state: ``reset_head`` deletes the optimizer state of the re-initialized layers (Adam
restarts their moments and step count lazily at the next step). ``shrink_perturb`` keeps
Adam's moments: the gradient scale they track is still that of the same network.

Both are reversible by a rollback: the checkpoints hold the weights and optimizer state,
and a rollback to a checkpoint older than the intervention restores the pre-intervention
weights. The intervention stays on record, and its cooldown (the monitor's clock, which a
rollback does not rewind) keeps it from firing again at once.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from .param_watch import parameter_health

#: Parameter-health numbers reported before/after each surgery.
HEALTH_KEYS = ("param_norm", "pi_param_norm", "vf_param_norm", "dead_fraction", "logit_range")
#: The policy's last layers: the policy head and the value head.
HEADS = ("action_net", "value_net")


def surgery_seed(run_seed: int, step: int, action: str) -> int:
    """A 32-bit seed for the fresh initialization of ``action`` at env step ``step``."""
    salt = sum(ord(c) * 31 ** i for i, c in enumerate(action)) % (2 ** 32)
    return int(np.random.SeedSequence([int(run_seed), int(step), salt]).generate_state(1)[0])


def fresh_policy(model: Any, seed: int) -> torch.nn.Module:
    """A newly initialized policy like ``model.policy`` (SB3's own constructor under ``seed``).

    The global torch RNG is the same after the call as before it.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        policy = model.policy_class(model.observation_space, model.action_space, lambda _: 0.0,
                                    use_sde=getattr(model, "use_sde", False), **model.policy_kwargs)
    return policy.to(model.policy.device)


def shrink_perturb(model: Any, fraction: float, seed: int) -> None:
    """Move every policy parameter ``fraction`` of the way toward a fresh initialization.

    ``theta <- (1 - fraction) * theta + fraction * theta_fresh`` for each tensor, in place
    (the optimizer keeps pointing at the same parameters and keeps its state).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"shrink_perturb fraction={fraction!r} must be in (0, 1]")
    fresh = dict(fresh_policy(model, seed).named_parameters())
    with torch.no_grad():
        for name, param in model.policy.named_parameters():
            param.mul_(1.0 - fraction).add_(fresh[name], alpha=fraction)


def reset_head(model: Any, seed: int) -> list[str]:
    """Re-initialize ``action_net`` and ``value_net`` in place and drop their Adam state.

    Every other parameter and its optimizer state is left untouched. Returns the names of
    the parameters reset.
    """
    fresh = dict(fresh_policy(model, seed).named_parameters())
    optimizer, reset = model.policy.optimizer, []
    with torch.no_grad():
        for name, param in model.policy.named_parameters():
            if name.split(".")[0] in HEADS:
                param.copy_(fresh[name])
                optimizer.state.pop(param, None)
                reset.append(name)
    return reset


class PlasticitySurgeon:
    """Applies the plasticity actions for an :class:`InterventionActuator` and measures their effect.

    Args:
        fraction: the ``shrink_perturb`` fraction (0, 1].
        seed: the run seed (each surgery's fresh init uses :func:`surgery_seed`).
        observations: returns the observations the parameter watch feeds through the policy
            (shape ``(n, obs_dim)``), or None; used for the before/after dead fraction and logit range.
    """

    def __init__(self, fraction: float = 0.2, seed: int = 0, *,
                 observations: Callable[[], np.ndarray | None] = lambda: None):
        self.fraction = float(fraction)
        self.seed = int(seed)
        self.observations = observations
        self.last_health: dict[str, dict[str, float]] | None = None

    def apply(self, action: str, model: Any, step: int) -> str:
        """Run ``action`` ("shrink_perturb" or "reset_head") on ``model``; return what was done."""
        seed = surgery_seed(self.seed, step, action)
        before = self._health(model)
        if action == "shrink_perturb":
            shrink_perturb(model, self.fraction, seed)
            done = f"moved every parameter {self.fraction:g} of the way to a fresh init (seed {seed})"
        elif action == "reset_head":
            names = reset_head(model, seed)
            done = (f"re-initialized {len(names)} head tensors (action_net, value_net) and their Adam state "
                    f"(seed {seed})")
        else:
            raise ValueError(f"not a plasticity action: {action!r}")
        after = self._health(model)
        self.last_health = {"before": before, "after": after}
        changes = ", ".join(f"{k} {before[k]:.3g}->{after[k]:.3g}" for k in HEALTH_KEYS if k in before and k in after)
        return f"{done}; {changes}"

    def pop_health(self) -> dict[str, dict[str, float]] | None:
        """The before/after health of the last surgery, once."""
        health, self.last_health = self.last_health, None
        return health

    def _health(self, model: Any) -> dict[str, float]:
        health = parameter_health(model.policy, self.observations())
        return {k: float(health[k]) for k in HEALTH_KEYS if k in health}
