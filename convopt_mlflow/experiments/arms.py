"""A/B arms: a preset, or a preset plus overrides (``lr:ppo.batch_size=512``).

Pure: no Optuna, no MLflow. Every arm is built with the same budget, data, splits,
cost and seed (common random numbers: seed ``s`` is the same env seed and the same
data windows in every arm), so an arm may not override what the comparison shares.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Mapping

from .. import config as cfgmod
from ..config.names import preset_label
from ..errors import ConfigError

#: Keys every arm shares; an arm that overrides one would not be comparable.
SHARED_KEYS = ("data.", "run.seed", "run.total_timesteps", "env.cost_bps", "env.long_only")


@dataclass(frozen=True)
class Arm:
    """One arm: its name (the spec as written), its preset and its own overrides."""

    name: str
    preset: str
    overrides: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        """The arm on one short line: ``lr[batch_size=512,n_epochs=4]`` (run names, dashboard)."""
        return preset_label(self.preset, dict(self.overrides))

    @property
    def key(self) -> str:
        """The name made safe for an MLflow metric key (``ab/<key>/mean``)."""
        return metric_key(self.name)

    def config(self, common: Mapping[str, str], seed: int) -> cfgmod.OptimizedTrainingConfig:
        """The arm's config: preset, then the study's common overrides, then the arm's, then the seed."""
        return cfgmod.build_config(self.preset, {**common, **dict(self.overrides), "run.seed": str(seed)})


def metric_key(name: str) -> str:
    """``name`` with every character MLflow refuses in a key replaced by ``_``."""
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", name)


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, list(cfgmod.PRESETS), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse_arms(text: str) -> tuple[Arm, ...]:
    """Parse ``"baseline,full,lr:ppo.batch_size=512,ppo.n_epochs=4"`` into arms.

    Arms are comma-separated; a segment with ``=`` but no ``:`` continues the
    previous arm's overrides. The first arm is the baseline. Raises ConfigError
    for an unknown preset (with a did-you-mean), a bad override, a shared key,
    a repeated arm, or fewer than two arms.

    Example:
        >>> [a.name for a in parse_arms("baseline,lr:ppo.batch_size=512,ppo.n_epochs=4")]
        ['baseline', 'lr:ppo.batch_size=512,ppo.n_epochs=4']
    """
    specs: list[list[str]] = []
    for segment in (s.strip() for s in str(text).split(",")):
        if not segment:
            continue
        if "=" in segment and ":" not in segment and specs:
            specs[-1].append(segment)
        else:
            specs.append([segment])
    arms = [_arm(",".join(parts)) for parts in specs]
    names = [a.name for a in arms]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"arm {repeated[0]!r} is listed twice in --arms")
    if len(arms) < 2:
        raise ConfigError(f"an A/B test needs at least two arms (the first is the baseline); got {names or 'none'}")
    keys = [a.key for a in arms]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"arms {names} map to the same metric key; rename one")
    return tuple(arms)


def _arm(spec: str) -> Arm:
    preset, _, rest = spec.partition(":")
    preset = preset.strip()
    if preset not in cfgmod.PRESETS:
        raise ConfigError(f"unknown arm {spec!r}: no preset {preset!r}{_did_you_mean(preset)} "
                          f"(presets: {', '.join(cfgmod.PRESETS)})")
    overrides = cfgmod.parse_overrides(rest) if rest.strip() else {}
    for key in overrides:
        if any(key == shared or (shared.endswith(".") and key.startswith(shared)) for shared in SHARED_KEYS):
            raise ConfigError(f"arm {spec!r} overrides {key!r}, which every arm must share (budget, data, "
                              f"splits, cost and seed); set it for all arms with --set instead")
    arm = Arm(spec.strip(), preset, tuple(overrides.items()))
    arm.config({}, 0)  # a bad key or value fails here, before anything exists
    return arm
