"""Divergence handling end to end: real SB3 training, a real sqlite MLflow store, injected faults.

Every run is the ``everything`` preset (every component) at the tiny size of ``conftest.TINY_RUN``: 256 env
steps per update, so update k ends at step 256 k; a checkpoint every 512 steps (and
one at step 0). Faults are injected the way they happen for real: NaN rewards into
the rollout buffer, NaN observations out of the env, parameters blown up in place,
bytes flipped in a checkpoint file. Everything is asserted on what MLflow stored.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from convopt_mlflow.env import TradingVecEnv
from convopt_mlflow.training.checkpoints import CheckpointStore
from convopt_mlflow.training.coordinator import train


class NanRewards(BaseCallback):
    """Sets the rewards of env steps ``first < num_timesteps <= last`` to NaN before SB3 stores them."""

    def __init__(self, first: int, last: int):
        super().__init__()
        self.first, self.last = first, last
        self.injected = 0

    def _on_step(self) -> bool:
        if self.first < self.num_timesteps <= self.last:
            self.locals["rewards"][:] = np.nan  # in place: the rollout buffer adds this very array
            self.injected += 1
        return True


class ScaleParams(BaseCallback):
    """Multiplies every policy parameter by ``factor`` once, between the updates at ``at_step``."""

    def __init__(self, at_step: int, factor: float):
        super().__init__()
        self.at_step, self.factor = at_step, factor

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if self.num_timesteps == self.at_step:
            with torch.no_grad():
                for p in self.model.policy.parameters():
                    p.mul_(self.factor)


class Snapshots(BaseCallback):
    """Copies policy and optimizer state at every update boundary (after the coordinator's callbacks ran)."""

    def __init__(self):
        super().__init__()
        self.policy: dict[int, dict[str, torch.Tensor]] = {}
        self.optimizer: dict[int, dict] = {}

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        step = self.num_timesteps
        self.policy[step] = {k: v.detach().clone() for k, v in self.model.policy.state_dict().items()}
        self.optimizer[step] = {i: {k: v.clone() for k, v in s.items()}
                                for i, s in self.model.policy.optimizer.state_dict()["state"].items()}


class CorruptNewestCheckpoint(BaseCallback):
    """At the boundary ``at_step``, after that step's checkpoint was written, flips bytes of the newest one."""

    def __init__(self, at_step: int, checkpoint_root: str):
        super().__init__()
        self.at_step, self.root = at_step, Path(checkpoint_root)
        self.corrupted: Path | None = None

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if self.num_timesteps != self.at_step:
            return
        (run_dir,) = [p for p in self.root.iterdir() if p.is_dir()]
        newest = max(run_dir.glob("ckpt_*.pt"))
        data = bytearray(newest.read_bytes())
        middle = len(data) // 2
        data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
        newest.write_bytes(bytes(data))
        self.corrupted = newest


def rows(tracked, run_id: str, action: str) -> list[dict]:
    return [r for r in tracked.interventions(run_id) if r["action"] == action]


def restored_step(row: dict) -> int:
    match = re.search(r"restored checkpoint of step (\d+)", row["applied"])
    assert match, row
    return int(match.group(1))


# ----------------------------------------------------------------------------- NaN rewards
def test_nan_rewards_trigger_a_rollback_and_no_nonfinite_value_reaches_mlflow(tracked):
    nan = NanRewards(512, 516)  # one env step of the 3rd rollout: the update at step 768 diverges
    result = train(tracked.config(), preset="everything", extra_callbacks=[nan],
                   checkpoint_root=tracked.checkpoint_root("nan_rewards"))
    run = result.run_id
    assert nan.injected == 1
    assert (result.status, result.exit_code) == ("FINISHED", 0)
    assert tracked.status(run) == "FINISHED"
    assert tracked.history(run, "intervention/rollback") == {768: 1.0}
    assert tracked.history(run, "convergence/divergence_detected")[768] == 1.0
    assert tracked.history(run, "convergence/divergence_detected")[1024] == 0.0
    (row,) = rows(tracked, run, "rollback")
    assert row["step"] == 768 and "non-finite" in row["reason"]
    assert row["values"]["nonfinite"] >= 1
    assert restored_step(row) == 512
    # SB3 recorded NaN losses at step 768; none of them may have been stored
    assert 768 not in tracked.history(run, "train/loss")
    assert tracked.nonfinite_values(run) == {}


def test_nan_observations_are_counted_by_the_guard_and_rolled_back(tracked, monkeypatch):
    original = TradingVecEnv.step_wait
    calls = {"n": 0, "obs_size": 0}

    def step_wait_with_nan(self):
        obs, rewards, dones, infos = original(self)
        calls["n"] += 1
        if calls["n"] == 130:  # num_timesteps 520: inside the 3rd rollout, not at an episode end
            obs = obs.copy()
            obs[1] = np.nan
            calls["obs_size"] = obs.shape[1]
        return obs, rewards, dones, infos

    monkeypatch.setattr(TradingVecEnv, "step_wait", step_wait_with_nan)
    result = train(tracked.config(), preset="everything", checkpoint_root=tracked.checkpoint_root("nan_obs"))
    run = result.run_id
    assert result.status == "FINISHED" and tracked.status(run) == "FINISHED"
    assert tracked.history(run, "intervention/rollback") == {768: 1.0}
    (row,) = rows(tracked, run, "rollback")
    # exactly the NaN entries injected, all counted by the FiniteGuard (the update itself stayed finite)
    assert calls["obs_size"] > 0 and row["values"]["nonfinite"] == calls["obs_size"]
    assert f"non-finite values ({calls['obs_size']} events; keys [])" in row["reason"]
    assert restored_step(row) == 512
    assert tracked.nonfinite_values(run) == {}


# ------------------------------------------------------------------------- parameter blow-up
@pytest.fixture(scope="module")
def blown_up_run(tracked):
    """Every policy parameter x1000 right after the update at step 512; snapshots at every boundary."""
    snapshots = Snapshots()
    result = train(tracked.config(run__keep_checkpoints=10), preset="everything",
                   extra_callbacks=[snapshots, ScaleParams(512, 1e3)],
                   checkpoint_root=tracked.checkpoint_root("blow_up"))
    return result, snapshots


def test_param_blow_up_is_caught_by_the_param_norm_alarm_before_any_nan(tracked, blown_up_run):
    result, _ = blown_up_run
    run = result.run_id
    assert result.status == "FINISHED" and tracked.status(run) == "FINISHED"
    assert tracked.history(run, "convergence/param_norm_alarm")[768] == 1.0
    assert tracked.history(run, "intervention/rollback") == {768: 1.0}
    (row,) = rows(tracked, run, "rollback")
    assert "parameter alarm" in row["reason"] and "non-finite" not in row["reason"]
    assert row["values"]["nonfinite"] == 0.0
    assert 768 in tracked.history(run, "train/loss")  # the blown-up update itself was still finite
    norm = tracked.history(run, "convergence/param_norm")
    assert norm[768] > 100 * norm[512]  # what the monitor saw
    assert norm[1024] == pytest.approx(norm[512], rel=0.05)  # one update after the rollback: back to normal
    assert tracked.nonfinite_values(run) == {}


def test_rollback_restores_the_checkpoint_bit_for_bit(tracked, blown_up_run):
    result, snapshots = blown_up_run
    (row,) = rows(tracked, result.run_id, "rollback")
    store = CheckpointStore(tracked.tags(result.run_id)["convopt.checkpoint_dir"])
    assert restored_step(row) == 512
    (entry,) = [e for e in store.entries() if e.step == 512]
    saved = store.load(entry)
    after = snapshots.policy[row["step"]]
    assert after.keys() == saved["policy"].keys()
    for key, value in saved["policy"].items():
        assert torch.equal(after[key], value), key
    saved_state = saved["optimizer"]["state"]
    assert snapshots.optimizer[row["step"]].keys() == saved_state.keys()
    for index, state in saved_state.items():
        for key, value in state.items():
            assert torch.equal(snapshots.optimizer[row["step"]][index][key], value), (index, key)
    # the weights it replaced were the blown-up ones; the restored ones are those logged before the injection
    restored_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for v in after.values()])))
    assert row["values"]["param_norm"] > 100 * restored_norm
    assert restored_norm == pytest.approx(tracked.history(result.run_id, "convergence/param_norm")[512], rel=1e-5)


