"""Taking over a dead holder's registry lock, with two live processes racing for it."""
from __future__ import annotations

import multiprocessing as mp
import socket
import subprocess
import sys

from mlflow.tracking import MlflowClient

from convopt_mlflow.tracking.locks import HOLDER_TAG, TOOK_OVER_TAG, Claim, lock_name, release, try_claim

NAME = "convopt-ensemble"


class _PausingBeforeDelete(MlflowClient):
    """A real client that stops just before deleting the lock, until the rival is done (or 3 s):
    the window in which two processes that both saw the dead lock act on it."""

    def __init__(self, uri, at_delete, rival_done):
        super().__init__(uri)
        self.at_delete, self.rival_done = at_delete, rival_done

    def delete_registered_model(self, name):
        if name == lock_name(NAME) and not self.at_delete.is_set():
            self.at_delete.set()
            self.rival_done.wait(timeout=3)
        return super().delete_registered_model(name)


def _slow(uri, at_delete, rival_done, results):
    claim = try_claim(_PausingBeforeDelete(uri, at_delete, rival_done), NAME, {}, "slow")
    results.put(("slow", type(claim).__name__))


def _fast(uri, at_delete, rival_done, results):
    at_delete.wait(timeout=30)
    claim = try_claim(MlflowClient(uri), NAME, {}, "fast")
    rival_done.set()
    results.put(("fast", type(claim).__name__))


def test_two_processes_taking_over_one_dead_lock_never_both_hold_it(tmp_path, mlflow_template):
    uri = mlflow_template.copy_to(tmp_path)
    client = MlflowClient(uri)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dead_holder = f"{socket.gethostname()}:{dead.pid}"
    client.create_registered_model(lock_name(NAME), tags={HOLDER_TAG: dead_holder})

    context = mp.get_context("fork")
    at_delete, rival_done, results = context.Event(), context.Event(), context.Queue()
    workers = [context.Process(target=f, args=(uri, at_delete, rival_done, results)) for f in (_slow, _fast)]
    for worker in workers:
        worker.start()
    outcomes = dict(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)

    assert sorted(outcomes.values()) == ["Claim", "Held"], outcomes
    lock = client.get_registered_model(lock_name(NAME))
    assert lock.tags[TOOK_OVER_TAG] == dead_holder
    assert [m.name for m in client.search_registered_models() if m.name.endswith(".takeover")] == []


def test_a_guard_left_by_a_dead_taker_is_removed_and_the_stale_lock_taken_over(tmp_path, mlflow_template):
    client = MlflowClient(mlflow_template.copy_to(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dead_holder = f"{socket.gethostname()}:{dead.pid}"
    client.create_registered_model(lock_name(NAME), tags={HOLDER_TAG: dead_holder})
    client.create_registered_model(lock_name(NAME) + ".takeover", tags={HOLDER_TAG: dead_holder})
    claim = try_claim(client, NAME, {}, "after a crash mid-takeover")
    assert isinstance(claim, Claim) and claim.took_over == dead_holder
    release(client, claim)
    assert client.search_registered_models() == []
