"""A worker SIGKILLed mid-trial, then the study resumed: on every storage, no wait for ever.

sqlite and PostgreSQL have heartbeats; a journal has none, so a dead worker on this host
is found by its pid. Either way the killed trial ends FAIL, its MLflow run KILLED, and
every (arm, seed) cell completes exactly once. A cell held on another host, where nothing
can tell whether its worker lives, is waited for with a bound and a message.
"""
import os
import signal
import subprocess
import time
import uuid

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from convopt_mlflow import cli
from convopt_mlflow.experiments.abtest import cell_counts, open_study, run_cells
from convopt_mlflow.experiments.liveness import WORKER_ATTR, Wait, WaitTimeout, fail_dead_trials, holder_state
from convopt_mlflow.experiments.session import spec_from_args
from convopt_mlflow.experiments.storage import get_storage

from .conftest import DATA, TINY, cli_env, executable

POSTGRES = os.environ.get("CONVOPT_TEST_POSTGRES_URL", "")
STORAGES = ["sqlite", "journal", pytest.param("postgresql", marks=pytest.mark.skipif(
    not POSTGRES, reason="CONVOPT_TEST_POSTGRES_URL is not set (.ci/run sets it)"))]


def _url(kind: str, tmp_path) -> str:
    return {"sqlite": f"sqlite:///{tmp_path}/optuna.db", "journal": f"journal:///{tmp_path}/optuna.log",
            "postgresql": POSTGRES}[kind]


def _running_trial(study: optuna.Study, pid: int):
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(WORKER_ATTR, "").endswith(f":{pid}") and trial.user_attrs.get("mlflow_run_id"):
            return trial
    return None


