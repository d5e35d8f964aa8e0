"""cleanup_stale_runs against a real sqlite store and real (dead, live, zombie) processes."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from convopt_mlflow.tracking import cleanup_stale_runs, open_run
from convopt_mlflow.tracking.cleanup import pid_alive

HOST = socket.gethostname()


@pytest.fixture(scope="module")
def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def run_with(store, experiment: str, **tags) -> str:
    return open_run(experiment=experiment, run_id=None, tags=tags, client=store.client).run_id


def status(store, run_id: str) -> str:
    return store.client.get_run(run_id).info.status


def test_pid_alive_for_live_dead_and_zombie_processes(dead_pid):
    assert pid_alive(os.getpid()) is True
    assert pid_alive(dead_pid) is False
    assert pid_alive(0) is False
    zombie = subprocess.Popen([sys.executable, "-c", ""])
    try:
        deadline = time.monotonic() + 10
        while pid_alive(zombie.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pid_alive(zombie.pid) is False  # exited, not yet reaped
    finally:
        zombie.wait()


def test_same_host_dead_pid_is_killed_and_live_pid_is_left(store, dead_pid):
    dead = run_with(store, "local", **{"convopt.host": HOST, "convopt.pid": str(dead_pid)})
    live = run_with(store, "local", **{"convopt.host": HOST, "convopt.pid": str(os.getpid())})
    foreign = run_with(store, "local")  # not a convopt coordinator run
    start = store.client.get_run(dead).info.start_time

    # Far in the future: age alone must not kill the live run nor the untagged one.
    assert cleanup_stale_runs(experiment_names=["local"], now=time.time() + 10**6) == [dead]

    run = store.client.get_run(dead)
    assert run.info.status == "KILLED"
    assert run.info.end_time == start  # its last sign of life
    assert run.data.tags["convopt.cleanup_reason"] == f"process {dead_pid} on {HOST} is gone"
    assert (status(store, live), status(store, foreign)) == ("RUNNING", "RUNNING")
    assert cleanup_stale_runs(experiment_names=["local"]) == []


def test_other_host_is_killed_only_after_older_than_s_of_silence(store):
    remote = run_with(store, "remote", **{"convopt.host": "elsewhere", "convopt.pid": "4242"})
    start_s = store.client.get_run(remote).info.start_time / 1000

    assert cleanup_stale_runs(experiment_names=["remote"], older_than_s=600, now=start_s + 599) == []
    assert status(store, remote) == "RUNNING"

    # A metric logged later is a sign of life.
    store.client.log_metric(remote, "lr", 1e-4, timestamp=int((start_s + 500) * 1000), step=64)
    assert cleanup_stale_runs(experiment_names=["remote"], older_than_s=600, now=start_s + 1000) == []

    assert cleanup_stale_runs(experiment_names=["remote"], older_than_s=600, now=start_s + 1101) == [remote]
    run = store.client.get_run(remote)
    assert run.info.status == "KILLED"
    assert run.info.end_time == int((start_s + 500) * 1000)
    assert run.data.tags["convopt.cleanup_reason"].startswith("no sign of life for 601 s")


def test_heartbeat_tag_counts_as_a_sign_of_life(store):
    remote = run_with(store, "beat", **{"convopt.host": "elsewhere", "convopt.pid": "1"})
    start_s = store.client.get_run(remote).info.start_time / 1000
    store.client.set_tag(remote, "convopt.heartbeat", str(start_s + 3000))
    assert cleanup_stale_runs(experiment_names=["beat"], older_than_s=600, now=start_s + 3500) == []
    # Heartbeats in ms are read too.
    store.client.set_tag(remote, "convopt.heartbeat", str(int((start_s + 100) * 1000)))
    assert cleanup_stale_runs(experiment_names=["beat"], older_than_s=600, now=start_s + 701) == [remote]


def test_finished_runs_and_unlisted_experiments_are_left_alone(store, dead_pid):
    tags = {"convopt.host": HOST, "convopt.pid": str(dead_pid)}
    finished = run_with(store, "done", **tags)
    store.client.set_terminated(finished, "FINISHED")
    other = run_with(store, "other", **tags)

    assert cleanup_stale_runs(experiment_names=["done", "no-such-experiment"]) == []
    assert (status(store, finished), status(store, other)) == ("FINISHED", "RUNNING")

    killed = cleanup_stale_runs()  # all experiments
    assert other in killed
    assert (status(store, finished), status(store, other)) == ("FINISHED", "KILLED")
