"""Self-healing end to end: failing components, scripted interventions, out of memory, early stop.

Real SB3 training at the tiny size of ``conftest.TINY_RUN`` (update k ends at env
step 256 k, checkpoints every 512 steps, evals every 1,024), a real sqlite MLflow
store read back with MlflowClient. Faults come from injected component subclasses
and one monkeypatched method (the rollout buffer's ``get`` raising MemoryError once).
"""
from __future__ import annotations

import math

import pytest
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback

from convopt_mlflow.components import AdvancedLRScheduler, ConvergenceMonitor
from convopt_mlflow.config import build_config
from convopt_mlflow.training.coordinator import build_components, train

from .conftest import OptimizerLR, ScriptedMonitor, TINY_RUN


class SchedulerFailingAfter(AdvancedLRScheduler):
    """A constant-LR scheduler whose ``get_lr`` raises for every step after ``fail_after``."""

    def __init__(self, *args, fail_after: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.fail_after = fail_after

    def get_lr(self, step, metrics=None):
        if step > self.fail_after:
            raise RuntimeError(f"scheduler exploded at step {step}")
        return super().get_lr(step, metrics)


class MonitorFailingAfter(ConvergenceMonitor):
    """A monitor whose ``analyze_convergence`` raises from its ``fail_at``-th call on."""

    def __init__(self, *args, fail_at: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.fail_at, self.calls = fail_at, 0

    def analyze_convergence(self, metrics):
        self.calls += 1
        if self.calls >= self.fail_at:
            raise ZeroDivisionError("monitor broke on purpose")
        return super().analyze_convergence(metrics)


class OptimizerWatch(BaseCallback):
    """Records the optimizer's weight decay at every update boundary (after the coordinator's callbacks)."""

    def __init__(self):
        super().__init__()
        self.weight_decay: dict[int, float] = {}

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        groups = self.model.policy.optimizer.param_groups
        self.weight_decay[self.num_timesteps] = groups[0]["weight_decay"]


def rows(tracked, run_id: str, action: str) -> list[dict]:
    return [r for r in tracked.interventions(run_id) if r["action"] == action]


def scripted_components(cfg, script: dict[int, str]):
    comps = build_components(cfg)
    comps.monitor = ScriptedMonitor(script, comps.monitor.thresholds, comps.monitor.intervention_strategies)
    return comps


# ------------------------------------------------------------------- component isolation
def test_a_failing_scheduler_is_disabled_and_the_lr_falls_back_to_the_constant_base(tracked):
    cfg = tracked.config()
    comps = build_components(cfg)
    # a constant 5e-5 until step 1024, so the fallback (cfg.base_learning_rate = 1e-4) is visible
    comps.scheduler = SchedulerFailingAfter(5e-5, "constant", min_lr=1e-7, max_lr=3e-4, total_steps=2048,
                                            fail_after=1024)
    assert cfg.base_learning_rate == 1e-4
    used = OptimizerLR()
    result = train(cfg, preset="everything", components=comps, extra_callbacks=[used],
                   checkpoint_root=tracked.checkpoint_root("bad_sched"))
    run = result.run_id
    assert result.status == "FINISHED" and tracked.status(run) == "FINISHED"
    assert tracked.tags(run)["convopt.degraded"] == "scheduler"
    lr = tracked.history(run, "lr")
    assert lr == {**{s: 5e-5 for s in (256, 512, 768, 1024)}, **{s: 1e-4 for s in (1280, 1536, 1792, 2048)}}
    assert used.seen == lr  # what the optimizer's param_groups held after each update
    assert tracked.history(run, "intervention/disable_component") == {1280: 1.0}
    (row,) = rows(tracked, run, "disable_component")
    assert row["step"] == 1280
    assert row["reason"].startswith("scheduler raised RuntimeError: scheduler exploded at step 1280")


def test_a_failing_monitor_is_disabled_and_the_run_finishes(tracked):
    cfg = tracked.config()
    comps = build_components(cfg)
    comps.monitor = MonitorFailingAfter(comps.monitor.thresholds, comps.monitor.intervention_strategies, fail_at=3)
    result = train(cfg, preset="everything", components=comps, checkpoint_root=tracked.checkpoint_root("bad_monitor"))
    run = result.run_id
    assert result.status == "FINISHED" and tracked.status(run) == "FINISHED"
    assert tracked.tags(run)["convopt.degraded"] == "monitor"
    (row,) = rows(tracked, run, "disable_component")
    assert row["step"] == 768 and "monitor raised ZeroDivisionError: monitor broke on purpose" in row["reason"]
    # the monitor's verdicts stop with it; the cheap watch numbers and the run go on
    assert sorted(tracked.history(run, "convergence/stability_score")) == [256, 512]
    assert max(tracked.history(run, "convergence/param_norm")) == 2048
    assert "backtest/test/sharpe" in tracked.client.get_run(run).data.metrics


# ------------------------------------------------------------------ scripted interventions
def test_increase_regularization_and_entropy_change_what_ppo_trains_with(tracked):
    cfg = tracked.config(ppo__ent_coef="0")  # full's own entropy bonus off: the schedule starts from 0
    # 768: raise regularization (after the 512 checkpoint was saved with weight decay 0);
    # 1024: roll back to that checkpoint (regularization must survive it); 1280: raise entropy
    comps = scripted_components(cfg, {768: "increase_regularization", 1024: "rollback", 1280: "increase_entropy"})
    watch = OptimizerWatch()
    result = train(cfg, preset="everything", components=comps, extra_callbacks=[watch],
                   checkpoint_root=tracked.checkpoint_root("regularize"))
    run = result.run_id
    assert result.status == "FINISHED"
    assert (cfg.ppo.ent_coef, cfg.ppo.weight_decay) == (0.0, 0.0)
    # RegularizationSchedule: 0 rises to its floor (ent 1e-3, decay 1e-5), then doubles
    ent = tracked.history(run, "regularization/ent_coef")
    assert ent == {256: 0.0, 512: 0.0, 768: 1e-3, 1024: 1e-3, 1280: 2e-3, 1536: 2e-3, 1792: 2e-3, 2048: 2e-3}
    assert watch.weight_decay == {0: 0.0, 256: 0.0, 512: 0.0, 768: 1e-5, 1024: 1e-5, 1280: 1e-5, 1536: 1e-5,
                                  1792: 1e-5}
    assert tracked.history(run, "intervention/increase_regularization") == {768: 1.0}
    assert tracked.history(run, "intervention/increase_entropy") == {1280: 1.0}
    (reg,) = rows(tracked, run, "increase_regularization")
    assert reg["applied"] == "ent_coef -> 0.001, weight_decay -> 1e-05"
    (entropy,) = rows(tracked, run, "increase_entropy")
    assert entropy["applied"] == "ent_coef -> 0.002" and entropy["reason"] == "scripted increase_entropy"
    (rollback,) = rows(tracked, run, "rollback")
    assert rollback["applied"].startswith("restored checkpoint of step 512")


def test_lr_restart_goes_through_the_schedulers_cycle_gate(tracked):
    cfg = tracked.config(restart_period="2000")  # SGDR cycles of 2,000 steps; min_cycle_fraction 0.25
    comps = scripted_components(cfg, {256: "lr_restart", 1024: "lr_restart"})
    result = train(cfg, preset="everything", components=comps, checkpoint_root=tracked.checkpoint_root("restart_gate"))
    run = result.run_id
    assert result.status == "FINISHED"
    early, late = rows(tracked, run, "lr_restart")
    assert early["applied"] == "skipped: only 13% of the current LR cycle has run (min_cycle_fraction 0.25)"
    assert late["applied"] == "new LR cycle from step 1024"
    lr = tracked.history(run, "lr")
    assert lr[512] < lr[256] and lr[1280] > lr[1024]  # the skipped restart left the decay alone; the other restarted it


def test_out_of_memory_halves_the_batch_and_is_logged(tracked, monkeypatch):
    original = RolloutBuffer.get
    calls = {"n": 0}

    def get_failing_once(self, batch_size=None):
        calls["n"] += 1
        if calls["n"] == 5:  # one call per epoch (n_epochs=2): the update at step 768
            raise MemoryError("injected: cannot allocate the minibatch")
        return original(self, batch_size)

    monkeypatch.setattr(RolloutBuffer, "get", get_failing_once)
    result = train(tracked.config(), preset="everything", checkpoint_root=tracked.checkpoint_root("oom"))
    run = result.run_id
    assert result.status == "FINISHED" and tracked.status(run) == "FINISHED"
    assert tracked.history(run, "train/batch_size") == {256: 64.0, 512: 64.0, **{s: 32.0 for s in range(768, 2049, 256)}}
    assert tracked.history(run, "intervention/reduce_batch_size") == {768: 1.0}
    (row,) = rows(tracked, run, "reduce_batch_size")
    assert row["applied"] == "batch_size now 32" and "out of memory" in row["reason"]


# ------------------------------------------------------------------------ overfitting
def feed_overfitting(monitor: ConvergenceMonitor, updates: int = 5):
    """Train return rising by 1 per update while the eval score falls by 0.1: the gap is 1.1 per update."""
    states, decisions = [], []
    for u in range(1, updates + 1):
        metrics = {"step": 256 * u, "loss": 1.0 + u % 2, "value_loss": 1.0, "entropy": 1.0, "approx_kl": 0.01,
                   "grad_norm": 0.5, "lr": 1e-4, "nonfinite": 0.0, "train_return": float(u),
                   "eval_score": 1.0 - 0.1 * u}
        states.append(monitor.analyze_convergence(metrics))
        decisions.append([d.action for d in monitor.decide(states[-1])])
    return states, decisions


def test_overfitting_is_answered_with_regularization_or_early_stop_as_configured(tracked):
    monitor = build_components(tracked.config()).monitor
    states, decisions = feed_overfitting(monitor)
    # evals 2, 3 and 4 widen the gap: overfitting from the 4th update (overfit_patience 3)
    assert [s.overfitting_detected for s in states] == [False, False, False, True, True]
    assert states[3].generalization_gap == pytest.approx(1.1)
    assert decisions[:4] == [[], [], [], ["increase_regularization"]]
    assert "overfitting" in states[3].reasons["increase_regularization"]

    stopper = build_components(tracked.config(monitor__overfit_response="early_stop")).monitor
    assert "increase_regularization" not in stopper.intervention_strategies
    states, decisions = feed_overfitting(stopper)
    assert states[3].overfitting_detected
    assert decisions[:4] == [[], [], [], ["early_stop"]]


def test_overfitting_without_an_allowed_answer_is_logged_as_unanswered(tracked):
    cfg = build_config("lr", TINY_RUN)  # default interventions: neither increase_regularization nor early_stop
    monitor = build_components(cfg).monitor
    assert not {"increase_regularization", "early_stop"} & set(monitor.intervention_strategies)
    states, decisions = feed_overfitting(monitor)
    assert [s.overfitting_detected for s in states] == [False, False, False, True, True]
    assert states[3].recommended_actions == [] and states[3].intervention_needed
    assert states[3].unanswered["overfitting"].endswith("no allowed action (increase_regularization, early_stop)")
    # one "none" decision when the signal appears, then not again within the cooldown
    assert decisions == [[], [], [], ["none"], []]


class UnansweredAt(ConvergenceMonitor):
    """Analyses for real; at ``step`` the state also says overfitting went unanswered."""

    def __init__(self, step: int, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.step = step

    def analyze_convergence(self, metrics):
        state = super().analyze_convergence(metrics)
        if state.step == self.step:
            state.unanswered = {"overfitting": "overfitting: scripted; no allowed action (increase_regularization, "
                                               "early_stop)"}
        return state


def test_an_unanswered_signal_is_a_metric_and_an_interventions_row(tracked):
    cfg = build_config("lr", TINY_RUN)
    comps = build_components(cfg)
    comps.monitor = UnansweredAt(768, comps.monitor.thresholds, comps.monitor.intervention_strategies)
    result = train(cfg, preset="lr", components=comps, checkpoint_root=tracked.checkpoint_root("unanswered"))
    run = result.run_id
    assert result.status == "FINISHED"
    assert tracked.history(run, "convergence/unanswered_overfitting") == {768: 1.0}
    (row,) = rows(tracked, run, "none")
    assert row["step"] == 768 and row["reason"].startswith("overfitting: scripted")
    assert row["applied"] == "nothing: no allowed action answers it"


# ---------------------------------------------------------------------------- early stop
def test_early_stop_ends_the_run_early_with_backtest_and_model(tracked):
    cfg = tracked.config()
    comps = scripted_components(cfg, {1280: "early_stop"})
    result = train(cfg, preset="everything", components=comps, checkpoint_root=tracked.checkpoint_root("early"))
    run = result.run_id
    assert (result.status, result.exit_code) == ("FINISHED", 0) and tracked.status(run) == "FINISHED"
    assert tracked.tags(run)["convopt.stop_reason"] == "early_stop at step 1280" == result.reason
    assert max(tracked.history(run, "train/n_updates")) == 1280 < cfg.run.total_timesteps
    (row,) = rows(tracked, run, "early_stop")
    assert row["applied"] == "restored best-by-eval checkpoint of step 1024; stopping"
    metrics = tracked.client.get_run(run).data.metrics
    assert math.isfinite(metrics["backtest/val/sharpe"]) and math.isfinite(metrics["backtest/test/sharpe"])
    (model,) = tracked.client.search_logged_models([tracked.client.get_run(run).info.experiment_id],
                                                   filter_string=f"source_run_id = '{run}'")
    assert model.name == "model"
