"""ConvergenceMonitor signals on hand-made series of PPO-update metrics."""
import math

import numpy as np
import pytest

from convopt_mlflow.components import ConvergenceMonitor, ConvergenceState, MonitorThresholds
from convopt_mlflow.errors import ConfigError

STEPS = 1000  # env steps per update in every series below


def feed(mon, n, start=0, **series):
    """Feed ``n`` updates; each keyword is a constant or a sequence of length n. Returns the states."""
    states = []
    for i in range(n):
        metrics = {"step": (start + i + 1) * STEPS}
        for key, value in series.items():
            v = value[i] if isinstance(value, (list, tuple, np.ndarray)) else value
            if v is not None:
                metrics[key] = v
        states.append(mon.analyze_convergence(metrics))
    return states


def alternating(center, delta, n):
    return [center + (delta if i % 2 else -delta) for i in range(n)]


def test_reference_fields_come_first_and_interface_exists():
    names = [f for f in ConvergenceState.__dataclass_fields__]
    assert names[:11] == ["step", "loss_trend", "reward_trend", "stability_score", "plateau_detected",
                          "divergence_risk", "learning_efficiency", "exploration_rate", "gradient_health",
                          "intervention_needed", "recommended_actions"]
    mon = ConvergenceMonitor({"monitoring_window": 4})
    state = feed(mon, 4, loss=1.0, entropy=1.0)[-1]
    assert isinstance(state, ConvergenceState)
    assert mon.detect_plateau([1.0] * 4) is True
    assert mon.trigger_intervention(state) == ["lr_restart"]
    assert mon.interventions[0]["action"] == "lr_restart" and mon.interventions[0]["outcome"] is None


def test_plateau_on_flat_noisy_loss():
    mon = ConvergenceMonitor({"monitoring_window": 10})
    states = feed(mon, 10, loss=alternating(1.0, 0.03, 10), entropy=1.0)
    assert not any(s.plateau_detected for s in states[:-1])  # window not yet full
    last = states[-1]
    assert last.plateau_detected
    assert last.trigger_values["lr_restart"]["loss_cv"] == pytest.approx(0.03)
    assert last.trigger_values["lr_restart"]["severity"] == pytest.approx(0.7)
    assert last.stability_score == pytest.approx(1 / 1.03)  # 1 / (1 + CV), no divergence risk
    assert last.recommended_actions == ["lr_restart"]
    assert "CV 0.03" in last.reasons["lr_restart"]


def test_no_plateau_on_a_steadily_falling_loss():
    mon = ConvergenceMonitor({"monitoring_window": 10})
    losses = list(np.linspace(1.0, 0.1, 30))
    states = feed(mon, 30, loss=losses, entropy=1.0, lr=1e-3)
    assert not any(s.plateau_detected for s in states)
    assert states[-1].loss_trend == pytest.approx(-0.9 / 29)
    assert states[-1].learning_efficiency == pytest.approx(0.9 / 29 / 1e-3)
    assert mon.detect_plateau(losses[:5]) is False  # shorter than the window


def test_plateau_near_zero_mean_loss():
    mon = ConvergenceMonitor({"monitoring_window": 10})
    assert mon.detect_plateau([0.0] * 10)  # exactly flat at zero
    assert mon.detect_plateau(alternating(5e-4, 1e-5, 10))  # CV 0.02
    assert not mon.detect_plateau(alternating(0.0, 1e-3, 10))  # all noise around zero: CV 1


def stagnation_monitor(**extra):
    th = {"monitoring_window": 5, "stagnation_patience": 3, "eval_window": 3, **extra}
    return ConvergenceMonitor(th, ["lr_restart", "early_stop"])


def test_stagnation_when_eval_stops_improving():
    mon = stagnation_monitor(early_stop_patience=4)
    scores = [1.0, 2.0, 3.0, 2.5, 2.4, 2.3, 2.2]
    states = feed(mon, 7, loss=alternating(1.0, 0.5, 7), entropy=1.0, eval_score=scores)
    assert [s.stagnation_detected for s in states] == [False] * 5 + [True, True]
    assert states[5].recommended_actions == ["lr_restart"]
    assert states[5].trigger_values["lr_restart"]["evals_since_best"] == 3
    assert states[6].recommended_actions == ["lr_restart", "early_stop"]


def test_no_stagnation_while_improving_or_recovering():
    mon = stagnation_monitor()
    rising = feed(mon, 8, loss=alternating(1.0, 0.5, 8), eval_score=[float(i) for i in range(8)])
    assert not any(s.stagnation_detected for s in rising)
    mon = stagnation_monitor()
    # no new best for 3 evals, but the recent trend is rising again
    recovering = feed(mon, 6, loss=alternating(1.0, 0.5, 6), eval_score=[1.0, 2.0, 3.0, 1.0, 1.5, 2.0])
    assert not recovering[-1].stagnation_detected


