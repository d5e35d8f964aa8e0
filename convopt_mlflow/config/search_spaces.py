"""What ``convopt tune`` searches for each preset: ranges and log scales by dotted config key.

Pure data: :mod:`convopt_mlflow.experiments.tune` turns each entry into an Optuna
``suggest_*`` call. A key the user fixes with ``--set`` is left out of the search.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..errors import ConfigError
from .presets import PRESETS


@dataclass(frozen=True)
class Range:
    """A number between ``low`` and ``high`` (inclusive); ``log`` samples its logarithm uniformly."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


@dataclass(frozen=True)
class Choice:
    """One of ``values``."""

    values: tuple


Dimension = Union[Range, Choice]

#: PPO hyperparameters every preset tunes.
_PPO: dict[str, Dimension] = {
    "base_learning_rate": Range(1e-5, 1e-3, log=True),
    "ppo.ent_coef": Range(1e-6, 0.05, log=True),
    "ppo.clip_range": Range(0.1, 0.4),
    "ppo.gamma": Range(0.9, 0.999),
    "ppo.gae_lambda": Range(0.8, 1.0),
    "ppo.n_epochs": Range(3, 20, integer=True),
    "ppo.batch_size": Choice((64, 128, 256)),
}

#: Scheduled presets also tune the peak of the schedule (it must stay >= base_learning_rate).
_SCHEDULE: dict[str, Dimension] = {
    "max_learning_rate": Range(1e-4, 3e-3, log=True),
    "base_learning_rate": Range(1e-5, 1e-4, log=True),
}

SEARCH_SPACES: dict[str, dict[str, Dimension]] = {
    "baseline": dict(_PPO),
    "baseline-3e-5": dict(_PPO),
    "lr": {**_PPO, **_SCHEDULE},
    "full": dict(_PPO),  # the counterfactual preset (what the panel admitted): no scheduler
    "everything": {**_PPO, **_SCHEDULE},
    "replay": {**_PPO, "replay_mode": Choice(("scenario", "transition")), "replay_ratio": Range(0.1, 0.75),
               "priority_alpha": Range(0.2, 1.0),
               "priority_strategy": Choice(("pnl_impact", "rare_events", "learning_difficulty", "regime_transitions"))},
    "counterfactual": dict(_PPO),
    "direct": {"direct.lr": Range(1e-4, 1e-2, log=True), "direct.passes": Range(1, 20, integer=True),
               "direct.batch_windows": Choice((8, 16, 32)), "direct.objective": Choice(("pnl", "sharpe")),
               "ppo.max_grad_norm": Range(0.1, 5.0, log=True)},
    "meta": {**_PPO, **_SCHEDULE, "meta_learning_rate": Range(1e-4, 0.5, log=True)},
    "curriculum": {**_PPO, "stage_progression_threshold": Range(0.0, 2.0), "curriculum_stages": Choice((3, 5))},
    "augment": {**_PPO, "noise_injection_prob": Range(0.0, 0.6), "time_warp_prob": Range(0.0, 0.6),
                "feature_dropout_prob": Range(0.0, 0.3)},
}


def search_space(preset: str, fixed: tuple[str, ...] = ()) -> dict[str, Dimension]:
    """The preset's search space without the keys in ``fixed``.

    Example:
        >>> sorted(search_space("baseline", fixed=("ppo.batch_size",)))[:3]
        ['base_learning_rate', 'ppo.clip_range', 'ppo.ent_coef']
    """
    if preset not in SEARCH_SPACES:
        known = ", ".join(SEARCH_SPACES) if preset in PRESETS else ", ".join(PRESETS)
        raise ConfigError(f"no search space for preset {preset!r}; tune one of: {known}")
    return {key: dim for key, dim in SEARCH_SPACES[preset].items() if key not in fixed}
