"""Mark runs whose training process died (``kill -9``, a lost machine) as KILLED.

A process killed with SIGKILL cannot end its run, so the run stays RUNNING
forever. The coordinator tags each run it opens with ``convopt.host`` and
``convopt.pid`` (and may refresh ``convopt.heartbeat``); this module uses them:

- same host as the caller: the run is stale when its pid is no longer alive;
- another host (or liveness unknown): the run is stale when its last sign of
  life (latest heartbeat, latest metric timestamp, or start time) is older than
  ``older_than_s``.

Stale runs get the tag ``convopt.cleanup_reason`` and end KILLED, with their
end time set to their last sign of life.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Sequence

from mlflow.entities import Run, RunStatus, ViewType
from mlflow.tracking import MlflowClient

__all__ = [
    "TAG_CLEANUP_REASON",
    "TAG_HEARTBEAT",
    "TAG_HOST",
    "TAG_PID",
    "cleanup_stale_runs",
    "pid_alive",
    "stale_reason",
]

TAG_PID = "convopt.pid"
TAG_HOST = "convopt.host"
#: Unix time of the last heartbeat, in seconds (values above 1e11 are read as ms).
TAG_HEARTBEAT = "convopt.heartbeat"
TAG_CLEANUP_REASON = "convopt.cleanup_reason"

_RUNNING = RunStatus.to_string(RunStatus.RUNNING)
_PAGE = 1000


def pid_alive(pid: int) -> bool | None:
    """Whether process ``pid`` exists on this machine and is not a zombie; None when
    this platform cannot tell without side effects (Windows)."""
    if os.name == "nt":
        return None  # os.kill(pid, 0) would terminate the process there.
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # It exists; it belongs to another user.
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            state = stream.read().rpartition(")")[2].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _heartbeat_ms(run: Run) -> int | None:
    raw = run.data.tags.get(TAG_HEARTBEAT)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return int(value if value > 1e11 else value * 1000)


def last_activity_ms(run: Run) -> int:
    """The run's last sign of life, in ms since the epoch: the latest of its start
    time, heartbeat tag and latest metric timestamps."""
    times = [int(run.info.start_time or 0)]
    times += [int(m.timestamp) for m in run.data.to_proto().metrics]
    heartbeat = _heartbeat_ms(run)
    if heartbeat is not None:
        times.append(heartbeat)
    return max(times)


def stale_reason(run: Run, host: str, now_ms: int, older_than_s: float) -> str | None:
    """Why ``run`` is stale, or None when it may still be training (or is not ours)."""
    tags = run.data.tags
    run_host, raw_pid = tags.get(TAG_HOST), tags.get(TAG_PID)
    if run_host is None and raw_pid is None:
        return None  # Not opened by the convopt coordinator.
    if run_host == host and raw_pid is not None:
        try:
            alive = pid_alive(int(raw_pid))
        except ValueError:
            alive = None
        if alive is False:
            return f"process {raw_pid} on {host} is gone"
        if alive:
            return None
    idle_s = (now_ms - last_activity_ms(run)) / 1000.0
    if idle_s > older_than_s:
        return f"no sign of life for {idle_s:.0f} s (host {run_host}, pid {raw_pid})"
    return None


def _experiment_ids(client: MlflowClient, names: Sequence[str] | None) -> list[str]:
    if names is not None:
        found = (client.get_experiment_by_name(name) for name in names)
        return [e.experiment_id for e in found if e is not None]
    ids, token = [], None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=_PAGE, page_token=token)
        ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            return ids


def _running_runs(client: MlflowClient, experiment_ids: list[str]) -> list[Run]:
    runs, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string=f"attributes.status = '{_RUNNING}'",
            max_results=_PAGE,
            page_token=token,
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def cleanup_stale_runs(
    *,
    experiment_names: Sequence[str] | None = None,
    older_than_s: float = 600.0,
    now: float | None = None,
    client: MlflowClient | None = None,
) -> list[str]:
    """Mark convopt runs whose training process is gone as KILLED.

    Args:
        experiment_names: experiments to look in; all active ones when None.
            Names that do not exist are ignored.
        older_than_s: for runs whose process cannot be checked (another host),
            seconds without a sign of life before the run counts as dead.
        now: the current Unix time in seconds; ``time.time()`` when None.
        client: the client to use; ``MlflowClient()`` when None.

    Returns:
        The ids of the runs marked KILLED, in search order.
    """
    client = client if client is not None else MlflowClient()
    now_ms = int((time.time() if now is None else now) * 1000)
    host = socket.gethostname()
    experiment_ids = _experiment_ids(client, experiment_names)
    if not experiment_ids:
        return []
    killed = []
    for run in _running_runs(client, experiment_ids):
        reason = stale_reason(run, host, now_ms, older_than_s)
        if reason is None:
            continue
        run_id = run.info.run_id
        if client.get_run(run_id).info.status != _RUNNING:
            continue  # It ended on its own since the search.
        client.set_tag(run_id, TAG_CLEANUP_REASON, reason)
        client.set_terminated(run_id, "KILLED", end_time=last_activity_ms(run))
        killed.append(run_id)
    return killed
