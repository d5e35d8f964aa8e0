"""Curriculum and augmentation end to end: real SB3 training at the TINY_RUN size (update k ends at
env step 256 k), a real sqlite MLflow store read back with MlflowClient, resume, component failures."""
from __future__ import annotations

import json
import os
import signal

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from convopt_mlflow.components import ConvergenceMonitor, Intervention
from convopt_mlflow.components.augmentation import TradingDataAugmentation
from convopt_mlflow.components.curriculum import CurriculumLearningSystem
from convopt_mlflow.config import build_config
from convopt_mlflow.training.checkpoints import CheckpointStore
from convopt_mlflow.training.coordinator import build_components, train

from .conftest import TINY_RUN

UPDATES = list(range(256, 2049, 256))


def tiny(preset: str, **overrides: str):
    values = dict(TINY_RUN)
    values.update({k.replace("__", "."): str(v) for k, v in overrides.items()})
    return build_config(preset, values)


class EpisodeStarts(BaseCallback):
    """Start bar of every episode begun, read from the env at each step (test-only, per step)."""

    def __init__(self):
        super().__init__()
        self.starts: list[tuple[int, int]] = []  # (env step, start bar)

    def _on_step(self) -> bool:
        env = self.model.env.unwrapped
        for i in np.flatnonzero(env._ep_length == 0):
            self.starts.append((self.num_timesteps, int(env.current_bars[i])))
        return True


class KillAt(BaseCallback):
    """Sends this process SIGTERM once ``num_timesteps`` reaches ``step`` (the coordinator's handler stops)."""

    def __init__(self, step: int):
        super().__init__()
        self.step, self.sent = step, False

    def _on_step(self) -> bool:
        if not self.sent and self.num_timesteps >= self.step:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return True


def test_curriculum_preset_moves_by_step_fraction_and_draws_from_the_stage_pools(tracked):
    cfg = tiny("curriculum", curriculum__triggers="steps", curriculum__final_share="0")  # the design's schedule
    comps = build_components(cfg)
    starts = EpisodeStarts()
    result = train(cfg, preset="curriculum", components=comps, extra_callbacks=[starts],
                   checkpoint_root=tracked.checkpoint_root("cur_steps"))
    run = result.run_id
    assert result.status == "FINISHED" and tracked.status(run) == "FINISHED"
    assert "convopt.degraded" not in tracked.tags(run)
    # 25/50/75/90% of 2048 steps: 512, 1024, 1536, 1843.2 (seen at the next update boundary)
    assert tracked.history(run, "curriculum/stage") == dict(zip(UPDATES, [1, 2, 2, 3, 3, 4, 4, 5]))
    assert tracked.history(run, "curriculum/pool_size")[256] < tracked.history(run, "curriculum/pool_size")[2048]
    cur = comps.curriculum
    assert [(c.step, c.target) for c in cur.changes] == [(512, 1), (1024, 2), (1536, 3), (2048, 4)]
    for step, bar in starts.starts:  # every episode started inside the pool of the stage in force
        stage = sum(step > c.step for c in cur.changes)
        assert bar in set(cur.stage_pool(stage).tolist()), (step, bar, stage)
    assert tracked.client.get_run(run).data.params["curriculum_enabled"] == "True"


def test_the_last_share_of_the_run_starts_episodes_anywhere_in_the_train_split(tracked):
    # stuck in stage 0 (performance only, unreachable threshold): its pool is ~15% of the starts
    cfg = tiny("curriculum", curriculum__triggers="performance", stage_progression_threshold="1e9",
               curriculum__final_share="0.5")
    comps = build_components(cfg)
    starts = EpisodeStarts()
    result = train(cfg, preset="curriculum", components=comps, extra_callbacks=[starts],
                   checkpoint_root=tracked.checkpoint_root("cur_final"))
    run = result.run_id
    assert result.status == "FINISHED" and "convopt.degraded" not in tracked.tags(run)
    cur = comps.curriculum
    # episodes of the rollout after update 768 start before 1024; the one after 1024 reaches the last half
    assert cur.full_since == 1024 and cur.stage == 0
    assert tracked.history(run, "curriculum/full_distribution") == {s: float(s >= 1024) for s in UPDATES}
    assert tracked.client.get_run(run).data.params["curriculum.final_share"] == "0.5"
    stage0 = set(cur.stage_pool(0).tolist())
    assert len(stage0) < 0.3 * len(cur.windows)
    early = [bar for step, bar in starts.starts if step <= 1024]
    late = [bar for step, bar in starts.starts if step > 1024]
    assert early and all(bar in stage0 for bar in early)
    lo, hi = cur.windows.starts[0], cur.windows.starts[-1]
    assert len(late) >= 12 and all(lo <= bar <= hi for bar in late)
    assert sum(bar not in stage0 for bar in late) > len(late) / 2  # the whole split, not the stage's pool


