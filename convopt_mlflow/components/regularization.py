"""Bounded schedule of the entropy coefficient and weight decay, raised by interventions."""
from __future__ import annotations

import math
from typing import Any, Mapping

from convopt_mlflow.errors import ConfigError


class RegularizationSchedule:
    """Entropy coefficient and weight decay that ``increase_entropy`` / ``increase_regularization`` raise.

    Each raise multiplies the value by ``factor`` (starting from ``ent_floor`` /
    ``weight_decay_floor`` when it is 0) and caps it at its maximum. The glue
    writes :attr:`ent_coef` into ``model.ent_coef`` and :attr:`weight_decay`
    into the optimizer's param groups.

    Examples:
        >>> reg = RegularizationSchedule(0.01, max_ent_coef=0.03)
        >>> reg.increase_entropy(), reg.ent_coef
        (True, 0.02)
        >>> reg.increase_entropy(), reg.ent_coef
        (True, 0.03)
        >>> reg.increase_entropy()
        False
    """

    def __init__(
        self,
        ent_coef: float,
        *,
        max_ent_coef: float,
        weight_decay: float = 0.0,
        max_weight_decay: float = 1e-3,
        factor: float = 2.0,
        ent_floor: float = 1e-3,
        weight_decay_floor: float = 1e-5,
    ):
        values = {"ent_coef": ent_coef, "max_ent_coef": max_ent_coef, "weight_decay": weight_decay,
                  "max_weight_decay": max_weight_decay, "factor": factor, "ent_floor": ent_floor,
                  "weight_decay_floor": weight_decay_floor}
        for name, value in values.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"regularization: {name}={value!r} must be a finite number >= 0")
        if max_ent_coef < ent_coef:
            raise ConfigError(f"regularization: max_ent_coef={max_ent_coef!r} must be >= ent_coef={ent_coef!r}")
        if max_weight_decay < weight_decay:
            raise ConfigError(
                f"regularization: max_weight_decay={max_weight_decay!r} must be >= weight_decay={weight_decay!r}")
        if factor <= 1:
            raise ConfigError(f"regularization: factor={factor!r} must be > 1")
        if ent_floor <= 0 or weight_decay_floor <= 0:
            raise ConfigError("regularization: ent_floor and weight_decay_floor must be > 0")
        self._ent_coef = float(ent_coef)
        self._weight_decay = float(weight_decay)
        self.max_ent_coef = float(max_ent_coef)
        self.max_weight_decay = float(max_weight_decay)
        self.factor = float(factor)
        self.ent_floor = float(ent_floor)
        self.weight_decay_floor = float(weight_decay_floor)
        self.ent_scale = 1.0

    @property
    def ent_coef(self) -> float:
        """Current entropy coefficient (SB3 ``ent_coef``): the raised value times :attr:`ent_scale`, capped."""
        if self.ent_scale == 1.0:
            return self._ent_coef
        return min(self._ent_coef * self.ent_scale, self.max_ent_coef)

    def set_ent_scale(self, scale: float) -> float:
        """Multiplier of the entropy coefficient set by the meta controller (1 = none); returns ``ent_coef``."""
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"ent_scale must be a finite number > 0, got {scale!r}")
        self.ent_scale = float(scale)
        return self.ent_coef

    @property
    def weight_decay(self) -> float:
        """Current L2 weight decay of the optimizer."""
        return self._weight_decay

    def _raised(self, value: float, floor: float, cap: float) -> float:
        return min(value * self.factor if value > 0 else floor, cap)

    def increase_entropy(self) -> bool:
        """``ent_coef <- min(ent_coef * factor, max_ent_coef)`` (from ``ent_floor`` if 0); False if at the bound."""
        if self._ent_coef >= self.max_ent_coef:
            return False
        self._ent_coef = self._raised(self._ent_coef, self.ent_floor, self.max_ent_coef)
        return True

    def increase_regularization(self) -> bool:
        """Raise weight decay (from ``weight_decay_floor`` if 0) and ``ent_coef``; False if both at their bounds."""
        raised_decay = self._weight_decay < self.max_weight_decay
        if raised_decay:
            self._weight_decay = self._raised(self._weight_decay, self.weight_decay_floor, self.max_weight_decay)
        raised_entropy = self.increase_entropy()
        return raised_decay or raised_entropy

    def state_dict(self) -> dict[str, Any]:
        return {"ent_coef": self._ent_coef, "weight_decay": self._weight_decay, "ent_scale": self.ent_scale}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._ent_coef = float(state["ent_coef"])
        self._weight_decay = float(state["weight_decay"])
        self.ent_scale = float(state.get("ent_scale", 1.0))  # absent in checkpoints from before the meta controller

    def __repr__(self) -> str:
        return f"RegularizationSchedule(ent_coef={self._ent_coef!r}, weight_decay={self._weight_decay!r})"
