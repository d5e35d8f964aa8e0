"""The one PPO extension: an update that survives running out of memory or a non-finite forward pass.

It also opts in (``probe_clips``) to letting :class:`~convopt_mlflow.training.probe.GradientProbe`
do the gradient clipping, so the pre-clip gradient norm is measured at no extra cost.

Everything else (LR schedule, gradient probe, monitor, checkpoints) plugs into
plain SB3 PPO through constructor arguments and callbacks. Only two things have
to wrap SB3's loop itself:

- Out of memory: a ``MemoryError`` (or torch's out-of-memory error) during an
  update halves ``batch_size`` and runs the update again, down to
  ``min_batch_size``. Each halving is recorded in ``memory_events`` so the
  monitor can log a ``reduce_batch_size`` intervention.
- Non-finite values: non-finite parameters (checked once before every rollout and
  every update) or non-finite logits (torch's ``Categorical`` raises ``ValueError``
  on them, inside ``collect_rollouts`` or ``train``) are a divergence event. When a
  ``divergence_handler`` is set (``ConvergenceCallback`` sets one that rolls back),
  it is called with ``(phase, where)``; the rollout is then collected again from
  the restored weights, or the update is skipped. Without a handler SB3's own
  behaviour is kept (the ``ValueError`` propagates).

A third thing is speed. SB3 calls ``callback.update_locals(locals())`` and
``callback.on_step()`` on every env step, and a ``CallbackList`` passes both to each
child: on our cheap numpy env that per-step Python was a measurable share of a
rollout. A callback that acts only at rollout boundaries says so with the class
attribute ``per_step = False``. Then its ``_on_step`` must do nothing but return
``True``, or ``not self.stop_request.requested`` if it has a ``stop_request``. When
every callback handed to ``learn()`` is such a callback, the rollout is collected
with :class:`_BoundaryOnly` in their place: per step it checks the stop requests
and nothing else; at each boundary it brings the callbacks' ``num_timesteps``,
``n_calls`` and ``locals`` up to date and calls them. Any other callback (SB3's own,
a user's) keeps SB3's per-step calls for the whole tree.
"""
from __future__ import annotations

import gc
from typing import Any, Callable

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from .param_watch import nonfinite_parameters

_OOM = (MemoryError, torch.OutOfMemoryError)
#: torch.distributions' message when a distribution parameter holds NaN/inf.
_INVALID = "found invalid values"


