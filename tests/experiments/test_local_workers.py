"""``run_local_workers``: this process is one worker, the others are spawned; real processes, no stand-ins.

The spawned targets are plain library functions (``time.sleep``, ``storage_kind``), so a
spawned worker costs only its imports (optuna, torch: a few seconds on a loaded machine).
"""
import multiprocessing
import time

import pytest
import torch

from convopt_mlflow.experiments.storage import storage_kind
from convopt_mlflow.experiments.worker import run_local_workers


def test_the_caller_trains_on_one_torch_thread_and_its_wait_ends_when_the_spawned_worker_exits():
    threads, seen = torch.get_num_threads(), {}

    def here(idle) -> int:
        seen["threads"] = torch.get_num_threads()
        seen["running"] = idle(0)
        start = time.monotonic()
        seen["left"] = idle(300)  # ends when the sibling (a 0.2 s sleep after its imports) exits
        seen["waited"] = time.monotonic() - start
        return 0

    codes = run_local_workers(2, time.sleep, (0.2,), in_process=here)
    assert codes == [0, 0]
    assert seen["threads"] == 1 and torch.get_num_threads() == threads
    assert seen["running"] == 1 and seen["left"] == 0 and seen["waited"] < 120


def test_a_failing_caller_stops_its_spawned_workers_with_sigterm():
    def here(idle) -> int:
        raise RuntimeError("the caller's trial failed")

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="the caller's trial failed"):
        run_local_workers(2, time.sleep, (600,), in_process=here)
    assert time.monotonic() - start < 60  # not the sibling's 600 s, nor the 60 s join bound
    assert not multiprocessing.active_children()


def test_a_spawned_worker_s_user_error_is_its_exit_code():
    assert run_local_workers(1, storage_kind, ("ftp://nowhere",)) == [2]
