"""Gradient health probe: the pre-clip gradient norm of every optimizer step.

SB3 discards the norm returned by ``clip_grad_norm_``. We recover it without
copying ``PPO.train``: a post-accumulate-grad hook on each parameter adds
``||grad_p||^2`` as backward produces it (before clipping), and an optimizer
step pre-hook closes the step: it records ``sqrt(sum)`` and, when that norm is
not finite, drops every gradient (``p.grad = None``) so Adam skips the step and
the parameters stay finite. Each skipped step is a divergence event.
"""
from __future__ import annotations

import math
from typing import Any

import torch


class GradientProbe:
    """Records the pre-clip global gradient norm of every optimizer step of ``policy``."""

    def __init__(self, policy: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.params = [p for p in policy.parameters() if p.requires_grad]
        self._sq = torch.zeros((), dtype=torch.float64)
        self.norms: list[float] = []
        self.nonfinite_steps = 0
        self._handles = [p.register_post_accumulate_grad_hook(self._accumulate) for p in self.params]
        self._handles.append(optimizer.register_step_pre_hook(self._on_step))

    def _accumulate(self, param: torch.Tensor) -> None:
        self._sq += param.grad.detach().double().pow(2).sum()

    def _on_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        norm = math.sqrt(float(self._sq))
        self._sq.zero_()
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
