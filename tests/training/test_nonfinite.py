"""Non-finite values in the forward pass are divergence events, not crashes.

Real SB3 training at the tiny size of ``conftest.TINY_RUN`` (update k ends at env step
256 k; checkpoints at 0, 512, 1024, ...), a real sqlite MLflow store. A NaN is written
into one weight of the policy's action head at a chosen point: between two updates,
in the middle of a rollout, between a rollout and its update, and inside an update.
"""
from __future__ import annotations

import re

import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from convopt_mlflow.config import build_config
from convopt_mlflow.training.coordinator import train

from .conftest import TINY_RUN, OptimizerLR

WEIGHT = "action_net.weight"


def poison(model) -> None:
    with torch.no_grad():
        model.policy.action_net.weight[0, 0] = float("nan")


class NanWeight(BaseCallback):
    """Writes a NaN into the action head at ``hook`` ("rollout_start", "step" or "rollout_end")
    the first time ``num_timesteps`` is each of ``steps``."""

    def __init__(self, hook: str, steps):
        super().__init__()
        self.hook, self.steps, self.injected = hook, set(steps), []

    def _maybe(self, hook: str) -> None:
        if hook == self.hook and self.model.num_timesteps in self.steps:
            self.steps.discard(self.model.num_timesteps)
            poison(self.model)
            self.injected.append(self.model.num_timesteps)

    def _on_rollout_start(self) -> None:
        self._maybe("rollout_start")

    def _on_step(self) -> bool:
        self._maybe("step")
        return True

    def _on_rollout_end(self) -> None:
        self._maybe("rollout_end")


class NanInsideUpdate(BaseCallback):
    """Writes the NaN right after the first optimizer step of the update that starts at ``step``."""

    def __init__(self, step: int):
        super().__init__()
        self.step, self.injected = step, []

    def _on_training_start(self) -> None:
        self.model.policy.optimizer.register_step_post_hook(self._after_step)

    def _after_step(self, optimizer, args, kwargs) -> None:
        if self.model.num_timesteps == self.step and not self.injected:
            poison(self.model)
            self.injected.append(self.step)

    def _on_step(self) -> bool:
        return True


def rollbacks(tracked, run_id: str) -> list[dict]:
    return [r for r in tracked.interventions(run_id) if r["action"] == "rollback"]


def restored_step(row: dict) -> int:
    return int(re.search(r"restored checkpoint of step (\d+)", row["applied"]).group(1))


@pytest.mark.parametrize("injector, step, phase, restored", [
    (lambda: NanWeight("rollout_start", {512}), 512, "rollout", 512),  # between the updates at 512 and 768
    (lambda: NanWeight("step", {600}), 600, "rollout", 512),           # mid-rollout: the next forward pass raises
    (lambda: NanWeight("rollout_end", {768}), 768, "update", 512),     # after the rollout, before its update
    (lambda: NanInsideUpdate(1280), 1280, "update", 1024),             # the next minibatch's forward pass raises
], ids=["between_updates", "mid_rollout", "before_update", "inside_update"])
def test_nonfinite_weights_are_rolled_back_not_a_crash(tracked, capsys, injector, step, phase, restored):
    nan = injector()
    result = train(tracked.config(), preset="everything", extra_callbacks=[nan],
                   checkpoint_root=tracked.checkpoint_root(f"nan_weight_{step}"))
    run = result.run_id
    assert nan.injected == [step]
    assert (result.status, result.exit_code) == ("FINISHED", 0) and tracked.status(run) == "FINISHED"
    (row,) = rollbacks(tracked, run)
    assert row["step"] == step
    assert row["reason"] == f"divergence: non-finite parameters {WEIGHT} during the {phase}"
    assert restored_step(row) == restored and "LR scaled by 0.5" in row["applied"]
    assert tracked.history(run, "intervention/rollback") == {step: 1.0}
    assert tracked.history(run, "convergence/divergence_detected")[step] == 1.0
    # training went on to the end (a rollout cut short still counts its env steps, so updates may shift)
    assert max(tracked.history(run, "train/n_updates")) >= 2048
    assert tracked.nonfinite_values(run) == {}
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err


def test_nonfinite_weights_after_max_rollbacks_fail_the_run(tracked, capsys):
    nan = NanWeight("rollout_start", range(512, 4096, 256))  # every boundary from 512 on
    result = train(tracked.config(run__max_rollbacks=1), preset="everything", extra_callbacks=[nan],
                   checkpoint_root=tracked.checkpoint_root("nan_weight_persistent"))
    run = result.run_id
    assert (result.status, result.exit_code) == ("FAILED", 1) and tracked.status(run) == "FAILED"
    assert "run.max_rollbacks=1" in result.reason == tracked.tags(run)["convopt.failure_reason"]
    assert [r["step"] for r in rollbacks(tracked, run)] == [512]
    assert nan.injected == [512, 768]
    assert tracked.nonfinite_values(run) == {}
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err


def test_repeated_rollbacks_go_further_back_and_lower_the_lr_without_a_scheduler(tracked):
    # baseline: no scheduler, no monitor; NaN weights after the checkpoint at 1024 and again one update later
    cfg = build_config("baseline", {**TINY_RUN, "run.max_rollbacks": "3"})
    assert not cfg.scheduler_enabled and cfg.base_learning_rate == 3e-4
    nan, lr = NanWeight("rollout_start", {1024, 1280}), OptimizerLR()
    result = train(cfg, preset="baseline", extra_callbacks=[nan, lr],
                   checkpoint_root=tracked.checkpoint_root("nan_weight_twice"))
    run = result.run_id
    assert result.status == "FINISHED"
    first, second = rollbacks(tracked, run)
    assert (first["step"], restored_step(first)) == (1024, 1024)
    assert (second["step"], restored_step(second)) == (1280, 512)  # not 1024 again
    assert "LR scaled by 0.5 (schedule x0.25)" in second["applied"]
    # the LR the optimizer used, read after each update: SB3 re-applies the (scaled) schedule every update
    assert lr.seen == {256: 3e-4, 512: 3e-4, 768: 3e-4, 1024: 3e-4, 1280: 1.5e-4, 1536: 7.5e-5,
                       1792: 7.5e-5, 2048: 7.5e-5}
    assert tracked.history(run, "train/learning_rate")[2048] == 7.5e-5
