"""Adam without importing ``torch._dynamo`` (and sympy) for nothing.

torch's optimizers carry hooks for ``torch.compile``: ``Adam.step`` runs
``import torch._dynamo`` on every call (for two ``graph_break()`` calls, no-ops outside
compiled code), and ``add_param_group``, ``zero_grad``, ``state_dict`` and ``load_state_dict``
are ``@torch._disable_dynamo``, which imports it on their first call to build
``torch._dynamo.disable(fn)``. The first optimizer of a process therefore costs it the import
of ``torch._dynamo``: 1.2-1.5 s of CPU measured in a fresh process, although nothing here
compiles.

:class:`EagerAdam` is ``torch.optim.Adam`` whose five methods call torch's own code underneath
those wrappers while ``torch._dynamo`` is not imported, and torch's wrapped methods once it is.
That is the same computation: ``torch.compile`` imports ``torch._dynamo`` before it traces
anything, so while that module is absent nothing can be compiling, ``graph_break()`` would do
nothing and ``disable(fn)`` would just call ``fn``. The gradient mode ``step`` sets
(``torch.set_grad_enabled(defaults["differentiable"])``, restored afterwards) is kept.
Arguments, state and ``state_dict`` are Adam's, so a checkpoint's optimizer state loads into
either class.
"""
from __future__ import annotations

import functools
import inspect
import sys
from typing import Any, Callable

import torch
from torch.optim.optimizer import Optimizer, _use_grad_for_differentiable

__all__ = ["EagerAdam"]


def _dynamo_imported() -> bool:
    return "torch._dynamo" in sys.modules


def _eager(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` without its ``@torch._disable_dynamo`` wrapper while ``torch._dynamo`` is absent."""
    raw = inspect.unwrap(method)

    @functools.wraps(raw)
    def call(*args: Any, **kwargs: Any) -> Any:
        return (method if _dynamo_imported() else raw)(*args, **kwargs)

    return call


_RAW_STEP = inspect.unwrap(torch.optim.Adam.step)  # below Adam's _use_grad_for_differentiable (and any hooks)
_DYNAMO_STEP = _use_grad_for_differentiable(_RAW_STEP)  # torch's wrapper, without the step hooks


class EagerAdam(torch.optim.Adam):
    """``torch.optim.Adam`` that imports ``torch._dynamo`` only where torch would use it.

    Example:
        >>> import sys, torch
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = EagerAdam([w], lr=0.1)
        >>> (w ** 2).sum().backward(); opt.step(); opt.zero_grad()
        >>> [round(float(v), 3) for v in w]
        [0.9, 0.9]
    """

    add_param_group = _eager(Optimizer.add_param_group)
    zero_grad = _eager(Optimizer.zero_grad)
    state_dict = _eager(Optimizer.state_dict)
    load_state_dict = _eager(Optimizer.load_state_dict)

    def step(self, closure: Callable[[], float] | None = None) -> Any:  # noqa: D102 - Adam.step
        if _dynamo_imported():
            return _DYNAMO_STEP(self, closure)
        previous = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(self.defaults["differentiable"])
            return _RAW_STEP(self, closure)
        finally:
            torch.set_grad_enabled(previous)
