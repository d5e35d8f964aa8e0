"""Integrity kept outside the artifact, verified loading and registration, and real serving.

Tampering is done the way an attacker with write access to the artifact store would do
it: by editing the stored files on disk under the temporary store's artifact root.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from stable_baselines3 import PPO

import convopt_mlflow
from convopt_mlflow.data import compute_features, generate_market
from convopt_mlflow.env import MarketCore, TradingVecEnv
from convopt_mlflow.errors import UserError
from convopt_mlflow.tracking.integrity import MODEL_HASHES_TAG, ModelIntegrityError, artifact_hashes, verify_artifact
from convopt_mlflow.tracking.model import log_policy_model, policy_spec
from convopt_mlflow.tracking.registry import (
    ModelNotFoundError,
    load_model,
    load_verified_copy,
    private_dir,
    register_verified_model,
)

WINDOW, VOL_WINDOW, N_BARS = 4, 4, 120
NAME = "convopt-ensemble"


@pytest.fixture(scope="module")
def market():
    frame = generate_market(N_BARS, seed=0, signal_ic=0.1).frame
    return frame, compute_features(frame, vol_window=VOL_WINDOW)


@pytest.fixture(scope="module")
def logged(store, market):
    """A 2-member majority-vote ensemble logged into a run; returns (run_id, model_id, artifact dir)."""
    frame, features = market
    core = MarketCore(features.values, features.log_returns, window=WINDOW, episode_length=32, cost_bps=1.0,
                      warmup=features.warmup)
    members = [PPO("MlpPolicy", TradingVecEnv(core, n_envs=2, seed=s), seed=s, device="cpu",
                   policy_kwargs={"net_arch": [8]}) for s in (0, 1)]
    run = store.client.create_run(store.client.create_experiment("registry-test"))
    config = {"window": WINDOW, "observation": "window", "vol_window": VOL_WINDOW, "cost_bps": 1.0,
              "long_only": False, "feature_names": features.names}
    uri = log_policy_model(run.info.run_id, members=[m.policy.state_dict() for m in members],
                           spec=policy_spec(members[0]), feature_config=config, input_example=frame.iloc[:40],
                           combination={"method": "majority_vote", "weights": [0.6, 0.4]})
    model_id = uri.removeprefix("models:/")
    location = Path(store.client.get_logged_model(model_id).artifact_location.removeprefix("file://"))
    assert location.is_dir()
    return run.info.run_id, model_id, location


@pytest.fixture(scope="module")
def version(logged):
    run_id, _, _ = logged
    registered = register_verified_model(f"runs:/{run_id}/model", NAME, tags={"convopt.arm": "full"})
    mlflow.MlflowClient().set_registered_model_alias(NAME, "challenger", registered.version)
    return registered


class tampered:
    """Edit one stored file for the duration of a ``with`` block, then restore its bytes."""

    def __init__(self, path: Path, edit):
        self.path, self.edit = path, edit

    def __enter__(self):
        self.original = self.path.read_bytes()
        self.path.write_bytes(self.edit(self.original))

    def __exit__(self, *exc):
        self.path.write_bytes(self.original)


def _flip_byte(data: bytes) -> bytes:
    data = bytearray(data)
    data[len(data) // 2] ^= 0x01
    return bytes(data)


def _relu_spec(data: bytes) -> bytes:
    """A plausible malicious edit: same shapes, other activation, so the weights still load."""
    description = json.loads(data)
    description["spec"]["activation"] = "relu"
    return json.dumps(description, indent=2, sort_keys=True).encode()


def test_every_file_is_recorded_in_a_run_tag(store, logged):
    run_id, model_id, location = logged
    record = json.loads(store.client.get_run(run_id).data.tags[MODEL_HASHES_TAG])
    assert record["model_id"] == model_id
    assert record["files"] == artifact_hashes(location)
    assert {"MLmodel", "model_code.py", "requirements.txt", "artifacts/policy.json", "artifacts/member_0.pt",
            "artifacts/member_1.pt"} <= set(record["files"])
    policy = json.loads((location / "artifacts" / "policy.json").read_text())
    assert policy["combination"] == {"method": "majority_vote", "weights": [0.6, 0.4]}


def test_verified_load_from_run_and_logged_model(logged, market):
    run_id, model_id, _ = logged
    frame, _ = market
    out = convopt_mlflow.load_model(f"runs:/{run_id}/model").predict(frame)
    assert list(out.columns) == ["position", "prob_short", "prob_flat", "prob_long", "agreement", "ready"]
    ready = out[out["ready"]]
    assert set(ready["agreement"]) <= {0.0, 0.4, 0.6, 1.0}  # the weights of the members that agree
    again = load_model(f"models:/{model_id}").predict(frame)
    assert again.equals(out)


@pytest.mark.parametrize("relative,edit,plain_loads", [
    ("artifacts/member_0.pt", _flip_byte, False),  # policy.json's own hashes catch this one
    ("artifacts/policy.json", _relu_spec, True),   # plain MLflow loads a different network
    ("model_code.py", None, True),                 # plain MLflow executes the edited code
])
def test_tampering_is_refused_before_anything_runs(logged, version, tmp_path, relative, edit, plain_loads):
    run_id, _, location = logged
    marker = tmp_path / "executed"
    if edit is None:
        def edit(data):
            return data + f"\nopen({str(marker)!r}, 'w').close()\n".encode()
    with tampered(location / relative, edit):
        for uri in (f"runs:/{run_id}/model", f"models:/{NAME}@challenger", f"models:/{NAME}/{version.version}"):
            with pytest.raises(ModelIntegrityError, match=f"sha256 mismatch for '{relative}'"):
                load_model(uri)
        assert not marker.exists()
        with pytest.raises(ModelIntegrityError, match=relative):
            register_verified_model(f"runs:/{run_id}/model", NAME)
        if plain_loads:  # what plain MLflow does with the same artifact
            mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
            assert marker.exists() == (relative == "model_code.py")
        else:
            with pytest.raises(ModelIntegrityError, match="sha256 mismatch for ensemble member 'member_0.pt'"):
                mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    load_model(f"runs:/{run_id}/model")  # restored: loads again


def test_added_or_removed_files_are_refused(logged):
    run_id, _, location = logged
    extra = location / "artifacts" / "sitecustomize.py"
    extra.write_text("raise SystemExit\n")
    try:
        with pytest.raises(ModelIntegrityError, match="'artifacts/sitecustomize.py' is in the artifact but"):
            load_model(f"runs:/{run_id}/model")
    finally:
        extra.unlink()
    requirements = location / "requirements.txt"
    with tampered(requirements, lambda data: data):
        requirements.unlink()
        with pytest.raises(ModelIntegrityError, match="'requirements.txt' is recorded but missing"):
            load_model(f"runs:/{run_id}/model")


def test_bytecode_is_deleted_from_a_verified_copy_and_never_recorded(logged, tmp_path):
    run_id, _, location = logged
    files = json.loads(mlflow.MlflowClient().get_run(run_id).data.tags[MODEL_HASHES_TAG])["files"]
    copy = tmp_path / "copy"
    shutil.copytree(location, copy)
    for planted in ("__pycache__/model_code.cpython-311.pyc", "artifacts/__pycache__/x.cpython-311.pyc",
                    "model_code.pyc", "artifacts/__pycache__/deeper/readme.txt"):
        (copy / planted).parent.mkdir(parents=True, exist_ok=True)
        (copy / planted).write_bytes(b"planted")
    assert artifact_hashes(copy) == files  # bytecode is never part of the record
    verify_artifact(copy, files, "copy")
    assert not list(copy.rglob("__pycache__")) and not list(copy.rglob("*.pyc"))
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()) == sorted(files)


def test_the_verified_copy_is_private_and_loading_writes_no_bytecode(logged, tmp_path, monkeypatch):
    run_id, _, location = logged
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # Python's default (this machine sets PYTHONDONTWRITEBYTECODE)
    with private_dir("convopt-test-") as folder:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == os.getuid()
    assert not folder.exists()
    for loader in (load_verified_copy, mlflow.pyfunc.load_model):
        copy = tmp_path / loader.__name__
        shutil.copytree(location, copy)
        before = sys.dont_write_bytecode
        loader(str(copy))
        assert sys.dont_write_bytecode is before is False
        # plain MLflow leaves model_code's bytecode beside it; the verified loader writes none
        assert bool(list(copy.rglob("*.pyc"))) == (loader is mlflow.pyfunc.load_model)


def test_missing_hashes_are_refused(store, logged, version):
    run_id, model_id, _ = logged
    plain = mlflow.register_model(f"models:/{model_id}", NAME)  # registered without convopt's helper
    with pytest.raises(ModelIntegrityError, match=f"version {plain.version} has no tag '{MODEL_HASHES_TAG}'"):
        load_model(f"models:/{NAME}/{plain.version}")
    record = store.client.get_run(run_id).data.tags[MODEL_HASHES_TAG]
    store.client.delete_tag(run_id, MODEL_HASHES_TAG)
    try:
        with pytest.raises(ModelIntegrityError, match=f"run {run_id} has no tag"):
            load_model(f"runs:/{run_id}/model")
    finally:
        store.client.set_tag(run_id, MODEL_HASHES_TAG, record)


@pytest.mark.parametrize("uri,needle", [
    (f"models:/{NAME}@champion", "alias 'champion' of registered model 'convopt-ensemble' not found"),
    (f"models:/{NAME}/99", "version 99 of registered model 'convopt-ensemble' not found"),
    ("models:/nobody@champion", "registered model 'nobody' not found"),
    ("runs:/0123456789abcdef0123456789abcdef/model", "run '0123456789abcdef0123456789abcdef' not found"),
    ("s3://bucket/model", "unsupported model URI"),
])
def test_missing_model_or_alias_is_a_user_error(version, uri, needle):
    with pytest.raises(ModelNotFoundError, match=needle) as info:
        load_model(uri)
    assert isinstance(info.value, UserError)


def test_registry_round_trip_with_alias(store, version, market):
    frame, _ = market
    tags = store.client.get_model_version(NAME, version.version).tags
    assert tags["convopt.arm"] == "full" and json.loads(tags[MODEL_HASHES_TAG])["files"]
    plain = mlflow.pyfunc.load_model(f"models:/{NAME}@challenger").predict(frame)
    verified = load_model(f"models:/{NAME}@challenger").predict(frame)
    assert plain.equals(verified) and verified["ready"].sum() == N_BARS - 26


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _strict(constant: str):
    raise ValueError(f"non-JSON constant {constant} in the response")


def test_served_registered_model_answers_strict_json(store, version, market, tmp_path):
    frame, _ = market
    port = _free_port()
    env = os.environ | {"MLFLOW_TRACKING_URI": store.uri}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}/{version.version}",
         "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"],
        env=env, cwd=os.getcwd(), stdout=open(tmp_path / "server.log", "wb"), stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not answer /ping within 120 s"
            time.sleep(0.5)
        bars = frame.reset_index()
        bars["timestamp"] = bars["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S")
        body = json.dumps({"dataframe_split": bars.to_dict(orient="split", index=False)}).encode()
        status, answer = _post(f"{base}/invocations", body)
        assert status == 200, answer[:2000]
        rows = json.loads(answer, parse_constant=_strict)["predictions"]
        assert len(rows) == N_BARS
        assert rows[0]["prob_long"] is None and rows[0]["agreement"] is None and rows[0]["ready"] is False
        assert {row["position"] for row in rows} <= {-1.0, 0.0, 1.0}
        ready = [row for row in rows if row["ready"]]
        assert len(ready) == N_BARS - 26
        assert np.allclose([row["prob_short"] + row["prob_flat"] + row["prob_long"] for row in ready], 1.0)

        short = json.dumps({"dataframe_split": bars.iloc[:10].to_dict(orient="split", index=False)}).encode()
        status, answer = _post(f"{base}/invocations", short)
        assert status >= 400 and b"invalid market data" in answer
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_registering_prints_none_of_mlflows_own_success_lines(logged, capsys):
    """Our commands say once what was registered; MLflow's "Successfully registered model" and
    "Created version" lines (printed straight to stderr by mlflow.register_model) are dropped."""
    run_id, _, _ = logged
    capsys.readouterr()
    registered = register_verified_model(f"runs:/{run_id}/model", "quiet-registry")
    err = capsys.readouterr().err
    assert registered.version and "Successfully registered model" not in err and "Created version" not in err
