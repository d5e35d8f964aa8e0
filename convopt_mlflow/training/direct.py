r"""The direct learner: gradient ascent on the exact expected net PnL of sampled train windows.

In the spirit of Moody & Saffell's direct reinforcement (2001). Each batch draws
``batch_windows`` windows of ``window`` consecutive decision bars from the train split (with
the env's own start sampler and generator). Each window starts flat. The policy is the actor of
an SB3 ``ActorCriticPolicy`` (``features -> mlp_extractor.policy -> action_net``), fed the env's
observation (the feature window followed by the held position). It is evaluated at every bar
under each of the K held positions, giving ``pi(pos | x_t, prev)``. The position distribution
is carried forward through the recursion of :mod:`convopt_mlflow.components.direct`, so each
bar's expected reward

.. math::

    E[R_t] = \sum_{prev} \sum_{pos} p_{t-1}(prev)\, \pi(pos \mid x_t, prev)\, [pos\, r_{t+1} - c\, |pos - prev|]

is exact (the env's reward, ``reward_scale`` included) and differentiable. Objective ``pnl``
maximizes the mean of ``E[R_t]`` over the batch's bars; objective ``sharpe`` maximizes, per
window, ``m / sqrt(s2 - m^2 + eps)`` with ``m`` the mean of ``E[R_t]`` and ``s2`` the mean of
``E[R_t^2]`` (both exact), averaged over windows; objective ``batch_sharpe`` maximizes the same ratio
over all the batch's bars pooled, ``m / sqrt(s2 - m^2 + eps)`` with ``m`` and ``s2`` the means over every
window and bar: the Sharpe ratio of the batch as one sample of the market, so exposure where the return's
variance is large and the expected reward small (a volatile, unpredictable stretch) costs more than it
earns, while the ratio is not re-estimated from one window's 64 bars. ``ent_coef`` (PPO's, 0 by default) adds the mean entropy of
``pi`` over the batch's (bar, held position) rows as a bonus, so the monitor's
``increase_entropy`` acts here as it does on PPO. Each batch gets ``passes`` Adam steps
(gradient clipping at ``max_grad_norm``), like PPO's epochs.

**Monitor.** It applies with ``monitor.enabled``: it reads ``train/loss`` (minus the objective),
``train/entropy_loss``, the gradient norm (the probe hooks the same optimizer) and ``eval/score``;
``lr_*`` need the scheduler (refused with the direct learner), ``rollback``, ``early_stop`` and
``increase_entropy`` act as on PPO; ``reduce_batch_size`` halves PPO's ``batch_size``, which the
direct learner does not read.

**Counting samples.** ``num_timesteps`` advances by ``window * batch_windows`` per batch, the
bars drawn from the data, whatever the number of passes: the same accounting as PPO's env steps.

**Why a PPO subclass.** ``DirectLearner`` replaces ``collect_rollouts`` (draw a batch instead of
stepping the env) and the update, and keeps everything else: the coordinator's callbacks (eval,
checkpoints, model selection), resume, and the exported policy, which is an SB3 ``ActorCriticPolicy``
like every other arm's (its value head is never trained and the pyfunc never reads it).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch as th

from .ppo import ConvoptPPO

__all__ = ["DirectLearner", "window_rewards", "direct_objective"]

NAME = "direct"
_EPS = 1e-8


def window_rewards(probs: th.Tensor, next_returns: th.Tensor, levels: th.Tensor, cost: float,
                   start: int) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """Exact expected reward, expected squared reward and expected turnover of each bar of each window.

    Args:
        probs: ``(n, T, K, K)`` policy ``pi(pos | x_t, prev)`` as ``probs[i, t, prev, pos]``.
        next_returns: ``(n, T)`` the return each decision earns on (env units).
        levels: ``(K,)`` position levels; ``cost`` per unit of position change (env units).
        start: index of the position held before the first bar.

    Returns:
        Three ``(n, T)`` tensors: ``E[R_t]``, ``E[R_t^2]``, ``E[|pos_t - pos_{t-1}|]``.
    """
    n, bars, k, _ = probs.shape
    turn = (levels[None, :] - levels[:, None]).abs()  # [prev, pos]
    table = next_returns[:, :, None, None] * levels - cost * turn  # (n, T, prev, pos)
    held = th.zeros(n, k, dtype=probs.dtype)
    held[:, start] = 1.0
    means, squares, turnover = [], [], []
    for t in range(bars):
        joint = held[:, :, None] * probs[:, t]  # P(prev, pos)
        means.append((joint * table[:, t]).sum(dim=(1, 2)))
        squares.append((joint * table[:, t] ** 2).sum(dim=(1, 2)))
        turnover.append((joint * turn).sum(dim=(1, 2)))
        held = joint.sum(dim=1)
    return th.stack(means, 1), th.stack(squares, 1), th.stack(turnover, 1)


def direct_objective(means: th.Tensor, squares: th.Tensor, objective: str) -> th.Tensor:
    """The scalar to maximize from ``(n, T)`` expected rewards and squared rewards."""
    if objective == "pnl":
        return means.mean()
    if objective == "sharpe":
        m, s2 = means.mean(dim=1), squares.mean(dim=1)
        return (m / th.sqrt((s2 - m ** 2).clamp_min(0.0) + _EPS)).mean()
    if objective == "batch_sharpe":
        m, s2 = means.mean(), squares.mean()
        return m / th.sqrt((s2 - m ** 2).clamp_min(0.0) + _EPS)
    raise ValueError(f"unknown direct objective {objective!r}: expected pnl, sharpe or batch_sharpe")


class DirectLearner(ConvoptPPO):
    """An SB3 PPO whose rollout draws train windows and whose update ascends their exact expected PnL.

    Built with PPO's constructor arguments (``learning_rate`` is the direct learner's) plus
    ``window``, ``passes``, ``batch_windows`` and ``objective`` (see ``DirectConfig``).
    """

    def __init__(self, *args: Any, window: int = 64, passes: int = 10, batch_windows: int = 16,
                 objective: str = "pnl", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.window, self.passes, self.batch_windows, self.objective = window, passes, batch_windows, objective
        self._batch: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def bars_per_batch(self) -> int:
        return self.window * self.batch_windows

    # ------------------------------------------------------------------ "rollout": draw windows
    def collect_rollouts(self, env: Any, callback: Any, rollout_buffer: Any, n_rollout_steps: int) -> bool:
        """Draw one batch of windows (no env step); advance the clock by the bars drawn.

        A stop request (SIGTERM, a pruned trial, early stop) is honoured before the draw, so
        every bar counted was learnt from and a checkpoint never holds an unused batch.
        """
        callback.on_rollout_start()
        callback.update_locals(locals())
        if not callback.on_step():
            return False
        self._batch = self.draw_batch()
        self.num_timesteps += self.bars_per_batch
        self._show_in_buffer(rollout_buffer, self._batch[0])
        callback.on_rollout_end()
        return True

    def draw_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """``(windows (n, T, W) float32, next_returns (n, T) float64 in env units)`` of fresh train windows."""
        venv = self.env.unwrapped
        core = venv.core
        starts = core.check_starts(venv.start_sampler(venv._rng, self.batch_windows))
        bars = starts[:, None] + np.arange(self.window)[None, :]
        windows = core.windows[bars - (core.window - 1)]
        next_returns = core.log_returns[bars + 1] * venv.reward_scale
        return windows, next_returns

    @staticmethod
    def _show_in_buffer(rollout_buffer: Any, windows: np.ndarray) -> None:
        """Put the batch's newest bars (held flat) where the monitor's parameter watch reads observations."""
        seen = getattr(rollout_buffer, "observations", None)
        if not isinstance(seen, np.ndarray):
            return
        flat = seen.reshape(-1, seen.shape[-1])
        bars = windows.reshape(-1, windows.shape[-1])[-flat.shape[0]:]
        flat[-len(bars):, :-1] = bars
        flat[-len(bars):, -1] = 0.0

    # ------------------------------------------------------------------ the update
    def _ppo_update(self) -> None:
        if self._batch is None:
            return
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        venv = self.env.unwrapped
        levels = th.tensor(np.array(venv.core.position_levels), dtype=th.float32)
        cost = venv.core.cost_rate * venv.reward_scale
        start = int(np.flatnonzero(venv.core.position_levels == 0.0)[0])
        obs, next_returns = self._observations(*self._batch, levels)
        rows, before = [], None
        for _ in range(self.passes):
            probs = self._probs(obs)
            before = probs.detach() if before is None else before
            means, squares, turnover = window_rewards(probs, next_returns, levels, cost, start)
            objective = direct_objective(means, squares, self.objective)
            entropy = -(probs * th.log(probs.clamp_min(1e-12))).sum(dim=-1).mean()
            norm = self._apply_gradients(-objective - self.ent_coef * entropy)
            with th.no_grad():
                rows.append((float(objective), float(means.mean()), float(turnover.mean()), float(norm),
                             float(entropy)))
        self._n_updates += self.passes
        objective, pnl, turnover, norm, entropy = np.mean(rows, axis=0)
        with th.no_grad():  # exact KL(before || after) of this update over the batch's (bar, held position) rows
            after = self._probs(obs)
            kl = float((before * (th.log(before.clamp_min(1e-12)) - th.log(after.clamp_min(1e-12)))).sum(-1).mean())
        self.logger.record("direct/objective", objective)
        self.logger.record("direct/expected_pnl", pnl)
        self.logger.record("direct/turnover", turnover)
        self.logger.record("direct/grad_norm", norm)
        # PPO's keys, so the monitor reads the direct update as it reads PPO's (no clipping, no critic)
        self.logger.record("train/loss", -objective)
        self.logger.record("train/policy_gradient_loss", -objective)
        self.logger.record("train/approx_kl", kl)
        self.logger.record("train/clip_fraction", 0.0)
        self.logger.record("train/entropy_loss", -entropy)  # SB3's sign: what the monitor reads as entropy
        self.logger.record("train/value_loss", 0.0)  # no critic is trained; 0 keeps the monitor's finiteness check honest
        self.logger.record("train/n_updates", self._n_updates)

    def _observations(self, windows: np.ndarray, next_returns: np.ndarray,
                      levels: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """``(n, T, K, W + 1)`` observations (each window bar under each held position) and the returns."""
        n, bars, width = windows.shape
        k = levels.numel()
        obs = th.empty(n, bars, k, width + 1)
        obs[..., :width] = th.as_tensor(windows)[:, :, None, :]
        obs[..., width] = levels
        return obs, th.as_tensor(next_returns, dtype=th.float32)

    def _probs(self, obs: th.Tensor) -> th.Tensor:
        n, bars, k, size = obs.shape
        dist = self.policy.get_distribution(obs.reshape(-1, size))
        return dist.distribution.probs.reshape(n, bars, k, -1)
