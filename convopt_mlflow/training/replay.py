r"""Prioritized replay inside PPO, in the two forms that stay correct for an on-policy method.

:class:`ReplayPPO` is ``ConvoptPPO`` plus one attached replay component. Both forms refresh
priorities after every update from one-step TD errors of the *updated* critic,
``delta = r + gamma * V(s') - V(s)``, and record ``replay/*`` with the update's ``train/*``.
Observations are rebuilt from ``(bar, position)`` through the market, never stored.

**Scenario replay** (:class:`~convopt_mlflow.components.replay_scenario.ScenarioReplay`).
A ``replay_ratio`` share of episodes starts at a bar drawn by priority (windows where the
critic is most wrong, or the strategy's score is high), the rest uniformly. Each update
is the unmodified PPO update on transitions the current policy collected, so the estimator
is exactly PPO's; what changes is the start-state distribution ``d_0`` of the objective
``E_{s_0 ~ d_0}[V^pi(s_0)]``. No importance correction is applied (none is needed for an
on-policy gradient of that objective); the IS-weight range logged is informational.

**Transition replay** (:class:`~convopt_mlflow.components.replay.TradingExperienceReplay`).
Every collected transition is stored with its behaviour log-probability
``log mu(a|s)``. An update trains on the ``N`` fresh samples plus
``M = round(N * rho / (1 - rho))`` replayed ones (``rho = replay_ratio``, so replayed
samples are a ``rho`` share), drawn once per update with proportional priorities. With
``pi_k`` the policy at the start of the update (SB3's ``old_log_prob``) and, per sample,
``c = pi_k(a|s) / mu(a|s)`` (1 for fresh samples), the loss of a minibatch is

.. math::

    L = -\frac{1}{B} \sum_i w_i \min\big(r_i \hat A_i,\ \mathrm{clip}(r_i, c_i - \epsilon, c_i + \epsilon)\,\hat A_i\big)
        + c_v \frac{1}{B} \sum_i w_i (\hat v_i - V(s_i))^2 - c_e \bar H,
    \qquad r_i = \pi(a_i|s_i) / \mu(a_i|s_i),

the generalized clipped objective of GePPO (Queeney et al. 2021): the ratio is taken
against the behaviour policy and the clip is centred on ``c``, so the trust region is still
``|pi / pi_k - 1| <= epsilon / c`` around ``pi_k``. ``w_i`` are the prioritized-sampling
importance weights (1 for fresh samples). Fresh samples keep SB3's GAE advantages and
returns. Replayed samples get one-step V-trace targets (Espeholt et al. 2018) recomputed
with the current critic ``V`` at the start of the update. In plain text, for a replayed
transition ``(s, a, r, s')`` stored with behaviour probability ``mu(a|s)``:

    delta   = r + gamma * V(s') - V(s)                 (one-step TD error)
    c       = pi_k(a|s) / mu(a|s)                      (clip centre)
    rho_bar = min(1, c)                                (truncated ratio)
    A_hat   = delta                                    (policy-gradient advantage)
    v_hat   = V(s) + rho_bar * delta                   (value target)

The importance ratio enters the policy gradient exactly once, through ``r_i = pi / mu``
in the surrogate: the sample's gradient is ``w_i * (pi / mu) * A_hat * grad log pi`` while
unclipped, which is V-trace's ``rho * (r + gamma * v' - V(s))`` term with the ratio carried
by the surrogate (untruncated, and bounded by the clip around ``c`` instead). Multiplying
``A_hat`` by ``rho_bar`` as well would apply the ratio twice and shrink every replayed
sample whose policy moved away from ``mu``. ``rho_bar`` stays in the value target, as in
V-trace, so the critic regresses on ``V(s) + rho_bar * delta``.

One step (not an n-step trace) because samples are drawn one at a time by priority; it is
the low-variance, higher-bias end of V-trace. Advantages are normalized per minibatch over
fresh and replayed samples together, as SB3 does. Episodes here only truncate, never
terminate, so ``s'`` is always bootstrapped (as SB3 does at a truncation).

With ``replay_ratio = 0`` (or while the buffer is empty) the update *is* SB3's: the mixed
loop never runs, storing and refreshing use no random numbers, and a test checks the
parameters are bit-identical to ``ConvoptPPO``'s.

A failure of the replay (in sampling, the refresh or the mixed update's preparation)
disables it through the ``ComponentGuard``; training continues as plain PPO.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.utils import explained_variance

from ..components.replay import ReplayBatch, TradingExperienceReplay, bar_scores
from ..components.replay_scenario import ScenarioReplay
from .control import ComponentGuard
from .ppo import ConvoptPPO

__all__ = ["BarRolloutBuffer", "ReplayPPO", "build_replay", "replayed_targets"]

NAME = "replay"


def build_replay(cfg: Any) -> ScenarioReplay | TradingExperienceReplay | None:
    """The replay component a config asks for (None when ``replay_enabled`` is false)."""
    if not cfg.replay_enabled:
        return None
    if cfg.replay_mode == "scenario":
        return ScenarioReplay(cfg.priority_alpha, cfg.replay_ratio, priority_strategy=cfg.priority_strategy)
    rollout = cfg.ppo.n_steps * cfg.env.n_envs
    return TradingExperienceReplay(cfg.replay_buffer_size, cfg.priority_strategy, priority_alpha=cfg.priority_alpha,
                                   beta0=cfg.replay_beta0, beta_steps=max(cfg.run.total_timesteps // rollout, 1),
                                   seed=cfg.run.seed)


def replayed_targets(rewards: th.Tensor, values: th.Tensor, next_values: th.Tensor, log_prob_k: th.Tensor,
                     log_prob_b: th.Tensor, gamma: float) -> dict[str, th.Tensor]:
    """One-step V-trace targets of replayed transitions (all tensors ``(B,)``; see the module doc).

    Returns ``centre = pi_k / mu``, ``advantages = delta`` (the surrogate's ratio ``pi / mu``
    is the only importance weight of the policy gradient) and ``returns = V(s) + min(1, centre) * delta``,
    with ``delta = rewards + gamma * next_values - values``.
    """
    centre = th.exp(log_prob_k - log_prob_b)
    delta = rewards + gamma * next_values - values
    return {"centre": centre, "advantages": delta, "returns": values + th.clamp(centre, max=1.0) * delta}


class BarRolloutBuffer(RolloutBuffer):
    """SB3's rollout buffer that also records the decision bar of every step (``bars``, int64
    ``(n_steps, n_envs)``) from ``bar_env`` (a ``TradingVecEnv``; None records nothing)."""

    bar_env: Any = None

    def reset(self) -> None:
        super().reset()
        self.bars = np.zeros((self.buffer_size, self.n_envs), dtype=np.int64)
        if self.bar_env is not None:  # the env is at the bars of the next observation added
            self.bars[0] = self.bar_env.current_bars

    def add(self, *args: Any, **kwargs: Any) -> None:
        super().add(*args, **kwargs)
        if self.bar_env is not None and self.pos < self.buffer_size:
            self.bars[self.pos] = self.bar_env.current_bars


class ReplayPPO(ConvoptPPO):
    """``ConvoptPPO`` with an attached scenario or transition replay (see the module doc).

    Without :meth:`attach_replay` it trains exactly as ``ConvoptPPO``.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("rollout_buffer_class", BarRolloutBuffer)
        super().__init__(*args, **kwargs)
        self.replay: ScenarioReplay | TradingExperienceReplay | None = None
        self.replay_ratio = 0.0
        self.guard = ComponentGuard()
        self._pending: ReplayBatch | None = None
        self._mean_ratio = float("nan")
        self.start_pool: np.ndarray | None = None
        self._plain_starts: Any = None
        self._pool_starts: Any = None  # the no-replay sampler of the current pool (None: uniform over it)

    # ------------------------------------------------------------------ setup
    def attach_replay(self, replay: ScenarioReplay | TradingExperienceReplay, *, replay_ratio: float,
                      guard: ComponentGuard | None = None, vol_window: int = 20) -> None:
        """Use ``replay`` from the next rollout on; failures go to ``guard`` (component ``replay``)."""
        self.guard = guard or self.guard
        self.replay, self.replay_ratio = replay, float(replay_ratio)
        self.venv = self.env.unwrapped
        # the market itself (an augmented env plays episodes from per-env slots; its bars are market bars)
        self.core = getattr(self.venv, "market", self.venv.core)
        strategy = replay.priority_strategy
        self.scores = bar_scores(self.core.log_returns, strategy, vol_window=vol_window)
        self.rollout_buffer.bar_env = self.venv
        self.rollout_buffer.reset()
        if isinstance(replay, ScenarioReplay):
            replay.bind(self.core.start_bounds, self.core.episode_length, self.scores)
            self._plain_starts = self.venv.start_sampler  # uniform, or an ensemble member's blocks
            if self.start_pool is None:
                self._pool_starts = self._plain_starts
            self.venv.set_start_sampler(self._starts)

    def set_start_pool(self, pool: np.ndarray | None, sampler: Any = None) -> None:
        """Keep scenario replay to these start bars (a curriculum stage's pool, an ensemble member's
        blocks); None: every start bar. Prioritization then happens inside the pool.

        ``sampler``: ``(rng, k) -> starts``, how the run draws from this pool without replay (an
        ensemble member's block sampler); default uniform over ``pool`` (the curriculum's
        ``pool_sampler``), or the env's own sampler when ``pool`` is None. The non-prioritized
        starts come from it, so at ``replay_ratio = 0`` the env's generator runs through exactly
        the stream of a run without replay."""
        self.start_pool = None if pool is None else np.asarray(pool, dtype=np.int64)
        if sampler is None and pool is None:
            sampler = self._plain_starts
        self._pool_starts = sampler

    def _starts(self, rng: np.random.Generator, k: int) -> np.ndarray:
        uniform = self._pool_starts
        if self.guard.active(NAME):
            try:
                return self.replay.sample(rng, k, pool=self.start_pool, uniform=uniform)
            except Exception as exc:  # noqa: BLE001 - a failing component falls back to plain starts
                self.guard.fail(NAME, exc, self.num_timesteps)
        if uniform is None:  # uniform inside the pool, as without replay
            return self.start_pool[rng.integers(0, self.start_pool.size, size=k)]
        return uniform(rng, k)

    @property
    def replay_active(self) -> bool:
        return self.replay is not None and self.guard.active(NAME)

    # ----------------------------------------------------------------- update
    def train(self) -> None:
        if not self.replay_active:
            return super().train()
        self._pending = None
        if isinstance(self.replay, TradingExperienceReplay) and self.replay_ratio > 0:
            fresh = self.rollout_buffer.buffer_size * self.rollout_buffer.n_envs
            total = int(round(fresh / (1.0 - self.replay_ratio)))
            self._pending = self.guard.call(NAME, self.replay.sample_batch, total, self.replay_ratio,
                                            fallback=None, step=self.num_timesteps)
        updates = self._n_updates
        super().train()
        if self._n_updates != updates:  # an update that was skipped (divergence) leaves its rollout out
            self.guard.call(NAME, self._after_update, fallback=None, step=self.num_timesteps)
        self._pending = None

    def _ppo_update(self) -> None:
        batch = self._pending
        if batch is None or len(batch) == 0:
            return super()._ppo_update()
        prepared = self.guard.call(NAME, self._prepare_replayed, batch, fallback=None, step=self.num_timesteps)
        if prepared is None:
            return super()._ppo_update()
        self._train_mixed(prepared, len(batch))

    # -------------------------------------------------------------- TD errors
    def _obs(self, bars: np.ndarray, positions: np.ndarray) -> th.Tensor:
        return th.as_tensor(self.core.observe(bars, positions), device=self.device)

    def _td_errors(self, bars: np.ndarray, positions: np.ndarray, actions: np.ndarray,
                   rewards: np.ndarray) -> np.ndarray:
        """One-step TD errors of the current critic, float64 ``(B,)``; positions are levels."""
        with th.no_grad():
            v = self.policy.predict_values(self._obs(bars, positions)).flatten().cpu().numpy()
            v_next = self.policy.predict_values(
                self._obs(bars + 1, self.core.position_levels[actions])).flatten().cpu().numpy()
        return rewards + self.gamma * v_next.astype(np.float64) - v

    def _rollout_transitions(self) -> dict[str, np.ndarray]:
        """The last rollout as flat arrays (SB3's env-major order); rewards recomputed unscaled by SB3's
        truncation bootstrap (``r + gamma V(terminal)``), which the buffer's rewards include."""
        buf = self.rollout_buffer
        n = buf.buffer_size * buf.n_envs

        def flat(name: str) -> np.ndarray:
            arr = getattr(buf, name)  # SB3's get() flattens the buffer's arrays in place
            return (arr if buf.generator_ready else buf.swap_and_flatten(arr)).reshape(n, -1)

        bars = buf.swap_and_flatten(buf.bars).reshape(-1)
        positions = flat("observations")[:, -1].astype(np.float64)
        actions = flat("actions").reshape(-1).astype(np.int64)
        _, rewards = self.core.step(bars, positions, actions)
        return {"bars": bars, "positions": positions, "actions": actions,
                "rewards": rewards * self.venv.reward_scale, "log_probs": flat("log_probs").reshape(-1)}

    def _after_update(self) -> None:
        """Refresh priorities from the updated critic, store the rollout (transition mode), log ``replay/*``."""
        roll = self._rollout_transitions()
        td = self._td_errors(roll["bars"], roll["positions"], roll["actions"], roll["rewards"])
        record = self.logger.record
        if isinstance(self.replay, ScenarioReplay):
            self.replay.update_priorities(roll["bars"], td)
            stats = self.replay.stats()
        else:
            batch, stats = self._pending, {}
            if batch is not None and len(batch):
                levels = self.core.position_levels
                td_b = self._td_errors(batch.bars.astype(np.int64), levels[batch.positions],
                                       batch.actions.astype(np.int64), batch.rewards.astype(np.float64))
                self.replay.update_priorities(batch, td_b)
                stats = {"is_weight_min": float(batch.weights.min()), "is_weight_max": float(batch.weights.max()),
                         "share": len(batch) / (len(batch) + td.size), "mean_ratio": self._mean_ratio}
            else:
                stats = {"share": 0.0}
            level = np.searchsorted(self.core.position_levels, roll["positions"]).astype(np.int8)
            self.replay.store_batch(bar=roll["bars"], position=level, action=roll["actions"],
                                    reward=roll["rewards"], log_prob=roll["log_probs"],
                                    scores=self.scores[roll["bars"]], priorities=self.scores[roll["bars"]] * np.abs(td))
            stats.update(self.replay.stats())
        stats["td_abs_mean"] = float(np.mean(np.abs(td)))
        for key, value in stats.items():
            if np.isfinite(value):
                record(f"replay/{key}", float(value))

    # ---------------------------------------------------------- mixed update
    def _prepare_replayed(self, batch: ReplayBatch) -> dict[str, th.Tensor]:
        """One-step V-trace targets and GePPO clip centres of the replayed samples (no grad)."""
        levels = self.core.position_levels
        bars, actions = batch.bars.astype(np.int64), batch.actions.astype(np.int64)
        obs = self._obs(bars, levels[batch.positions])
        act = th.as_tensor(actions, device=self.device)
        with th.no_grad():
            values, log_prob_k, _ = self.policy.evaluate_actions(obs, act)
            v_next = self.policy.predict_values(self._obs(bars + 1, levels[actions])).flatten()
        values = values.flatten()
        log_prob_b = th.as_tensor(batch.log_probs, dtype=th.float32, device=self.device)
        rewards = th.as_tensor(batch.rewards, dtype=th.float32, device=self.device)
        targets = replayed_targets(rewards, values, v_next, log_prob_k, log_prob_b, self.gamma)
        self._mean_ratio = float(targets["centre"].mean())
        return {"observations": obs, "actions": act, "log_prob_b": log_prob_b, "old_log_prob": log_prob_k,
                **targets, "weights": th.as_tensor(batch.weights, dtype=th.float32, device=self.device)}

    def _train_mixed(self, replayed: dict[str, th.Tensor], n_replayed: int) -> None:
        """PPO.train's loop over fresh + replayed samples with the GePPO loss of the module doc."""
        buf = self.rollout_buffer
        n_fresh = buf.buffer_size * buf.n_envs

        def fresh(name: str) -> th.Tensor:
            arr = getattr(buf, name)
            arr = arr if buf.generator_ready else buf.swap_and_flatten(arr)
            return th.as_tensor(arr.reshape(n_fresh, -1), device=self.device)

        old_log_prob = fresh("log_probs").flatten()
        data = {
            "observations": th.cat([fresh("observations"), replayed["observations"]]),
            "actions": th.cat([fresh("actions").flatten().long(), replayed["actions"]]),
            "log_prob_b": th.cat([old_log_prob, replayed["log_prob_b"]]),
            "old_log_prob": th.cat([old_log_prob, replayed["old_log_prob"]]),
            "centre": th.cat([th.ones(n_fresh, device=self.device), replayed["centre"]]),
            "advantages": th.cat([fresh("advantages").flatten(), replayed["advantages"]]),
            "returns": th.cat([fresh("returns").flatten(), replayed["returns"]]),
            "weights": th.cat([th.ones(n_fresh, device=self.device), replayed["weights"]]),
        }
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)
        total = n_fresh + n_replayed
        entropy_losses, pg_losses, value_losses, clip_fractions, approx_kl_divs = [], [], [], [], []
        continue_training = True
        for _ in range(self.n_epochs):
            approx_kl_divs = []
            order = th.as_tensor(np.random.permutation(total), device=self.device)
            for start in range(0, total, self.batch_size):
                mb = {k: v[order[start:start + self.batch_size]] for k, v in data.items()}
                values, log_prob, entropy = self.policy.evaluate_actions(mb["observations"], mb["actions"])
                advantages = mb["advantages"]
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                ratio = th.exp(log_prob - mb["log_prob_b"])
                centre = mb["centre"]
                surrogate = th.min(advantages * ratio,
                                   advantages * th.clamp(ratio, centre - clip_range, centre + clip_range))
                policy_loss = -(mb["weights"] * surrogate).mean()
                value_loss = (mb["weights"] * (mb["returns"] - values.flatten()) ** 2).mean()
                entropy_loss = -th.mean(entropy) if entropy is not None else -th.mean(-log_prob)
                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                pg_losses.append(policy_loss.item())
                value_losses.append(value_loss.item())
                entropy_losses.append(entropy_loss.item())
                clip_fractions.append(th.mean((th.abs(ratio - centre) > clip_range).float()).item())
                with th.no_grad():
                    log_ratio = log_prob - mb["old_log_prob"]
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)
                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    break
                self._apply_gradients(loss)
            self._n_updates += 1
            if not continue_training:
                break
        record = self.logger.record
        record("train/entropy_loss", np.mean(entropy_losses))
        record("train/policy_gradient_loss", np.mean(pg_losses))
        record("train/value_loss", np.mean(value_losses))
        record("train/approx_kl", np.mean(approx_kl_divs))
        record("train/clip_fraction", np.mean(clip_fractions))
        record("train/loss", loss.item())
        record("train/explained_variance", explained_variance(buf.values.flatten(), buf.returns.flatten()))
        record("train/n_updates", self._n_updates, exclude="tensorboard")
        record("train/clip_range", clip_range)
