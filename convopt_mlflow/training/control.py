"""Small shared state between the coordinator, the callbacks and the actuator.

``StopRequest`` carries why training should stop (early stop, SIGINT, SIGTERM)
and the MLflow status the run should end with. ``ComponentGuard`` isolates
optional components: the first exception a component raises disables it for
the rest of the run, the caller falls back to baseline behaviour, and the event
becomes a ``disable_component`` intervention.
"""
from __future__ import annotations

import signal
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")


@dataclass
class StopRequest:
    requested: bool = False
    reason: str = ""
    status: str = "FINISHED"
    exit_code: int = 0

    def request(self, reason: str, *, status: str = "FINISHED", exit_code: int = 0) -> None:
        if not self.requested:  # the first reason wins
            self.requested, self.reason, self.status, self.exit_code = True, reason, status, exit_code

    def clear(self) -> None:
        """Forget a request that has been acted on, so the next one counts."""
        self.requested, self.reason, self.status, self.exit_code = False, "", "FINISHED", 0


@dataclass
class ComponentGuard:
    """Runs optional-component code; a component that raises is disabled, not fatal."""

    disabled: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    def active(self, name: str) -> bool:
        return name not in self.disabled

    def call(self, name: str, fn: Callable[..., T], *args: Any, fallback: T, step: int = 0, **kwargs: Any) -> T:
        if name in self.disabled:
            return fallback
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - isolating arbitrary component failures is the point
            self.fail(name, exc, step)
            return fallback

    def fail(self, name: str, exc: BaseException, step: int) -> None:
        text = f"{type(exc).__name__}: {exc}"
        self.disabled[name] = text
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = f" at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else ""
        self.events.append({"step": step, "component": name, "error": text + where})


_SIGNALS = {signal.SIGINT: ("SIGINT", 130), signal.SIGTERM: ("SIGTERM", 143)}


@contextmanager
def signals_to(stop: StopRequest) -> Iterator[None]:
    """SIGINT/SIGTERM request a graceful stop (checkpoint, flush, KILLED) instead of dying."""
    previous = {}

    def handler(signum, frame):
        name, code = _SIGNALS[signum]
        if stop.requested and stop.status == "KILLED":
            raise KeyboardInterrupt  # second signal: stop now
        stop.request(f"received {name}", status="KILLED", exit_code=code)

    try:
        for sig in _SIGNALS:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not in the main thread: leave signals alone
        previous = {}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
