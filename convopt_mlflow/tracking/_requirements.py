"""Skip MLflow's requirement-mismatch scan where our requirements cannot mismatch.

When a model is saved or loaded, MLflow checks its pip requirements against the installed
packages (``warn_dependency_requirement_mismatches``). Its first call in a process builds a
module-to-package map of every installed distribution (``packages_distributions()``): about
1.5 s here, once per process, so once per standalone run. Our models' requirements are
pinned to exactly the versions ``importlib.metadata`` reports in this process
(``model._pip_requirements``), so the check cannot find a mismatch while we log.

The switch is scoped: MLflow's function is replaced only inside the ``with`` block and in
the two modules that call it while a pyfunc is saved and its serving example validated, and
is put back on every exit path. Loading a model elsewhere still checks.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

__all__ = ["requirements_pinned_here"]

_CALLERS = ("mlflow.utils.environment", "mlflow.pyfunc")
_NAME = "warn_dependency_requirement_mismatches"


def _skip(model_requirements: list[str]) -> None:
    return None


@contextmanager
def requirements_pinned_here() -> Iterator[None]:
    """Within the block, MLflow does not re-check requirements pinned to this environment."""
    import importlib

    previous = {}
    for name in _CALLERS:
        module = importlib.import_module(name)
        if hasattr(module, _NAME):  # an MLflow without the check: nothing to skip
            previous[module] = getattr(module, _NAME)
            setattr(module, _NAME, _skip)
    try:
        yield
    finally:
        for module, function in previous.items():
            setattr(module, _NAME, function)
