"""Checkpoint store and SB3 training-state capture, against real files, torch and SB3 PPO."""
from __future__ import annotations

import json
import os
from fractions import Fraction

import numpy as np
import pytest
import torch

from convopt_mlflow.training.checkpoints import (
    CheckpointEntry,
    CheckpointStore,
    CorruptCheckpointError,
    NoCheckpointError,
    capture_training_state,
    restore_training_state,
    sha256_file,
)


def small_state(step: int) -> dict:
    return {"w": torch.full((4,), float(step)), "step": step}


def fill(store: CheckpointStore, steps, scores=None) -> list[CheckpointEntry]:
    scores = scores or [None] * len(steps)
    return [store.save(s, small_state(s), score=sc) for s, sc in zip(steps, scores)]


def flip_bytes(path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 8] = bytes(b ^ 0xFF for b in data[mid:mid + 8])
    path.write_bytes(bytes(data))


def truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# ---------------------------------------------------------------- SB3 round trip
def test_restore_is_bit_identical_after_further_training(tmp_path, trained_ppo):
    model = trained_ppo
    env_rng = np.random.default_rng(7)
    state = capture_training_state(model, extras={"ent_coef": 0.01, "scheduler": {"scale": np.float64(0.5)},
                                                  "env_rng": env_rng.bit_generator.state})
    expected_env_draw = env_rng.random()
    after_capture = (torch.rand(3), np.random.random(3))
    saved_policy = {k: v.clone() for k, v in model.policy.state_dict().items()}
    saved_optim = model.policy.optimizer.state_dict()
    saved_optim = {i: {k: v.clone() for k, v in s.items()} for i, s in saved_optim["state"].items()}
    entry = CheckpointStore(tmp_path).save(model.num_timesteps, state)

    model.learn(64, reset_num_timesteps=False)  # moves params, Adam moments, counters and RNGs on
    assert model.num_timesteps == 128 and model._n_updates == 4
    assert not all(torch.equal(saved_policy[k], v) for k, v in model.policy.state_dict().items())

    loaded_entry, loaded, skipped = CheckpointStore(tmp_path).load_latest_good()
    assert (loaded_entry, skipped) == (entry, [])
    extras = restore_training_state(model, loaded)

    now_policy = model.policy.state_dict()
    assert now_policy.keys() == saved_policy.keys()
    for key, value in saved_policy.items():
        assert torch.equal(now_policy[key], value), key
    now_optim = model.policy.optimizer.state_dict()["state"]
    assert now_optim.keys() == saved_optim.keys() and len(saved_optim) == 8  # 8 parameter tensors
    for i, moments in saved_optim.items():
        assert set(moments) == {"step", "exp_avg", "exp_avg_sq"}
        for name, value in moments.items():
            assert torch.equal(now_optim[i][name], value), (i, name)
        assert now_optim[i]["step"].item() == 2.0  # two Adam steps in 64 steps
    assert (model.num_timesteps, model._n_updates) == (64, 2)
    assert torch.equal(torch.rand(3), after_capture[0])
    assert np.array_equal(np.random.random(3), after_capture[1])
    assert extras["ent_coef"] == 0.01 and extras["scheduler"] == {"scale": 0.5}
    restored_rng = np.random.default_rng()
    restored_rng.bit_generator.state = extras["env_rng"]
    assert restored_rng.random() == expected_env_draw

    model.learn(64, reset_num_timesteps=False)  # training continues from the restored state
    assert model.num_timesteps == 128


def test_captured_state_is_a_snapshot_and_loads_weights_only(tmp_path, trained_ppo):
    state = capture_training_state(trained_ppo)
    before = state["policy"]["mlp_extractor.policy_net.0.weight"].clone()
    with torch.no_grad():
        for p in trained_ppo.policy.parameters():
            p.add_(1.0)
    assert torch.equal(state["policy"]["mlp_extractor.policy_net.0.weight"], before)

    entry = CheckpointStore(tmp_path).save(64, state)
    raw = torch.load(tmp_path / entry.file, weights_only=True, map_location="cpu")
    assert set(raw) == {"format", "policy", "optimizer", "num_timesteps", "n_updates", "torch_rng",
                        "torch_cuda_rng", "numpy_rng", "extras_json", "extras_arrays"}
    assert raw["numpy_rng"]["key"].dtype == torch.int64 and raw["numpy_rng"]["key"].shape == (624,)
    assert raw["torch_rng"].dtype == torch.uint8
    assert (raw["num_timesteps"], raw["n_updates"], raw["extras_json"]) == (64, 2, "{}")


def test_restore_rejects_a_foreign_dict(trained_ppo):
    with pytest.raises(ValueError, match="lacks"):
        restore_training_state(trained_ppo, {"policy": {}})


