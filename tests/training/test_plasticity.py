"""Plasticity surgery on real SB3 policies, and end to end through the coordinator.

Unit tests check the weights against values computed independently (SB3's own policy
constructor under the same seed). End-to-end runs are the ``everything`` preset at the tiny size
of ``conftest.TINY_RUN`` (update k ends at env step 256 k, checkpoints every 512 steps) on a
real sqlite MLflow store read back with MlflowClient; the actions are forced by a scripted
monitor, or by a real monitor fed a forced dead-unit reading.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy

from convopt_mlflow.components import ConvergenceMonitor
from convopt_mlflow.training.coordinator import build_components, train
from convopt_mlflow.training.interventions import InterventionActuator
from convopt_mlflow.training.plasticity import PlasticitySurgeon, reset_head, shrink_perturb, surgery_seed

from .conftest import ScriptedMonitor, SigtermAt, make_tiny_ppo

PLASTIC = "lr_restart+rollback+shrink_perturb+reset_head"


def reference_init(model, seed: int) -> dict[str, torch.Tensor]:
    """What SB3 builds from scratch under ``torch.manual_seed(seed)`` (independent of our code)."""
    torch.manual_seed(seed)
    policy = ActorCriticPolicy(model.observation_space, model.action_space, lambda _: 1e-3, **model.policy_kwargs)
    return {k: v.detach().clone() for k, v in policy.named_parameters()}


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.policy.named_parameters()}


def adam_state(model) -> dict[str, dict]:
    by_param = model.policy.optimizer.state
    return {k: {s: t.clone() for s, t in by_param[p].items()} for k, p in model.policy.named_parameters()
            if p in by_param}


# ------------------------------------------------------------------------------ unit
@pytest.mark.parametrize("fraction", [0.2, 1.0])
def test_shrink_perturb_moves_each_parameter_the_stated_fraction_toward_a_fresh_init(trained_ppo, fraction):
    model = trained_ppo
    before, adam_before = params(model), adam_state(model)
    rng_before = torch.get_rng_state()
    shrink_perturb(model, fraction, seed=123)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the training RNG is untouched
    after = params(model)
    rng_after_ref = reference_init(model, 123)
    for name, theta in before.items():
        fresh = rng_after_ref[name].double()
        expected = (1 - fraction) * theta.double() + fraction * fresh
        assert torch.allclose(after[name].double(), expected, rtol=0, atol=1e-6), name
        # the distance to the fresh init shrank by exactly (1 - fraction)
        gap_before = (theta.double() - fresh).norm()
        assert float((after[name].double() - fresh).norm()) == pytest.approx((1 - fraction) * float(gap_before),
                                                                            abs=1e-5)
    for name, state in adam_state(model).items():  # Adam's moments are kept
        assert all(torch.equal(t, adam_before[name][s]) for s, t in state.items())
    model.learn(32, reset_num_timesteps=False)  # and training goes on


def test_reset_head_changes_only_the_last_layers_and_resets_their_adam_state(trained_ppo):
    model = trained_ppo
    before, adam_before = params(model), adam_state(model)
    assert {"action_net.weight", "value_net.weight", "mlp_extractor.policy_net.0.weight"} <= set(adam_before)
    names = reset_head(model, seed=7)
    assert sorted(names) == ["action_net.bias", "action_net.weight", "value_net.bias", "value_net.weight"]
    after, adam_after, fresh = params(model), adam_state(model), reference_init(model, 7)
    for name in before:
        if name.split(".")[0] in ("action_net", "value_net"):
            assert torch.equal(after[name], fresh[name]) and not torch.equal(after[name], before[name]), name
            assert name not in adam_after
        else:
            assert torch.equal(after[name], before[name]), name  # bit-identical
            assert all(torch.equal(t, adam_before[name][s]) for s, t in adam_after[name].items())
    model.learn(32, reset_num_timesteps=False)  # Adam re-creates the head's state at its next step
    assert {"action_net.weight", "value_net.weight"} <= set(adam_state(model))


def test_surgeon_reports_health_before_and_after():
    model = make_tiny_ppo()
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    actuator = InterventionActuator(plasticity=PlasticitySurgeon(0.5, seed=3, observations=lambda: obs))
    applied = actuator.apply("shrink_perturb", model, step=640)
    health = actuator.pop_health()
    assert set(health) == {"before", "after"} and actuator.pop_health() is None
    assert set(health["before"]) == {"param_norm", "pi_param_norm", "vf_param_norm", "dead_fraction", "logit_range"}
    assert health["before"]["param_norm"] != health["after"]["param_norm"]
    assert f"seed {surgery_seed(3, 640, 'shrink_perturb')}" in applied and "param_norm" in applied
    assert surgery_seed(3, 640, "shrink_perturb") != surgery_seed(3, 640, "reset_head") != surgery_seed(4, 640,
                                                                                                       "reset_head")


# ----------------------------------------------------------------------- end to end
class Snapshots(BaseCallback):
    """Policy parameters and the Adam state's keys at every update boundary, after the coordinator's callbacks."""

    def __init__(self):
        super().__init__()
        self.params: dict[int, dict[str, torch.Tensor]] = {}
        self.adam: dict[int, set[str]] = {}

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        self.params[self.model.num_timesteps] = params(self.model)
        self.adam[self.model.num_timesteps] = set(adam_state(self.model))


def rows(tracked, run_id: str, action: str) -> list[dict]:
    return [r for r in tracked.interventions(run_id) if r["action"] == action]


def test_forced_surgery_is_logged_with_health_and_a_rollback_restores_the_pre_intervention_weights(tracked):
    cfg = tracked.config(monitor__interventions=PLASTIC, monitor__shrink_perturb_fraction="0.5")
    comps = build_components(cfg)
    # 768: shrink_perturb; 1024: roll back (to the 512 checkpoint, older than the surgery); 1280: reset_head
    comps.monitor = ScriptedMonitor({768: "shrink_perturb", 1024: "rollback", 1280: "reset_head"},
                                    comps.monitor.thresholds, comps.monitor.intervention_strategies)
    snaps = Snapshots()
    result = train(cfg, preset="everything", components=comps, extra_callbacks=[snaps],
                   checkpoint_root=tracked.checkpoint_root("plastic"))
    run = result.run_id
    assert result.status == "FINISHED" and tracked.status(run) == "FINISHED"
    assert tracked.history(run, "intervention/shrink_perturb") == {768: 1.0}
    assert tracked.history(run, "intervention/reset_head") == {1280: 1.0}
    (sp,) = rows(tracked, run, "shrink_perturb")
    (rh,) = rows(tracked, run, "reset_head")
    for row in (sp, rh):
        before, after = row["health"]["before"], row["health"]["after"]
        assert {"param_norm", "dead_fraction", "logit_range"} <= set(before) & set(after)
        assert before["param_norm"] != after["param_norm"]
    # "before" is the health the parameter watch logged at that update; "after" is the surgery's result
    assert sp["health"]["before"]["param_norm"] == tracked.history(run, "convergence/param_norm")[768]
    norm = lambda p: float(torch.linalg.vector_norm(torch.stack([t.norm() for t in p.values()])))  # noqa: E731
    assert sp["health"]["after"]["param_norm"] == pytest.approx(norm(snaps.params[768]), rel=1e-6)
    assert "0.5 of the way to a fresh init" in sp["applied"] and "dead_fraction" in sp["applied"]
    # the rollback went to the 512 checkpoint: the pre-intervention weights, bit for bit
    (rollback,) = rows(tracked, run, "rollback")
    assert rollback["applied"].startswith("restored checkpoint of step 512")
    for name, tensor in snaps.params[512].items():
        assert torch.equal(snaps.params[1024][name], tensor), name
    assert any(not torch.equal(snaps.params[768][k], v) for k, v in snaps.params[512].items())
    # reset_head: the head holds a fresh init (seeded by run seed and step) and has no Adam state at that boundary
    fresh = reference_init(snaps.model, surgery_seed(cfg.run.seed, 1280, "reset_head"))
    for name, tensor in snaps.params[1280].items():
        if name.split(".")[0] in ("action_net", "value_net"):
            assert torch.equal(tensor, fresh[name]), name
    assert not {"action_net.weight", "value_net.weight"} & snaps.adam[1280]
    assert {"action_net.weight", "value_net.weight"} <= snaps.adam[1536]


class DeadUnits(ConvergenceMonitor):
    """A real monitor (gate, cooldown, ledger) that reads every update's dead fraction as 0.9."""

    def analyze_convergence(self, metrics):
        return super().analyze_convergence({**metrics, "dead_fraction": 0.9})


