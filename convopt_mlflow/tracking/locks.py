"""The registry lock that every alias move of a registered model takes (``champion`` and ``challenger``).

The lock of registered model ``<name>`` is the registered model ``<name>.promotion-lock``:
MLflow refuses a second one atomically (one SQL insert), so at most one process holds it.
Its tag ``convopt.lock.holder`` is ``<host>:<pid>`` of the holder.

A holder killed between claim and release leaves the lock behind. :func:`try_claim` takes
such a lock over when its holder is *dead*: on this host and its pid gone
(``os.kill(pid, 0)`` raises ``ProcessLookupError``). The new lock records the dead holder
in ``convopt.lock.took_over_from``, and the :class:`Claim` carries it so that the caller
records the takeover where it lasts (the promotion's version and run tags, or the
registered version's). A lock held on another host is never taken over automatically:
this process cannot tell whether its holder is alive.

MLflow deletes a registered model by name, not by version, so two processes that both saw
the same dead lock could each delete "it": the second would delete the first one's fresh
lock, and both would hold. So a takeover is itself claimed: only the holder of
``<lock>.takeover`` (created atomically like the lock) re-reads the stale lock and deletes
it, and it holds that guard only for the re-read, the delete and its own claim. A guard
whose holder died in that window is removed by the next process (a second takeover of the
guard in the same milliseconds is the one race left).

Example:
    >>> from mlflow.tracking import MlflowClient
    >>> client = MlflowClient()
    >>> claim = try_claim(client, "convopt-ensemble", {"convopt.lock.alias": "champion"}, "moving champion")
    >>> claim.lock
    'convopt-ensemble.promotion-lock'
    >>> isinstance(try_claim(client, "convopt-ensemble", {}, "a second mover"), Held)  # this process holds it
    True
    >>> if isinstance(claim, Claim):
    ...     try:
    ...         pass  # re-read the alias, compare, set
    ...     finally:
    ...         release(client, claim)
    >>> isinstance(try_claim(client, "convopt-ensemble", {}, "a second mover"), Claim)
    True
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Mapping

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from convopt_mlflow.tracking.registry import RegistryReadError, is_not_found, read_error

__all__ = ["HOLDER_TAG", "TOOK_OVER_TAG", "Claim", "Held", "holder_state", "lock_name", "release", "this_holder",
           "try_claim"]

HOLDER_TAG = "convopt.lock.holder"
TOOK_OVER_TAG = "convopt.lock.took_over_from"
_ATTEMPTS = 4


def lock_name(name: str) -> str:
    """The registered model that serves as ``name``'s alias lock."""
    return f"{name}.promotion-lock"


def this_holder() -> str:
    """``<host>:<pid>`` of this process, as recorded on a lock it holds."""
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_state(holder: str) -> str:
    """``"alive"``, ``"dead"`` (this host, pid gone), ``"other-host"`` or ``"unknown"`` (no readable holder)."""
    host, _, pid = holder.rpartition(":")
    if not host or not pid.isdigit():
        return "unknown"
    if host != socket.gethostname():
        return "other-host"
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:  # another user's live process
        return "alive"
    return "alive"


@dataclass(frozen=True)
class Claim:
    """A lock this process holds; ``took_over`` names the dead holder it replaced ("" if none)."""

    lock: str
    holder: str
    took_over: str = ""


@dataclass(frozen=True)
class Held:
    """A lock another process holds: its holder (``host:pid``) and :func:`holder_state`."""

    lock: str
    holder: str
    state: str

    def describe(self) -> str:
        if self.state == "other-host":
            return (f"{self.lock!r} is held by {self.holder} on another host; a lock on another host is never taken "
                    f"over automatically. If no promotion or registration is running there, delete the registered "
                    f"model {self.lock!r}")
        return (f"{self.lock!r} is held by {self.holder or 'an unknown holder'} ({self.state}); re-run when it is "
                f"done, or delete the registered model {self.lock!r} if nothing is running")


