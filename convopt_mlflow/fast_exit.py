"""Ending a process that has finished its work without tearing its modules down.

A process that imported torch, SB3 and MLflow spends most of a second at exit freeing
their modules one by one (0.45-0.5 s of a standalone `convopt train`, measured by
``benchmarks/bench_fixed_cost_phases.py``), none of which anybody waits for. :func:`exit_now`
does what an orderly exit does that matters (other threads joined, the exit handlers run:
MLflow's async logging flush, ``logging.shutdown``; stdout and stderr flushed) and then
ends the process with ``os._exit``.

Only for a process whose caller is done with it: the ``convopt`` program once ``main``
has returned, and spawned workers once their target has returned. Never from library code
or tests that call ``main`` in their own process.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """End this process with ``code``: threads shut down as at a normal exit (``threading``'s exit
    hooks, then non-daemon threads joined), exit handlers run, standard streams flushed, modules
    left as they are."""
    # What the interpreter's own exit does first: the threading module's exit hooks (they stop
    # concurrent.futures' idle worker threads, which would otherwise wait for work for ever), then
    # every non-daemon thread joined.
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to flush into
            pass
    os._exit(code)
