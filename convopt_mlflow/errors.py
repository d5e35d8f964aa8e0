"""User-facing errors.

Every mistake a user can make (bad data, a bad parameter, an unknown preset, a
missing run) raises a subclass of :class:`UserError`. The CLI turns it into one
message on stderr and exit code 2, before any MLflow run is created.
"""
from __future__ import annotations

from typing import Iterable


class UserError(Exception):
    """A problem the user can fix; reported without a traceback, exit code 2."""

    exit_code = 2


class ConfigError(UserError):
    """A bad preset, override key or value."""


class DataValidationError(UserError):
    """Market data that fails validation; lists every problem found.

    Args:
        source: what was loaded (a path, a bundled name or a synthetic spec).
        problems: one line per problem, each naming the rows involved.
    """

    def __init__(self, source: str, problems: Iterable[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid market data in {source!r} ({len(self.problems)} problem(s)):\n{lines}")


class RunNotFoundError(UserError):
    """A run id given to --resume or another command does not exist or cannot be resumed."""
