"""Use convopt's monitor, scheduler and MLflow logger in your own SB3 PPO script.

    python examples/own_sb3_script.py --timesteps 50000
"""
import argparse

import mlflow
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger

from convopt_mlflow import (AdvancedLRScheduler, ConvergenceCallback, ConvergenceMonitor, MLflowOutputFormat,
                            TradingVecEnv, MarketCore, compute_features, load_bars)

parser = argparse.ArgumentParser()
parser.add_argument("--timesteps", type=int, default=50_000)
args = parser.parse_args()
torch.set_num_threads(1)  # small MLPs: one thread is fastest; two were 6x slower on our 2-core machine

bars = load_bars("eurusd-1h")
features = compute_features(bars.frame)
core = MarketCore(features.values, features.log_returns, window=32, episode_length=256, cost_bps=1.0,
                  warmup=features.warmup, bar_range=(0, int(bars.n_bars * 0.7)))
model = PPO("MlpPolicy", TradingVecEnv(core, n_envs=8, seed=0), n_steps=256, batch_size=256, seed=0)

with mlflow.start_run() as run:  # convopt.version / git tags come from our run context provider
    model.set_logger(Logger(folder=None, output_formats=[MLflowOutputFormat(run.info.run_id)]))
    monitor = ConvergenceMonitor(intervention_strategies=["lr_restart", "lr_reduce", "increase_entropy"])
    scheduler = AdvancedLRScheduler(3e-4, "cosine_with_restarts", min_lr=1e-6, max_lr=3e-4,
                                    total_steps=args.timesteps, restart_period=args.timesteps // 3)
    # dump_logs=True + log_interval=None: one MLflow batch per update, at the update's own timestep
    callback = ConvergenceCallback(monitor, scheduler=scheduler, dump_logs=True)
    model.learn(args.timesteps, callback=callback, log_interval=None)
    print(f"run {run.info.run_id}: {len(callback.interventions)} intervention(s)")
