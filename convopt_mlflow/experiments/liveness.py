"""Which worker holds a trial, whether it still lives, and bounded waits for the others.

Every trial records its worker, ``convopt.worker = "host:pid"``, the moment it is claimed
(:class:`RecordsWorker`, mixed into the study's sampler: ``before_trial`` runs right after
Optuna marks the trial RUNNING). A worker that resumes or claims a cell first calls
:func:`fail_dead_trials`: a RUNNING trial whose worker ran on this host and whose process
is gone (``os.kill(pid, 0)`` fails, or it is a zombie) is failed at once and handed to
the storage's stale-trial callback, which re-queues the cell and ends its MLflow run
KILLED. This is the only recovery a journal storage has (it keeps no heartbeats); on
sqlite and PostgreSQL it comes before the heartbeat's grace period runs out.

A trial held on another host, on a storage without heartbeats, cannot be judged from
here: whoever waits for it waits with a bound (:class:`Wait`) and says what it waits for.

Example:
    >>> host_and_pid("gpu-7:4242")
    ('gpu-7', 4242)
    >>> holder_state({"convopt.worker": "elsewhere-host-x:1"}, host="here")
    'unknown'
"""
from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Mapping

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import UserError

__all__ = ["WORKER_ATTR", "DEFAULT_WAIT_TIMEOUT_S", "RecordsWorker", "Wait", "WaitTimeout", "fail_dead_trials",
           "holder_state", "host_and_pid", "worker_id"]

WORKER_ATTR = "convopt.worker"
REASON_ATTR = "convopt.stale_reason"
#: Seconds a worker waits for cells held by other workers before it gives up (``--wait-timeout``).
DEFAULT_WAIT_TIMEOUT_S = 3600.0
#: A trial claimed less than this many seconds ago is not judged: its claimer may not have
#: written its ``host:pid`` yet (a retried trial carries its dead predecessor's until then).
CLAIM_GRACE_S = 3.0


class WaitTimeout(UserError):
    """Cells stayed held by other workers past ``--wait-timeout``; nothing was lost, re-run to resume."""

    exit_code = 3


def worker_id() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def host_and_pid(worker: str) -> tuple[str, int] | None:
    """``(host, pid)`` from ``"host:pid"``; None when it is not that."""
    host, _, pid = (worker or "").rpartition(":")
    return (host, int(pid)) if host and pid.isdigit() else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: dead
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def holder_state(user_attrs: Mapping[str, object], *, host: str | None = None) -> str:
    """``"alive"``, ``"dead"`` or ``"unknown"`` (another host, or no worker recorded).

    Call it between trials only: a trial recorded with this very process's pid is then one
    an earlier process with the same pid left behind (containers reuse pids), so it is dead.
    """
    parsed = host_and_pid(str(user_attrs.get(WORKER_ATTR, "")))
    if parsed is None or parsed[0] != (host or socket.gethostname()):
        return "unknown"
    if parsed[1] == os.getpid():
        return "dead"
    return "alive" if _pid_alive(parsed[1]) else "dead"


class RecordsWorker:
    """Sampler mixin: record ``host:pid`` on each trial as soon as this process claims it.

    Example:
        >>> class WorkerGridSampler(RecordsWorker, optuna.samplers.GridSampler):
        ...     pass
    """

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        study._storage.set_trial_user_attr(trial._trial_id, WORKER_ATTR, worker_id())
        super().before_trial(study, trial)  # type: ignore[misc]


def _age_s(trial: FrozenTrial) -> float:
    if trial.datetime_start is None:
        return float("inf")
    start = trial.datetime_start
    now = datetime.now(tz=start.tzinfo) if start.tzinfo else datetime.now()
    return (now - start).total_seconds()


def fail_dead_trials(study: optuna.Study, on_failed: Callable[[optuna.Study, FrozenTrial], None] | None = None
                     ) -> list[int]:
    """Fail every RUNNING trial whose worker ran on this host and is dead; returns their numbers.

    ``on_failed(study, trial)`` runs for each (default: the storage's stale-trial callback,
    else :class:`~convopt_mlflow.experiments.storage.StaleTrialCallback`): it re-queues the
    cell and ends the trial's MLflow run KILLED. Safe against other workers doing the same.
    """
    from .storage import StaleTrialCallback

    storage = study._storage
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _age_s(trial) < CLAIM_GRACE_S or holder_state(trial.user_attrs) != "dead":
            continue
        reason = (f"its worker {trial.user_attrs[WORKER_ATTR]} is no longer running on this host; "
                  f"failed by {worker_id()}")
        try:
            storage.set_trial_user_attr(trial._trial_id, REASON_ATTR, reason)
            if storage.set_trial_state_values(trial._trial_id, TrialState.FAIL) is False:
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first, or it just finished
        failed.append(trial.number)
        callback = on_failed
        if callback is None:
            getter = getattr(storage, "get_heartbeat_stale_trial_callback", None)
            callback = (getter() if getter else None) or StaleTrialCallback()
        callback(study, storage.get_trial(trial._trial_id))
    return failed


@dataclass
class Wait:
    """A bounded wait for trials held by other workers, announced on stderr.

    ``check(held)`` is called once per idle poll with a line per held trial; it prints them
    when the wait starts and every ``note_every_s`` seconds, and raises :class:`WaitTimeout`
    past ``timeout_s``. ``reset()`` when there is work again.
    """

    timeout_s: float = DEFAULT_WAIT_TIMEOUT_S
    note_every_s: float = 60.0
    what: str = "cells"
    clock: Callable[[], float] = time.monotonic
    _since: float | None = field(default=None, init=False)
    _next_note: float = field(default=0.0, init=False)

    def reset(self) -> None:
        self._since = None

    def check(self, held: list[str]) -> None:
        now = self.clock()
        if self._since is None:
            self._since, self._next_note = now, now
        waited = now - self._since
        summary = "; ".join(held) or "none listed"
        if waited > self.timeout_s:
            raise WaitTimeout(f"gave up after waiting {waited:.0f} s (--wait-timeout {self.timeout_s:g}) for "
                              f"{len(held)} {self.what} held by other workers: {summary}. Nothing is lost: those "
                              f"workers may still finish them; re-run the same command to resume, and a dead "
                              f"worker's trial is retried once its heartbeat is stale (sqlite, PostgreSQL) or, "
                              f"on a journal, by a worker on its host")
        if now >= self._next_note:
            print(f"convopt worker {worker_id()}: waiting for {len(held)} {self.what} held by other workers "
                  f"(waited {waited:.0f} s, giving up after {self.timeout_s:g} s): {summary}",
                  file=sys.stderr, flush=True)
            self._next_note = now + self.note_every_s


def describe_holder(trial: FrozenTrial) -> str:
    """``trial 3 on host:pid since 12:00:01 UTC`` (what a waiting worker names)."""
    worker = trial.user_attrs.get(WORKER_ATTR, "an unrecorded worker")
    start = trial.datetime_start
    when = start.astimezone(timezone.utc).strftime("%H:%M:%S UTC") if start and start.tzinfo else \
        (start.strftime("%H:%M:%S") if start else "?")
    return f"trial {trial.number} on {worker} since {when}"
