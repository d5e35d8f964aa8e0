"""Two workers on one PostgreSQL study; one is SIGKILLed mid-trial; every cell still completes once.

Needs a real PostgreSQL: ``CONVOPT_TEST_POSTGRES_URL`` (``.ci/run`` installs and starts one
and sets it). Skipped only where it is unset, on a developer machine.
"""
import os
import signal
import subprocess
import time
import uuid

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

from convopt_mlflow.experiments.abtest import PARENT_ATTR, cell_counts, open_study
from convopt_mlflow.experiments.session import spec_from_args
from convopt_mlflow.experiments.storage import get_storage
from convopt_mlflow.tracking import open_run

from .conftest import DATA, TINY, cli_env, executable

URL = os.environ.get("CONVOPT_TEST_POSTGRES_URL", "")
pytestmark = pytest.mark.skipif(not URL, reason="CONVOPT_TEST_POSTGRES_URL is not set (.ci/run sets it)")


def _running_trial_of(study: optuna.Study, pid: int):
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.user_attrs.get("convopt.worker", "").endswith(f":{pid}") and trial.user_attrs.get("mlflow_run_id"):
            return trial
    return None


def test_a_killed_worker_s_cell_is_retried_and_every_cell_completes_once(tmp_path, mlflow_uri):
    name = f"pg-{uuid.uuid4().hex[:8]}"
    spec = spec_from_args("baseline,lr", 2, total_timesteps=4096, data=DATA,
                          overrides=dict(kv.split("=") for kv in TINY.split(",")))
    study = open_study(spec, get_storage(URL, workers=2, heartbeat_interval=1), name)
    parent = open_run(experiment=None, run_id=None, tags={"convopt.role": "ab-parent", "convopt.study": name})
    study.set_user_attr(PARENT_ATTR, parent.run_id)
    env = cli_env(mlflow_uri, CONVOPT_CHECKPOINT_ROOT=str(tmp_path / "ckpt"))
    command = [executable("convopt"), "worker", "--study", name, "--storage", URL, "--heartbeat-interval", "1"]
    workers = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for _ in range(2)]
    victim, survivor = workers
    try:
        deadline, killed = time.time() + 180, None
        while killed is None and time.time() < deadline and victim.poll() is None:
            killed = _running_trial_of(study, victim.pid)
            time.sleep(0.2)
        assert killed is not None, "the first worker never started a trial"
        time.sleep(1.0)  # mid-trial: the child run is open and training
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        out, _ = survivor.communicate(timeout=400)
        assert survivor.returncode == 0, out[-4000:]
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
    parent.end("FINISHED")

    counts = cell_counts(study)
    assert {cell: c.get("COMPLETE", 0) for cell, c in counts.items()} == {cell: 1 for cell in spec.cells}
    stale = study.trials[killed.number]
    assert stale.state == optuna.trial.TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert [t.state for t in retried] == [optuna.trial.TrialState.COMPLETE]

    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    assert client.get_run(killed.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    finished = [r for r in runs if r.data.tags.get("convopt.role") == "ab-trial" and r.info.status == "FINISHED"]
    assert sorted((r.data.tags["convopt.arm"], int(r.data.tags["convopt.seed"])) for r in finished) == sorted(spec.cells)
    optuna.delete_study(study_name=name, storage=get_storage(URL))


def test_ab_test_with_two_local_workers_trains_every_cell_exactly_once(tmp_path, mlflow_uri, capsys):
    from convopt_mlflow import cli

    name = f"pg2-{uuid.uuid4().hex[:8]}"
    code = cli.main(["ab-test", "--arms", "baseline,lr", "--seeds", "2", "--total-timesteps", "1024", "--data", DATA,
                     "--study", name, "--storage", URL, "--workers", "2", "--heartbeat-interval", "2",
                     "--set", TINY, "--no-register"])
    err = capsys.readouterr().err
    assert code == 0, err
    study = optuna.load_study(study_name=name, storage=get_storage(URL))
    try:
        spec_cells = [("baseline", 0), ("lr", 0), ("baseline", 1), ("lr", 1)]
        assert cell_counts(study) == {cell: {"COMPLETE": 1} for cell in spec_cells}
        pids = {int(t.user_attrs["convopt.worker"].rsplit(":", 1)[1]) for t in study.trials}
        # this process is one worker (it trains at once, while the spawned one imports), the other is spawned
        assert os.getpid() in pids and 1 <= len(pids) <= 2
        client = MlflowClient(tracking_uri=mlflow_uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        (parent,) = [r for r in runs if r.data.tags.get("convopt.role") == "ab-parent"]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert parent.info.status == "FINISHED" and parent.data.params["workers"] == "2"
        assert sorted((c.data.tags["convopt.arm"], int(c.data.tags["convopt.seed"])) for c in children) == \
            sorted(spec_cells)
        assert {c.info.status for c in children} == {"FINISHED"}
        assert {t.user_attrs["mlflow_run_id"] for t in study.trials} == {c.info.run_id for c in children}
        assert parent.data.metrics["ab/cells_complete"] == 4
    finally:
        optuna.delete_study(study_name=name, storage=get_storage(URL))


def test_tune_with_two_workers_on_postgresql_keeps_the_study_wide_budget(tmp_path, mlflow_uri, capsys):
    from convopt_mlflow import cli

    name = f"pgt-{uuid.uuid4().hex[:8]}"
    threads = torch.get_num_threads()
    code = cli.main(["tune", "--preset", "baseline", "--n-trials", "3", "--total-timesteps", "512", "--data", DATA,
                     "--storage", URL, "--study", name, "--workers", "2", "--heartbeat-interval", "2",
                     "--set", TINY + ",run.eval_freq=256"])
    err = capsys.readouterr().err
    assert code == 0, err
    study = optuna.load_study(study_name=name, storage=get_storage(URL))
    try:
        done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
        # one budget for both workers (each alone would run 3): at most one extra trial, when both finish at once
        assert len(done) == len(study.trials) and 3 <= len(done) <= 4
        pids = {int(t.user_attrs["convopt.worker"].rsplit(":", 1)[1]) for t in study.trials}
        # this process is one worker (it claims trial 0 at once, while the spawned one imports), the other is spawned
        assert os.getpid() in pids and 1 <= len(pids) <= 2
        assert study.trials[0].user_attrs["convopt.worker"].endswith(f":{os.getpid()}")
        assert torch.get_num_threads() == threads  # one thread while it trained, its own count back after
        client = MlflowClient(tracking_uri=mlflow_uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        (parent,) = [r for r in runs if r.data.tags.get("convopt.role") == "tune-parent"]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert parent.info.status == "FINISHED" and len(children) == len(study.trials)
        assert not [r for r in runs if r.info.status == "RUNNING"]
        assert {t.user_attrs["mlflow_run_id"] for t in study.trials} == {c.info.run_id for c in children}
        assert parent.data.tags["convopt.tune.best_run"] == study.best_trial.user_attrs["mlflow_run_id"]
    finally:
        optuna.delete_study(study_name=name, storage=get_storage(URL))
