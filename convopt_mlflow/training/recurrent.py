"""The recurrent policy's SB3 glue: sb3-contrib's RecurrentPPO with ConvoptPPO's update guards.

``recurrent.enabled`` trains an LSTM policy (``MlpLstmPolicy``: an LSTM of
``recurrent.lstm_hidden_size`` units in front of the ``ppo.net_arch`` MLPs, a separate one for the
critic) with sb3-contrib's ``RecurrentPPO``: rollouts carry each env's LSTM state and reset it at
episode starts, and updates replay whole sequences. Everything that plugs into PPO through
callbacks and the model's attributes (LR schedule, probe, monitor, checkpoints, meta controller,
curriculum, augmentation) works as for ConvoptPPO; the components that replace PPO's rollout or
update (counterfactual, direct, replay) and ensembles are refused by the config
(``config/validation.py``). The backtest and the pyfunc walk the policy bar by bar
(:func:`convopt_mlflow.recurrent.recurrent_walk`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sb3_contrib import RecurrentPPO

from ..env import PositionPath
from ..recurrent import is_recurrent, recurrent_walk
from .ppo import ConvoptUpdates

__all__ = ["ConvoptRecurrentPPO", "recurrent_policy_kwargs", "recurrent_positions", "is_recurrent"]


class ConvoptRecurrentPPO(ConvoptUpdates, RecurrentPPO):
    """sb3-contrib's RecurrentPPO with ConvoptPPO's out-of-memory retry and divergence handling."""


def recurrent_policy_kwargs(recurrent: Any) -> dict[str, Any]:
    """The LSTM's ``policy_kwargs`` for a ``RecurrentConfig``."""
    return {"lstm_hidden_size": int(recurrent.lstm_hidden_size), "n_lstm_layers": int(recurrent.n_lstm_layers),
            "shared_lstm": False, "enable_critic_lstm": True}


def recurrent_positions(policy: Any, core: Any, bar_range: tuple[int, int]) -> PositionPath:
    """The greedy recurrent policy's walk over every decision bar of ``bar_range`` (as
    :func:`~convopt_mlflow.env.deterministic_positions`: flat at the first, the last bar not a
    decision), its LSTM state starting at zero at the first decision bar."""
    start, stop = int(bar_range[0]), int(bar_range[1])
    bars = np.arange(max(start, core.first_observable_bar), stop - 1)
    policy.set_training_mode(False)
    actions, _ = recurrent_walk(core, [policy], bars, lambda probs: int(np.argmax(probs[0])))
    return PositionPath(bars=bars, positions=core.position_levels[actions].astype(np.float64))
