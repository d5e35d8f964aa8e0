"""Convergence monitor: reads one PPO update's numbers, says what is going wrong and what to do.

:meth:`ConvergenceMonitor.analyze_convergence` turns an update's metrics into a
:class:`ConvergenceState`; :meth:`ConvergenceMonitor.decide` turns that state into
:class:`Intervention` s, honouring per-action cooldowns. The glue applies them and
logs both. Pure numpy; every number it keeps is JSON-serialisable.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Sequence

from convopt_mlflow.components import signals as sig
from convopt_mlflow.components.divergence import check_divergence
from convopt_mlflow.components.eval_trend import EvalTrend
from convopt_mlflow.components.interventions import Finding, InterventionLedger, recommend
from convopt_mlflow.components.plasticity import ANSWERS as PLASTICITY_ANSWERS, PLASTICITY_ACTIONS, PlasticityGate
from convopt_mlflow.components.convergence_types import (
    ACTIONS,
    UNANSWERED,
    ConvergenceState,
    Intervention,
    MonitorThresholds,
)
from convopt_mlflow.errors import ConfigError

__all__ = ["ACTIONS", "DEFAULT_STRATEGIES", "ConvergenceMonitor", "ConvergenceState", "Intervention",
           "MonitorThresholds"]

#: ``early_stop`` and ``advance_curriculum`` are opt-in.
DEFAULT_STRATEGIES = ("lr_restart", "lr_reduce", "increase_entropy", "rollback", "reduce_batch_size",
                      "increase_regularization")
#: Answers to divergence / out-of-memory: no default cooldown.
_EMERGENCY_ACTIONS = ("rollback", "reduce_batch_size")
_HISTORY = ("loss", "value_loss", "entropy", "approx_kl", "grad_norm", "lr", "train_return", "train_x")


def _clean(values: Mapping[str, Any]) -> dict[str, float]:
    """Only the finite entries, as floats."""
    return {k: float(v) for k, v in values.items() if math.isfinite(sig.as_float(v))}


def _nan_to_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class ConvergenceMonitor:
    """Detects plateaus, stagnation, entropy collapse, overfitting and divergence.

    Args:
        thresholds: a :class:`MonitorThresholds`, a mapping of overrides, or None for defaults.
        intervention_strategies: the actions it may recommend (subset of :data:`ACTIONS`).
        cooldowns: env steps an action stays suppressed after firing; actions not
            listed default to 3 monitoring windows of updates (steps per update
            is estimated from the ``step`` values seen), except the emergency
            answers ``rollback`` and ``reduce_batch_size``, which default to 0: a
            divergence that persists must be answered again (the glue's
            ``max_rollbacks`` bounds the repeats), not left alone for 3 windows.
        max_entropy: the policy's maximum entropy in nats (``log(n_actions)``). None: the glue
            sets it from the action space (``ConvergenceCallback`` does); until then ``log(3)``,
            the long/flat/short space, is assumed.
        plasticity: the :class:`PlasticityGate` behind ``shrink_perturb`` / ``reset_head``; None
            builds a default one when either action is among the strategies (else none runs).

    Examples:
        >>> mon = ConvergenceMonitor({"monitoring_window": 5})
        >>> for i in range(5):
        ...     state = mon.analyze_convergence({"step": 1000 * (i + 1), "loss": 1.0, "entropy": 1.0})
        >>> state.plateau_detected, mon.trigger_intervention(state)
        (True, ['lr_restart'])
    """

    def __init__(
        self,
        thresholds: MonitorThresholds | Mapping[str, Any] | None = None,
        intervention_strategies: Sequence[str] = DEFAULT_STRATEGIES,
        *,
        cooldowns: Mapping[str, int] | None = None,
        max_entropy: float | None = None,
        plasticity: PlasticityGate | None = None,
    ):
        self.thresholds = MonitorThresholds.coerce(thresholds)
        if isinstance(intervention_strategies, str):
            intervention_strategies = [s for s in intervention_strategies.split(",") if s.strip()]
        self.intervention_strategies = tuple(s.strip() for s in intervention_strategies)
        unknown = sorted(set(self.intervention_strategies) - set(ACTIONS))
        if unknown:
            raise ConfigError(f"unknown intervention strategy {unknown}; allowed: {', '.join(ACTIONS)}")
        cooldowns = dict(cooldowns or {})
        unknown = sorted(set(cooldowns) - set(ACTIONS))
        if unknown:
            raise ConfigError(f"cooldowns name unknown action(s) {unknown}; allowed: {', '.join(ACTIONS)}")
        for action, steps in cooldowns.items():
            if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
                raise ConfigError(f"cooldowns[{action!r}]={steps!r} must be an integer number of env steps >= 0")
        self.cooldowns = cooldowns
        self.max_entropy = None if max_entropy is None else float(max_entropy)
        if self.max_entropy is not None and not (math.isfinite(self.max_entropy) and self.max_entropy > 0):
            raise ConfigError(f"max_entropy={max_entropy!r} must be a finite number > 0 (nats)")
        if plasticity is None and set(PLASTICITY_ACTIONS) & set(self.intervention_strategies):
            plasticity = PlasticityGate()
        self.plasticity = plasticity
        self._reset_state()

    def _reset_state(self) -> None:
        self._hist: Dict[str, List[float]] = {k: [] for k in _HISTORY}
        self._evals = EvalTrend(self.thresholds.eval_window)
        self._updates = 0
        self._step = 0
        self._step_deltas: List[float] = []
        self._initial_param_norm: float | None = None
        self._last_entropy: float | None = None
        self._ledger = InterventionLedger(self.thresholds.monitoring_window)
        if self.plasticity is not None:
            self.plasticity.load_state_dict({})

    # ----------------------------------------------------------------- helpers
    def _push(self, key: str, value: float) -> None:
        if math.isfinite(value):
            series = self._hist[key]
            series.append(value)
            del series[: -self.thresholds.monitoring_window]

    def _baseline(self, key: str) -> float:
        """Median of the previous window, or NaN with fewer than ``min_baseline`` values."""
        series = self._hist[key]
        return sig.median(series) if len(series) >= self.thresholds.min_baseline else math.nan

    def steps_per_update(self) -> float:
        """Median env steps between analysed updates (a first guess: step / updates)."""
        if self._step_deltas:
            return sig.median(self._step_deltas)
        return max(self._step, 1) / max(self._updates, 1)

    def cooldown(self, action: str) -> int:
        """Env steps ``action`` stays suppressed after it fires."""
        if action in self.cooldowns:
            return self.cooldowns[action]
        if action in _EMERGENCY_ACTIONS:
            return 0
        return int(round(3 * self.thresholds.monitoring_window * self.steps_per_update()))

    def detect_plateau(self, loss_history: Sequence[float]) -> bool:
        """True when the last ``monitoring_window`` finite losses have CV < ``plateau_cv``.

        CV is ``std / mean(|loss|)`` (see :func:`signals.coefficient_of_variation`);
        fewer than ``monitoring_window`` finite values are never a plateau.
        """
        window = sig.finite(loss_history)[-self.thresholds.monitoring_window:]
        if window.size < self.thresholds.monitoring_window:
            return False
        return bool(sig.coefficient_of_variation(window) < self.thresholds.plateau_cv)

    # ---------------------------------------------------------------- analysis
    def analyze_convergence(self, metrics: Mapping[str, Any]) -> ConvergenceState:
        """Ingest one PPO update's metrics and return the resulting state.

        ``metrics`` keys: ``step`` (env timesteps), ``loss``, ``policy_loss``,
        ``value_loss``, ``entropy`` (nats), ``approx_kl``, ``clip_fraction``,
        ``grad_norm`` (max pre-clip norm), ``grad_norm_mean``, ``nonfinite``
        (count of non-finite events), ``lr`` and optionally ``train_return``,
        ``eval_score`` (only on updates with a new eval), ``param_norm``,
        ``logit_range``, ``dead_fraction``, ``memory_error``. Missing or
        non-finite values never raise. Relative tests (x running median) compare
        against the window before this update.
        """
        th = self.thresholds
        m = {k: sig.as_float(v) for k, v in metrics.items()}
        get = lambda key: m.get(key, math.nan)  # noqa: E731
        step = int(get("step")) if math.isfinite(get("step")) else self._step
        if self._updates and step > self._step:
            self._step_deltas.append(float(step - self._step))
            del self._step_deltas[: -th.monitoring_window]
        self._updates, self._step = self._updates + 1, step
        findings: Dict[str, Finding] = {}
        flags, risk_ratios = self._check_divergence(m, findings)
        grad, grad_limit = get("grad_norm"), self._grad_limit()
        vanishing = math.isfinite(grad) and grad < th.grad_vanish
        exploding = math.isfinite(grad) and grad > grad_limit
        if vanishing:
            findings["grad_vanishing"] = Finding("grad_vanishing", sig.clip01(1 - grad / th.grad_vanish),
                                                 f"vanishing gradients: norm {grad:.3g} < {th.grad_vanish:g}",
                                                 {"grad_norm": grad, "grad_vanish": th.grad_vanish})
        if exploding:
            findings["grad_exploding"] = Finding("grad_exploding", sig.clip01(grad / grad_limit - 1),
                                                 f"exploding gradients: norm {grad:.4g} > {grad_limit:.4g}",
                                                 {"grad_norm": grad, "grad_limit": grad_limit})
        self._ingest(m)

        losses = self._hist["loss"]
        cv, plateau = sig.coefficient_of_variation(losses), self.detect_plateau(losses)
        if plateau:
            findings["plateau"] = Finding("plateau", sig.clip01(1 - cv / th.plateau_cv),
                                          f"loss plateau: CV {cv:.3g} < {th.plateau_cv:g} over {len(losses)} updates",
                                          {"loss_cv": cv, "plateau_cv": th.plateau_cv})
        loss_trend, lr_mean = sig.slope(losses), sig.mean(self._hist["lr"])
        efficiency = -loss_trend / lr_mean if len(losses) >= 2 and lr_mean > 0 else 0.0
        max_entropy = self.max_entropy if self.max_entropy is not None else math.log(3)
        entropy, collapse_at = get("entropy"), th.entropy_collapse_fraction * max_entropy
        collapse = math.isfinite(entropy) and entropy < collapse_at
        if collapse:
            findings["entropy_collapse"] = Finding("entropy_collapse", sig.clip01(1 - entropy / collapse_at),
                                                   f"entropy collapse: {entropy:.4g} nats < {collapse_at:.4g}",
                                                   {"entropy": entropy, "entropy_floor": collapse_at})
        stagnant, overfit = self._check_evals(findings)
        extra: list = []
        if self.plasticity is not None:  # gated on persistence; answered only when not diverging
            findings.update(self.plasticity.findings(m, entropy_collapse=collapse, stagnation=stagnant))
            extra = list(PLASTICITY_ANSWERS.items())
        if get("memory_error") >= 1:
            findings["memory_error"] = Finding("memory_error", 1.0, "out of memory during the update (retried)",
                                               {"memory_error": 1.0})

        diverged = "divergence" in findings
        risk = 1.0 if diverged else min(0.99, max([0.0] + [sig.clip01(r) for r in risk_ratios]
                                                  + [sig.clip01(sig.ratio(grad, grad_limit))]))
        stability = (1.0 / (1.0 + cv) if math.isfinite(cv) else 1.0) * (1.0 - risk)
        grad_bad = vanishing or exploding or flags["grad_nonfinite"]
        early_ready = stagnant and self._evals.evals_since_best >= th.early_stop_patience
        actions, reasons, values, needed, unanswered = recommend(findings, self.intervention_strategies,
                                                                 th.intervention_threshold, early_ready, extra)
        state = ConvergenceState(
            step=step, loss_trend=loss_trend, reward_trend=sig.slope(self._hist["train_return"]),
            stability_score=sig.clip01(stability), plateau_detected=plateau, divergence_risk=risk,
            learning_efficiency=efficiency if math.isfinite(efficiency) else 0.0,
            exploration_rate=sig.clip01((self._last_entropy or 0.0) / max_entropy),
            gradient_health=0.0 if grad_bad else 1.0 - sig.clip01(get("dead_fraction")),
            intervention_needed=needed, recommended_actions=actions, generalization_gap=self._evals.gap,
            overfitting_detected=overfit, stagnation_detected=stagnant, entropy_collapse=collapse,
            grad_vanishing=vanishing, grad_exploding=exploding, divergence_detected=diverged,
            kl_spike=flags["kl_spike"], value_loss_explosion=flags["value_loss_explosion"],
            param_norm_alarm=flags["param_norm_alarm"], reasons=reasons, trigger_values=values,
            unanswered=unanswered,
        )
        self._ledger.track(self._updates, self._snapshot(), diverged)
        return state

    def _grad_limit(self) -> float:
        """Absolute limit, tightened to ``grad_explode_factor`` x running median once known."""
        th, median = self.thresholds, self._baseline("grad_norm")
        if math.isfinite(median) and median > 0:
            return min(th.grad_explode, th.grad_explode_factor * median)
        return th.grad_explode

    def _check_divergence(self, m: Mapping[str, float], findings: Dict[str, Finding]) -> tuple[dict, list[float]]:
        """Divergence tests against the window before this update (see :func:`check_divergence`)."""
        pn = m.get("param_norm", math.nan)
        if self._initial_param_norm is None and math.isfinite(pn) and pn > 0:
            self._initial_param_norm = pn
        flags, finding, ratios = check_divergence(m, self.thresholds, self._baseline("approx_kl"),
                                                  self._baseline("value_loss"), self._initial_param_norm)
        if finding is not None:
            findings["divergence"] = finding
        return flags, ratios

    def _ingest(self, m: Mapping[str, float]) -> None:
        """Append this update's finite values to the windows."""
        for key in ("loss", "value_loss", "entropy", "approx_kl", "grad_norm", "lr"):
            self._push(key, m.get(key, math.nan))
        train_return = m.get("train_return", math.nan)
        if math.isfinite(train_return):
            self._push("train_return", train_return)
            self._push("train_x", float(self._updates))
        if math.isfinite(m.get("entropy", math.nan)):
            self._last_entropy = m["entropy"]
        self._evals.add(self._updates, m.get("eval_score", math.nan), self._hist["train_return"],
                        self._hist["train_x"])

    def _check_evals(self, findings: Dict[str, Finding]) -> tuple[bool, bool]:
        """Stagnation and overfitting findings from the eval history."""
        th, ev = self.thresholds, self._evals
        stagnant = ev.stagnant(th.stagnation_patience)
        if stagnant:
            n = ev.evals_since_best
            findings["stagnation"] = Finding(
                "stagnation", sig.clip01(n / (2 * th.stagnation_patience)),
                f"stagnation: no new best eval_score for {n} evals (best {ev.best:.4g})",
                {"evals_since_best": float(n), "best_eval_score": float(ev.best), "eval_slope": ev.slope()})
        overfit = ev.overfit_count >= th.overfit_patience
        if overfit:
            findings["overfitting"] = Finding(
                "overfitting", sig.clip01(ev.overfit_count / (2 * th.overfit_patience)),
                f"overfitting: train return rising, eval falling for {ev.overfit_count} evals "
                f"(gap {ev.gap:.3g}/update)",
                {"generalization_gap": ev.gap, "eval_slope": ev.slope(), "evals": float(ev.overfit_count)})
        return stagnant, overfit

    # ---------------------------------------------------------------- decisions
    def decide(self, state: ConvergenceState) -> list[Intervention]:
        """The state's recommended actions that are not cooling down; records them as fired.

        Each unanswered signal (``state.unanswered``) also yields an ``Intervention`` with action
        ``"none"``, at most once per cooldown of that signal, so doing nothing is on record too.
        """
        fired = []
        for signal, reason in state.unanswered.items():
            key = f"{UNANSWERED}:{signal}"
            if not self._ledger.cooling_down(key, int(state.step), self.cooldown(signal)):
                self._ledger.last_fired[key] = int(state.step)
                fired.append(Intervention(step=int(state.step), action=UNANSWERED, reason=reason))
        for action in state.recommended_actions:
            if action not in self.intervention_strategies:
                continue
            if self._ledger.cooling_down(action, int(state.step), self.cooldown(action)):
                continue
            intervention = Intervention(step=int(state.step), action=action, reason=state.reasons.get(action, ""),
                                        values=_clean(state.trigger_values.get(action, {})))
            self._ledger.record(intervention, self._updates, self._snapshot())
            fired.append(intervention)
        return fired

    def trigger_intervention(self, convergence_state: ConvergenceState) -> List[str]:
        """Reference interface: the names of the actions :meth:`decide` fires."""
        return [i.action for i in self.decide(convergence_state) if i.action != UNANSWERED]

    @property
    def interventions(self) -> List[dict]:
        """Fired interventions: dicts with step, action, reason, values and outcome (None until judged)."""
        return self._ledger.records

    def pop_completed_outcomes(self) -> list[dict]:
        """Intervention records whose ``outcome`` was filled since the last call."""
        return self._ledger.pop_completed()

    def _snapshot(self) -> dict[str, float | None]:
        return {"loss": _nan_to_none(sig.mean(self._hist["loss"])), "entropy": self._last_entropy,
                "eval_score": _nan_to_none(self._evals.last_score), "step": self._step}

    # -------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (histories, counters, cooldown clocks, interventions)."""
        return {
            "hist": {k: list(v) for k, v in self._hist.items()}, "evals": self._evals.state_dict(),
            "updates": self._updates, "step": self._step, "step_deltas": list(self._step_deltas),
            "initial_param_norm": self._initial_param_norm, "last_entropy": self._last_entropy,
            "ledger": self._ledger.state_dict(),
            **({"plasticity": self.plasticity.state_dict()} if self.plasticity is not None else {}),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (thresholds and strategies stay the constructor's)."""
        self._reset_state()
        window = self.thresholds.monitoring_window
        self._hist = {k: [float(x) for x in state["hist"].get(k, [])][-window:] for k in _HISTORY}
        self._evals.load_state_dict(state["evals"])
        self._updates, self._step = int(state["updates"]), int(state["step"])
        self._step_deltas = [float(x) for x in state["step_deltas"]][-window:]
        self._initial_param_norm, self._last_entropy = state["initial_param_norm"], state["last_entropy"]
        self._ledger.load_state_dict(state["ledger"])
        if self.plasticity is not None:
            self.plasticity.load_state_dict(state.get("plasticity", {}))
