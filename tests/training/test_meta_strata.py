"""Regime-stratified rollouts in real training: every block's episodes start in its stratum's windows,
every stratum's bandit chooses and is rewarded by its own stratum's validation score, ``meta/regime``
takes several values in the MLflow run, and a resume keeps the bandits and the block schedule.

Real SB3 at the tiny size of ``conftest.TINY_RUN`` (one update per 256 env steps), adapting and
evaluating every update, on a synthetic market with planted regimes, read back with MlflowClient.
"""
from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from convopt_mlflow.components.meta import MetaLearningController
from convopt_mlflow.components.strata import STRATA, window_majority
from convopt_mlflow.config import build_config
from convopt_mlflow.training.coordinator import build_components, train
from convopt_mlflow.training.labelling import label_train_split
from convopt_mlflow.training.meta import StrataPlan, build_strata
from convopt_mlflow.training.setup import load_market

from .conftest import TINY_RUN
from .test_meta import SIGTERMAt, rows

STEPS = 20 * 256
STRATIFIED = {**TINY_RUN, "data.source": "synthetic:n_bars=20000,seed=4,signal_ic=0.1,signal_regimes=1:-1:0",
              "adaptation_frequency": "256", "run.eval_freq": "256", "run.total_timesteps": str(STEPS),
              "run.checkpoint_freq": "1024", "meta_stratified": "true"}


class StartsSeen(BaseCallback):
    """After the meta callback: the envs' bars and the block's stratum at the start of every rollout."""

    def __init__(self, meta):
        super().__init__()
        self.meta, self.seen = meta, []

    def _on_rollout_start(self) -> None:
        venv = self.model.env.unwrapped
        self.seen.append((self.model.num_timesteps, venv.current_bars, self.meta.current.regime,
                          (venv._ep_length == 0).all()))

    def _on_step(self) -> bool:
        return True


def test_every_stratum_bandit_chooses_and_is_rewarded_and_episodes_start_in_its_windows(tracked):
    cfg = build_config("meta", STRATIFIED)
    assert cfg.meta_stratified
    comps = build_components(cfg)
    seen = StartsSeen(comps.meta)
    result = train(cfg, preset="meta", components=comps, extra_callbacks=[seen],
                   checkpoint_root=tracked.checkpoint_root("strata"))
    run = result.run_id
    assert result.status == "FINISHED" and "convopt.degraded" not in tracked.tags(run)
    meta = comps.meta
    # every stratum had blocks, and its bandit chose and was rewarded by its own score
    assert all(meta.schedule.counts[g] > 0 and meta.bandits[g].n.sum() > 0 for g in STRATA), meta.schedule.counts
    for g in STRATA:
        assert f"meta/{g}/reward" in tracked.client.get_run(run).data.metrics, g
    # meta/regime: the stratum of each update's samples, several values
    regimes = tracked.history(run, "meta/regime")
    assert len(set(regimes.values())) > 1 and set(regimes.values()) <= set(range(len(STRATA)))
    # each rollout of a block starts every env fresh in a window of that block's stratum
    episode = cfg.env.episode_length
    majority = None
    for step, bars, regime, fresh in seen.seen:
        assert fresh, step
        if majority is None:
            market = load_market(cfg)  # the run's own labels, rebuilt
            again = MetaLearningController({"stratified": True})
            label_train_split(again, market.features.log_returns, market.splits.train, market.features.warmup)
            majority = window_majority(build_strata(again, market).codes, episode)
        assert (majority[bars] == STRATA.index(regime)).all(), (step, regime)
    # the logged update regime is the block's stratum (rollouts of step s-256..s belong to the update at s)
    by_step = {step: regime for step, _, regime, _ in seen.seen}
    assert all(STRATA[int(regimes[s])] == by_step[s - 256] for s in regimes if s - 256 in by_step)
    # per-stratum validation scores, arm counts and rewards are logged
    metrics = tracked.client.get_run(run).data.metrics
    for g in STRATA:
        assert f"meta/{g}/keep_n" in metrics and f"meta/{g}/keep_q" in metrics
    assert any(k.startswith("eval/score_") for k in metrics)
    adapts = rows(tracked, run, "meta_adapt")
    assert len(adapts) == sum(meta.schedule.counts.values())
    assert sum(int(b.n.sum()) for b in meta.bandits.values()) == len(tracked.history(run, "meta/reward"))