def dead_unit_components(cfg):
    comps = build_components(cfg)
    mon = comps.monitor
    comps.monitor = DeadUnits(mon.thresholds, mon.intervention_strategies, cooldowns=mon.cooldowns,
                              plasticity=mon.plasticity)
    return comps


def test_resume_restores_the_plasticity_cooldown_and_rows(tracked):
    cfg = tracked.config(monitor__interventions=PLASTIC, monitor__plasticity_patience="1",
                         monitor__plasticity_cooldown="1024")
    killed = train(cfg, preset="everything", components=dead_unit_components(cfg), extra_callbacks=[SigtermAt(768)],
                   checkpoint_root=tracked.checkpoint_root("plastic_resume"))
    run = killed.run_id
    assert killed.status == "KILLED" and tracked.status(run) == "KILLED"
    assert [r["step"] for r in rows(tracked, run, "shrink_perturb")] == [256]
    resumed = train(cfg, resume=run, components=dead_unit_components(cfg))
    assert resumed.status == "FINISHED" and resumed.run_id == run
    steps = [r["step"] for r in rows(tracked, run, "shrink_perturb")]
    # fired at 256; the restored cooldown (1024 steps) holds it until the first update at or after 1280
    first_after = min(s for s in tracked.history(run, "train/loss") if s >= 1280)
    assert steps == [256, first_after] and all(r["health"] for r in rows(tracked, run, "shrink_perturb"))


