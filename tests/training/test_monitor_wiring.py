"""What the convergence callback feeds the monitor: real SB3 PPO (tiny CartPole and trading runs)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from convopt_mlflow.components import ConvergenceMonitor
from convopt_mlflow.training.callbacks import ConvergenceCallback
from convopt_mlflow.training.coordinator import train
from convopt_mlflow.training.param_watch import parameter_health

from .conftest import make_tiny_ppo


class EnvObservations(BaseCallback):
    """Records every observation the env returned, and what the parameter watch saw at each update.

    Placed after the ``ConvergenceCallback`` in a ``CallbackList``, so at ``on_rollout_start`` the
    update has just been analysed.
    """

    def __init__(self, convergence: ConvergenceCallback):
        super().__init__()
        self.convergence = convergence
        self.rollouts: list[list[np.ndarray]] = []
        self.seen: list[np.ndarray] = []
        self.expected_health: list[dict[str, float]] = []

    def _on_rollout_start(self) -> None:
        if self.rollouts:  # update k was just analysed: the watch must have used rollout k
            self.seen.append(self.convergence.watch_sample.copy())
            produced = np.concatenate(self.rollouts[-1])
            self.expected_health.append(parameter_health(self.model.policy, produced[:-1]))  # the buffer rows
        self.rollouts.append([self.model._last_obs.copy()])  # the observation the rollout starts from

    def _on_step(self) -> bool:
        self.rollouts[-1].append(self.locals["new_obs"].copy())
        return True


def test_parameter_watch_measures_the_observations_the_env_produced():
    model = make_tiny_ppo()
    convergence = ConvergenceCallback(ConvergenceMonitor({"monitoring_window": 4}))
    recorder = EnvObservations(convergence)
    history = []

    class Metrics(BaseCallback):
        def _on_step(self):
            return True

        def _on_rollout_start(self):
            if convergence.last_metrics:
                history.append(dict(convergence.last_metrics))

    model.learn(32 * 4, callback=CallbackList([convergence, recorder, Metrics()]))
    assert len(recorder.seen) == 3  # updates 1-3 (the 4th is analysed at training end)
    for k, sample in enumerate(recorder.seen):
        rollout = np.concatenate(recorder.rollouts[k])  # 1 start obs + 32 new ones
        # the buffer holds the observations each action was taken on: the start one and the first 31 new ones
        np.testing.assert_array_equal(sample, rollout[:32])
        assert np.abs(sample).sum() > 0
    for k, expected in enumerate(recorder.expected_health):
        for key in ("dead_fraction", "logit_range"):
            assert history[k][key] == pytest.approx(expected[key], rel=1e-6), (k, key)


def test_exploration_rate_of_a_long_only_run_is_on_the_log_2_scale(tracked):
    cfg = tracked.config(env__long_only="true", run__total_timesteps="512")
    result = train(cfg, preset="everything", checkpoint_root=tracked.checkpoint_root("long_only"))
    assert result.status == "FINISHED"
    entropy = -tracked.history(result.run_id, "train/entropy_loss")[256]
    rate = tracked.history(result.run_id, "convergence/exploration_rate")[256]
    assert entropy > 0.6  # a fresh 2-action policy is near its maximum entropy, log 2 = 0.693
    assert rate == pytest.approx(entropy / math.log(2), rel=1e-6)
    assert rate > 0.9  # on the 3-action scale it could never exceed log 2 / log 3 = 0.63
