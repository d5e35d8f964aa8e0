"""What an A/B study compares, stored in the study so that any worker can join it."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from ..errors import ConfigError
from .arms import Arm, parse_arms

DEFAULT_METRIC = "backtest/test/sharpe"
"""A/B verdicts are decided on the test split. Validation already picked each trial's shipped
checkpoint and drove its in-training adaptation (curriculum, bandit, early stop, monitor
interventions), so a validation score is optimistic, and by a different amount in each arm."""
#: Rules for a failed cell: ``refuse`` (an arm with one is never registered) or ``worst``
#: (a failed cell scores the worst primary value observed in the study, so its pairs are kept).
ON_FAILURE = ("refuse", "worst")
#: Seeds per arm at the first look of ``--sequential``: a t test on 2 paired seeds has 1 df.
MIN_FIRST_LOOK = 3


def sequential_looks(seeds: int) -> tuple[int, ...]:
    """Cumulative seeds per arm at each look of ``--sequential``: about three rounds, the first of at least 3.

    Example:
        >>> sequential_looks(10), sequential_looks(5), sequential_looks(4), sequential_looks(3)
        ((4, 8, 10), (3, 5), (3, 4), (3,))
    """
    if seeds < MIN_FIRST_LOOK:
        raise ConfigError(f"--sequential needs at least {MIN_FIRST_LOOK} seeds per arm at its first look "
                          f"(a paired t test on fewer has too few degrees of freedom); got --seeds {seeds}: "
                          f"use --seeds {MIN_FIRST_LOOK} or more, or drop --sequential")
    step = max(MIN_FIRST_LOOK, math.ceil(seeds / 3))
    return tuple(sorted({min(seeds, step * i) for i in range(1, seeds // step + 2)} - {0}))


@dataclass(frozen=True)
class StudySpec:
    """Arms (the first is the baseline), seeds, the shared overrides and the decision rule.

    ``common`` holds the overrides every arm shares (data source, budget, ``--set``);
    ``seeds`` are the env/torch seeds, the same in every arm.
    """

    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    common: Mapping[str, str] = field(default_factory=dict)
    metric: str = DEFAULT_METRIC
    alpha: float = 0.05
    sequential: bool = False
    on_failure: str = "refuse"
    """What a failed cell counts as: one of :data:`ON_FAILURE`; part of the design, fixed with the study."""

    def __post_init__(self) -> None:
        if len(self.seeds) < 2:
            raise ConfigError(f"--seeds must be at least 2 (a comparison needs replication); got {len(self.seeds)}")
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"--alpha must lie in (0, 1); got {self.alpha}")
        if not self.metric.strip():
            raise ConfigError(f"--metric must name a run metric, e.g. {DEFAULT_METRIC}")
        if self.on_failure not in ON_FAILURE:
            raise ConfigError(f"--on-failure must be one of {', '.join(ON_FAILURE)}; got {self.on_failure!r}")
        if self.sequential:
            sequential_looks(len(self.seeds))  # a design with a first look under 3 seeds is refused here

    @property
    def baseline(self) -> str:
        return self.arms[0]

    @property
    def cells(self) -> list[tuple[str, int]]:
        """Every (arm, seed), seed-major: round ``k`` of a sequential study is a prefix."""
        return [(arm, seed) for seed in self.seeds for arm in self.arms]

    def looks(self) -> tuple[int, ...]:
        return sequential_looks(len(self.seeds)) if self.sequential else (len(self.seeds),)

    def parsed_arms(self) -> tuple[Arm, ...]:
        return parse_arms(",".join(self.arms))

    def to_json(self) -> str:
        data = asdict(self)
        data["common"] = dict(self.common)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "StudySpec":
        data: dict[str, Any] = json.loads(text)
        return cls(arms=tuple(data["arms"]), seeds=tuple(int(s) for s in data["seeds"]), common=data["common"],
                   metric=data["metric"], alpha=float(data["alpha"]), sequential=bool(data["sequential"]),
                   on_failure=str(data.get("on_failure", "refuse")))

    def differences(self, other: "StudySpec") -> list[str]:
        """Fields that differ from ``other``, e.g. ``["seeds: (0, 1) != (0, 1, 2)"]``."""
        mine, theirs = json.loads(self.to_json()), json.loads(other.to_json())
        return [f"{k}: {theirs[k]} != {mine[k]}" for k in mine if mine[k] != theirs[k]]

    def extends(self, other: "StudySpec") -> bool:
        """Whether this spec adds seeds to ``other`` and changes nothing else (same arms, budget,
        data, metric, alpha and design): ``other``'s seeds are a prefix of this one's."""
        mine, theirs = json.loads(self.to_json()), json.loads(other.to_json())
        same = all(mine[k] == theirs[k] for k in mine if k != "seeds")
        return same and len(self.seeds) > len(other.seeds) and self.seeds[:len(other.seeds)] == other.seeds