# --------------------------------------------------------------------------------- config
@pytest.mark.parametrize("override,needle", [
    ("monitor.shrink_perturb_fraction=0", "monitor.shrink_perturb_fraction=0.0: must be in (0, 1]"),
    ("monitor.shrink_perturb_fraction=1.5", "monitor.shrink_perturb_fraction=1.5: must be in (0, 1]"),
    ("monitor.plasticity_patience=0", "monitor.plasticity_patience=0: must be >= 1"),
    ("monitor.plasticity_cooldown=-1", "monitor.plasticity_cooldown=-1: must be >= 0"),
    ("monitor.plasticity_dead_fraction=0", "monitor.plasticity_dead_fraction=0.0: must be in (0, 1]"),
    ("monitor.plasticity_logit_range=0", "monitor.plasticity_logit_range=0.0: must be > 0"),
    ("monitor.interventions=reset_head+shrink_perturbb", "(did you mean `shrink_perturb`?)"),
])
def test_bad_plasticity_settings_exit_2_before_any_run(override, needle, mlflow_uri, capsys):
    from mlflow.tracking import MlflowClient

    from convopt_mlflow import cli

    code = cli.main(["train", "--preset", "lr", "--set", override])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err
    client = MlflowClient(tracking_uri=mlflow_uri)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_plasticity_settings_reach_the_monitor():
    from convopt_mlflow.config import build_config

    cfg = build_config("lr", {"monitor.interventions": "lr_restart+reset_head", "monitor.plasticity_patience": "2",
                              "monitor.plasticity_cooldown": "5000", "monitor.plasticity_logit_range": "9"})
    monitor = build_components(cfg).monitor
    assert monitor.plasticity.patience == 2 and monitor.plasticity.saturated_logit_range == 9.0
    assert monitor.cooldown("reset_head") == 5000 and "shrink_perturb" not in monitor.cooldowns
    assert build_components(build_config("lr")).monitor.plasticity is None  # opt-in
