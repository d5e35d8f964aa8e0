"""The recurrent (LSTM) policy, below training and tracking: its spec, its rebuild, and its walk.

A recurrent policy is sb3-contrib's ``RecurrentActorCriticPolicy`` (``MlpLstmPolicy``): an LSTM
over the observations in front of the actor's and the critic's MLPs, so a decision can depend on
bars older than the observation window (memory for regime inference). Its choice at bar ``t``
depends on the LSTM state, that is on every observation since the walk began, including the
positions it chose. So it cannot be walked like a memoryless policy (one batched table of every
(bar, held position) pair, :func:`~convopt_mlflow.env.policy_table`): :func:`recurrent_walk`
steps bar by bar, feeding each chosen position into the next observation and carrying the state.

The state starts at zero (an episode start) at the first decision bar of a walk: the first bar
of a backtest split, or the first decidable row of one pyfunc call. The backtest and the pyfunc
call the same :func:`recurrent_walk`, so ``convopt predict`` on a split's bars (with the bars of
feature warm-up and window before it) gives the backtest's positions.

Cost: one LSTM step per bar and member (~0.1 ms on CPU), against one batched forward pass per
4,096 bars for a memoryless policy.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch

__all__ = ["RECURRENT_KEYS", "is_recurrent", "recurrent_spec", "build_recurrent_policy", "recurrent_walk"]

#: the spec block of a recurrent policy (policy.json ``spec.recurrent``)
RECURRENT_KEYS = ("lstm_hidden_size", "n_lstm_layers", "shared_lstm", "enable_critic_lstm")


def is_recurrent(policy: Any) -> bool:
    """True for sb3-contrib's recurrent actor-critic policy (without importing sb3-contrib otherwise)."""
    return hasattr(policy, "lstm_actor") and hasattr(policy, "lstm_hidden_state_shape")


def recurrent_spec(policy: Any) -> dict:
    """The LSTM's part of a policy spec: hidden size, layers, sharing (JSON-ready)."""
    lstm = policy.lstm_actor
    return {"lstm_hidden_size": int(lstm.hidden_size), "n_lstm_layers": int(lstm.num_layers),
            "shared_lstm": bool(policy.shared_lstm),
            "enable_critic_lstm": bool(getattr(policy, "enable_critic_lstm", policy.lstm_critic is not None))}


def build_recurrent_policy(observation_space: Any, action_space: Any, lr_schedule: Callable[[float], float],
                           net_arch: Mapping[str, list[int]], activation_fn: Any, recurrent: Mapping[str, Any]) -> Any:
    """sb3-contrib's ``RecurrentActorCriticPolicy`` for the spec block ``recurrent`` (keys :data:`RECURRENT_KEYS`)."""
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    unknown = sorted(set(recurrent) - set(RECURRENT_KEYS))
    if unknown:
        raise ValueError(f"unknown recurrent spec keys {unknown}")
    hidden, layers = int(recurrent["lstm_hidden_size"]), int(recurrent.get("n_lstm_layers", 1))
    if hidden < 1 or layers < 1:
        raise ValueError(f"lstm_hidden_size={hidden} and n_lstm_layers={layers} must be >= 1")
    return RecurrentActorCriticPolicy(
        observation_space, action_space, lr_schedule, net_arch=dict(net_arch), activation_fn=activation_fn,
        ortho_init=False, lstm_hidden_size=hidden, n_lstm_layers=layers,
        shared_lstm=bool(recurrent.get("shared_lstm", False)),
        enable_critic_lstm=bool(recurrent.get("enable_critic_lstm", True)))


def _zero_state(policy: Any) -> tuple[torch.Tensor, torch.Tensor]:
    layers, _, hidden = policy.lstm_hidden_state_shape
    return torch.zeros(layers, 1, hidden), torch.zeros(layers, 1, hidden)


def recurrent_walk(core: Any, policies: list[Any], bars: np.ndarray,
                   choose: Callable[[np.ndarray], int], *, chunk_bars: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Walk recurrent ``policies`` over consecutive decision ``bars`` of ``core``, bar by bar.

    The walk starts flat with every member's LSTM state at zero; at bar ``t`` each member sees the
    observation of ``t`` while holding the position chosen at ``t - 1``, advances its state by one
    step, and ``choose(probs)`` (``probs``: float32 ``(members, n_actions)``) picks the action,
    whose index is the index of the position level it moves to.

    Returns:
        ``(actions, probs)``: int ``(n,)`` and float32 ``(n, members, n_actions)``.
    """
    levels = core.position_levels
    held = int(np.flatnonzero(levels == 0.0)[0])
    n, members = bars.size, len(policies)
    actions = np.empty(n, dtype=np.intp)
    probs: np.ndarray | None = None
    states = [_zero_state(p) for p in policies]
    not_start = torch.zeros(1)
    with torch.no_grad():
        for lo in range(0, n, chunk_bars):
            t = bars[lo:lo + chunk_bars]
            # every observation this chunk might need, by held level: (levels, bars, obs)
            table = torch.from_numpy(np.stack([core.observe(t, np.full(t.size, level)) for level in levels])
                                     .astype(np.float32, copy=False))
            for i in range(t.size):
                obs = table[held, i:i + 1]
                rows = []
                for m, policy in enumerate(policies):
                    dist, states[m] = policy.get_distribution(obs, states[m], not_start)
                    rows.append(dist.distribution.probs[0])
                seen = torch.stack(rows).numpy()
                if probs is None:
                    probs = np.empty((n, members, seen.shape[1]), dtype=np.float32)
                probs[lo + i] = seen
                held = int(choose(seen))
                actions[lo + i] = held
    if probs is None:
        probs = np.empty((0, members, levels.size), dtype=np.float32)
    return actions, probs
