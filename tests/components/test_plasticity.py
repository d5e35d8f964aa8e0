"""The plasticity decision: which signal ``shrink_perturb`` / ``reset_head`` answer, gating, cooldown, state."""
import json

import pytest

from convopt_mlflow.components import ConvergenceMonitor
from convopt_mlflow.components.interventions import Finding, recommend
from convopt_mlflow.components.plasticity import PlasticityGate
from convopt_mlflow.errors import ConfigError

STEPS = 1000
PLASTIC = ("lr_restart", "increase_entropy", "rollback", "shrink_perturb", "reset_head")


def healthy(step: int, **extra) -> dict:
    """An update with a varying loss (no plateau), healthy entropy and gradients."""
    return {"step": step, "loss": 1.0 + 0.5 * (step // STEPS % 2), "value_loss": 1.0, "entropy": 1.0,
            "approx_kl": 0.01, "grad_norm": 0.5, "lr": 1e-4, "nonfinite": 0.0, **extra}


def feed(monitor, updates, **extra):
    """``updates`` analysed updates with ``extra`` metrics; returns the actions fired at each."""
    fired = []
    for u in range(1, updates + 1):
        state = monitor.analyze_convergence(healthy(u * STEPS, **extra))
        fired.append([d.action for d in monitor.decide(state)])
    return fired


def test_gate_reports_a_signal_only_after_it_persisted_patience_updates():
    gate = PlasticityGate(patience=3, dead_fraction=0.5, saturated_logit_range=10.0)
    seen = [sorted(gate.findings({"dead_fraction": d, "logit_range": 25.0}, entropy_collapse=False, stagnation=False))
            for d in (0.6, 0.7, 0.4, 0.6, 0.6, 0.9)]
    # dead units: present, present, ABSENT (reset), present x3 -> reported at the 3rd in a row only
    assert [("dead_units" in s) for s in seen] == [False, False, False, False, False, True]
    assert [("saturation" in s) for s in seen] == [False, False, True, True, True, True]
    found = gate.findings({"dead_fraction": 0.9, "logit_range": 25.0}, entropy_collapse=True, stagnation=True)
    assert found["dead_units"].severity == 0.9 and found["dead_units"].values["updates_present"] == 4.0
    assert found["saturation"].severity == 1.0  # 25 / (2 x 10), clipped at 1
    assert "persistent_entropy_collapse" not in found  # only 1 update so far
    half = PlasticityGate(patience=1, saturated_logit_range=20.0).findings(
        {"logit_range": 30.0, "dead_fraction": float("nan")}, entropy_collapse=False, stagnation=False)
    assert half["saturation"].severity == pytest.approx(0.75) and "dead_units" not in half


def test_gate_rejects_bad_settings():
    for kwargs in ({"patience": 0}, {"patience": 1.5}, {"dead_fraction": 0.0}, {"saturated_logit_range": -1.0}):
        with pytest.raises(ConfigError):
            PlasticityGate(**kwargs)


def test_recommend_maps_signals_to_plasticity_actions_and_never_while_diverging():
    extra = [("dead_units", ["shrink_perturb"]), ("saturation", ["reset_head"])]
    found = {"dead_units": Finding("dead_units", 0.8, "dead"), "saturation": Finding("saturation", 0.2, "sat")}
    actions, reasons, values, needed, unanswered = recommend(found, PLASTIC, 0.3, False, extra)
    assert actions == ["shrink_perturb"] and needed  # saturation below the severity gate
    assert values["shrink_perturb"]["severity"] == 0.8 and reasons["shrink_perturb"] == "dead"
    _, _, _, _, unanswered = recommend(found, ["lr_restart"], 0.3, False, extra)
    assert unanswered["dead_units"] == "dead; no allowed action (shrink_perturb)"
    found["divergence"] = Finding("divergence", 1.0, "nan")
    actions, *_ = recommend(found, PLASTIC, 0.3, False, extra)
    assert actions == ["rollback"]


def test_monitor_answers_dead_units_with_shrink_perturb_after_patience_then_cools_down():
    gate = PlasticityGate(patience=3)
    mon = ConvergenceMonitor({"monitoring_window": 50}, PLASTIC, cooldowns={"shrink_perturb": 4 * STEPS},
                             plasticity=gate)
    fired = feed(mon, 10, dead_fraction=0.7)
    assert fired == [[], [], ["shrink_perturb"], [], [], [], ["shrink_perturb"], [], [], []]
    (first, second) = [r for r in mon.interventions if r["action"] == "shrink_perturb"]
    assert first["step"] == 3 * STEPS and first["values"]["dead_fraction"] == 0.7
    assert first["reason"].startswith("dead/saturated units: 70% of hidden units >= 50% for 3 updates")


def test_monitor_answers_saturation_and_persistent_entropy_collapse_with_reset_head():
    mon = ConvergenceMonitor({"monitoring_window": 50}, PLASTIC, cooldowns={"reset_head": 10**6,
                             "increase_entropy": 10**6}, plasticity=PlasticityGate(patience=2))
    # entropy collapsed from the first update: increase_entropy answers at once, reset_head once it persisted
    fired = feed(mon, 3, entropy=0.001)
    assert fired == [["increase_entropy"], ["reset_head"], []]
    saturated = ConvergenceMonitor({"monitoring_window": 50}, PLASTIC, plasticity=PlasticityGate(patience=2))
    assert feed(saturated, 2, logit_range=25.0) == [[], ["reset_head"]]


def test_plasticity_is_off_unless_allowed():
    mon = ConvergenceMonitor({"monitoring_window": 50}, ("lr_restart", "increase_entropy"))
    assert mon.plasticity is None
    assert feed(mon, 8, dead_fraction=0.9, logit_range=25.0) == [[]] * 8
    assert ConvergenceMonitor(intervention_strategies=("reset_head",)).plasticity is not None  # default gate


def test_streaks_and_cooldowns_survive_a_state_dict_round_trip():
    def make():
        return ConvergenceMonitor({"monitoring_window": 50}, PLASTIC, cooldowns={"shrink_perturb": 4 * STEPS},
                                  plasticity=PlasticityGate(patience=3))

    straight, first = make(), make()
    expected = feed(straight, 9, dead_fraction=0.7)
    before = feed(first, 4, dead_fraction=0.7)
    resumed = make()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert resumed.plasticity.streaks["dead_units"] == 4
    after = []
    for u in range(5, 10):
        state = resumed.analyze_convergence(healthy(u * STEPS, dead_fraction=0.7))
        after.append([d.action for d in resumed.decide(state)])
    assert before + after == expected == [[], [], ["shrink_perturb"], [], [], [], ["shrink_perturb"], [], []]
    old = make()
    legacy = first.state_dict()
    del legacy["plasticity"]  # a checkpoint from before plasticity existed
    old.load_state_dict(legacy)
    assert old.plasticity.streaks["dead_units"] == 0
