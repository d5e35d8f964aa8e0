"""Replay inside PPO: bit-identical at replay_ratio=0, tracked end to end, isolated on failure, resumed.

Real SB3 training at the tiny size of ``conftest.TINY_RUN`` (256 env steps per update) on a
synthetic market, a real sqlite MLflow store read back through MlflowClient.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from convopt_mlflow.components.replay import TradingExperienceReplay
from convopt_mlflow.config import build_config
from convopt_mlflow.training.checkpoints import CheckpointStore, capture_training_state, restore_training_state
from convopt_mlflow.training.coordinator import build_components, train
from convopt_mlflow.training.ppo import ConvoptPPO
from convopt_mlflow.training.replay import ReplayPPO, build_replay, replayed_targets
from convopt_mlflow.training.setup import load_market, make_env, make_model

from .conftest import SigtermAt, TINY_RUN


def _cfg(preset: str = "replay", **overrides: str):
    values = {**TINY_RUN, **{k.replace("__", "."): str(v) for k, v in overrides.items()}}
    return build_config(preset, values)


def _trained_parameters(cfg, steps: int = 1024) -> tuple[object, dict[str, torch.Tensor]]:
    market = load_market(cfg)
    model = make_model(cfg, make_env(cfg, market))
    replay = build_replay(cfg)
    if replay is not None:
        model.attach_replay(replay, replay_ratio=cfg.replay_ratio)
    model.learn(steps)
    return model, {k: v.clone() for k, v in model.policy.state_dict().items()}


# ------------------------------------------------------------------ replay_ratio = 0 is baseline PPO
@pytest.mark.parametrize("mode", ["scenario", "transition"])
def test_replay_ratio_zero_is_bit_identical_to_baseline_ppo(mode):
    base_model, base = _trained_parameters(_cfg("baseline"))
    model, replayed = _trained_parameters(_cfg(replay_mode=mode, replay_ratio="0"))
    assert type(base_model) is ConvoptPPO and type(model) is ReplayPPO
    assert model.replay is not None and model.replay_active
    if mode == "transition":  # the machinery ran: every rollout stored, priorities refreshed
        assert len(model.replay) == 1024
    else:
        assert model.replay.stats()["fill"] > 0
    assert base.keys() == replayed.keys()
    for name in base:
        assert torch.equal(base[name], replayed[name]), name
    # the comparison can fail: with replay on, the same seed trains other weights
    _, other = _trained_parameters(_cfg(replay_mode=mode, replay_ratio="0.25"))
    assert any(not torch.equal(base[name], other[name]) for name in base)


def test_replayed_targets_match_a_hand_computed_batch():
    """delta = r + gamma V(s') - V(s); advantage = delta (the surrogate's pi/mu is the only ratio);
    value target = V(s) + min(1, c) delta with c = pi_k / mu. Before the fix the advantage was
    min(1, c) * delta: -0.04 and 0.035 here."""
    rewards, values, next_values = torch.tensor([0.1, -0.2]), torch.tensor([0.5, 0.0]), torch.tensor([0.4, 0.3])
    log_prob_k, log_prob_b = torch.log(torch.tensor([0.5, 0.2])), torch.log(torch.tensor([0.25, 0.4]))
    out = replayed_targets(rewards, values, next_values, log_prob_k, log_prob_b, gamma=0.9)
    assert torch.allclose(out["centre"], torch.tensor([2.0, 0.5]))
    assert torch.allclose(out["advantages"], torch.tensor([-0.04, 0.07]), atol=1e-7)
    assert torch.allclose(out["returns"], torch.tensor([0.46, 0.035]), atol=1e-7)


def test_transition_replay_samples_a_quarter_and_centres_the_clip_on_the_behaviour_policy():
    model, _ = _trained_parameters(_cfg(replay_mode="transition", replay_ratio="0.25"), steps=1024)
    assert len(model.replay) == 1024
    batch = model.replay.sample_batch(64, 1.0)
    levels = model.core.position_levels
    with torch.no_grad():
        obs = model._obs(batch.bars.astype(np.int64), levels[batch.positions])
        _, log_prob_k, _ = model.policy.evaluate_actions(obs, torch.as_tensor(batch.actions.astype(np.int64)))
    # behaviour policies far from pi_k on both sides: c = pi_k / mu = 0.25 for half the batch, 3 for the rest
    c = np.where(np.arange(64) < 32, 0.25, 3.0)
    batch = dataclasses.replace(batch, log_probs=(log_prob_k.numpy() - np.log(c)).astype(np.float32))
    prepared = model._prepare_replayed(batch)
    centre = prepared["centre"].numpy()
    assert np.allclose(centre, np.exp(prepared["old_log_prob"].numpy() - batch.log_probs), rtol=1e-5)
    assert np.allclose(centre, c, rtol=1e-5)
    td = model._td_errors(batch.bars.astype(np.int64), levels[batch.positions],
                          batch.actions.astype(np.int64), batch.rewards.astype(np.float64))
    with torch.no_grad():
        values = model.policy.predict_values(obs).flatten().numpy()
    # the advantage handed to the surrogate is delta itself; rho_bar = min(1, c) only in the value target
    assert np.allclose(prepared["advantages"].numpy(), td, atol=1e-5)
    assert np.allclose(prepared["returns"].numpy(), values + np.minimum(c, 1.0) * td, atol=1e-5)
    assert not np.allclose(prepared["advantages"].numpy(), np.minimum(c, 1.0) * td, atol=1e-5)


@pytest.mark.parametrize("pool", ["curriculum_stage", "member_blocks", "stage_inside_member_blocks"])
def test_scenario_replay_at_ratio_zero_keeps_the_env_stream_of_no_replay_inside_a_pool(pool):
    """Same seed, scenario replay at ratio 0 vs no replay: the same episode starts and the same env
    generator state after many episodes, bit for bit (common random numbers across arms)."""
    from convopt_mlflow.training.control import ComponentGuard
    from convopt_mlflow.training.coordinator import _attach_replay, _share_start_pools
    from convopt_mlflow.training.curriculum import build_curriculum, start_curriculum

    preset = "replay" if pool == "member_blocks" else "curriculum"
    blocks = {} if pool == "curriculum_stage" else {"ensemble__train_blocks": "1+3", "ensemble__n_blocks": "4"}

    def roll(replay: bool):
        cfg = _cfg(preset, replay_enabled=str(replay).lower(), replay_mode="scenario", replay_ratio="0", **blocks)
        market = load_market(cfg)
        env = make_env(cfg, market)
        model = make_model(cfg, env)
        driver = None
        if preset == "curriculum":
            driver = start_curriculum(build_curriculum(cfg), cfg, market, env.unwrapped, ComponentGuard())
        if replay:
            _attach_replay(model, build_replay(cfg), cfg, ComponentGuard())
            assert isinstance(model, ReplayPPO) and model.replay_active
            _share_start_pools(model, driver, cfg, market)
        if driver is not None:
            driver.install(0)
        venv, actions = env.unwrapped, np.random.default_rng(0)
        venv.reset()
        starts = [venv.current_bars.copy()]
        for _ in range(64 * 12):  # 12 episodes per env
            venv.step(actions.integers(0, 3, venv.num_envs))
            starts.append(np.where(venv._ep_length == 0, venv.current_bars, -1))
        return np.array(starts), venv._rng.bit_generator.state

    plain_starts, plain_state = roll(False)
    replay_starts, replay_state = roll(True)
    assert (plain_starts >= 0).sum() == 4 * 13
    np.testing.assert_array_equal(replay_starts, plain_starts)
    assert replay_state == plain_state


@pytest.mark.parametrize("ratio", ["0", "0.25"])
def test_bars_and_positions_rebuild_the_observations_and_rewards_of_the_rollout(ratio):
    model, _ = _trained_parameters(_cfg(replay_mode="transition", replay_ratio=ratio, env__episode_length=32), steps=512)
    buf = model.rollout_buffer
    # SB3's update flattens the arrays in place, the mixed update does not: the mapping must follow both
    assert buf.generator_ready is (ratio == "0")

    def flat(arr):
        return (arr if buf.generator_ready else buf.swap_and_flatten(arr)).reshape(buf.buffer_size * buf.n_envs, -1)

    roll = model._rollout_transitions()
    assert np.array_equal(model.core.observe(roll["bars"], roll["positions"]), flat(buf.observations))
    # the buffer's rewards carry SB3's bootstrap at truncations; elsewhere they are the env's rewards
    starts = buf.swap_and_flatten(buf.episode_starts).reshape(-1) > 0  # env-major: an env's steps in order
    truncated = np.append(starts[1:], False)
    truncated[buf.buffer_size - 1::buf.buffer_size] = model._last_episode_starts  # each env's last step: its done
    stored = buf.swap_and_flatten(buf.rewards).reshape(-1)
    assert truncated.any()
    assert np.allclose(roll["rewards"][~truncated], stored[~truncated], rtol=1e-5, atol=1e-6)
    assert not np.allclose(roll["rewards"][truncated], stored[truncated], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ end to end through the coordinator
@pytest.mark.parametrize("mode,ratio", [("scenario", "0.5"), ("transition", "0.25")])
def test_replay_preset_runs_tracked_end_to_end(tracked, mode, ratio):
    cfg = _cfg(replay_mode=mode, replay_ratio=ratio)
    result = train(cfg, preset="replay", checkpoint_root=tracked.checkpoint_root(f"replay_{mode}"))
    run = result.run_id
    assert result.status == "FINISHED" and tracked.status(run) == "FINISHED"
    assert "convopt.degraded" not in tracked.tags(run)
    params = tracked.client.get_run(run).data.params
    assert params["replay_enabled"] == "True" and params["replay_mode"] == mode
    steps = list(range(256, 2049, 256))
    replayed = steps[1:] if mode == "transition" else steps  # transition replay: nothing to replay at first
    for key in ("replay/fill", "replay/mean_priority", "replay/share"):
        assert sorted(tracked.history(run, key)) == steps, key
    for key in ("replay/is_weight_min", "replay/is_weight_max") + (("replay/mean_ratio",) if mode == "transition" else ()):
        logged = sorted(tracked.history(run, key))
        if mode == "transition":
            assert logged == replayed, key
        else:  # only after updates whose rollout drew a prioritized start (4 envs: most, not surely all)
            assert set(logged) <= set(steps) and len(logged) >= 4, key
    share = tracked.history(run, "replay/share")
    if mode == "transition":
        assert share[256] == 0.0 and all(abs(share[s] - 0.25) < 0.01 for s in steps[1:])
        assert tracked.history(run, "replay/fill")[2048] == pytest.approx(2048 / cfg.replay_buffer_size)
    else:
        assert all(0.0 <= share[s] <= 1.0 for s in steps)
    lo, hi = tracked.history(run, "replay/is_weight_min"), tracked.history(run, "replay/is_weight_max")
    assert all(0 < lo[s] <= hi[s] <= 1.0 for s in lo)
    assert not tracked.nonfinite_values(run)


# ------------------------------------------------------------------ isolation
class FailingReplay(TradingExperienceReplay):
    """A transition replay whose ``update_priorities`` raises from its ``fail_at``-th call on."""

    def __init__(self, *args, fail_at: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.fail_at, self.calls = fail_at, 0

    def update_priorities(self, experiences, td_errors):
        self.calls += 1
        if self.calls >= self.fail_at:
            raise FloatingPointError("replay broke on purpose")
        return super().update_priorities(experiences, td_errors)


def test_a_failing_replay_is_disabled_and_the_run_finishes_as_plain_ppo(tracked):
    cfg = _cfg(replay_mode="transition", replay_ratio="0.25")
    comps = build_components(cfg)
    comps.replay = FailingReplay(cfg.replay_buffer_size, priority_alpha=0.6, fail_at=1, seed=0)
    result = train(cfg, preset="replay", components=comps, checkpoint_root=tracked.checkpoint_root("bad_replay"))
    run = result.run_id
    assert result.status == "FINISHED" and tracked.status(run) == "FINISHED"
    assert tracked.tags(run)["convopt.degraded"] == "replay"
    # update 1 (step 256) stores only; update 2 (512) replays and its priority refresh raises
    assert tracked.history(run, "intervention/disable_component") == {512: 1.0}
    (row,) = [r for r in tracked.interventions(run) if r["action"] == "disable_component"]
    assert row["step"] == 512 and "replay raised FloatingPointError: replay broke on purpose" in row["reason"]
    assert sorted(tracked.history(run, "replay/fill")) == [256]  # nothing replay/* after it was disabled
    assert "backtest/test/sharpe" in tracked.client.get_run(run).data.metrics


# ------------------------------------------------------------------ checkpoint and resume
def test_checkpoint_extras_carry_the_priorities_as_arrays(tmp_path):
    cfg = _cfg(replay_mode="transition", replay_ratio="0.25")
    model, _ = _trained_parameters(cfg, steps=768)
    store = CheckpointStore(tmp_path)
    store.save(model.num_timesteps, capture_training_state(model, extras={"replay": model.replay.state_dict()}))
    _, state, _ = store.load_latest_good()
    extras = restore_training_state(model, state)
    assert isinstance(extras["replay"]["priorities"], np.ndarray)
    fresh = build_replay(cfg)
    fresh.load_state_dict(extras["replay"])
    assert np.array_equal(fresh.tree.priorities, model.replay.tree.priorities)
    assert np.array_equal(fresh.data["bar"], model.replay.data["bar"])


class PrioritiesAtStart(BaseCallback):
    """Copies the replay's leaf priorities when training (re)starts, after the coordinator's restore."""

    def __init__(self, replay):
        super().__init__()
        self.replay, self.seen = replay, None

    def _on_step(self) -> bool:
        return True

    def _on_training_start(self) -> None:
        self.seen = np.array(self.replay.priorities, copy=True)


@pytest.mark.parametrize("mode", ["scenario", "transition"])
def test_resume_restores_the_replay_priorities(tracked, mode):
    cfg = _cfg(replay_mode=mode, replay_ratio="0.25", run__checkpoint_freq="0")
    comps = build_components(cfg)
    first = train(cfg, preset="replay", components=comps, extra_callbacks=[SigtermAt(1024)],
                  checkpoint_root=tracked.checkpoint_root(f"resume_{mode}"))
    assert first.status == "KILLED"
    saved = np.array(comps.replay.priorities if mode == "scenario" else comps.replay.tree.priorities, copy=True)
    assert np.ptp(saved[saved > 0]) > 0  # refreshed from TD errors, not the uniform start
    again = build_components(cfg)
    watch = PrioritiesAtStart(again.replay if mode == "scenario" else again.replay.tree)
    resumed = train(cfg, resume=first.run_id, components=again, extra_callbacks=[watch])
    assert resumed.status == "FINISHED"
    assert watch.seen is not None and np.array_equal(watch.seen, saved)
    if mode == "transition":
        assert len(again.replay) == 2048  # continued filling after the restored 1024
