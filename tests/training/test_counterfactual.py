"""Counterfactual PPO: plain PPO bit for bit when off, exact records, tracked end to end, isolated, resumed.

Real SB3 training at the tiny size of ``conftest.TINY_RUN`` (256 env steps per update) on a
synthetic market, a real sqlite MLflow store read back through MlflowClient.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from convopt_mlflow import cli
from convopt_mlflow.config import build_config
from convopt_mlflow.errors import ConfigError
from convopt_mlflow.training.control import ComponentGuard
from convopt_mlflow.training.coordinator import train
from convopt_mlflow.training.counterfactual import CounterfactualPPO, attach_counterfactual
from convopt_mlflow.training.ppo import ConvoptPPO
from convopt_mlflow.training.setup import load_market, make_env, make_model

from .conftest import SigtermAt, TINY_RUN


def _cfg(preset: str = "counterfactual", **overrides: str):
    values = {**TINY_RUN, **{k.replace("__", "."): str(v) for k, v in overrides.items()}}
    return build_config(preset, values)


def _model(cfg, *, model_class=None, attach: bool = True):
    market = load_market(cfg)
    env = make_env(cfg, market)
    model = make_model(cfg, env) if model_class is None else _as(model_class, cfg, env)
    guard = ComponentGuard()
    if attach:
        attach_counterfactual(model, cfg, guard)
    return model, guard


def _as(model_class, cfg, env):
    plain = make_model(cfg, env)  # the same constructor arguments, another class
    return model_class("MlpPolicy", env, learning_rate=cfg.base_learning_rate, n_steps=cfg.ppo.n_steps,
                       batch_size=cfg.ppo.batch_size, n_epochs=cfg.ppo.n_epochs, gamma=cfg.ppo.gamma,
                       gae_lambda=cfg.ppo.gae_lambda, clip_range=cfg.ppo.clip_range, ent_coef=cfg.ppo.ent_coef,
                       vf_coef=cfg.ppo.vf_coef, max_grad_norm=cfg.ppo.max_grad_norm,
                       policy_kwargs=plain.policy_kwargs, seed=cfg.run.seed, device="cpu", verbose=0)


def _parameters(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.policy.state_dict().items()}


def test_off_is_plain_ppo_bit_for_bit():
    base, _ = _model(_cfg("baseline"), attach=False)
    assert type(base) is ConvoptPPO
    base.learn(1024)
    idle, _ = _model(_cfg("baseline"), model_class=CounterfactualPPO)  # the class, never attached
    assert not idle.counterfactual_active
    idle.learn(1024)
    on, guard = _model(_cfg())
    assert type(on) is CounterfactualPPO and on.counterfactual_active
    on.learn(1024)
    assert not guard.disabled
    expected, unattached, other = _parameters(base), _parameters(idle), _parameters(on)
    for name in expected:
        assert torch.equal(expected[name], unattached[name]), name
    assert any(not torch.equal(expected[name], other[name]) for name in expected)  # the comparison can fail


def test_the_buffer_records_what_each_action_would_have_earned():
    model, _ = _model(_cfg())
    model.learn(256)  # one rollout, then one update (which reads but never changes the records)
    buf = model.rollout_buffer
    actions = buf.actions.reshape(buf.buffer_size, buf.n_envs).astype(int)
    taken = np.take_along_axis(buf.action_rewards, actions[..., None], axis=2)[..., 0]
    starts = buf.episode_starts.astype(bool)
    ends = np.zeros_like(starts)
    ends[:-1] = starts[1:]  # SB3 adds gamma * V(terminal) to the last reward of an episode
    ends[-1] = True  # whether the rollout's last step ended an episode is not in the buffer
    assert (~ends).sum() > 200
    np.testing.assert_allclose(taken[~ends], buf.rewards[~ends], rtol=1e-6)
    # the next observation under the action taken is the one the rollout saw next
    next_taken = np.take_along_axis(buf.action_next_obs, actions[..., None, None], axis=2)[:, :, 0]
    np.testing.assert_array_equal(next_taken[:-1][~ends[:-1]], buf.observations[1:][~ends[:-1]])
    # and every action's next observation differs from it only in the position
    np.testing.assert_array_equal(buf.action_next_obs[..., :-1], np.broadcast_to(next_taken[:, :, None, :-1],
                                                                                 buf.action_next_obs[..., :-1].shape))
    np.testing.assert_array_equal(buf.action_next_obs[0, 0, :, -1], [-1.0, 0.0, 1.0])


def test_the_surrogate_gradient_is_the_expected_policy_gradient():
    """At pi = pi_k (ratios 1, nothing clipped) the loss's policy gradient is -mean_s sum_a grad pi(a|s) A(s,a)."""
    model, _ = _model(_cfg(**{"ppo.ent_coef": "0", "counterfactual.critic_positions": "false"}))
    model.learn(256)
    model.normalize_advantage = False
    data = model._prepare()
    mb = {k: v[:64] for k, v in data.items()}
    model.policy.zero_grad()
    loss, _ = model._minibatch_loss(mb, clip_range=0.2, k=3)
    value = model.policy.predict_values(mb["observations"]).flatten()
    held = mb["targets"][torch.arange(64), mb["held_index"]]
    (loss - model.vf_coef * ((held - value) ** 2).mean()).backward()
    got = [p.grad.clone() for p in model.policy.action_net.parameters()]
    model.policy.zero_grad()
    probs = model.policy.get_distribution(mb["observations"]).distribution.probs
    (-(probs * mb["advantages"]).sum(dim=1).mean()).backward()
    for a, b in zip(got, model.policy.action_net.parameters()):
        torch.testing.assert_close(a, b.grad, rtol=1e-5, atol=1e-7)