def test_rollback_skips_a_corrupt_newest_checkpoint(tracked):
    root = tracked.checkpoint_root("corrupt")
    corrupt = CorruptNewestCheckpoint(1024, root)
    nan = NanRewards(1024, 1028)  # the update at step 1280 diverges
    result = train(tracked.config(), preset="everything", extra_callbacks=[corrupt, nan], checkpoint_root=root)
    run = result.run_id
    assert corrupt.corrupted is not None and corrupt.corrupted.name == "ckpt_000000001024.pt"
    assert result.status == "FINISHED" and tracked.status(run) == "FINISHED"
    (row,) = rows(tracked, run, "rollback")
    assert row["step"] == 1280 and restored_step(row) == 512
    assert "(skipped 1 corrupt)" in row["applied"]
    (skip,) = rows(tracked, run, "skip_corrupt_checkpoint")
    assert skip["values"] == {"step": 1024} and "sha256 mismatch" in skip["reason"]


def test_divergence_that_persists_after_max_rollbacks_fails_the_run(tracked):
    nan = NanRewards(512, 10**9)  # every rollout from the 3rd on
    result = train(tracked.config(run__max_rollbacks=1), preset="everything", extra_callbacks=[nan],
                   checkpoint_root=tracked.checkpoint_root("persistent"))
    run = result.run_id
    assert (result.status, result.exit_code) == ("FAILED", 1)
    assert tracked.status(run) == "FAILED"
    reason = tracked.tags(run)["convopt.failure_reason"]
    assert "run.max_rollbacks=1" in reason and reason == result.reason
    # one rollback at 768, then the update at 1024 diverged again and ended the run
    assert tracked.history(run, "intervention/rollback") == {768: 1.0}
    assert [r["step"] for r in rows(tracked, run, "rollback")] == [768]
    assert tracked.history(run, "convergence/divergence_detected")[1024] == 1.0  # flushed on the failure path
    assert max(tracked.history(run, "train/n_updates")) == 1024  # stopped at the failing update, not later
    assert tracked.nonfinite_values(run) == {}
