"""The meta controller in real training: its multipliers reach the optimizer's LR, ``ent_coef`` and the clip
range through the schedule objects, survive a rollback and a resume, and a failing controller is disabled.

Real SB3 training at the tiny size of ``conftest.TINY_RUN`` (update k ends at env step 256 k) with an
adaptation and a validation eval every 512 steps, on a real sqlite MLflow store read back with MlflowClient.
"""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from stable_baselines3.common.callbacks import BaseCallback

from convopt_mlflow.components.changepoint import REGIMES
from convopt_mlflow.components.meta import ADJUSTMENTS, Adaptation, MetaLearningController
from convopt_mlflow.config import build_config
from convopt_mlflow.training.coordinator import build_components, train

from .conftest import OptimizerLR, ScriptedMonitor, TINY_RUN

#: adaptations at 512, 1024, 1536, 2048; the constant LR makes every product exact
META_RUN = {**TINY_RUN, "adaptation_frequency": "512", "run.eval_freq": "512", "lr_schedule_type": "constant",
            "meta_stratified": "false"}  # the regime-around-the-bars mode; stratified: test_meta_strata.py
BASE_LR, CLIP, ENT = 1e-4, 0.2, 0.005


def meta_config(**overrides: str):
    return build_config("meta", {**META_RUN, **{k.replace("__", "."): str(v) for k, v in overrides.items()}})


class ScriptedMeta(MetaLearningController):
    """Detects and learns for real, but picks the arm in force from ``script`` (``{first step: arm}``)."""

    def __init__(self, script, config, fail_at: int | None = None):
        super().__init__(config)
        self.script, self.fail_at = dict(script), fail_at

    def adapt_hyperparameters(self, regime, *, step=0, reason=""):
        if self.fail_at is not None and step >= self.fail_at:
            raise RuntimeError(f"meta controller exploded at step {step}")
        arm = self.script[max(k for k in self.script if k <= step)]
        lr, ent, clip = self.adjustments[arm]
        self.current = Adaptation(int(step), regime, arm, lr, ent, clip, reason or arm)
        return self.current


def components(cfg, arms, *, monitor_script=None, fail_at=None):
    comps = build_components(cfg)
    comps.meta = ScriptedMeta(arms, {"adaptation_frequency": cfg.adaptation_frequency, "seed": 0}, fail_at=fail_at)
    monitor = comps.monitor
    comps.monitor = ScriptedMonitor(monitor_script or {}, monitor.thresholds, monitor.intervention_strategies)
    return comps


class SIGTERMAt(BaseCallback):
    def __init__(self, step: int):
        super().__init__()
        self.step, self.sent = step, False

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return True


def rows(tracked, run_id, action):
    return [r for r in tracked.interventions(run_id) if r["action"] == action]


ARMS = {0: "keep", 512: "lr_up", 1024: "cautious", 1536: "explore"}


def test_multipliers_reach_lr_ent_coef_and_clip_range_and_survive_a_rollback(tracked):
    cfg = meta_config()
    assert (cfg.base_learning_rate, cfg.ppo.clip_range, cfg.ppo.ent_coef) == (BASE_LR, CLIP, ENT)
    # 1280: roll back to the 1024 checkpoint; the scheduler then halves the LR, the meta multiplier stays
    comps = components(cfg, ARMS, monitor_script={1280: "rollback"})
    used = OptimizerLR()
    result = train(cfg, preset="meta", components=comps, extra_callbacks=[used],
                   checkpoint_root=tracked.checkpoint_root("meta_apply"))
    run = result.run_id
    assert result.status == "FINISHED" and "convopt.degraded" not in tracked.tags(run)
    lr = tracked.history(run, "lr")
    # the update that ends at step s ran with what the adaptation before it chose
    expected_lr = {256: BASE_LR, 512: BASE_LR, 768: 1.5 * BASE_LR, 1024: 1.5 * BASE_LR,
                   1280: 0.75 * BASE_LR, 1536: 0.5 * 0.75 * BASE_LR, 1792: 0.5 * BASE_LR, 2048: 0.5 * BASE_LR}
    assert lr == {s: pytest_approx(v) for s, v in expected_lr.items()}
    # the optimizer's param_groups after each update (at 1280 it is read after the rollback loaded the
    # 1024 checkpoint's optimizer state, whose lr the next update overwrites from the schedule)
    assert {s: v for s, v in used.seen.items() if s != 1280} == {s: v for s, v in lr.items() if s != 1280}
    clip = tracked.history(run, "train/clip_range")
    assert clip == {s: pytest_approx(CLIP * (0.75 if 1024 < s <= 1536 else 1.0)) for s in expected_lr}
    ent = tracked.history(run, "regularization/ent_coef")  # in force for the next update
    assert ent == {s: pytest_approx(ENT * (2.0 if s >= 1536 else 1.0)) for s in expected_lr}
    adapts = rows(tracked, run, "meta_adapt")
    assert [r["step"] for r in adapts] == [512, 1024, 1536, 2048]
    assert [r["values"]["lr"] for r in adapts] == [1.5, 0.75, 1.0, 1.0]
    assert adapts[0]["applied"] == "lr_up: LR x1.5 (-> 0.00015), ent_coef x1 (-> 0.005), clip_range x1 (-> 0.2)"
    assert all(r["reason"] for r in adapts)
    (rollback,) = rows(tracked, run, "rollback")
    assert rollback["applied"].startswith("restored checkpoint of step 1024")
    assert tracked.history(run, "meta/lr_mult") == {512: 1.5, 1024: 0.75, 1536: 1.0, 2048: 1.0}
    assert set(tracked.history(run, "meta/regime")) == set(expected_lr)
    assert all(v in range(len(REGIMES)) for v in tracked.history(run, "meta/regime").values())


