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
def workdir(tmp_path, mlflow_template):
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_template.copy_to(tmp_path)}
    env.pop("MLFLOW_RUN_ID", None)
    return tmp_path, env, MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])


HOLDER = str(Path(__file__).with_name("holder.py"))


class Held:
    """A ``convopt train`` process that stops at ``spec`` (see holder.py) and waits there."""

    def __init__(self, tmp_path, env, spec, *args):
        self.marker, self.release = tmp_path / "held", tmp_path / "release"
        self.marker.unlink(missing_ok=True)
        self.release.unlink(missing_ok=True)
        cmd = [sys.executable, HOLDER, str(self.marker), str(self.release), spec, "--", "train", *args]
        self.proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        deadline = time.time() + 300
        while not self.marker.exists():
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.time() < deadline, "the hold was never reached"
            time.sleep(0.05)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def go_on(self, timeout=300):
        self.release.write_text("go")
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err


def _convopt(tmp_path, env, *args):
    return subprocess.run([sys.executable, "-m", "convopt_mlflow.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def _assert_no_step_twice(client, run_id):
    for key in client.get_run(run_id).data.metrics:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == len(set(steps)), f"{key} logged a step twice"


def _models(client, run):
    return client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")


def _only_run(client):
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return run


def test_sigterm_checkpoints_and_ends_killed(workdir):
    tmp_path, env, client = workdir
    held = Held(tmp_path, env, "step:2048", "--preset", "lr", "--set", SETTINGS, "--total-timesteps", "400000")
    held.proc.send_signal(signal.SIGTERM)
    code, err = held.go_on()
    assert code == 143, err
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
    held = Held(tmp_path, env, "step:4096", "--preset", "lr", "--set", SETTINGS, "--total-timesteps", str(total))
    run = _only_run(client)
    run_id = run.info.run_id
    # while its process lives, a resume is refused and changes nothing
    before = client.get_run(run_id).data
    refused = _convopt(tmp_path, env, "train", "--resume", run_id)
    assert refused.returncode == 2 and "may still be training it" in refused.stderr, refused.stderr
    assert client.get_run(run_id).data.tags == before.tags and client.get_run(run_id).info.status == "RUNNING"
    held.kill()
    ckpt_dir = Path(run.data.tags["convopt.checkpoint_dir"])
    assert client.get_run(run_id).info.status == "RUNNING"  # kill -9 leaves it RUNNING ...
    cleanup = _convopt(tmp_path, env, "runs", "cleanup")
    assert cleanup.returncode == 0 and run_id in cleanup.stdout
    assert client.get_run(run_id).info.status == "KILLED"  # ... until cleanup marks it
    # corrupt the newest checkpoint: resume must fall back to the one before and say so
    entries = json.loads((ckpt_dir / "manifest.json").read_text())["entries"]
    newest = max(entries, key=lambda e: e["step"])
    assert newest["step"] >= 4096
    older = max(e["step"] for e in entries if e["step"] < newest["step"])
    path = ckpt_dir / newest["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    resumed = _convopt(tmp_path, env, "train", "--resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["convopt.resumed_from_step"] == str(older)
    _assert_no_step_twice(client, run_id)
    assert max(m.step for m in client.get_metric_history(run_id, "time/total_timesteps")) >= total
    local = client.download_artifacts(run_id, "interventions.json", str(tmp_path))
    rows = json.loads(Path(local).read_text())
    assert any(r["action"] == "skip_corrupt_checkpoint" and "sha256" in r["reason"] for r in rows)
    assert "Downloading artifacts" not in resumed.stderr  # the run's own summary comes last
    last = resumed.stderr.rstrip().splitlines()[-1].lstrip()  # a summary line: a result, or the no-edge verdict
    assert last.startswith(("open it: mlflow ui", "convopt: the agent found no edge")), last


# Points inside finalization, in the order a run passes them.
FINALIZATION_POINTS = [
    "before:convopt_mlflow.training.coordinator:finalize_run",             # final checkpoint written
    "before:convopt_mlflow.tracking:finished_model_uri",                   # backtest metrics logged
    "before:mlflow.tracking:MlflowClient.finalize_logged_model",           # model written, not yet READY
    "before:convopt_mlflow.tracking.runs:RunHandle.end",                   # model complete, run not ended
]


def test_kills_during_finalization_resume_into_finalization_only(workdir):
    """A kill -9 at each point of finalization, each followed by --resume that is killed at the next
    point: the run ends FINISHED with one value per backtest metric and one logged model."""
    tmp_path, env, client = workdir
    held = Held(tmp_path, env, FINALIZATION_POINTS[0], "--preset", "lr", "--set", SETTINGS,
                "--total-timesteps", "2048")
    run = _only_run(client)
    run_id = run.info.run_id
    held.kill()
    train_steps = [m.step for m in client.get_metric_history(run_id, "time/total_timesteps")]
    for spec in FINALIZATION_POINTS[1:]:
        Held(tmp_path, env, spec, "--resume", run_id).kill()
        assert client.get_run(run_id).data.tags["convopt.phase"] != "training"
    resumed = _convopt(tmp_path, env, "train", "--resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    run = client.get_run(run_id)
    assert (run.info.status, run.data.tags["convopt.phase"]) == ("FINISHED", "finished")
    assert [m.step for m in client.get_metric_history(run_id, "time/total_timesteps")] == train_steps  # no retraining
    _assert_no_step_twice(client, run_id)
    for key in [k for k in run.data.metrics if k.startswith(("backtest/", "benchmark/"))]:
        assert len(client.get_metric_history(run_id, key)) == 1, key
    (model,) = _models(client, run)
    assert run.data.tags["convopt.model_uri"] == f"models:/{model.model_id}"

    # a FINISHED run is not resumed: exit 2, and nothing in it changes
    rows = {k: len(client.get_metric_history(run_id, k)) for k in run.data.metrics}
    again = _convopt(tmp_path, env, "train", "--resume", run_id)
    assert again.returncode == 2 and "is FINISHED" in again.stderr and "Traceback" not in again.stderr
    after = client.get_run(run_id)
    assert after.info.status == "FINISHED" and after.info.end_time == run.info.end_time
    assert {k: len(client.get_metric_history(run_id, k)) for k in after.data.metrics} == rows
    assert after.data.tags == run.data.tags and len(_models(client, after)) == 1


def test_sigterm_during_finalization_ends_killed_and_resume_completes(workdir):
    tmp_path, env, client = workdir
    held = Held(tmp_path, env, FINALIZATION_POINTS[1], "--preset", "lr", "--set", SETTINGS,
                "--total-timesteps", "1024")
    held.proc.send_signal(signal.SIGTERM)
    code, err = held.go_on()
    assert code == 143, err
    run = _only_run(client)
    assert run.info.status == "KILLED" and "during finalization" in err
    assert run.data.tags["convopt.stop_reason"] == "received SIGTERM during finalization"
    assert not _models(client, run)
    resumed = _convopt(tmp_path, env, "train", "--resume", run.info.run_id)
    assert resumed.returncode == 0, resumed.stderr
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED" and len(_models(client, run)) == 1
    _assert_no_step_twice(client, run.info.run_id)


def test_kill_before_the_first_checkpoint_restarts_the_same_run_from_step_0(workdir):
    tmp_path, env, client = workdir
    held = Held(tmp_path, env, "before:convopt_mlflow.training.coordinator:make_model", "--preset", "lr",
                "--set", SETTINGS + ",ppo.n_epochs=1", "--total-timesteps", "1024")
    held.kill()
    run = _only_run(client)
    assert run.info.status == "RUNNING" and not run.data.metrics
    resumed = _convopt(tmp_path, env, "train", "--resume", run.info.run_id)
    assert resumed.returncode == 0, resumed.stderr
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED" and run.data.params["ppo.n_epochs"] == "1"  # its logged config
    assert min(m.step for m in client.get_metric_history(run.info.run_id, "time/total_timesteps")) <= 256
    assert len(client.search_runs([run.info.experiment_id])) == 1
