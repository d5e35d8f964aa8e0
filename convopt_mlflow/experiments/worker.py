"""Workers: processes that train an A/B study's cells, on this machine or any other.

``convopt worker --study S --storage URL`` joins an existing study (its design and
parent run are stored in it) and trains open cells until none is left. ``convopt
ab-test --workers K`` is one of them itself and starts K - 1 more here (spawned, one
torch thread each); ``convopt tune --workers K`` does the same with tuning trials
(:func:`run_local_workers` takes each one's ``target``). Several workers need a storage
that several processes can write: PostgreSQL, or a journal file on one machine.

What a local worker costs besides its trials is kept off the study's clock: the calling
process trains at once (its imports are done; a spawned one needs seconds to import
torch, mlflow and SB3), a spawned worker that finds every open cell held by a sibling
leaves instead of waiting (the caller, which outlives it, waits for those cells and
retries any that fail), and a spawned worker skips the interpreter's teardown of its
modules when it is done (``os._exit`` after the exit handlers ran).

A worker never waits for ever: it fails the trials of dead workers on its host, RDB
heartbeats fail the others', and while every open cell is held by another worker it names
them on stderr and gives up after ``wait_timeout_s`` (exit code 3; re-run to resume).
"""
from __future__ import annotations

import multiprocessing
import sys
import time
from contextlib import contextmanager
from multiprocessing.connection import wait as wait_for_exit
from typing import Callable, Iterator, Sequence

from ..fast_exit import exit_now
from .abtest import load_study, run_cells
from .liveness import DEFAULT_WAIT_TIMEOUT_S
from .storage import get_storage


def work(study_name: str, storage_url: str | None, *, seeds: Sequence[int] | None = None,
         heartbeat_interval: int = 30, checkpoint_root: str | None = None, workers: int = 1,
         wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S, wait_for_others: bool = True) -> int:
    """Join ``study_name`` and train its open cells; returns the number of cells now COMPLETE.

    ``wait_for_others=False``: return as soon as every open cell is held by another worker
    (a spawned sibling of a caller that waits for them)."""
    import torch

    torch.set_num_threads(1)
    storage = get_storage(storage_url, workers=workers, heartbeat_interval=heartbeat_interval)
    study, spec, parent_run_id = load_study(storage, study_name)
    ledger = run_cells(study, spec, parent_run_id, seeds=seeds, checkpoint_root=checkpoint_root,
                       wait_timeout_s=wait_timeout_s, wait_for_others=wait_for_others)
    return len(ledger.complete)


def _process_main(study_name: str, storage_url: str | None, seeds: Sequence[int] | None, heartbeat_interval: int,
                  checkpoint_root: str | None, workers: int, wait_timeout_s: float) -> None:
    """A spawned A/B worker (the ``target`` of :func:`run_local_workers` for ``convopt ab-test``)."""
    work(study_name, storage_url, seeds=seeds, heartbeat_interval=heartbeat_interval,
         checkpoint_root=checkpoint_root, workers=workers, wait_timeout_s=wait_timeout_s, wait_for_others=False)


def ab_worker(study_name: str, storage_url: str | None, count: int, *, seeds: Sequence[int] | None = None,
              heartbeat_interval: int = 30, checkpoint_root: str | None = None,
              wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S) -> tuple[Callable[..., None], tuple]:
    """``(target, args)`` of a spawned worker of an A/B study, for :func:`run_local_workers`."""
    return _process_main, (study_name, storage_url, list(seeds) if seeds else None, heartbeat_interval,
                           checkpoint_root, count, wait_timeout_s)


def _spawned(target: Callable[..., None], args: tuple) -> None:
    """The body of every spawned worker: one torch thread, ``target(*args)``, then a fast exit."""
    import torch

    from ..errors import UserError

    torch.set_num_threads(1)
    try:
        target(*args)
    except UserError as exc:
        print(f"convopt worker: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    exit_now(0)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one thread while the block runs (a worker among K on this machine); the
    caller's thread count is restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_local_workers(count: int, target: Callable[..., None], args: tuple, *,
                      in_process: Callable[[Callable[[float], int]], int] | None = None) -> list[int]:
    """``count`` workers on this machine; returns their exit codes (this process's first).

    Each spawned worker runs ``target(*args)`` (a module-level function: it is pickled by
    name) on one torch thread; a :class:`~convopt_mlflow.errors.UserError` is its message and
    exit code, and after a return it exits without module teardown (:func:`~convopt_mlflow.fast_exit.exit_now`).
    ``in_process(idle)``, when given, is this process's own worker (``count - 1`` are spawned),
    run on one torch thread: it trains and returns its exit code. ``idle(seconds)`` pauses
    until a spawned worker exits, or ``seconds``, and returns how many still run. It should
    wait for the work its siblings hold (they leave when nothing is free). Without it,
    ``count`` are spawned. If this process fails (not Ctrl-C, which every worker gets), the
    spawned workers get SIGTERM: each ends its run KILLED with the reason.
    """
    context = multiprocessing.get_context("spawn")
    spawned = count - 1 if in_process is not None else count
    processes = [context.Process(target=_spawned, name=f"convopt-worker-{i}", args=(target, args))
                 for i in range(spawned)]
    for process in processes:
        process.start()

    def idle(seconds: float) -> int:
        alive = [p for p in processes if p.exitcode is None]
        ended = wait_for_exit([p.sentinel for p in alive], timeout=seconds) if alive else time.sleep(seconds)
        for process in alive:
            if process.sentinel in (ended or ()):
                process.join()  # reaped: its pid is gone when the caller judges its trials
        return sum(p.exitcode is None for p in processes)

    try:
        with one_torch_thread():
            own = [in_process(idle)] if in_process is not None else []
        for process in processes:
            process.join()
    except BaseException as exc:
        for process in processes:
            if not isinstance(exc, KeyboardInterrupt) and process.exitcode is None:
                process.terminate()  # this one failed: SIGTERM ends the siblings' runs KILLED, as Ctrl-C does
            process.join(timeout=60)  # on Ctrl-C each got the SIGINT too: it ends its run KILLED and exits
        raise
    return own + [int(p.exitcode or 0) for p in processes]