class ConvoptUpdates:
    """What ConvoptPPO adds to an SB3 on-policy algorithm, as a mixin placed before it (``ConvoptPPO``
    over PPO; ``training.recurrent.ConvoptRecurrentPPO`` over sb3-contrib's RecurrentPPO)."""

    probe_clips = True

    def __init__(self, *args: Any, min_batch_size: int = 8, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.min_batch_size = min_batch_size
        self.memory_events: list[dict[str, float]] = []
        self.divergence_handler: Callable[[str, str], None] | None = None
        self._boundary: tuple[BaseCallback, Any] | None = None

    def collect_rollouts(self, env: Any, callback: BaseCallback, *args: Any, **kwargs: Any) -> bool:
        if self._boundary is None or self._boundary[0] is not callback:
            self._boundary = (callback, _BoundaryOnly.wrap(callback, self))
        stepper = self._boundary[1]
        while True:  # bounded: every handled event is a rollback, and rollbacks are limited
            where = self._nonfinite_params()
            if where is None:
                try:
                    return super().collect_rollouts(env, stepper, *args, **kwargs)
                except ValueError as exc:
                    where = self._nonfinite_forward(exc)
            self.divergence_handler("rollout", where)  # type: ignore[misc]

    def train(self) -> None:
        where = self._nonfinite_params()
        if where is None:
            try:
                return self._train_retrying_oom()
            except ValueError as exc:
                where = self._nonfinite_forward(exc)
        self.divergence_handler("update", where)  # type: ignore[misc]
        # the update is skipped: its rollout was scored by weights that no longer exist

    def _train_retrying_oom(self) -> None:
        while True:
            try:
                self._ppo_update()
                return
            except _OOM as exc:
                if self.batch_size // 2 < self.min_batch_size:
                    raise
                gc.collect()
                old = self.batch_size
                self.batch_size = old // 2
                self.memory_events.append(
                    {"step": float(self.num_timesteps), "old_batch_size": float(old),
                     "new_batch_size": float(self.batch_size), "error": type(exc).__name__}
                )

    def _ppo_update(self) -> None:
        """One PPO update of the current rollout (SB3's); extensions such as ReplayPPO override it."""
        super().train()

    def _apply_gradients(self, loss: torch.Tensor) -> torch.Tensor:
        """One optimizer step on ``loss`` with SB3's gradient clipping; the pre-clip global norm.

        The step of SB3's own ``PPO.train``, shared by the extensions that write their own update.
        """
        self.policy.optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        self.policy.optimizer.step()
        return norm

    def _nonfinite_params(self) -> str | None:
        """"parameters <names>" when a handler is set and some parameter is not finite, else None."""
        if self.divergence_handler is None:
            return None
        names = nonfinite_parameters(self.policy)
        return f"parameters {', '.join(names)}" if names else None

    def _nonfinite_forward(self, exc: ValueError) -> str:
        """Where a forward pass's ``ValueError`` came from; re-raises any other ``ValueError``."""
        if self.divergence_handler is None or _INVALID not in str(exc):
            raise exc
        names = nonfinite_parameters(self.policy)
        return f"parameters {', '.join(names)}" if names else "logits of the policy (finite parameters)"


class ConvoptPPO(ConvoptUpdates, PPO):
    """SB3 PPO whose update halves ``batch_size`` and retries on out-of-memory, and which turns
    non-finite parameters or logits into a call of ``divergence_handler(phase, where)``."""


class _BoundaryOnly:
    """What ``collect_rollouts`` calls in place of a tree of ``per_step = False`` callbacks.

    Per env step: one stored reference and one check of each stop request, less than
    SB3's own no-op callback costs plain PPO. At the rollout's start and end the tree is
    called as SB3 would call it, with ``num_timesteps``, ``n_calls`` and ``locals`` current.
    """

    def __init__(self, callback: BaseCallback, model: Any, leaves: list[BaseCallback]):
        self.callback, self.model = callback, model
        self.everyone = _tree(callback)
        self.stops = tuple(leaf.stop_request for leaf in leaves if getattr(leaf, "stop_request", None) is not None)
        self.locals: dict[str, Any] = {}
        self._start = 0

    @classmethod
    def wrap(cls, callback: BaseCallback, model: Any) -> Any:
        """``_BoundaryOnly(callback)`` when every leaf of ``callback`` has ``per_step = False``, else ``callback``."""
        leaves = [cb for cb in _tree(callback) if not isinstance(cb, CallbackList)]
        if all(getattr(leaf, "per_step", True) is False for leaf in leaves):
            return cls(callback, model, leaves)
        return callback

    def _sync(self) -> None:
        steps, calls = self.model.num_timesteps, (self.model.num_timesteps - self._start) // self.model.n_envs
        for cb in self.everyone:
            cb.num_timesteps = steps
            cb.n_calls += calls
        self._start = steps

    def on_rollout_start(self) -> None:
        self._start = self.model.num_timesteps
        self._sync()
        self.callback.on_rollout_start()

    def update_locals(self, locals_: dict[str, Any]) -> None:
        self.locals = locals_

    def on_step(self) -> bool:
        for stop in self.stops:
            if stop.requested:
                self._sync()
                self.callback.update_locals(self.locals)
                return False
        return True

    def on_rollout_end(self) -> None:
        self._sync()
        self.callback.update_locals(self.locals)
        self.callback.on_rollout_end()


def _tree(callback: BaseCallback) -> list[BaseCallback]:
    """``callback`` and, for a ``CallbackList``, everything nested in it."""
    children = callback.callbacks if isinstance(callback, CallbackList) else []
    return [callback, *(node for child in children for node in _tree(child))]
