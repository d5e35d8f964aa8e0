"""Optuna storage for A/B studies and tuning: one factory normalizes what the user passed.

- ``None`` or ``""``: the sqlite file ``optuna.db`` in the working directory, for one worker.
- ``sqlite:///path.db``: sqlite, for one worker. Several workers on sqlite are refused:
  sqlite serializes writers and its locks are unreliable on network file systems.
- ``postgresql://user@host/db`` (or ``postgresql+psycopg2://``): any number of workers, on
  any machines.
- ``journal:///path.log`` or a path ending in ``.log``: a ``JournalFileBackend`` journal,
  for several workers on one machine.

sqlite and PostgreSQL are RDB storages with heartbeats: a trial whose worker stops beating
for ``grace_period`` seconds is failed, retried by ``RetryHeartbeatStaleTrialCallback``, and
its MLflow child run is ended KILLED (:class:`StaleTrialCallback`). A journal keeps no
heartbeats; there a dead worker on this host is found by its pid
(:func:`~convopt_mlflow.experiments.liveness.fail_dead_trials`), which every storage uses.

The password belongs in the environment (``PGPASSWORD``, read by libpq, or ``~/.pgpass``),
never in a logged parameter; :func:`redact` hides one given in the URL anyway.

Example:
    >>> storage = get_storage("sqlite:///:memory:")
    >>> type(storage).__name__
    'RDBStorage'
"""
from __future__ import annotations

import re
import warnings
from typing import Any, Callable

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from ..errors import UserError

__all__ = ["DEFAULT_STORAGE", "StaleTrialCallback", "get_storage", "psycopg2_url", "redact", "storage_kind"]

DEFAULT_STORAGE = "sqlite:///optuna.db"
_ALTERNATIVES = ("use PostgreSQL (--storage postgresql://user@host/db, password in PGPASSWORD), "
                 "or on one machine a journal file (--storage journal:///path/optuna.log)")


class StorageError(UserError):
    """A storage URL that cannot be used; exit 2, before any run or study exists."""


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``.

    Example:
        >>> redact("postgresql://bob:secret@db/ab")
        'postgresql://bob:***@db/ab'
    """
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def storage_kind(url: str | None) -> str:
    """``"sqlite"``, ``"postgresql"`` or ``"journal"``; StorageError for anything else."""
    url = (url or DEFAULT_STORAGE).strip()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgresql", "postgres", "postgresql+psycopg2"):
        return "postgresql"
    if scheme == "journal" or (not scheme and url.endswith(".log")):
        return "journal"
    raise StorageError(f"unsupported --storage {redact(url)!r}: expected sqlite:///file.db (one worker), "
                       f"postgresql://user@host/db, or journal:///path.log")


class StaleTrialCallback:
    """Heartbeat-stale trial: retry it with Optuna's callback, then end its MLflow child run KILLED.

    ``end_run(run_id, reason)`` ends the run; it is injected so that this module keeps
    to Optuna (the default uses ``convopt_mlflow.tracking``).
    """

    def __init__(self, max_retry: int | None = 3, end_run: Callable[[str, str], Any] | None = None):
        with warnings.catch_warnings():  # experimental in Optuna, stable in use since 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.end_run = end_run or _end_mlflow_run

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.retry(study, trial)
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            why = trial.user_attrs.get("convopt.stale_reason") or "its worker stopped sending heartbeats"
            self.end_run(run_id, f"optuna trial {trial.number} of study {study.study_name} went stale "
                                 f"({why}); the cell is retried")


def _end_mlflow_run(run_id: str, reason: str) -> None:
    from ..tracking import end_run_if_running

    end_run_if_running(run_id, "KILLED", reason=reason)


def psycopg2_url(url: str) -> str:
    """SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3; we ship psycopg2."""
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg2://{rest}" if scheme in ("postgresql", "postgres") else url


def get_storage(url: str | BaseStorage | None = None, *, workers: int = 1, heartbeat_interval: int = 30,
                grace_period: int | None = None) -> BaseStorage:
    """An Optuna storage for ``url``, checked for ``workers`` processes.

    Args:
        url: None/"" (``optuna.db`` here), a storage URL (see the module doc) or a storage.
        workers: processes that will share it; more than one on sqlite is refused.
        heartbeat_interval: seconds between a trial's heartbeats (sqlite and PostgreSQL).
        grace_period: seconds without a heartbeat before a trial is stale (default 2 x interval).

    Raises:
        StorageError: an unsupported URL, sqlite with several workers, or a database that
            cannot be reached (the message names the URL, password hidden).
    """
    if isinstance(url, BaseStorage):
        return url
    text = (url or DEFAULT_STORAGE).strip()
    kind = storage_kind(text)
    if kind == "sqlite" and workers > 1:
        raise StorageError(f"--workers {workers} cannot share sqlite storage {redact(text)!r}: sqlite allows "
                           f"one writer at a time; {_ALTERNATIVES}")
    try:
        if kind == "journal":
            path = text.split("://", 1)[1] if "://" in text else text
            path = path[1:] if path.startswith("//") else path
            return JournalStorage(JournalFileBackend(path))
        engine = {"connect_args": {"timeout": 60}} if kind == "sqlite" else \
            {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and relied on here
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(psycopg2_url(text), heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                              heartbeat_stale_trial_callback=StaleTrialCallback(), engine_kwargs=engine)
    except UserError:
        raise
    except ImportError:
        raise StorageError(f"--storage {redact(text)!r} needs the PostgreSQL driver: "
                           "pip install 'convopt-mlflow[postgresql]' (psycopg2-binary)") from None
    except Exception as exc:  # sqlalchemy/psycopg2/OS errors: a URL the user can fix
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"cannot open --storage {redact(text)!r}: {redact(detail)}") from None
