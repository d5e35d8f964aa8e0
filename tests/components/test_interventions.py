"""Monitor decisions: severity gating, cooldowns, outcome bookkeeping and checkpointing."""
import json

import pytest

from convopt_mlflow.components import ConvergenceMonitor

STEPS = 1000


def run(mon, losses, start=0, decide=True, **const):
    """Analyse one update per loss; optionally decide. Returns (steps where something fired, states)."""
    fired, states = [], []
    for i, loss in enumerate(losses):
        step = (start + i + 1) * STEPS
        state = mon.analyze_convergence({"step": step, "loss": loss, **const})
        states.append(state)
        if decide and mon.trigger_intervention(state):
            fired.append(step)
    return fired, states


def test_explicit_cooldown_suppresses_repeats_then_allows_again():
    mon = ConvergenceMonitor({"monitoring_window": 5}, cooldowns={"lr_restart": 5000})
    fired, states = run(mon, [1.0] * 12)
    assert all(s.recommended_actions == ["lr_restart"] for s in states[4:])
    assert fired == [5000, 10000]  # 6000..9000 are within 5000 steps of 5000
    assert [i["step"] for i in mon.interventions] == [5000, 10000]


def test_default_cooldown_is_three_windows_of_updates():
    mon = ConvergenceMonitor({"monitoring_window": 5})
    fired, _ = run(mon, [1.0] * 25)
    assert mon.steps_per_update() == 1000
    assert mon.cooldown("lr_restart") == 15000
    assert fired == [5000, 20000]


def test_cooldowns_are_per_action():
    mon = ConvergenceMonitor({"monitoring_window": 3}, cooldowns={"lr_restart": 10**6, "increase_entropy": 0})
    fired, _ = run(mon, [1.0] * 5, entropy=0.001)
    actions = [i["action"] for i in mon.interventions]
    assert actions.count("lr_restart") == 1 and actions.count("increase_entropy") == 5


def test_severity_gate():
    losses = [1.0 + (0.08 if i % 2 else -0.08) for i in range(10)]  # CV 0.08: severity 0.2
    gated = ConvergenceMonitor({"monitoring_window": 10})
    state = run(gated, losses, decide=False)[1][-1]
    assert state.plateau_detected and not state.intervention_needed
    assert state.recommended_actions == [] and gated.decide(state) == []
    open_gate = ConvergenceMonitor({"monitoring_window": 10, "intervention_threshold": 0.1})
    state = run(open_gate, losses, decide=False)[1][-1]
    assert state.intervention_needed and state.recommended_actions == ["lr_restart"]
    assert state.trigger_values["lr_restart"]["severity"] == pytest.approx(0.2)
    strict = ConvergenceMonitor({"monitoring_window": 10, "intervention_threshold": 1.0})
    state = strict.analyze_convergence({"step": 1, "loss": float("nan")})
    assert state.recommended_actions == ["rollback"]  # divergence is never gated


def test_signals_outside_the_strategies_are_not_recommended():
    mon = ConvergenceMonitor({"monitoring_window": 3}, ["rollback"])
    state = run(mon, [1.0] * 3, decide=False)[1][-1]
    assert state.plateau_detected and state.intervention_needed and state.recommended_actions == []


def test_curriculum_is_recommended_only_when_enabled():
    mon = ConvergenceMonitor({"monitoring_window": 3}, ["lr_restart", "advance_curriculum"])
    state = run(mon, [1.0] * 3, decide=False)[1][-1]
    assert state.recommended_actions == ["lr_restart", "advance_curriculum"]
    assert [i.action for i in mon.decide(state)] == ["lr_restart", "advance_curriculum"]


def test_outcome_is_filled_one_window_after_the_intervention():
    mon = ConvergenceMonitor({"monitoring_window": 5})
    run(mon, [1.0] * 5, entropy=1.0)  # fires lr_restart at update 5
    assert mon.pop_completed_outcomes() == []
    run(mon, [0.5] * 4, start=5, decide=False, entropy=0.8)
    assert mon.interventions[0]["outcome"] is None and mon.pop_completed_outcomes() == []
    run(mon, [0.5], start=9, decide=False, entropy=0.8)
    done = mon.pop_completed_outcomes()
    assert len(done) == 1 and done[0] is mon.interventions[0]
    outcome = done[0]["outcome"]
    assert outcome["updates"] == 5 and outcome["steps"] == 5000
    assert outcome["loss_change"] == pytest.approx(-0.5)
    assert outcome["entropy_change"] == pytest.approx(-0.2)
    assert outcome["eval_score_change"] is None
    assert outcome["divergence_recurred"] is False
    assert mon.pop_completed_outcomes() == []


def test_outcome_records_recurring_divergence():
    mon = ConvergenceMonitor({"monitoring_window": 3}, cooldowns={"rollback": 10**9})
    run(mon, [float("nan")])
    assert [i["action"] for i in mon.interventions] == ["rollback"]
    run(mon, [1.0, float("nan"), 1.0], start=1)
    (done,) = mon.pop_completed_outcomes()
    assert done["outcome"]["divergence_recurred"] is True and done["outcome"]["loss_change"] is None


def test_state_dict_is_json_and_restores_behaviour():
    th = {"monitoring_window": 5, "stagnation_patience": 2, "eval_window": 3}
    original = ConvergenceMonitor(th, cooldowns={"lr_restart": 4000})
    for i in range(8):
        state = original.analyze_convergence({"step": (i + 1) * STEPS, "loss": 1.0, "entropy": 0.5,
                                              "approx_kl": 0.01, "grad_norm": 0.5, "train_return": float(i),
                                              "eval_score": [1.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1][i]})
        original.trigger_intervention(state)
    saved = json.loads(json.dumps(original.state_dict(), allow_nan=False))
    restored = ConvergenceMonitor(th, cooldowns={"lr_restart": 4000})
    restored.load_state_dict(saved)
    assert restored.interventions == original.interventions
    for i in range(8, 14):
        metrics = {"step": (i + 1) * STEPS, "loss": 1.0, "entropy": 0.5, "approx_kl": 0.01, "grad_norm": 0.5,
                   "train_return": float(i), "eval_score": -0.1 * i}
        a, b = original.analyze_convergence(metrics), restored.analyze_convergence(metrics)
        assert a == b
        assert original.trigger_intervention(a) == restored.trigger_intervention(b)
    assert original.pop_completed_outcomes() == restored.pop_completed_outcomes() != []
    assert original.state_dict() == restored.state_dict()
