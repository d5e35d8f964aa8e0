"""Trading environments: a numpy market core, a vectorised SB3 VecEnv and a gymnasium twin."""
from __future__ import annotations

from ..lazy import lazy_attributes

# Loaded on first use (PEP 562): the market core and the walks are numpy, the VecEnv is SB3's (torch);
# a process that only builds markets (an ensemble's parent before its members start) imports neither.
_HOME = {
    "core": ("MarketCore",),
    "rollout": ("PositionPath", "deterministic_positions", "follow_choices", "policy_table"),
    "single": ("TradingEnv",),
    "vec_env": ("StartSampler", "TradingVecEnv"),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}

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

__getattr__, __dir__ = lazy_attributes(globals(), _MODULE_OF)
