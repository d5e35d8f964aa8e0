"""A cheap member for :class:`ParallelMembers` tests, imported by name in spawned workers.

Member ``kill`` SIGKILLs its own worker, member ``raise`` raises, every other one returns its
worker's pid; each first sleeps ``sleep_s``. With ``script["pids"]`` (a folder) each member writes
its worker's pid there first, and member ``alive`` returns, after its sleep, which pids written
by the others belong to processes still alive.
"""
import os
import signal
import time
from pathlib import Path

from convopt_mlflow.components.ensemble import MemberOutcome


def probe_member(script: dict, plan) -> MemberOutcome:
    action, sleep_s = script.get(plan.index, ("ok", 0.0))
    folder = Path(script["pids"]) if "pids" in script else None
    if folder is not None:
        (folder / f"{plan.index}.pid").write_text(str(os.getpid()))
    time.sleep(sleep_s)
    if action == "alive":
        others = {int(p.read_text()) for p in folder.glob("*.pid")} - {os.getpid()}
        return MemberOutcome(plan.index, "FINISHED", "", {"pid": os.getpid(), "alive": sorted(o for o in others if _alive(o))})
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "raise":
        raise RuntimeError(f"probe fault in pid {os.getpid()}")
    return MemberOutcome(plan.index, "FINISHED", "", {"pid": os.getpid()})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def slow_start() -> None:
    """An initializer that takes as long as a worker's imports would, and more."""
    time.sleep(30.0)


def loaded_modules(names: tuple, plan) -> MemberOutcome:
    """Which of ``names`` this worker has imported before its member runs."""
    import sys

    return MemberOutcome(plan.index, "FINISHED", "", {"loaded": {n: n in sys.modules for n in names}})
