r"""Counterfactual PPO: PPO that learns from the reward of every action at every visited bar.

The market is exogenous (no market impact), so at a visited state ``s`` (window ``w``, held
position ``p``) the env knows the exact reward ``r(s, a)`` of every action and the next state
``s'_a`` under it (the actual next window with position ``l_a``); see
``TradingVecEnv.counterfactual_rewards`` / ``counterfactual_next_observations``. The rollout
buffer records both at every step; PPO's own rollout is otherwise unchanged.

**Policy loss (expected policy gradient / Mean Actor-Critic with PPO's clip).** With
``pi_k`` the rollout policy, the all-action advantages, computed once per update from the
critic of the rollout,

.. math::

    A(s, a) = r(s, a) + \gamma V(s'_a) - V(s)

(episodes only truncate here, so ``s'_a`` is always bootstrapped, as SB3 does), and the
per-action ratio ``\rho_a = \pi(a|s) / \pi_k(a|s)``, the loss of a minibatch ``B`` is

.. math::

    L_\pi = -\frac{1}{|B|} \sum_{s \in B} \sum_a \pi_k(a|s)
            \min\big(\rho_a \hat A(s,a),\ \mathrm{clip}(\rho_a, 1-\epsilon, 1+\epsilon)\, \hat A(s,a)\big)

``\hat A`` is ``A`` normalized over the minibatch's (state, action) pairs when SB3's
``normalize_advantage`` is on. This is PPO's clipped surrogate with the expectation over the
action taken exactly instead of by the one sampled action: at ``pi = pi_k`` its gradient is
``sum_a grad pi(a|s) A(s, a)``, the expected policy gradient (Ciosek & Whiteson 2018; Allen
et al. 2017, Mean Actor-Critic), and each action's ratio is clipped as PPO clips the sampled one,
so the trust region is kept. No sampling noise of the action enters the gradient.

**Critic.** At the held position the target is SB3's GAE return. With ``critic_positions`` the
critic also learns, at the same bar, the value of holding each other position ``p'``: the
one-step expected target under the rollout policy at that variant state,

.. math::

    y(w, p') = \sum_a \pi_k(a | w, p') \big[r(p', a) + \gamma V_k(s'_a)\big],

``r(p', a)`` being ``r(s, a)`` with the cost of moving from ``p'`` instead of ``p``. The value
loss is the mean squared error over all ``K`` held-position variants of each state.

Without :meth:`CounterfactualPPO.attach_counterfactual` (or after its ``ComponentGuard`` disabled
it) the update is SB3's, bit for bit. Any failure in recording or in the update's preparation
disables the component; training continues as plain PPO.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.utils import explained_variance

from ..components.counterfactual import (action_advantages, centre_on_policy, expected_targets, held_reward_table,
                                         held_variants)
from .control import ComponentGuard
from .ppo import ConvoptPPO

__all__ = ["CounterfactualPPO", "CounterfactualRolloutBuffer", "attach_counterfactual"]

NAME = "counterfactual"


class CounterfactualRolloutBuffer(RolloutBuffer):
    """SB3's rollout buffer that also records, per step, every action's reward ``action_rewards``
    (float32 ``(n_steps, n_envs, K)``) and next observation ``action_next_obs`` (float32
    ``(n_steps, n_envs, K, D)``) from ``source`` (a ``TradingVecEnv``; None records nothing)."""

    source: Any = None
    on_error: Any = None

    def reset(self) -> None:
        super().reset()
        if self.source is not None:  # the env is at the state of the next observation added
            k = int(self.source.action_space.n)
            shape = (self.buffer_size, self.n_envs, k)
            if getattr(self, "action_rewards", None) is None or self.action_rewards.shape != shape:
                self.action_rewards = np.zeros(shape, dtype=np.float32)
                self.action_next_obs = np.zeros((*shape, self.obs_shape[0]), dtype=np.float32)
            self._record(0)

    def add(self, *args: Any, **kwargs: Any) -> None:
        super().add(*args, **kwargs)
        if self.source is not None and self.pos < self.buffer_size:
            self._record(self.pos)

    def _record(self, index: int) -> None:
        try:
            self.action_rewards[index] = self.source.counterfactual_rewards()
            self.action_next_obs[index] = self.source.counterfactual_next_observations()
        except Exception as exc:  # noqa: BLE001 - a failing component falls back to plain PPO
            self.source = None
            if self.on_error is None:
                raise
            self.on_error(exc)


class CounterfactualPPO(ConvoptPPO):
    """``ConvoptPPO`` whose update uses every action's reward (see the module doc).

    Without :meth:`attach_counterfactual` it trains exactly as ``ConvoptPPO``.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("rollout_buffer_class", CounterfactualRolloutBuffer)
        super().__init__(*args, **kwargs)
        self.guard = ComponentGuard()
        self.attached = False
        self.critic_positions = True
        self.policy_baseline = False
        self.levels = np.zeros(0)
        self.cost = 0.0

    def attach_counterfactual(self, *, guard: ComponentGuard | None = None, critic_positions: bool = True,
                              baseline: str = "critic") -> None:
        """Record every action's outcome from the next rollout on; failures go to ``guard``.
        ``baseline``: critic (``V(s)``) or policy_mean (see ``components.counterfactual.centre_on_policy``)."""
        self.policy_baseline = baseline == "policy_mean"
        self.guard = guard or self.guard
        venv = self.env.unwrapped
        core = venv.core
        self.levels = np.asarray(core.position_levels, dtype=np.float64)
        self.cost = float(core.cost_rate * venv.reward_scale)  # in the units of the agent's rewards
        self.critic_positions = bool(critic_positions)
        buf = self.rollout_buffer
        buf.source = venv
        buf.on_error = lambda exc: self.guard.fail(NAME, exc, self.num_timesteps)
        buf.reset()
        self.attached = True

    @property
    def counterfactual_active(self) -> bool:
        return self.attached and self.guard.active(NAME) and self.rollout_buffer.source is not None

    # ----------------------------------------------------------------- update
    def _ppo_update(self) -> None:
        if not self.counterfactual_active:
            return super()._ppo_update()
        prepared = self.guard.call(NAME, self._prepare, fallback=None, step=self.num_timesteps)
        if prepared is None:
            return super()._ppo_update()
        self._train_counterfactual(prepared)

    def _flat(self, array: np.ndarray) -> np.ndarray:
        buf = self.rollout_buffer
        return array if buf.generator_ready else buf.swap_and_flatten(array)

    def _prepare(self) -> dict[str, th.Tensor]:
        """All-action advantages, rollout-policy probabilities and critic targets of the rollout (no grad)."""
        buf = self.rollout_buffer
        n, k = buf.buffer_size * buf.n_envs, self.levels.size
        obs = self._flat(buf.observations).reshape(n, -1)
        rewards = self._flat(buf.action_rewards).reshape(n, k).astype(np.float64)
        next_obs = self._flat(buf.action_next_obs).reshape(n * k, -1)
        values = self._flat(buf.values).reshape(n).astype(np.float64)
        returns = self._flat(buf.returns).reshape(n).astype(np.float64)
        held = obs[:, -1].astype(np.float64)
        variants = held_variants(obs, self.levels)  # (n, K, D): position p' for every p'
        with th.no_grad():
            next_values = self._values(next_obs).reshape(n, k)
            probs = self._probs(variants.reshape(n * k, -1)).reshape(n, k, k)  # pi_k(a | w, p')
        advantages = action_advantages(rewards, next_values, values, gamma=self.gamma)
        held_index = np.searchsorted(self.levels, held)
        if self.policy_baseline:
            advantages = centre_on_policy(advantages, probs[np.arange(n), held_index])
        targets = expected_targets(probs, held_reward_table(rewards, held, self.levels, self.cost), next_values,
                                   gamma=self.gamma)
        targets[np.arange(n), held_index] = returns  # the held position keeps SB3's GAE return
        to = lambda a, dtype=th.float32: th.as_tensor(a, dtype=dtype, device=self.device)  # noqa: E731
        return {"observations": to(obs), "variants": to(variants), "advantages": to(advantages),
                "old_probs": to(probs[np.arange(n), held_index]), "targets": to(targets),
                "held_index": to(held_index, th.long)}

    def _values(self, obs: np.ndarray) -> np.ndarray:
        tensor = th.as_tensor(obs, dtype=th.float32, device=self.device)
        return self.policy.predict_values(tensor).flatten().cpu().numpy().astype(np.float64)

    def _probs(self, obs: np.ndarray) -> np.ndarray:
        tensor = th.as_tensor(obs, dtype=th.float32, device=self.device)
        return self.policy.get_distribution(tensor).distribution.probs.cpu().numpy().astype(np.float64)

    def _train_counterfactual(self, data: dict[str, th.Tensor]) -> None:
        """PPO.train's epochs and minibatches with the loss of the module doc."""
        total, k = data["observations"].shape[0], self.levels.size
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)
        logs: dict[str, list[float]] = {key: [] for key in (
            "pg", "value", "entropy", "clip", "kl", "other_value")}
        continue_training = True
        for _ in range(self.n_epochs):
            logs["kl"] = []
            order = th.as_tensor(np.random.permutation(total), device=self.device)
            for start in range(0, total, self.batch_size):
                mb = {key: v[order[start:start + self.batch_size]] for key, v in data.items()}
                loss, stats = self._minibatch_loss(mb, clip_range, k)
                for key, value in stats.items():
                    logs[key].append(value)
                if self.target_kl is not None and stats["kl"] > 1.5 * self.target_kl:
                    continue_training = False
                    break
                self._apply_gradients(loss)
            self._n_updates += 1
            if not continue_training:
                break
        self._record_update(logs, data, clip_range, loss)

    def _minibatch_loss(self, mb: dict[str, th.Tensor], clip_range: float, k: int) -> tuple[th.Tensor, dict]:
        dist = self.policy.get_distribution(mb["observations"]).distribution
        log_probs, old = dist.logits, mb["old_probs"]  # logits: normalized log-probabilities
        advantages = mb["advantages"]
        if self.normalize_advantage and advantages.numel() > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        ratio = th.exp(log_probs - th.log(old.clamp_min(1e-12)))
        surrogate = th.min(ratio * advantages, th.clamp(ratio, 1 - clip_range, 1 + clip_range) * advantages)
        policy_loss = -(old * surrogate).sum(dim=1).mean()
        entropy_loss = -dist.entropy().mean()
        rows = th.arange(advantages.shape[0], device=self.device)
        if self.critic_positions:
            values = self.policy.predict_values(mb["variants"].reshape(-1, mb["variants"].shape[-1])).reshape(-1, k)
            errors = (mb["targets"] - values) ** 2
            value_loss = errors.mean()
            held_error = errors[rows, mb["held_index"]]
            other = ((errors.sum(dim=1) - held_error) / max(k - 1, 1)).mean().item()
        else:
            values = self.policy.predict_values(mb["observations"]).flatten()
            value_loss = ((mb["targets"][rows, mb["held_index"]] - values) ** 2).mean()
            other = float("nan")
        loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
        with th.no_grad():
            kl = (old * (th.log(old.clamp_min(1e-12)) - log_probs)).sum(dim=1).mean().item()
            clipped = (old * (th.abs(ratio - 1) > clip_range).float()).sum(dim=1).mean().item()
        return loss, {"pg": policy_loss.item(), "value": value_loss.item(), "entropy": entropy_loss.item(),
                      "clip": clipped, "kl": kl, "other_value": other}

    def _record_update(self, logs: dict[str, list[float]], data: dict[str, th.Tensor], clip_range: float,
                       loss: th.Tensor) -> None:
        buf, record = self.rollout_buffer, self.logger.record
        record("train/entropy_loss", np.mean(logs["entropy"]))
        record("train/policy_gradient_loss", np.mean(logs["pg"]))
        record("train/value_loss", np.mean(logs["value"]))
        record("train/approx_kl", np.mean(logs["kl"]) if logs["kl"] else 0.0)
        record("train/clip_fraction", np.mean(logs["clip"]))
        record("train/loss", loss.item())
        record("train/explained_variance", explained_variance(buf.values.flatten(), buf.returns.flatten()))
        record("train/n_updates", self._n_updates, exclude="tensorboard")
        record("train/clip_range", clip_range)
        adv = data["advantages"]
        gap = (adv.max(dim=1).values - adv.min(dim=1).values).mean().item()
        stats = {"advantage_std": adv.std().item(), "action_gap": gap,
                 "expected_advantage": (data["old_probs"] * adv).sum(dim=1).mean().item(),
                 "policy_loss": float(np.mean(logs["pg"])), "other_positions_value_loss": float(np.mean(logs["other_value"]))}
        for key, value in stats.items():
            if np.isfinite(value):
                record(f"counterfactual/{key}", float(value))


def attach_counterfactual(model: Any, cfg: Any, guard: ComponentGuard) -> None:
    """Switch counterfactual PPO on for ``model`` when the config asks; a failure disables it (plain PPO)."""
    if not cfg.counterfactual.enabled:
        return
    if not hasattr(model, "attach_counterfactual"):
        guard.fail(NAME, TypeError(f"{type(model).__name__} cannot learn from counterfactuals"), model.num_timesteps)
        return
    guard.call(NAME, model.attach_counterfactual, guard=guard, critic_positions=cfg.counterfactual.critic_positions,
               baseline=cfg.counterfactual.baseline, fallback=None, step=model.num_timesteps)
