"""Workers: processes that train an A/B study's cells, on this machine or any other.

``convopt worker --study S --storage URL`` joins an existing study (its design and
parent run are stored in it) and trains open cells until none is left. ``convopt
ab-test --workers K`` starts K such processes here (spawned, one torch thread each).
Several workers need a storage that several processes can write: PostgreSQL, or a
journal file on one machine.

A worker never waits for ever: it fails the trials of dead workers on its host, RDB
heartbeats fail the others', and while every open cell is held by another worker it names
them on stderr and gives up after ``wait_timeout_s`` (exit code 3; re-run to resume).
"""
from __future__ import annotations

import multiprocessing
import sys
from typing import Sequence

from .abtest import load_study, run_cells
from .liveness import DEFAULT_WAIT_TIMEOUT_S
from .storage import get_storage


def work(study_name: str, storage_url: str | None, *, seeds: Sequence[int] | None = None,
         heartbeat_interval: int = 30, checkpoint_root: str | None = None, workers: int = 1,
         wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S) -> int:
    """Join ``study_name`` and train its open cells; returns the number of cells now COMPLETE."""
    import torch

    torch.set_num_threads(1)
    storage = get_storage(storage_url, workers=workers, heartbeat_interval=heartbeat_interval)
    study, spec, parent_run_id = load_study(storage, study_name)
    ledger = run_cells(study, spec, parent_run_id, seeds=seeds, checkpoint_root=checkpoint_root,
                       wait_timeout_s=wait_timeout_s)
    return len(ledger.complete)


def _process_main(study_name: str, storage_url: str | None, seeds: Sequence[int] | None, heartbeat_interval: int,
                  checkpoint_root: str | None, workers: int, wait_timeout_s: float) -> None:
    from ..errors import UserError

    try:
        work(study_name, storage_url, seeds=seeds, heartbeat_interval=heartbeat_interval,
             checkpoint_root=checkpoint_root, workers=workers, wait_timeout_s=wait_timeout_s)
    except UserError as exc:
        print(f"convopt worker: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


def run_local_workers(study_name: str, storage_url: str | None, count: int, *, seeds: Sequence[int] | None = None,
                      heartbeat_interval: int = 30, checkpoint_root: str | None = None,
                      wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S) -> list[int]:
    """Start ``count`` spawned worker processes on this machine and wait; returns their exit codes."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_process_main, name=f"convopt-worker-{i}",
                                 args=(study_name, storage_url, list(seeds) if seeds else None, heartbeat_interval,
                                       checkpoint_root, count, wait_timeout_s))
                 for i in range(count)]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.join(timeout=60)  # each got the SIGINT too: it ends its run KILLED and exits
        raise
    return [int(p.exitcode or 0) for p in processes]