def test_multipliers_and_bandit_state_survive_a_resume(tracked):
    cfg = meta_config()
    first = train(cfg, preset="meta", components=components(cfg, ARMS), extra_callbacks=[SIGTERMAt(1100)],
                  checkpoint_root=tracked.checkpoint_root("meta_resume"))
    assert first.status == "KILLED"
    run = first.run_id
    fresh = components(cfg, ARMS)
    result = train(cfg, resume=run, components=fresh, checkpoint_root=tracked.checkpoint_root("meta_resume"))
    assert result.status == "FINISHED" and tracked.status(run) == "FINISHED"
    # the controller came back from the checkpoint: its decision in force and its bandit counts
    assert fresh.meta.current.arm == "explore" and fresh.meta.current.step > 1536
    rewarded = sum(int(b.n.sum()) for b in fresh.meta.bandits.values())
    assert rewarded == 3  # choices at 512, 1024 (before the kill) and the one after it, rewarded at the next eval
    lr, clip = tracked.history(run, "lr"), tracked.history(run, "train/clip_range")
    after = min(s for s in lr if s > 1100)  # the first update after the resume: still `cautious`
    assert lr[after] == pytest_approx(0.75 * BASE_LR) and clip[after] == pytest_approx(0.75 * CLIP)
    assert tracked.history(run, "regularization/ent_coef")[max(lr)] == pytest_approx(2 * ENT)
    steps = [r["step"] for r in rows(tracked, run, "meta_adapt")]
    assert steps == sorted(set(steps)) and len(steps) == 4  # no decision logged twice


def test_a_controller_that_raises_is_disabled_and_the_run_finishes_degraded(tracked):
    cfg = meta_config()
    comps = components(cfg, ARMS, fail_at=1024)
    result = train(cfg, preset="meta", components=comps, checkpoint_root=tracked.checkpoint_root("meta_fail"))
    run = result.run_id
    assert result.status == "FINISHED" and tracked.status(run) == "FINISHED"
    assert tracked.tags(run)["convopt.degraded"] == "meta"
    (row,) = rows(tracked, run, "disable_component")
    assert row["step"] == 1024 and row["reason"].startswith("meta raised RuntimeError: meta controller exploded")
    assert tracked.history(run, "intervention/disable_component") == {1024: 1.0}
    lr = tracked.history(run, "lr")  # lr_up from 512, then back to the baseline LR once disabled
    assert lr[768] == pytest_approx(1.5 * BASE_LR) and all(lr[s] == pytest_approx(BASE_LR) for s in lr if s > 1024)
    assert set(tracked.history(run, "meta/regime")) == {256, 512, 768, 1024}  # nothing after it was disabled
    assert "backtest/test/sharpe" in tracked.client.get_run(run).data.metrics


def test_meta_preset_end_to_end_logs_regimes_adaptations_and_bandit_state(tracked):
    cfg = meta_config(lr_schedule_type="cosine_with_restarts")
    result = train(cfg, preset="meta", checkpoint_root=tracked.checkpoint_root("meta_e2e"))
    run = result.run_id
    assert result.status == "FINISHED" and "convopt.degraded" not in tracked.tags(run)
    metrics = tracked.client.get_run(run).data.metrics
    assert tracked.client.get_run(run).data.params["meta_enabled"] == "True"
    adapted = tracked.history(run, "meta/arm")
    assert sorted(adapted) == [512, 1024, 1536, 2048]
    assert all(int(v) in range(len(ADJUSTMENTS)) for v in adapted.values())
    for key in ("meta/regime", "meta/lr_mult", "meta/ent_coef_mult", "meta/clip_range_mult", "meta/score_before"):
        assert key in metrics, key
    counts = [k for k in metrics if k.startswith("meta/") and k.endswith("_n")]
    assert counts and sum(metrics[k] for k in counts if k.split("/")[1] == REGIMES[int(metrics["meta/regime"])]) >= 0
    # every multiplier logged is one of the adjustments' values
    for name, index in (("lr", 0), ("ent_coef", 1), ("clip_range", 2)):
        allowed = {m[index] for m in ADJUSTMENTS.values()}
        assert set(tracked.history(run, f"meta/{name}_mult").values()) <= allowed
    assert len(rows(tracked, run, "meta_adapt")) == 4
    assert not tracked.nonfinite_values(run)


def pytest_approx(value):
    return pytest.approx(value, rel=1e-6)


def test_regime_labels_cover_the_train_split():
    from convopt_mlflow.training.meta import label_train_split
    from convopt_mlflow.training.setup import load_market

    cfg = meta_config()
    market = load_market(cfg)
    meta = MetaLearningController({"seed": 0})
    label_train_split(meta, market.features.log_returns, market.splits.train, market.features.warmup)
    start, stop = max(market.splits.train[0], market.features.warmup), market.splits.train[1]
    assert meta.first_bar == start and meta.labels.size == stop - start
    assert meta.regime_of(np.arange(start, stop, 97)) in REGIMES
