"""Trading environments: a numpy market core, a vectorised SB3 VecEnv and a gymnasium twin."""
from convopt_mlflow.env.core import MarketCore
from convopt_mlflow.env.rollout import PositionPath, deterministic_positions, follow_choices, policy_table
from convopt_mlflow.env.single import TradingEnv
from convopt_mlflow.env.vec_env import StartSampler, TradingVecEnv

__all__ = [
    "MarketCore",
    "PositionPath",
    "StartSampler",
    "TradingEnv",
    "TradingVecEnv",
    "deterministic_positions",
    "follow_choices",
    "policy_table",
]