def test_a_resumed_run_switches_to_the_full_distribution_at_the_same_step(tracked):
    cfg = tiny("curriculum", curriculum__triggers="steps", curriculum__final_share="0.5")
    root = tracked.checkpoint_root("resume_final")
    killed = train(cfg, preset="curriculum", extra_callbacks=[KillAt(600)], checkpoint_root=root)
    run = killed.run_id
    assert killed.status == "KILLED"
    entry, state, _ = CheckpointStore(tracked.tags(run)["convopt.checkpoint_dir"]).load_latest_good()
    assert entry.step < 1024 and json.loads(state["extras_json"])["curriculum"]["full_since"] is None
    comps = build_components(cfg)
    resumed = train(cfg, resume=run, components=comps)
    assert resumed.status == "FINISHED" and tracked.status(run) == "FINISHED"
    cur = comps.curriculum
    assert cur.full_since == 1024  # the same switch step as an uninterrupted run
    switches = [c for c in cur.changes if c.source == c.target]
    assert len(switches) == 1 and 1024 - 256 < switches[0].step <= 1024  # the resumed run's update boundary
    full = tracked.history(run, "curriculum/full_distribution")
    assert full[max(full)] == 1.0 and all(v == (s > 1024 - 256) for s, v in full.items())


class ScriptedMonitor(ConvergenceMonitor):
    """Analyses for real, decides only ``advance_curriculum`` at the scripted steps."""

    def __init__(self, steps, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = set(steps)

    def decide(self, state):
        if int(state.step) in self.steps:
            return [Intervention(int(state.step), "advance_curriculum", "scripted plateau")]
        return []


def test_the_monitor_advances_the_curriculum(tracked):
    cfg = tiny("curriculum", curriculum__triggers="monitor", monitor__enabled="true",
               monitor__interventions="lr_restart+advance_curriculum", curriculum__min_stage_fraction="0.2",
               curriculum__final_share="0")
    comps = build_components(cfg)
    comps.monitor = ScriptedMonitor({512, 768, 1280}, comps.monitor.thresholds, comps.monitor.intervention_strategies)
    result = train(cfg, preset="curriculum", components=comps, checkpoint_root=tracked.checkpoint_root("cur_mon"))
    run = result.run_id
    assert result.status == "FINISHED"
    rows = [r for r in tracked.interventions(run) if r["action"] == "advance_curriculum"]
    assert [(r["step"], r["applied"]) for r in rows] == [
        (512, "stage 0 -> 1 (moderate_volatility)"),
        (768, "skipped: stage 1 entered at step 512: minimum dwell not reached"),
        (1280, "stage 1 -> 2 (noisy_patterns)")]
    stage = tracked.history(run, "curriculum/stage")
    assert stage[256] == 1 and stage[512] == 2 and stage[1024] == 2 and stage[1280] == 3 and stage[2048] == 3


def test_augment_preset_logs_augment_metrics_per_rollout(tracked):
    cfg = tiny("augment")
    comps = build_components(cfg)
    result = train(cfg, preset="augment", components=comps, checkpoint_root=tracked.checkpoint_root("aug"))
    run = result.run_id
    assert result.status == "FINISHED" and "convopt.degraded" not in tracked.tags(run)
    total = tracked.history(run, "augment/episodes_total")
    assert sorted(total) == UPDATES and total[2048] == comps.augmentation.counts["episodes"] == 4 * (1 + 2048 // 4 // 64)
    for key in ("augment/noise", "augment/time_warp", "augment/dropout", "augment/synthetic"):
        values = tracked.history(run, key)
        assert sorted(values) == UPDATES and all(0.0 <= v <= 1.0 for v in values.values()), key
    counts = comps.augmentation.counts
    assert counts["noise"] > 0 and counts["synthetic"] == 0
    assert not tracked.nonfinite_values(run)


def test_resume_restores_the_curriculum_stage_and_the_augmentation_rng(tracked):
    overrides = dict(curriculum__triggers="steps", noise_injection_prob="0.5", time_warp_prob="0.3",
                     curriculum__final_share="0")
    cfg = tiny("curriculum", **overrides)
    root = tracked.checkpoint_root("resume")
    killed = train(cfg, preset="curriculum", extra_callbacks=[KillAt(1100)], checkpoint_root=root)
    run = killed.run_id
    assert killed.status == "KILLED" and tracked.status(run) == "KILLED"
    entry, state, _ = CheckpointStore(tracked.tags(run)["convopt.checkpoint_dir"]).load_latest_good()
    saved = json.loads(state["extras_json"])
    assert 1100 <= entry.step < 1280  # the checkpoint written on SIGTERM
    assert saved["curriculum"]["stage"] == 2 and saved["augmentation"]["counts"]["episodes"] > 0

    class Recording(TradingDataAugmentation):
        first_state = None

        def decide(self, n_features):
            if Recording.first_state is None:
                Recording.first_state = self.state_dict()
            return super().decide(n_features)

    comps = build_components(cfg)
    comps.augmentation = Recording(comps.augmentation.config)
    resumed = train(cfg, resume=run, components=comps)
    assert resumed.status == "FINISHED" and tracked.status(run) == "FINISHED"
    assert Recording.first_state == saved["augmentation"]  # the first draw after resume used the saved RNG
    stage = tracked.history(run, "curriculum/stage")
    later = [entry.step + 256 * k for k in range(1, 5)]  # updates after the resume
    assert stage == {256: 1, 512: 2, 768: 2, 1024: 3, **dict(zip(later, [3, 4, 5, 5]))}  # continued, no step twice
    assert isinstance(comps.curriculum, CurriculumLearningSystem) and comps.curriculum.changes[1].step == 1024
    total = tracked.history(run, "augment/episodes_total")
    assert min(total[s] for s in later) > saved["augmentation"]["counts"]["episodes"]


class CurriculumFailingAt(CurriculumLearningSystem):
    def get_current_stage(self, step, performance=None):
        if step >= 1024:
            raise RuntimeError("curriculum broke on purpose")
        return super().get_current_stage(step, performance)


class AugmentationFailingAfter(TradingDataAugmentation):
    def decide(self, n_features):
        if self.counts["episodes"] >= 10:
            raise ValueError("augmentation broke on purpose")
        return super().decide(n_features)


def test_failing_curriculum_and_augmentation_are_disabled_and_the_run_finishes_degraded(tracked):
    cfg = tiny("curriculum", curriculum__triggers="steps", noise_injection_prob="0.5", curriculum__final_share="0")
    comps = build_components(cfg)
    comps.curriculum = CurriculumFailingAt(comps.curriculum.stages, comps.curriculum.criteria)
    comps.augmentation = AugmentationFailingAfter(comps.augmentation.config)
    starts = EpisodeStarts()
    result = train(cfg, preset="curriculum", components=comps, extra_callbacks=[starts],
                   checkpoint_root=tracked.checkpoint_root("broken"))
    run = result.run_id
    assert result.status == "FINISHED" and tracked.status(run) == "FINISHED"
    assert tracked.tags(run)["convopt.degraded"] == "augmentation,curriculum"
    rows = [r for r in tracked.interventions(run) if r["action"] == "disable_component"]
    reasons = sorted(r["reason"].split(" raised ")[0] for r in rows)
    assert reasons == ["augmentation", "curriculum"]
    assert tracked.history(run, "curriculum/stage") == {256: 1, 512: 2, 768: 2}  # nothing once disabled
    disabled = {r["reason"].split(" raised ")[0]: r["step"] for r in rows}
    assert disabled["curriculum"] == 1024
    stage0 = set(comps.curriculum.stage_pool(0).tolist()) | set(comps.curriculum.stage_pool(1).tolist())
    late = [bar for step, bar in starts.starts if step > 1100]
    assert late and any(bar not in stage0 for bar in late)  # uniform starts again after the failure


def test_an_ensemble_member_keeps_to_its_blocks_inside_the_stage_pool():
    from convopt_mlflow.training.control import ComponentGuard
    from convopt_mlflow.training.curriculum import block_starts, build_curriculum, start_curriculum
    from convopt_mlflow.training.setup import load_market, make_env

    cfg = tiny("curriculum", ensemble__train_blocks="1+3", ensemble__n_blocks="4")
    market = load_market(cfg)
    env = make_env(cfg, market).unwrapped
    driver = start_curriculum(build_curriculum(cfg), cfg, market, env, ComponentGuard())
    driver.install(0)
    allowed = block_starts(market.cores["train"].start_bounds, (1, 3), 4)
    starts = env._start_sampler(np.random.default_rng(0), 2000)
    assert np.isin(starts, allowed).all() and np.isin(starts, driver.curriculum.pool).all()


def test_scenario_replay_prioritizes_inside_the_curriculum_stage_pool(tracked):
    """Both change episode starts: the curriculum hands its stage pool to scenario replay, which
    draws by priority inside it (instead of one replacing the other's sampler)."""
    cfg = tiny("curriculum", curriculum__triggers="steps", replay_enabled="true", replay_mode="scenario",
               replay_ratio="0.5")
    comps = build_components(cfg)
    starts = EpisodeStarts()
    result = train(cfg, preset="curriculum", components=comps, extra_callbacks=[starts],
                   checkpoint_root=tracked.checkpoint_root("cur_replay"))
    assert result.status == "FINISHED" and "convopt.degraded" not in tracked.tags(result.run_id)
    cur = comps.curriculum
    assert starts.starts and len(cur.changes) >= 2
    for step, bar in starts.starts:
        stage = sum(step > c.step for c in cur.changes)
        assert bar in set(cur.stage_pool(stage).tolist()), (step, bar, stage)
    assert any(k.startswith("replay/") for k in tracked.client.get_run(result.run_id).data.metrics)


def test_an_ensemble_member_with_scenario_replay_keeps_to_its_blocks():
    from convopt_mlflow.training.control import ComponentGuard
    from convopt_mlflow.training.coordinator import _attach_replay, _share_start_pools
    from convopt_mlflow.training.curriculum import block_starts
    from convopt_mlflow.training.setup import load_market, make_env, make_model

    cfg = tiny("replay", ensemble__train_blocks="0+2", ensemble__n_blocks="4")
    market = load_market(cfg)
    env = make_env(cfg, market)
    model = make_model(cfg, env)
    _attach_replay(model, build_components(cfg).replay, cfg, ComponentGuard())
    _share_start_pools(model, None, cfg, market)
    allowed = block_starts(market.cores["train"].start_bounds, (0, 2), 4)
    starts = env.unwrapped.start_sampler(np.random.default_rng(0), 2000)
    assert np.isin(starts, allowed).all()


def test_full_runs_every_component_together_without_disabling_any(tracked):
    """`full` as one model: curriculum, scenario replay (inside the stage pools, over the augmented
    env's market bars), augmentation, meta controller and the monitor all stay enabled."""
    cfg = tiny("everything", ensemble_size="1", adaptation_frequency="512", run__eval_freq="256")
    result = train(cfg, preset="everything", checkpoint_root=tracked.checkpoint_root("full_all"))
    assert result.status == "FINISHED"
    assert "convopt.degraded" not in tracked.tags(result.run_id)
    prefixes = {k.split("/")[0] for k in tracked.client.get_run(result.run_id).data.metrics}
    assert {"curriculum", "replay", "augment", "meta", "convergence"} <= prefixes