def test_resume_keeps_the_bandits_and_the_block_schedule(tracked):
    cfg = build_config("meta", {**STRATIFIED, "run.checkpoint_freq": "256"})
    first = train(cfg, preset="meta", components=build_components(cfg), extra_callbacks=[SIGTERMAt(2200)],
                  checkpoint_root=tracked.checkpoint_root("strata_resume"))
    assert first.status == "KILLED"
    run = first.run_id
    fresh = build_components(cfg)
    result = train(cfg, resume=run, components=fresh, checkpoint_root=tracked.checkpoint_root("strata_resume"))
    assert result.status == "FINISHED" and tracked.status(run) == "FINISHED"
    blocks = rows(tracked, run, "meta_adapt")
    steps = [r["step"] for r in blocks]
    assert steps == sorted(set(steps))  # no decision logged twice
    # restored, not restarted: the schedule counts every block of the run, the bandits every reward
    assert sum(fresh.meta.schedule.counts.values()) == len(blocks) > 8
    rewards = tracked.history(run, "meta/reward")
    assert sum(int(b.n.sum()) for b in fresh.meta.bandits.values()) == len(rewards) > 8
    assert min(rewards) < 2200 < max(rewards)


def test_the_stratum_sampler_keeps_another_components_pool():
    codes = np.array([0, 1] * 50, dtype=np.int8)
    plan = StrataPlan(codes, {"trend": np.arange(0, 100, 2), "mean_reversion": np.arange(1, 100, 2)},
                      {"trend": 0.5, "mean_reversion": 0.5})
    rng = np.random.default_rng(0)
    uniform = plan.sampler("trend", None, uniform=True)(rng, 500)
    assert set(uniform.tolist()) <= set(range(0, 100, 2)) and len(set(uniform.tolist())) > 40
    stage = lambda r, k: r.integers(10, 20, size=k)  # e.g. a curriculum stage's pool
    inside = plan.sampler("mean_reversion", stage, uniform=False)(rng, 500)
    assert set(inside.tolist()) <= {11, 13, 15, 17, 19}
    only_even = lambda r, k: 2 * r.integers(0, 5, size=k)  # no start of the stratum: the pool wins
    assert set(plan.sampler("mean_reversion", only_even, uniform=False)(rng, 50).tolist()) <= {0, 2, 4, 6, 8}


def test_stratified_meta_runs_with_regime_features(tracked):
    """What the `regime` preset was before the context features: PPO at 3e-5, the trend detector's
    probabilities observed, the stratified controller."""
    cfg = build_config("baseline", {**STRATIFIED, "run.total_timesteps": "1536", "base_learning_rate": "3e-5",
                                    "ppo.ent_coef": "0.005", "env.regime_features": "true", "meta_enabled": "true"})
    assert cfg.meta_enabled and cfg.meta_stratified and cfg.env.regime_features
    result = train(cfg, preset="baseline", checkpoint_root=tracked.checkpoint_root("regime_preset"))
    run = result.run_id
    assert result.status == "FINISHED" and "convopt.degraded" not in tracked.tags(run)
    params = tracked.client.get_run(run).data.params
    assert params["meta_stratified"] == "True" and params["env.regime_features"] == "True"
    metrics = tracked.client.get_run(run).data.metrics
    assert {f"eval/score_{g}" for g in ("mean_reversion", "neutral")} <= set(metrics)
    assert len(tracked.history(run, "meta/regime")) == 6 and not tracked.nonfinite_values(run)
