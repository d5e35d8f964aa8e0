"""When to restore a network's plasticity: the pure decision behind ``shrink_perturb`` and ``reset_head``.

Premature convergence in deep RL is partly a loss of plasticity that no LR change undoes:
hidden units that are dead (ReLU always 0) or saturated (|tanh| > 0.99 on every observation),
a policy head whose logits have run away, an entropy that stays collapsed, validation scores
that stopped improving. Two answers from the literature:

- ``shrink_perturb`` (Ash & Adams 2020): every parameter moves a stated fraction ``alpha``
  toward a fresh initialization, ``theta <- (1 - alpha) * theta + alpha * theta_fresh``,
  i.e. the paper's ``lambda * theta + sigma * noise`` with shrink ``lambda = 1 - alpha``
  and noise drawn from the network's own initializer, scaled by ``sigma = alpha``;
- ``reset_head`` (Nikishin et al. 2022): re-initialize the last policy and value layers
  and forget their optimizer state.

:class:`PlasticityGate` turns one update's numbers into :class:`Finding` s and says which of
these actions answers each. It is *gated*: a signal must persist for ``patience`` analysed
updates in a row before it is reported, so the cheap answers (``increase_entropy``,
``lr_restart``) get the first go at entropy collapse and stagnation; the monitor's ledger
then adds the per-action cooldown and the severity gate. The torch side lives in
``convopt_mlflow.training.plasticity``.

Examples:
    >>> gate = PlasticityGate(patience=2)
    >>> gate.findings({"dead_fraction": 0.8}, entropy_collapse=False, stagnation=False)
    {}
    >>> found = gate.findings({"dead_fraction": 0.8}, entropy_collapse=False, stagnation=False)
    >>> found["dead_units"].severity, ANSWERS["dead_units"]
    (0.8, ('shrink_perturb',))
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping

from convopt_mlflow.components import signals as sig
from convopt_mlflow.components.interventions import Finding
from convopt_mlflow.errors import ConfigError

#: The plasticity actions (each also in ``convergence_types.ACTIONS``).
PLASTICITY_ACTIONS = ("shrink_perturb", "reset_head")

#: signal -> the plasticity actions that answer it, in order of preference.
#: Dead or saturated hidden units and stalled validation are whole-network problems: shrink and
#: perturb everything. Run-away logits and a collapsed entropy sit in the policy head: reset it.
ANSWERS: Dict[str, tuple[str, ...]] = {
    "dead_units": ("shrink_perturb",),
    "saturation": ("reset_head",),
    "persistent_entropy_collapse": ("reset_head",),
    "persistent_stagnation": ("shrink_perturb",),
}


class PlasticityGate:
    """Detects persistent loss-of-plasticity signals, one analysed PPO update at a time.

    Args:
        patience: analysed updates in a row a signal must be present before it is reported.
        dead_fraction: share of hidden units dead or saturated (``dead_fraction`` metric, in
            [0, 1]) at or above which the ``dead_units`` signal is present.
        saturated_logit_range: policy logit range (max - min logit over the watched
            observations, in nats) at or above which the ``saturation`` signal is present.
            The default 8 (odds of about 3000:1 between two actions) is far below the
            monitor's divergence alarm (``logit_range_limit``, 30): a head this saturated is
            near-deterministic, not broken. On the planted-signal market the ``lr`` preset's
            logit range passes 8 at about 95-110k steps and stays below 11 by 200k.

    Severities (in [0, 1], compared with the monitor's ``intervention_threshold``):
    ``dead_units``: the dead fraction itself; ``saturation``: ``range / (2 * limit)``;
    the persistent entropy collapse and stagnation: 1 (the monitor's own finding already
    passed its gate, and it has persisted for ``patience`` updates).
    """

    def __init__(self, patience: int = 5, *, dead_fraction: float = 0.5, saturated_logit_range: float = 8.0):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ConfigError(f"plasticity patience={patience!r} must be an integer >= 1 (analysed updates)")
        if not (isinstance(dead_fraction, (int, float)) and 0 < dead_fraction <= 1):
            raise ConfigError(f"plasticity dead_fraction={dead_fraction!r} must be in (0, 1]")
        if not (isinstance(saturated_logit_range, (int, float)) and math.isfinite(saturated_logit_range)
                and saturated_logit_range > 0):
            raise ConfigError(f"plasticity saturated_logit_range={saturated_logit_range!r} must be a finite number > 0")
        self.patience = patience
        self.dead_fraction = float(dead_fraction)
        self.saturated_logit_range = float(saturated_logit_range)
        self.streaks: Dict[str, int] = {signal: 0 for signal in ANSWERS}

    def findings(self, metrics: Mapping[str, Any], *, entropy_collapse: bool, stagnation: bool) -> Dict[str, Finding]:
        """Advance every streak by this update and return the signals that persisted ``patience`` updates.

        ``metrics`` may hold ``dead_fraction`` and ``logit_range`` (missing or non-finite:
        absent this update); ``entropy_collapse`` / ``stagnation`` are the monitor's own
        verdicts of this update. A signal absent this update resets its streak.
        """
        dead, logits = sig.as_float(metrics.get("dead_fraction")), sig.as_float(metrics.get("logit_range"))
        present = {
            "dead_units": math.isfinite(dead) and dead >= self.dead_fraction,
            "saturation": math.isfinite(logits) and logits >= self.saturated_logit_range,
            "persistent_entropy_collapse": bool(entropy_collapse),
            "persistent_stagnation": bool(stagnation),
        }
        for signal, on in present.items():
            self.streaks[signal] = self.streaks[signal] + 1 if on else 0
        out: Dict[str, Finding] = {}
        for signal, streak in self.streaks.items():
            if streak < self.patience:
                continue
            values = {"updates_present": float(streak), "patience": float(self.patience)}
            if signal == "dead_units":
                severity, text = dead, f"dead/saturated units: {dead:.0%} of hidden units >= {self.dead_fraction:.0%}"
                values.update(dead_fraction=dead, dead_fraction_limit=self.dead_fraction)
            elif signal == "saturation":
                severity = sig.clip01(logits / (2 * self.saturated_logit_range))
                text = f"saturated policy head: logit range {logits:.3g} >= {self.saturated_logit_range:g}"
                values.update(logit_range=logits, saturated_logit_range=self.saturated_logit_range)
            elif signal == "persistent_entropy_collapse":
                severity, text = 1.0, "entropy collapse persisted"
            else:
                severity, text = 1.0, "stagnation persisted"
            out[signal] = Finding(signal, sig.clip01(severity), f"{text} for {streak} updates", values)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"streaks": dict(self.streaks)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.streaks = {signal: int(state.get("streaks", {}).get(signal, 0)) for signal in ANSWERS}