@pytest.mark.parametrize("kind", STORAGES)
def test_a_worker_killed_mid_trial_is_failed_on_resume_and_every_cell_completes_once(kind, tmp_path, mlflow_uri):
    url, name = _url(kind, tmp_path), f"kill-{uuid.uuid4().hex[:8]}"
    command = [executable("convopt"), "ab-test", "--arms", "baseline,lr", "--seeds", "2", "--total-timesteps", "1024",
               "--data", DATA, "--set", TINY, "--study", name, "--storage", url, "--no-register",
               "--heartbeat-interval", "1", "--wait-timeout", "60"]
    env = cli_env(mlflow_uri, CONVOPT_CHECKPOINT_ROOT=str(tmp_path / "ckpt"))
    victim = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        deadline, killed, study = time.time() + 120, None, None
        while killed is None and time.time() < deadline and victim.poll() is None:
            time.sleep(0.3)
            try:
                study = study or optuna.load_study(study_name=name, storage=get_storage(url, workers=1))
                killed = _running_trial(study, victim.pid)
            except KeyError:  # the study is not created yet
                continue
        assert killed is not None, "the worker never started a trial"
        time.sleep(0.5)  # mid-trial: its child run is open and training
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    # the same command resumes the study; it must not wait for the orphan without a bound
    resumed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150)
    assert resumed.returncode == 0, resumed.stderr[-4000:]

    study = optuna.load_study(study_name=name, storage=get_storage(url, workers=1))
    counts = cell_counts(study)
    assert {cell: c.get("COMPLETE", 0) for cell, c in counts.items()} == {cell: 1 for cell in
                                                                          [("baseline", 0), ("lr", 0),
                                                                           ("baseline", 1), ("lr", 1)]}
    stale = study.trials[killed.number]
    assert stale.state == TrialState.FAIL
    killed_cell = (killed.params["arm"], killed.params["seed"])
    assert counts[killed_cell] == {"FAIL": 1, "COMPLETE": 1}
    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    killed_run = client.get_run(killed.user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "KILLED"
    if kind == "postgresql":
        optuna.delete_study(study_name=name, storage=get_storage(url))


def test_sqlite_storage_beats_and_a_stale_trial_on_another_host_is_failed_by_its_heartbeat(tmp_path, mlflow_uri):
    storage = get_storage(f"sqlite:///{tmp_path}/optuna.db", heartbeat_interval=1, grace_period=1)
    assert isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() == 1
    study = optuna.create_study(study_name="hb", storage=storage)
    trial = study.ask()
    trial.set_user_attr(WORKER_ATTR, "another-host-entirely:1")  # no pid to check: only the heartbeat can tell
    storage.record_heartbeat(trial._trial_id)
    time.sleep(2.5)
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        optuna.storages.fail_stale_trials(study)
    assert study.trials[trial.number].state == TrialState.FAIL
    assert [t.state for t in study.trials[1:]] == [TrialState.WAITING]  # re-queued by the retry callback


def test_a_dead_pid_on_this_host_is_failed_and_a_live_one_or_another_host_is_not(tmp_path):
    study = optuna.create_study(storage=get_storage(f"journal:///{tmp_path}/j.log"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "30"])
    try:
        host = os.uname().nodename
        trials = {}
        for label, worker in (("dead", f"{host}:{dead.pid}"), ("alive", f"{host}:{alive.pid}"),
                              ("other", f"another-host-entirely:{dead.pid}")):
            trials[label] = study.ask()
            trials[label].set_user_attr(WORKER_ATTR, worker)
        assert holder_state(study.trials[trials["dead"].number].user_attrs) == "dead"
        time.sleep(3.2)  # past the claim grace
        calls = []
        assert fail_dead_trials(study, on_failed=lambda s, t: calls.append(t.number)) == [trials["dead"].number]
        assert calls == [trials["dead"].number]
        states = {label: study.trials[t.number].state for label, t in trials.items()}
        assert states == {"dead": TrialState.FAIL, "alive": TrialState.RUNNING, "other": TrialState.RUNNING}
    finally:
        alive.kill()
        alive.wait()


def test_cells_held_on_another_host_are_waited_for_with_a_bound_and_a_message(tmp_path, mlflow_uri, capsys):
    spec = spec_from_args("baseline,lr", 2, total_timesteps=1024, data=DATA,
                          overrides=dict(kv.split("=") for kv in TINY.split(",")))
    study = open_study(spec, get_storage(f"journal:///{tmp_path}/ab.log", workers=2), "held")
    for arm in spec.arms:  # a worker on another machine holds both cells of seed 0
        study.enqueue_trial({"arm": arm, "seed": 0})
        trial = study.ask()
        trial.suggest_categorical("arm", list(spec.arms))
        trial.suggest_categorical("seed", list(spec.seeds))
        trial.set_user_attr(WORKER_ATTR, "another-host-entirely:4242")
    start = time.monotonic()
    with pytest.raises(WaitTimeout) as gave_up:
        run_cells(study, spec, "no-parent-needed", seeds=[0], poll_s=0.2, wait_timeout_s=1.5)
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err
    assert "waiting for 2 cell(s) held by other workers" in err and "another-host-entirely:4242" in err
    assert "(baseline, seed 0) trial 0 on another-host-entirely:4242" in str(gave_up.value)
    assert gave_up.value.exit_code == 3
    assert {t.state for t in study.trials} == {TrialState.RUNNING}  # nothing judged, nothing trained


def test_wait_notes_on_start_and_then_periodically_and_gives_up_past_its_bound(capsys):
    now = [0.0]
    wait = Wait(timeout_s=100, note_every_s=30, clock=lambda: now[0])
    for t in (0, 10, 31, 50, 62):
        now[0] = t
        wait.check(["(lr, seed 1) trial 3 on h:1"])
    assert capsys.readouterr().err.count("waiting for 1 cells held") == 3  # at 0, 31 and 62
    now[0] = 101
    with pytest.raises(WaitTimeout, match="gave up after waiting 101 s"):
        wait.check(["(lr, seed 1) trial 3 on h:1"])
    wait.reset()
    now[0] = 500
    wait.check([])  # a fresh wait starts its own clock


def test_worker_cli_takes_a_wait_timeout(tmp_path, mlflow_uri, capsys):
    code = cli.main(["worker", "--study", "nope", "--storage", f"journal:///{tmp_path}/ab.log",
                     "--wait-timeout", "soon"])
    assert code == 2 and "--wait-timeout must be a number" in capsys.readouterr().err


def test_tune_on_a_journal_fails_a_dead_worker_s_trial_instead_of_counting_it_for_ever(tmp_path, mlflow_uri, capsys):
    from convopt_mlflow.experiments.tune import TuneSpec, _open_study

    storage = f"journal:///{tmp_path}/tune.log"
    study = _open_study(TuneSpec("baseline", 1, {}), get_storage(storage), "t")
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = study.ask()  # a worker of this host claimed it and was killed: the one-trial budget looks spent
    orphan.set_user_attr(WORKER_ATTR, f"{os.uname().nodename}:{dead.pid}")
    time.sleep(3.2)  # past the claim grace
    code = cli.main(["tune", "--preset", "baseline", "--n-trials", "1", "--total-timesteps", "512", "--data", DATA,
                     "--storage", storage, "--study", "t", "--set", TINY + ",run.eval_freq=256"])
    assert code == 0, capsys.readouterr().err
    trials = optuna.load_study(study_name="t", storage=get_storage(storage)).trials
    assert trials[orphan.number].state == TrialState.FAIL
    assert [t.state for t in trials[1:]] in ([TrialState.COMPLETE], [TrialState.PRUNED])
    assert trials[1].system_attrs.get("failed_trial") == orphan.number  # the retry of the dead trial


def test_tune_workers_the_caller_retries_the_trial_of_a_spawned_worker_killed_after_it_finished(tmp_path, mlflow_uri):
    # `tune --workers 2` trains in its own process (trial 0 at once) and in one spawned worker (trial 1,
    # after its imports); the spawned one is SIGKILLed mid-trial while the caller, done, waits for it
    url = f"journal:///{tmp_path}/tune.log"
    command = [executable("convopt"), "tune", "--preset", "baseline", "--n-trials", "2", "--total-timesteps", "1024",
               "--data", DATA, "--storage", url, "--study", "t", "--workers", "2", "--set", TINY]
    caller = subprocess.Popen(command, cwd=tmp_path, env=cli_env(mlflow_uri), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline, killed, study = time.time() + 180, None, None
        while killed is None and time.time() < deadline and caller.poll() is None:
            time.sleep(0.2)
            try:
                study = study or optuna.load_study(study_name="t", storage=get_storage(url, workers=2))
            except KeyError:  # not created yet
                continue
            trials = study.get_trials(deepcopy=False)
            mine = [t for t in trials if t.user_attrs.get(WORKER_ATTR, "").endswith(f":{caller.pid}")]
            other = [t for t in trials if t.state == TrialState.RUNNING and t not in mine
                     and t.user_attrs.get("mlflow_run_id")]
            if mine and all(t.state.is_finished() for t in mine) and other:
                killed = other[0]
        assert killed is not None, "no spawned worker's trial ran after the caller's"
        time.sleep(0.3)
        os.kill(int(killed.user_attrs[WORKER_ATTR].rsplit(":", 1)[1]), signal.SIGKILL)
        out, _ = caller.communicate(timeout=240)
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
    assert caller.returncode == 0, out[-4000:]
    trials = optuna.load_study(study_name="t", storage=get_storage(url)).trials
    assert trials[killed.number].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry.user_attrs[WORKER_ATTR].endswith(f":{caller.pid}")  # retried by the caller
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 2
    client = MlflowClient(tracking_uri=mlflow_uri)
    assert client.get_run(killed.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