def test_evals_only_on_some_updates():
    mon = stagnation_monitor()
    scores = [1.0, None, 2.0, None, 1.5, None, 1.4, None, 1.3, None]
    states = feed(mon, 10, loss=alternating(1.0, 0.5, 10), eval_score=scores)
    assert [s.stagnation_detected for s in states] == [False] * 8 + [True, True]


def test_divergence_on_nan_without_crashing():
    mon = ConvergenceMonitor({"monitoring_window": 5})
    feed(mon, 5, loss=alternating(1.0, 0.5, 5), entropy=1.0)
    state = mon.analyze_convergence({"step": 6000, "loss": float("nan"), "entropy": float("inf"),
                                     "grad_norm": float("nan"), "nonfinite": 3})
    assert state.divergence_detected and state.divergence_risk == 1.0
    assert state.gradient_health == 0.0 and state.stability_score == 0.0
    assert state.recommended_actions == ["rollback"]
    assert state.trigger_values["rollback"]["nonfinite"] == 3
    no_rollback = ConvergenceMonitor({"monitoring_window": 5}, ["lr_reduce"])
    assert no_rollback.analyze_convergence({"step": 1, "loss": float("nan")}).recommended_actions == ["lr_reduce"]


def test_divergence_suppresses_actions_that_raise_lr_or_entropy():
    mon = ConvergenceMonitor({"monitoring_window": 3})
    feed(mon, 2, loss=1.0, entropy=0.001)
    state = mon.analyze_convergence({"step": 3000, "loss": 1.0, "entropy": 0.001, "nonfinite": 1})
    assert state.entropy_collapse and state.plateau_detected
    assert state.recommended_actions == ["rollback"]


def test_kl_spike():
    mon = ConvergenceMonitor({"monitoring_window": 10})
    states = feed(mon, 11, loss=alternating(1.0, 0.5, 11), approx_kl=[0.01] * 10 + [0.5])
    assert [s.kl_spike for s in states] == [False] * 10 + [True]
    assert states[-1].divergence_detected and states[-1].recommended_actions == ["rollback"]
    below = ConvergenceMonitor({"monitoring_window": 10})
    assert not feed(below, 11, approx_kl=[0.01] * 10 + [0.09])[-1].kl_spike  # 9x median, below 0.1
    first = ConvergenceMonitor({"monitoring_window": 10})  # no baseline yet: the absolute limit alone
    assert first.analyze_convergence({"step": 1, "approx_kl": 0.2}).kl_spike
    high = ConvergenceMonitor({"monitoring_window": 10})
    assert not feed(high, 11, approx_kl=[0.1] * 10 + [0.3])[-1].kl_spike  # above 0.1, only 3x median


def test_value_loss_explosion_is_relative_to_the_running_median():
    mon = ConvergenceMonitor({"monitoring_window": 10})
    states = feed(mon, 12, value_loss=[1.0] * 10 + [9.0, 11.0])
    assert [s.value_loss_explosion for s in states] == [False] * 11 + [True]
    assert states[-1].trigger_values["rollback"]["value_loss_median"] == pytest.approx(1.0)
    fresh = ConvergenceMonitor({"monitoring_window": 10})
    assert not any(s.value_loss_explosion for s in feed(fresh, 4, value_loss=[1.0, 1.0, 1.0, 50.0]))
    zeros = ConvergenceMonitor({"monitoring_window": 10})  # a zero median is no baseline
    assert not feed(zeros, 11, value_loss=[0.0] * 10 + [1e-6])[-1].value_loss_explosion


def test_param_norm_blow_up_fires_before_any_nan():
    mon = ConvergenceMonitor({"monitoring_window": 10})
    norms = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, float("nan")]
    losses = [1.0, 1.1, 1.3, 1.7, 2.5, 4.0, float("nan")]
    states = feed(mon, 7, loss=losses, param_norm=norms)
    first = next(i for i, s in enumerate(states) if s.divergence_detected)
    assert first == 4 and math.isfinite(losses[first])
    assert states[first].param_norm_alarm and states[first].recommended_actions == ["rollback"]
    assert states[3].divergence_risk == pytest.approx(0.8)  # 8 / (10 x 1)
    logits = ConvergenceMonitor()
    assert logits.analyze_convergence({"step": 1, "logit_range": 40.0}).param_norm_alarm


def overfit_monitor(strategies=("increase_regularization",)):
    th = {"monitoring_window": 10, "overfit_patience": 3, "eval_window": 3}
    return ConvergenceMonitor(th, list(strategies))


