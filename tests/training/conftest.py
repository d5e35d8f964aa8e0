"""Fixtures for training tests: a real tiny SB3 PPO on CartPole, and a real MLflow store for coordinator runs."""
from __future__ import annotations

import json
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from convopt_mlflow.components import ConvergenceMonitor, Intervention
from convopt_mlflow.config import OptimizedTrainingConfig, build_config


def make_tiny_ppo(seed: int = 0) -> PPO:
    """One gradient step per 32-step rollout; an 8-unit network (CPU)."""
    return PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1,
               policy_kwargs=dict(net_arch=[8]), seed=seed, device="cpu")


@pytest.fixture
def trained_ppo() -> PPO:
    """A tiny PPO after 64 steps (2 updates), so Adam has exp_avg/exp_avg_sq/step state."""
    model = make_tiny_ppo()
    model.learn(64)
    return model


class OptimizerLR(BaseCallback):
    """The LR in the optimizer's ``param_groups`` right after each update SB3 ran: ``seen[step]``."""

    def __init__(self):
        super().__init__()
        self.seen: dict[int, float] = {}
        self._updates = 0

    def _on_rollout_start(self) -> None:
        if self.model._n_updates != self._updates:
            self._updates = self.model._n_updates
            self.seen[self.model.num_timesteps] = self.model.policy.optimizer.param_groups[0]["lr"]

    def _on_training_end(self) -> None:
        self._on_rollout_start()

    def _on_step(self) -> bool:
        return True


# --------------------------------------------------------------------------- coordinator runs
#: The ``everything`` preset at a size that trains in about a second: 256 env steps per
#: rollout (4 envs x 64 steps), so 8 updates in 2,048 steps; a checkpoint every
#: 2 updates and a validation eval every 4.
TINY_RUN = {
    "data.source": "synthetic:n_bars=3000,seed=1,signal_ic=0.1",
    "env.n_envs": "4", "ppo.n_steps": "64", "ppo.batch_size": "64", "ppo.n_epochs": "2", "ppo.net_arch": "16",
    "env.window": "8", "env.episode_length": "64", "run.total_timesteps": "2048", "run.eval_freq": "1024",
    "run.checkpoint_freq": "512", "run.progress_bar": "false", "monitoring_window": "4",
}
STEPS_PER_UPDATE = 256


@dataclass(frozen=True)
class TrackedStore:
    """A real sqlite MLflow store, and readers of what a run stored in it (through MlflowClient)."""

    uri: str
    root: Path
    client: MlflowClient

    def config(self, **overrides: str) -> OptimizedTrainingConfig:
        """``everything`` preset (every component) at :data:`TINY_RUN` size; keyword ``run__max_rollbacks=1`` sets ``run.max_rollbacks``."""
        values = dict(TINY_RUN)
        values.update({k.replace("__", "."): str(v) for k, v in overrides.items()})
        return build_config("everything", values)

    def checkpoint_root(self, name: str) -> str:
        return str(self.root / "checkpoints" / name)

    def history(self, run_id: str, key: str) -> dict[int, float]:
        """step -> value of one metric (these runs log each key at most once per step)."""
        points = sorted(self.client.get_metric_history(run_id, key), key=lambda p: (p.step, p.timestamp))
        return {int(p.step): float(p.value) for p in points}

    def all_values(self, run_id: str) -> dict[str, list[float]]:
        """Every metric key of the run -> its full history of values."""
        keys = self.client.get_run(run_id).data.metrics
        return {k: [p.value for p in self.client.get_metric_history(run_id, k)] for k in keys}

    def interventions(self, run_id: str) -> list[dict]:
        target = self.root / "downloads" / run_id
        target.mkdir(parents=True, exist_ok=True)
        path = self.client.download_artifacts(run_id, "interventions.json", str(target))
        return json.loads(Path(path).read_text())

    def tags(self, run_id: str) -> dict[str, str]:
        return self.client.get_run(run_id).data.tags

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def nonfinite_values(self, run_id: str) -> dict[str, list[float]]:
        """Keys whose history holds NaN or +-inf (which MLflow stores as +-1.8e308)."""
        return {k: [v for v in vs if not (math.isfinite(v) and abs(v) < 1e300)]
                for k, vs in self.all_values(run_id).items()
                if any(not (math.isfinite(v) and abs(v) < 1e300) for v in vs)}


@pytest.fixture(scope="module")
def tracked(module_mlflow):
    """One real sqlite store per test module; the cwd is its directory."""
    uri, root = module_mlflow
    return TrackedStore(uri, root, MlflowClient(tracking_uri=uri))


class ScriptedMonitor(ConvergenceMonitor):
    """Analyses for real, but decides only what ``script`` says: ``{step: action}``."""

    def __init__(self, script: dict[int, str], *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.script = dict(script)

    def decide(self, state):
        action = self.script.get(int(state.step))
        return [] if action is None else [Intervention(int(state.step), action, f"scripted {action}", {"x": 1.0})]


class SigtermAt(BaseCallback):
    """Sends this process SIGTERM once, at the first update boundary at or after ``step`` (the
    coordinator's handler then checkpoints and ends the run KILLED)."""

    def __init__(self, step: int):
        super().__init__()
        self.step, self.sent = step, False

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if not self.sent and self.model.num_timesteps >= self.step:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def assert_model_rebuilds_training(run_id: str, cfg, market) -> None:
    """The run's logged pyfunc rebuilds exactly the feature matrix training saw from the market's
    OHLCV bars, and its positions are the greedy backtest's of the same weights."""
    import mlflow
    import numpy as np
    import torch

    from convopt_mlflow.env import deterministic_positions
    from convopt_mlflow.training.evaluate import greedy_actions
    from convopt_mlflow.training.setup import make_env, make_model

    frame = market.bars.frame
    loaded = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    rebuilt = loaded.unwrap_python_model()._core(frame)
    np.testing.assert_array_equal(rebuilt.features[:-1], market.features.values)  # [-1]: the model's padding bar
    assert rebuilt.warmup == market.features.warmup

    model = make_model(cfg, make_env(cfg, market))
    (weights,) = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model")).rglob("member_0.pt")
    model.policy.load_state_dict(torch.load(weights, weights_only=True))
    out = loaded.predict(frame)
    path = deterministic_positions(market.cores["test"], greedy_actions(model.policy), (0, len(frame)))
    np.testing.assert_array_equal(out["position"].to_numpy()[path.bars], path.positions)