def test_preset_trains_end_to_end_through_the_cli(tracked):
    argv = ["train", "--preset", "counterfactual", "--quiet", "--experiment", "convopt"]
    for key, value in TINY_RUN.items():
        argv += ["--set", f"{key}={value}"]
    assert cli.main(argv) == 0
    (run,) = tracked.client.search_runs([tracked.client.get_experiment_by_name("convopt").experiment_id],
                                        "tags.`convopt.preset` = 'counterfactual'")
    assert run.info.status == "FINISHED"
    assert run.data.params["counterfactual.enabled"] == "True"
    assert "convopt.degraded" not in run.data.tags
    steps = list(range(256, 2049, 256))
    for key in ("counterfactual/advantage_std", "counterfactual/action_gap", "counterfactual/policy_loss",
                "counterfactual/other_positions_value_loss", "train/value_loss"):
        assert sorted(tracked.history(run.info.run_id, key)) == steps, key
    assert "backtest/test/oracle_fraction" in run.data.metrics
    assert not tracked.nonfinite_values(run.info.run_id)


def test_a_failing_recording_is_disabled_and_the_run_finishes_as_plain_ppo(tracked, monkeypatch):
    from convopt_mlflow.env import TradingVecEnv

    calls = {"n": 0}
    original = TradingVecEnv.counterfactual_rewards

    def flaky(self):
        calls["n"] += 1
        if calls["n"] > 70:  # inside the second rollout (64 records per rollout)
            raise FloatingPointError("counterfactuals broke on purpose")
        return original(self)

    monkeypatch.setattr(TradingVecEnv, "counterfactual_rewards", flaky)
    result = train(_cfg(), preset="counterfactual", checkpoint_root=tracked.checkpoint_root("bad_cf"))
    run = result.run_id
    assert result.status == "FINISHED" and tracked.status(run) == "FINISHED"
    assert tracked.tags(run)["convopt.degraded"] == "counterfactual"
    assert sorted(tracked.history(run, "counterfactual/action_gap")) == [256]  # nothing after it was disabled
    (row,) = [r for r in tracked.interventions(run) if r["action"] == "disable_component"]
    assert "FloatingPointError: counterfactuals broke on purpose" in row["reason"]


def test_killed_run_resumes_counterfactual(tracked):
    cfg = _cfg(run__checkpoint_freq="0")
    first = train(cfg, preset="counterfactual", extra_callbacks=[SigtermAt(1024)],
                  checkpoint_root=tracked.checkpoint_root("resume_cf"))
    assert first.status == "KILLED"
    resumed = train(cfg, resume=first.run_id)
    assert resumed.status == "FINISHED"
    points = tracked.client.get_metric_history(first.run_id, "counterfactual/action_gap")
    steps = sorted(p.step for p in points)
    assert len(steps) == len(set(steps))  # no step logged twice
    assert steps[:4] == [256, 512, 768, 1024] and len([s for s in steps if s > 1024]) >= 3  # learning went on
    assert "convopt.degraded" not in tracked.tags(first.run_id)


def test_counterfactual_with_replay_is_refused():
    with pytest.raises(ConfigError, match="counterfactual.enabled=true with replay_enabled=true"):
        _cfg(replay_enabled="true")
