"""Fixtures for A/B tests: tiny trials (about 3 s each) and helpers to read the stores back."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Every arm trains 1,024 steps: 4 envs x 64 steps per rollout, an eval every 512 steps.
TINY = ("env.n_envs=4,ppo.n_steps=64,ppo.batch_size=64,ppo.n_epochs=2,ppo.net_arch=16,env.window=8,"
        "env.episode_length=64,run.eval_freq=512,run.checkpoint_freq=512,run.progress_bar=false,monitoring_window=4")
DATA = "synthetic:n_bars=3000,seed=1,signal_ic=0.1"


def cli_env(uri: str, **extra: str) -> dict[str, str]:
    """This interpreter's scripts first on PATH, the given tracking store, no inherited run."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_RUN_ID", None)
    return env


def executable(name: str) -> str:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name) or name
