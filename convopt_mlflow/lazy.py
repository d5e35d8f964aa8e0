"""Package attributes loaded on first use (PEP 562), for packages whose modules import heavy
libraries (mlflow, scipy.stats) that most callers never need.

Example:
    >>> ns = {"__name__": "convopt_mlflow.stats"}
    >>> getattr_, dir_ = lazy_attributes(ns, {"iqm": "_summary"})
    >>> getattr_("iqm")([1.0, 2.0, 3.0, 4.0])
    2.5
    >>> "iqm" in ns and "iqm" in dir_()
    True
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_attributes(namespace: dict[str, Any], home: Mapping[str, str]) -> tuple[Callable[[str], Any],
                                                                                   Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__``: ``name`` comes from its submodule ``home[name]``
    the first time it is asked for, and is then kept in ``namespace`` (the package's globals)."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = home.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(home))

    return __getattr__, __dir__