# ---------------------------------------------------------------- atomic writes
def test_sha256_file_known_digest(tmp_path):
    (tmp_path / "abc").write_bytes(b"abc")
    assert sha256_file(tmp_path / "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_save_leaves_only_final_files_and_records_their_sha(tmp_path):
    (tmp_path / ".ckpt_killed.tmp").write_bytes(b"half a checkpoint")  # left by a killed save
    store = CheckpointStore(tmp_path)
    entries = fill(store, [10, 20])
    assert sorted(os.listdir(tmp_path)) == ["ckpt_000000000010.pt", "ckpt_000000000020.pt", "manifest.json"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [row["file"] for row in manifest["entries"]] == ["ckpt_000000000010.pt", "ckpt_000000000020.pt"]
    for e in entries:
        assert e.sha256 == sha256_file(tmp_path / e.file)
    assert torch.equal(store.load(entries[1])["w"], torch.full((4,), 20.0))


@pytest.mark.parametrize("bad", [np.float64(1.0), np.zeros(2), Fraction(1, 3)])
def test_save_refuses_values_weights_only_cannot_load(tmp_path, bad):
    store = CheckpointStore(tmp_path)
    with pytest.raises(TypeError, match=r"state\['extra'\]"):
        store.save(5, {"w": torch.zeros(1), "extra": bad})
    assert os.listdir(tmp_path) == [] and store.entries() == []


# ---------------------------------------------------------------- retention
def test_keep_last_plus_best(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=2)
    fill(store, [1, 2, 3, 4, 5], [0.1, 0.9, float("nan"), 0.2, 0.4])
    assert [e.step for e in store.entries()] == [2, 4, 5]
    assert store.best().step == 2 and store.best().score == 0.9
    assert sorted(os.listdir(tmp_path)) == ["ckpt_000000000002.pt", "ckpt_000000000004.pt",
                                            "ckpt_000000000005.pt", "manifest.json"]
    store.save(6, small_state(6), score=0.95)  # the new best is also among the newest
    assert [e.step for e in store.entries()] == [5, 6]


def test_nan_score_is_stored_as_none_and_ties_keep_the_earliest(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=1)
    fill(store, [1, 2, 3], [0.5, 0.5, float("nan")])
    assert [(e.step, e.score) for e in store.entries()] == [(1, 0.5), (3, None)]


def test_save_after_rollback_discards_the_abandoned_steps(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=5)
    fill(store, [100, 200, 300], [1.0, 3.0, 2.0])
    store.save(150, small_state(150))
    assert [e.step for e in store.entries()] == [100, 150]
    assert not (tmp_path / "ckpt_000000000200.pt").exists()


# ---------------------------------------------------------------- fallback
@pytest.mark.parametrize("damage", [flip_bytes, truncate])
def test_corrupt_newest_falls_back_to_previous(tmp_path, damage):
    store = CheckpointStore(tmp_path)
    e10, e20 = fill(store, [10, 20])
    damage(tmp_path / e20.file)
    entry, state, skipped = store.load_latest_good()
    assert entry == e10 and state["step"] == 10
    assert [(e, reason.split(" (")[0]) for e, reason in skipped] == [(e20, "sha256 mismatch")]
    with pytest.raises(CorruptCheckpointError, match="sha256 mismatch"):
        store.load(e20)


def test_missing_file_is_skipped_with_reason(tmp_path):
    store = CheckpointStore(tmp_path)
    e10, e20 = fill(store, [10, 20])
    (tmp_path / e20.file).unlink()
    entry, _, skipped = store.load_latest_good()
    assert entry == e10 and len(skipped) == 1 and skipped[0][1].startswith("unreadable file")


def test_all_corrupt_raises_and_lists_every_skip(tmp_path):
    store = CheckpointStore(tmp_path)
    for e in fill(store, [10, 20]):
        truncate(tmp_path / e.file)
    with pytest.raises(NoCheckpointError) as info:
        store.load_latest_good()
    assert "ckpt_000000000010.pt" in str(info.value) and "ckpt_000000000020.pt" in str(info.value)
    with pytest.raises(NoCheckpointError, match="no checkpoints saved"):
        CheckpointStore(tmp_path / "empty").load_latest_good()


def test_matching_sha_does_not_let_a_pickled_object_load(tmp_path):
    store = CheckpointStore(tmp_path)
    e10, e20 = fill(store, [10, 20])
    torch.save({"w": Fraction(1, 3)}, tmp_path / e20.file)  # a non-tensor Python object
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["entries"][1]["sha256"] = sha256_file(tmp_path / e20.file)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    reopened = CheckpointStore(tmp_path)
    entry, _, skipped = reopened.load_latest_good()
    assert entry == e10
    assert skipped[0][0].step == 20 and "weights_only=True" in skipped[0][1]


def test_max_step_filter(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=5)
    fill(store, [64, 128, 192])
    assert store.load_latest_good(max_step=150)[0].step == 128
    assert store.load_latest_good(max_step=192)[0].step == 192
    with pytest.raises(NoCheckpointError, match="step <= 10"):
        store.load_latest_good(max_step=10)


# ---------------------------------------------------------------- manifest
def test_manifest_survives_reopen(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=2)
    fill(store, [1, 2, 3], [0.7, None, 0.1])
    reopened = CheckpointStore(tmp_path, keep_last=2)
    assert reopened.entries() == store.entries() and [e.step for e in reopened.entries()] == [1, 2, 3]
    assert reopened.best() == store.best() and reopened.best().step == 1
    assert reopened.manifest_problem is None and reopened.unlisted_files() == []


@pytest.mark.parametrize("manifest", [None, "{not json", '{"format": 1, "entries": [{"file": "../x.pt"}]}',
                                      '{"format": 1, "entries": [{"file": "ckpt_000000000009.pt", "step": 10,'
                                      ' "sha256": "00", "score": null, "created": 0}]}'])
def test_missing_or_corrupt_manifest_means_no_checkpoints(tmp_path, manifest):
    fill(CheckpointStore(tmp_path), [10, 20])
    if manifest is None:
        (tmp_path / "manifest.json").unlink()
    else:
        (tmp_path / "manifest.json").write_text(manifest)
    store = CheckpointStore(tmp_path)
    assert store.entries() == [] and store.best() is None
    assert [p.name for p in store.unlisted_files()] == ["ckpt_000000000010.pt", "ckpt_000000000020.pt"]
    with pytest.raises(NoCheckpointError, match="manifest.json is"):
        store.load_latest_good()
    store.save(30, small_state(30))  # a fresh manifest; the unlisted files are left alone
    assert [e.step for e in CheckpointStore(tmp_path).entries()] == [30]
    assert (tmp_path / "ckpt_000000000010.pt").exists()


def test_keep_last_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointStore(tmp_path, keep_last=0)