def test_overfitting_when_train_rises_and_validation_falls():
    mon = overfit_monitor()
    n = 8
    evals = [-0.1 * (i + 1) if i % 2 else None for i in range(n)]  # evals on updates 2, 4, 6, 8
    states = feed(mon, n, train_return=[float(i + 1) for i in range(n)], eval_score=evals)
    assert [s.overfitting_detected for s in states] == [False] * 7 + [True]
    assert states[-1].generalization_gap == pytest.approx(1.1)  # 1.0 - (-0.1) per update
    assert states[-1].recommended_actions == ["increase_regularization"]
    early = overfit_monitor(["early_stop"])
    assert feed(early, n, train_return=[float(i + 1) for i in range(n)], eval_score=evals)[-1] \
        .recommended_actions == ["early_stop"]


def test_no_overfitting_when_train_and_validation_rise_together():
    mon = overfit_monitor()
    n = 12
    evals = [0.5 * (i + 1) if i % 2 else None for i in range(n)]
    states = feed(mon, n, train_return=[float(i + 1) for i in range(n)], eval_score=evals)
    assert not any(s.overfitting_detected for s in states)
    assert states[-1].generalization_gap == pytest.approx(0.5)


def test_gradient_and_entropy_signals():
    mon = ConvergenceMonitor({"monitoring_window": 5})
    vanish = mon.analyze_convergence({"step": 1000, "grad_norm": 1e-8, "entropy": 0.01})
    assert vanish.grad_vanishing and vanish.gradient_health == 0.0
    assert vanish.entropy_collapse
    assert vanish.exploration_rate == pytest.approx(0.01 / math.log(3))
    assert vanish.trigger_values["increase_entropy"]["severity"] == pytest.approx(1 - 0.01 / (0.05 * math.log(3)))
    assert vanish.recommended_actions == ["increase_entropy", "lr_restart"]
    mon = ConvergenceMonitor({"monitoring_window": 5})
    states = feed(mon, 7, grad_norm=[1.0] * 5 + [25.0, 2e3], dead_fraction=0.25)
    assert states[0].gradient_health == 0.75
    assert [s.grad_exploding for s in states[5:]] == [True, True]  # 25 > 10 x median 1
    assert states[5].recommended_actions == ["lr_reduce"]  # severity 25 / 10 - 1 = 1.5 -> 1


def test_memory_error_asks_for_smaller_batches():
    mon = ConvergenceMonitor({"intervention_threshold": 1.0})  # OOM is not gated by severity
    state = mon.analyze_convergence({"step": 1000, "memory_error": 1, "loss": 1.0})
    assert state.recommended_actions == ["reduce_batch_size"] and state.intervention_needed
    assert not mon.analyze_convergence({"step": 2000, "memory_error": 0}).intervention_needed


def test_to_metrics_only_finite_floats_without_prefix():
    mon = ConvergenceMonitor({"monitoring_window": 3})
    bad = {"loss": float("nan"), "value_loss": float("inf"), "entropy": float("-inf"), "approx_kl": None,
           "grad_norm": "oops", "lr": float("nan"), "train_return": float("inf"), "eval_score": float("nan"),
           "param_norm": float("inf"), "nonfinite": float("nan")}
    for i in range(4):
        metrics = mon.analyze_convergence({"step": (i + 1) * 10, **bad}).to_metrics()
        assert metrics and all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
        assert not any("/" in k for k in metrics) and "step" not in metrics
    assert metrics["divergence_detected"] == 1.0 and metrics["plateau_detected"] == 0.0
    state = ConvergenceState(step=1, loss_trend=float("nan"), reward_trend=0.0, stability_score=1.0,
                             plateau_detected=False, divergence_risk=0.0, learning_efficiency=float("inf"),
                             exploration_rate=0.5, gradient_health=1.0, intervention_needed=False,
                             recommended_actions=[])
    out = state.to_metrics()
    assert "loss_trend" not in out and "learning_efficiency" not in out and out["exploration_rate"] == 0.5


def test_bad_configuration_is_a_config_error():
    with pytest.raises(ConfigError, match="rewind"):
        ConvergenceMonitor(None, ["lr_restart", "rewind"])
    with pytest.raises(ConfigError, match="plateau_threshold"):
        ConvergenceMonitor({"plateau_threshold": 0.1})
    with pytest.raises(ConfigError, match="monitoring_window"):
        MonitorThresholds(monitoring_window=0)
    with pytest.raises(ConfigError, match="kl_spike"):
        MonitorThresholds(kl_spike=-1.0)
    with pytest.raises(ConfigError, match="cooldowns"):
        ConvergenceMonitor(cooldowns={"teleport": 10})
    with pytest.raises(ConfigError, match="max_entropy"):
        ConvergenceMonitor(max_entropy=0.0)
