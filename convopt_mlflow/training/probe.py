"""Gradient health probe: the pre-clip gradient norm of every optimizer step.

SB3 discards the norm returned by ``clip_grad_norm_``. We recover it without
copying ``PPO.train``: a post-accumulate-grad hook on each parameter counts the
gradients backward has produced; when the last one arrives (still before
clipping) one fused ``_foreach_norm`` gives the global norm. An optimizer step
pre-hook closes the step: it records the norm and, when it is not finite, drops
every gradient (``p.grad = None``) so Adam skips the step and the parameters
stay finite. Each skipped step is a divergence event. Per minibatch this costs
a few Python calls and one fused norm.

With ``clip_norm`` the probe does the clipping itself (the caller sets SB3's
``max_grad_norm`` to infinity, so SB3's own clip multiplies by 1): the pre-hook
computes the global norm once, records it, and scales the gradients exactly as
``clip_grad_norm_`` would (``max_norm / (norm + 1e-6)`` when below 1). No
per-parameter hooks are needed, so monitoring adds almost nothing to an update.
"""
from __future__ import annotations

import math
from typing import Any

import torch


class GradientProbe:
    """Records the pre-clip global gradient norm of every optimizer step of ``policy``."""

    def __init__(self, policy: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                 clip_norm: float | None = None):
        self.params = [p for p in policy.parameters() if p.requires_grad]
        self.clip_norm = clip_norm
        self._pending = len(self.params)
        self._norm: float | None = None
        self.norms: list[float] = []
        self.nonfinite_steps = 0
        self._handles = [] if clip_norm is not None else [
            p.register_post_accumulate_grad_hook(self._accumulate) for p in self.params]
        self._handles.append(optimizer.register_step_pre_hook(self._on_step))

    def _accumulate(self, param: torch.Tensor) -> None:
        self._pending -= 1
        if self._pending == 0:  # every gradient of this backward is in, none clipped yet
            self._norm = self._global_norm()

    def _global_norm(self) -> float:
        return float(self._total_norm(self._grads()))

    def _grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self.params if p.grad is not None]

    @staticmethod
    def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
        """The global L2 norm, computed as ``torch.nn.utils.clip_grad_norm_`` does."""
        if not grads:
            return torch.zeros(())
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))

    def _on_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        total = None
        if self.clip_norm is not None:
            grads = self._grads()
            total = self._total_norm(grads)
            norm = float(total)
        else:  # a parameter without a gradient this step leaves the count short: measure here instead
            norm = self._norm if self._norm is not None else self._global_norm()
        self._pending, self._norm = len(self.params), None
        self.norms.append(norm)
        if not math.isfinite(norm):
            self.nonfinite_steps += 1
            for p in self.params:
                p.grad = None
        elif total is not None and norm + 1e-6 > self.clip_norm:
            # the same float32 arithmetic as clip_grad_norm_, so training is bit-identical to SB3's clip
            torch._foreach_mul_(grads, torch.clamp(self.clip_norm / (total + 1e-6), max=1.0))

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
