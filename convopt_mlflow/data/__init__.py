"""Market data: loading, validation, features, splits and synthetic markets.

>>> from convopt_mlflow.data import load_bars, compute_features, chronological_splits
>>> bars = load_bars("eurusd-1h")
>>> features = compute_features(bars.frame)
>>> splits = chronological_splits(bars.n_bars, embargo_bars=features.warmup)
"""
from convopt_mlflow.data.bars import Bars, describe_bars
from convopt_mlflow.data.features import Features, compute_features
from convopt_mlflow.data.loading import BUNDLED, DEFAULT_DATASET, load_bars, parse_synthetic_spec
from convopt_mlflow.data.splits import Splits, chronological_splits
from convopt_mlflow.data.synthetic import SyntheticMarket, generate_market, oracle_sharpe
from convopt_mlflow.data.validation import validate_frame

__all__ = [
    "BUNDLED",
    "DEFAULT_DATASET",
    "Bars",
    "Features",
    "Splits",
    "SyntheticMarket",
    "chronological_splits",
    "compute_features",
    "describe_bars",
    "generate_market",
    "load_bars",
    "oracle_sharpe",
    "parse_synthetic_spec",
    "validate_frame",
]
