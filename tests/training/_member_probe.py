"""A cheap member for :class:`ParallelMembers` tests, imported by name in spawned workers.

Member ``kill`` SIGKILLs its own worker, member ``raise`` raises, every other one returns its
worker's pid; each first sleeps ``sleep_s``.
"""
import os
import signal
import time

from convopt_mlflow.components.ensemble import MemberOutcome


def probe_member(script: dict, plan) -> MemberOutcome:
    action, sleep_s = script.get(plan.index, ("ok", 0.0))
    time.sleep(sleep_s)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "raise":
        raise RuntimeError(f"probe fault in pid {os.getpid()}")
    return MemberOutcome(plan.index, "FINISHED", "", {"pid": os.getpid()})
