"""Configuration: one tree of frozen dataclasses, presets and ``key=value`` overrides.

``OptimizedTrainingConfig`` keeps every field of the reference design at its top
level (same names), and adds sub-trees for data, environment, PPO, the monitor
and the run itself. The whole tree is logged once as flattened MLflow params and
as a ``config.json`` artifact whose hash is kept as a param.

Overrides address fields by dotted path, e.g. ``ppo.batch_size=128`` or
``base_learning_rate=1e-4``. Tuple fields take ``+``-separated items, e.g.
``ppo.net_arch=64+64``.
"""
from .overrides import apply_values, config_hash, field_docs, flatten, from_dict, parse_overrides, to_json
from .presets import PRESETS, build_config
from ..components.lr_schedule import SCHEDULE_TYPES
from .tree import (INTERVENTIONS, DataConfig, EnsembleConfig, EnvConfig, MonitorConfig, OptimizedTrainingConfig,
                   PPOConfig, RunConfig)

__all__ = [
    "INTERVENTIONS", "PRESETS", "SCHEDULE_TYPES", "DataConfig", "EnsembleConfig", "EnvConfig", "MonitorConfig",
    "OptimizedTrainingConfig", "PPOConfig", "RunConfig", "apply_values", "build_config", "config_hash",
    "field_docs", "flatten", "from_dict", "parse_overrides", "to_json",
]
