"""Run lifecycle across processes: SIGTERM, SIGKILL + cleanup + resume, corrupt checkpoints."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

SETTINGS = ("data.source=synthetic:n_bars=4000,seed=2,signal_ic=0.1,env.n_envs=4,ppo.n_steps=64,ppo.batch_size=64,"
            "ppo.n_epochs=2,ppo.net_arch=16,env.window=8,env.episode_length=64,run.eval_freq=2048,"
            "run.checkpoint_freq=1024,run.progress_bar=false,monitoring_window=4")


@pytest.fixture()
def workdir(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    env.pop("MLFLOW_RUN_ID", None)
    return tmp_path, env, MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])


def _start(tmp_path, env, *extra):
    cmd = [sys.executable, "-m", "convopt_mlflow.cli", "train", "--preset", "lr", "--set", SETTINGS, *extra]
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(tmp_path, proc, min_step, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for manifest in tmp_path.glob(".convopt/checkpoints/*/manifest.json"):
            try:
                steps = [e["step"] for e in json.loads(manifest.read_text())["entries"]]
            except (ValueError, KeyError, TypeError):
                continue
            if steps and max(steps) >= min_step:
                return manifest.parent
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("no checkpoint appeared")


def _only_run(client):
    (run,) = client.search_runs(["0"])
    return run


def test_sigterm_checkpoints_and_ends_killed(workdir):
    tmp_path, env, client = workdir
    proc = _start(tmp_path, env, "--total-timesteps", "400000")
    _wait_for_checkpoint(tmp_path, proc, 2048)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    run = _only_run(client)
    assert run.info.status == "KILLED"
    assert run.data.tags["convopt.stop_reason"] == "received SIGTERM"
    manifest = json.loads((Path(run.data.tags["convopt.checkpoint_dir"]) / "manifest.json").read_text())
    last_logged = max(m.step for m in client.get_metric_history(run.info.run_id, "time/total_timesteps"))
    assert max(e["step"] for e in manifest["entries"]) >= last_logged  # final checkpoint at the stop
    assert "Traceback" not in err


def test_sigkill_then_cleanup_then_resume_finishes_without_duplicate_steps(workdir):
    tmp_path, env, client = workdir
    total = 12288
    proc = _start(tmp_path, env, "--total-timesteps", str(total))
    ckpt_dir = _wait_for_checkpoint(tmp_path, proc, 4096)
    proc.kill()
    proc.wait()
    run = _only_run(client)
    run_id = run.info.run_id
    assert run.info.status == "RUNNING"  # kill -9 leaves it RUNNING ...
    cleanup = subprocess.run([sys.executable, "-m", "convopt_mlflow.cli", "runs", "cleanup"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert cleanup.returncode == 0 and run_id in cleanup.stdout
    assert client.get_run(run_id).info.status == "KILLED"  # ... until cleanup marks it
    # corrupt the newest checkpoint: resume must fall back to the one before and say so
    entries = json.loads((ckpt_dir / "manifest.json").read_text())["entries"]
    newest = max(entries, key=lambda e: e["step"])
    older = max(e["step"] for e in entries if e["step"] < newest["step"])
    path = ckpt_dir / newest["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    resumed = subprocess.run([sys.executable, "-m", "convopt_mlflow.cli", "train", "--resume", run_id],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["convopt.resumed_from_step"] == str(older)
    for key in run.data.metrics:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == len(set(steps)), f"{key} logged a step twice"
    assert max(m.step for m in client.get_metric_history(run_id, "time/total_timesteps")) >= total
    local = client.download_artifacts(run_id, "interventions.json", str(tmp_path))
    rows = json.loads(Path(local).read_text())
    assert any(r["action"] == "skip_corrupt_checkpoint" and "sha256" in r["reason"] for r in rows)
