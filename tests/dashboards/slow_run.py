"""A tiny training run paced for the browser test: ``python slow_run.py <pause_s> <intervene_at>``.

The ``everything`` preset (one member) at a tiny size, 64 updates of 256 env steps, a
validation eval every 2 updates, and a sleep of ``pause_s`` after every rollout so a
browser can watch it grow. A scripted monitor forces ``increase_entropy`` at env step
``intervene_at``. Tracking goes to ``$MLFLOW_TRACKING_URI``.
"""
from __future__ import annotations

import sys
import time

from stable_baselines3.common.callbacks import BaseCallback

from convopt_mlflow.components import ConvergenceMonitor, Intervention
from convopt_mlflow.config import build_config
from convopt_mlflow.training.coordinator import build_components, train

TINY = {"data.source": "synthetic:n_bars=3000,seed=1,signal_ic=0.1", "env.n_envs": "4", "ppo.n_steps": "64",
        "ppo.batch_size": "64", "ppo.n_epochs": "1", "ppo.net_arch": "16", "env.window": "8",
        "env.episode_length": "64", "run.total_timesteps": "16384", "run.eval_freq": "512",
        "run.checkpoint_freq": "4096", "run.progress_bar": "false", "monitoring_window": "4", "ensemble_size": "1"}


class Pause(BaseCallback):
    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def _on_rollout_end(self) -> None:
        time.sleep(self.seconds)

    def _on_step(self) -> bool:
        return True


class ForcedIntervention(ConvergenceMonitor):
    def __init__(self, at: int, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.at = at

    def decide(self, state):
        if int(state.step) != self.at:
            return []
        return [Intervention(self.at, "increase_entropy", "forced by the browser test", {"forced": 1.0})]


def main(pause_s: float, intervene_at: int) -> int:
    cfg = build_config("everything", TINY)
    comps = build_components(cfg)
    comps.monitor = ForcedIntervention(intervene_at, comps.monitor.thresholds, comps.monitor.intervention_strategies)
    result = train(cfg, preset="everything", components=comps, extra_callbacks=[Pause(pause_s)])
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]), int(sys.argv[2])))
