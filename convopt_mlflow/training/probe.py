"""Gradient health probe: the pre-clip gradient norm of every optimizer step.

SB3 discards the norm returned by ``clip_grad_norm_``. We recover it without
copying ``PPO.train``: a post-accumulate-grad hook on each parameter counts the
gradients backward has produced; when the last one arrives (still before
clipping) one fused ``_foreach_norm`` gives the global norm. An optimizer step
pre-hook closes the step: it records the norm and, when it is not finite, drops
every gradient (``p.grad = None``) so Adam skips the step and the parameters
stay finite. Each skipped step is a divergence event. Per minibatch this costs
a few Python calls and one fused norm.
"""
from __future__ import annotations

import math
from typing import Any

import torch


class GradientProbe:
    """Records the pre-clip global gradient norm of every optimizer step of ``policy``."""

    def __init__(self, policy: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.params = [p for p in policy.parameters() if p.requires_grad]
        self._pending = len(self.params)
        self._norm: float | None = None
        self.norms: list[float] = []
        self.nonfinite_steps = 0
        self._handles = [p.register_post_accumulate_grad_hook(self._accumulate) for p in self.params]
        self._handles.append(optimizer.register_step_pre_hook(self._on_step))

    def _accumulate(self, param: torch.Tensor) -> None:
        self._pending -= 1
        if self._pending == 0:  # every gradient of this backward is in, none clipped yet
            self._norm = self._global_norm()

    def _global_norm(self) -> float:
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return 0.0
        return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))

    def _on_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        # a parameter without a gradient this step leaves the count short: measure here instead
        norm = self._norm if self._norm is not None else self._global_norm()
        self._pending, self._norm = len(self.params), None
        self.norms.append(norm)
        if not math.isfinite(norm):
            self.nonfinite_steps += 1
            for p in self.params:
                p.grad = None

    def pop_update(self) -> dict[str, float]:
        """Summary of the steps since the last call: max/mean norm and non-finite count."""
        norms = [n for n in self.norms if math.isfinite(n)]
        out = {
            "grad_norm": max(norms) if norms else 0.0,
            "grad_norm_mean": sum(norms) / len(norms) if norms else 0.0,
            "grad_steps": float(len(self.norms)),
            "nonfinite_grad_steps": float(self.nonfinite_steps),
        }
        self.norms.clear()
        self.nonfinite_steps = 0
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