def try_claim(client: MlflowClient, name: str, tags: Mapping[str, str], purpose: str) -> Claim | Held:
    """Claim ``name``'s lock once: a :class:`Claim`, or the :class:`Held` lock of a live or remote holder.

    A lock whose holder is dead is taken over (see the module docstring); only the lock as
    it was read (same creation time and holder) is deleted, so two processes taking over
    at once cannot both succeed.

    Raises:
        RegistryReadError: the registry fails a read or write for another reason.
    """
    lock, mine = lock_name(name), this_holder()
    took_over, failure = "", None
    for _ in range(_ATTEMPTS):
        try:
            client.create_registered_model(lock, tags={**tags, HOLDER_TAG: mine,
                                                       **({TOOK_OVER_TAG: took_over} if took_over else {})},
                                           description=purpose)
            return Claim(lock, mine, took_over)
        except MlflowException as exc:  # taken (RESOURCE_ALREADY_EXISTS), or a failure: look at the lock
            failure = exc
        held = _read_lock(client, lock)
        if held is None:  # released meanwhile
            continue
        holder = held.tags.get(HOLDER_TAG, "")
        state = holder_state(holder)
        if state != "dead":
            return Held(lock, holder, state)
        guard = _claim_guard(client, lock, mine)
        if isinstance(guard, Held):
            return guard  # another live process is taking the stale lock over
        if guard is None:
            continue
        try:
            again = _read_lock(client, lock)
            if again is None or (again.creation_timestamp, again.tags.get(HOLDER_TAG)) != (held.creation_timestamp,
                                                                                           holder):
                continue  # someone else replaced it first
            try:
                client.delete_registered_model(lock)
            except MlflowException as exc:
                if not is_not_found(exc):
                    raise read_error(exc, f"the stale lock {lock!r}") from None
            took_over = holder
            try:  # claimed under the guard, so no other process can take this lock over meanwhile
                client.create_registered_model(lock, tags={**tags, HOLDER_TAG: mine, TOOK_OVER_TAG: took_over},
                                               description=purpose)
                return Claim(lock, mine, took_over)
            except MlflowException as exc:
                failure = exc
        finally:
            release(client, Claim(guard.lock, mine))
    raise RegistryReadError(f"could not claim {lock!r} in {_ATTEMPTS} attempts"
                            + (f": {failure.error_code}: {failure.message.splitlines()[0]}" if failure else ""))


def _claim_guard(client: MlflowClient, lock: str, mine: str) -> Claim | Held | None:
    """The takeover guard of ``lock``: a :class:`Claim`, the :class:`Held` guard of a live holder,
    or None when a dead holder's guard was just removed (try again)."""
    guard = f"{lock}.takeover"
    try:
        client.create_registered_model(guard, tags={HOLDER_TAG: mine}, description=f"taking over {lock}")
        return Claim(guard, mine)
    except MlflowException:
        pass
    held = _read_lock(client, guard)
    if held is None:
        return None
    holder = held.tags.get(HOLDER_TAG, "")
    state = holder_state(holder)
    if state != "dead":  # a guard with no readable holder may be one whose tags are still being written
        return Held(lock, holder, f"{state}, taking the stale lock over")
    try:
        client.delete_registered_model(guard)
    except MlflowException as exc:
        if not is_not_found(exc):
            raise read_error(exc, f"the takeover guard {guard!r}") from None
    return None


def _read_lock(client: MlflowClient, lock: str):
    try:
        return client.get_registered_model(lock)
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        raise read_error(exc, f"the lock {lock!r}") from None


def release(client: MlflowClient, claim: Claim) -> None:
    """Drop ``claim``'s lock, unless it is no longer this process's (best effort)."""
    try:
        held = client.get_registered_model(claim.lock)
        if held.tags.get(HOLDER_TAG) == claim.holder:
            client.delete_registered_model(claim.lock)
    except MlflowException:
        pass
