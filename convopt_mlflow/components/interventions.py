"""Which action answers which signal, and the bookkeeping of fired interventions.

Used by :class:`~convopt_mlflow.components.convergence.ConvergenceMonitor`;
every field kept is a JSON-serialisable primitive.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence

from convopt_mlflow.components.convergence_types import Intervention

#: Snapshot keys whose change is reported in an outcome.
OUTCOME_KEYS = ("loss", "entropy", "eval_score")
#: Signals acted on whatever their severity.
UNGATED = ("divergence", "memory_error")


@dataclass(frozen=True)
class Finding:
    """One detected signal: its name, severity in [0, 1], a sentence and the numbers behind it."""

    signal: str
    severity: float
    reason: str
    values: Dict[str, float] = field(default_factory=dict)


def recommend(
    findings: Mapping[str, Finding], allowed: Sequence[str], threshold: float, early_stop_ready: bool,
    extra: Sequence[tuple[str, Sequence[str]]] = (),
) -> tuple[list[str], dict[str, str], dict[str, dict[str, float]], bool, dict[str, str]]:
    """Map findings to the allowed actions.

    divergence -> rollback (else lr_reduce); exploding gradients -> lr_reduce;
    memory_error -> reduce_batch_size; and, only when not diverging,
    entropy_collapse -> increase_entropy; plateau -> lr_restart and
    advance_curriculum; grad_vanishing -> lr_restart; stagnation -> lr_restart,
    plus early_stop when ``early_stop_ready``; overfitting ->
    increase_regularization, or early_stop when only that is allowed; then, only
    when not diverging, each ``(signal, actions)`` of ``extra`` (the plasticity
    answers, see :mod:`convopt_mlflow.components.plasticity`).
    Findings other than divergence / memory_error need ``severity >= threshold``.

    Returns ``(actions, reasons, values, needed, unanswered)``: actions in order,
    action -> joined reasons, action -> merged trigger values (``severity`` is the
    max), whether any finding passed the gate (allowed or not), and signal -> why
    for each finding that passed the gate but none of whose answers is allowed.

    Examples:
        >>> found = {"overfitting": Finding("overfitting", 1.0, "overfitting: gap 1.1")}
        >>> actions, _, _, needed, unanswered = recommend(found, ["lr_restart"], 0.3, False)
        >>> actions, needed, unanswered["overfitting"]
        ([], True, 'overfitting: gap 1.1; no allowed action (increase_regularization, early_stop)')
    """
    answers: list[tuple[str, list[str]]] = []  # (signal, the actions that answer it, in order of preference)
    if "divergence" in findings:
        answers.append(("divergence", ["rollback" if "rollback" in allowed else "lr_reduce"]))
    else:
        answers.append(("grad_exploding", ["lr_reduce"]))
    answers.append(("memory_error", ["reduce_batch_size"]))
    if "divergence" not in findings:  # never raise the LR or the entropy while diverging
        answers += [("entropy_collapse", ["increase_entropy"]), ("plateau", ["lr_restart", "advance_curriculum"]),
                    ("grad_vanishing", ["lr_restart"]),
                    ("stagnation", ["lr_restart"] + ["early_stop"] * early_stop_ready)]
        overfit = ["increase_regularization"] if "increase_regularization" in allowed else ["early_stop"]
        answers.append(("overfitting", overfit))
        answers += [(signal, list(actions)) for signal, actions in extra]
    needed = False
    reasons: dict[str, str] = {}
    values: dict[str, dict[str, float]] = {}
    unanswered: dict[str, str] = {}
    for signal, candidates in answers:
        found = findings.get(signal)
        if found is None or (signal not in UNGATED and found.severity < threshold):
            continue
        needed = True
        chosen = [a for a in candidates if a in allowed]
        if not chosen:
            wanted = ["rollback", "lr_reduce"] if signal == "divergence" else (
                ["increase_regularization", "early_stop"] if signal == "overfitting" else candidates)
            unanswered[signal] = f"{found.reason}; no allowed action ({', '.join(wanted)})"
        for action in chosen:
            reasons[action] = f"{reasons[action]}; {found.reason}" if action in reasons else found.reason
            merged = values.setdefault(action, {})
            for key, value in {**found.values, "severity": found.severity}.items():
                if math.isfinite(value):
                    merged[key] = max(value, merged.get(key, value)) if key == "severity" else float(value)
    return list(reasons), reasons, values, needed, unanswered


class InterventionLedger:
    """Cooldown clocks and records of fired interventions, with outcomes judged later.

    A record is ``{"step", "action", "reason", "values", "outcome"}``; ``outcome``
    stays None until ``window`` updates after the intervention, then becomes
    ``{"updates", "steps", "loss_change", "entropy_change", "eval_score_change",
    "divergence_recurred"}`` where each change is (mean loss over the window /
    latest entropy / latest eval_score) now minus at firing time, or None when
    either side is unknown, and ``divergence_recurred`` says whether any later
    update diverged.

    Examples:
        >>> ledger = InterventionLedger(window=2)
        >>> ledger.cooling_down("lr_restart", step=100, cooldown=50)
        False
        >>> ledger.record(Intervention(100, "lr_restart", "plateau"), update=1,
        ...               snapshot={"loss": 1.0, "entropy": None, "eval_score": None, "step": 100})
        >>> ledger.cooling_down("lr_restart", step=149, cooldown=50)
        True
    """

    def __init__(self, window: int):
        self.window = int(window)
        self.records: List[dict] = []
        self.last_fired: Dict[str, int] = {}
        self.pending: List[dict] = []
        self.completed: List[int] = []  # indices into records, not yet popped

    def cooling_down(self, action: str, step: int, cooldown: int) -> bool:
        """True while ``step`` is less than ``cooldown`` env steps after ``action`` last fired."""
        last = self.last_fired.get(action)
        return last is not None and step < last + cooldown

    def record(self, intervention: Intervention, update: int, snapshot: Mapping[str, Any]) -> None:
        """Store a fired intervention, start its cooldown and its outcome clock."""
        self.last_fired[intervention.action] = int(intervention.step)
        self.records.append({**intervention.to_dict(), "outcome": None})
        self.pending.append({"index": len(self.records) - 1, "update": int(update), "before": dict(snapshot),
                             "diverged": False})

    def track(self, update: int, snapshot: Mapping[str, Any], diverged: bool) -> None:
        """Called after each analysed update: fill outcomes that are ``window`` updates old."""
        still = []
        for item in self.pending:
            if update > item["update"]:
                item["diverged"] = bool(item["diverged"] or diverged)
            if update - item["update"] < self.window:
                still.append(item)
                continue
            before = item["before"]
            change = {k: (snapshot[k] - before[k] if snapshot.get(k) is not None and before.get(k) is not None
                          else None) for k in OUTCOME_KEYS}
            self.records[item["index"]]["outcome"] = {
                "updates": update - item["update"], "steps": int(snapshot["step"]) - int(before["step"]),
                "loss_change": change["loss"], "entropy_change": change["entropy"],
                "eval_score_change": change["eval_score"], "divergence_recurred": item["diverged"],
            }
            self.completed.append(item["index"])
        self.pending = still

    def pop_completed(self) -> list[dict]:
        """Records whose outcome was filled since the last call."""
        done, self.completed = self.completed, []
        return [self.records[i] for i in done]

    def state_dict(self) -> dict[str, Any]:
        return {"records": [dict(r) for r in self.records], "last_fired": dict(self.last_fired),
                "pending": [dict(p) for p in self.pending], "completed": list(self.completed)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.records = [dict(r) for r in state["records"]]
        self.last_fired = {str(k): int(v) for k, v in state["last_fired"].items()}
        self.pending = [dict(p) for p in state["pending"]]
        self.completed = [int(i) for i in state["completed"]]
