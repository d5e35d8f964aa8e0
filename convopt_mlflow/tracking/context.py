"""Run context provider: tags every MLflow run a convopt process creates.

MLflow imports this module through the ``mlflow.run_context_provider`` entry
point in *every* process that uses MLflow in this environment, so it must stay
cheap to import and must never fail: it imports nothing of convopt beyond the
standard library and MLflow's abstract base.

Tags (all values are strings, as MLflow requires):

- ``convopt.version``: the installed ``convopt-mlflow`` version;
- ``convopt.git_commit``: ``git rev-parse HEAD`` of the working directory's
  repository, when there is one with at least one commit;
- ``convopt.git_dirty``: ``"true"``/``"false"``, whether tracked files differ
  from ``HEAD`` (untracked files do not count), when git can tell.

Example:
    >>> from convopt_mlflow.tracking.context import convopt_tags
    >>> sorted(convopt_tags())[-1]
    'convopt.version'
"""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

_REGISTRY_MODULE = "mlflow.tracking.context.registry"


def _import_base() -> tuple[type, bool]:
    """MLflow's ``RunContextProvider``, and whether MLflow skipped this module.

    When this module is imported before MLflow, importing MLflow loads its
    run-context entry points, which include this very module, still half
    initialized: MLflow warns and skips it. We silence that one warning and
    register the provider ourselves at the bottom of the module.
    """
    before_mlflow = _REGISTRY_MODULE not in sys.modules
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from mlflow.tracking.context.abstract_context import RunContextProvider
    missed = False
    for w in caught:
        if before_mlflow and 'register context provider "convopt"' in str(w.message):
            missed = True
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return RunContextProvider, missed


RunContextProvider, _MISSED_BY_MLFLOW = _import_base()

__all__ = ["ConvoptRunContextProvider", "convopt_tags", "TAG_VERSION", "TAG_GIT_COMMIT", "TAG_GIT_DIRTY"]

TAG_VERSION = "convopt.version"
TAG_GIT_COMMIT = "convopt.git_commit"
TAG_GIT_DIRTY = "convopt.git_dirty"

_ACTIVE_MODULE = "convopt_mlflow.training"
_ACTIVE_ENV = "CONVOPT_ACTIVE"
_GIT_TIMEOUT_S = 2.0


def _package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("convopt-mlflow")
        except PackageNotFoundError:
            pass
    except ImportError:  # pragma: no cover - stdlib since 3.8
        pass
    module = sys.modules.get("convopt_mlflow")
    return str(getattr(module, "__version__", "unknown"))


def _git(*args: str, cwd: str) -> str | None:
    """Run ``git args`` in ``cwd``; stdout stripped, or None on any failure."""
    try:
        done = subprocess.run(
            ("git", *args),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip()


def _git_tags(cwd: str) -> dict[str, str]:
    commit = _git("rev-parse", "--verify", "-q", "HEAD", cwd=cwd)
    if not commit:
        # Not a repository, no commit yet, or no git: nothing is known.
        return {}
    tags = {TAG_GIT_COMMIT: commit}
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    if status is not None:
        tags[TAG_GIT_DIRTY] = "true" if status else "false"
    return tags


def convopt_tags(cwd: str | None = None) -> dict[str, str]:
    """The convopt tags for a run, for runs created outside ``mlflow.start_run``.

    Args:
        cwd: directory whose git repository is described; the process's
            working directory when None.

    Returns:
        ``{"convopt.version": ..., ["convopt.git_commit": ..., "convopt.git_dirty": ...]}``.
        Never raises; git facts are simply left out when unknown.
    """
    try:
        where = cwd if cwd is not None else os.getcwd()
    except OSError:
        where = None
    tags = {TAG_VERSION: _package_version()}
    if where is not None:
        tags.update(_git_tags(where))
    return tags


class ConvoptRunContextProvider(RunContextProvider):
    """Adds :func:`convopt_tags` to runs started with ``mlflow.start_run``.

    Active when this process has imported ``convopt_mlflow.training`` or when
    the environment variable ``CONVOPT_ACTIVE`` is ``1``.

    Example:
        >>> import os
        >>> os.environ["CONVOPT_ACTIVE"] = "1"
        >>> ConvoptRunContextProvider().in_context()
        True
        >>> del os.environ["CONVOPT_ACTIVE"]
    """

    def in_context(self) -> bool:
        return _ACTIVE_MODULE in sys.modules or os.environ.get(_ACTIVE_ENV) == "1"

    def tags(self) -> dict[str, str]:
        return convopt_tags()


def _register_missed_provider() -> None:
    """Register the provider that MLflow skipped because this module was half-imported."""
    registry = getattr(sys.modules.get(_REGISTRY_MODULE), "_run_context_provider_registry", None)
    if registry is not None and not any(isinstance(p, ConvoptRunContextProvider) for p in registry):
        registry.register(ConvoptRunContextProvider)


if _MISSED_BY_MLFLOW:
    _register_missed_provider()
