"""The gradient probe reports the PRE-clip norm of every step and skips non-finite steps."""
import math

import torch

from convopt_mlflow.training.probe import GradientProbe


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


def test_norm_is_measured_before_clipping():
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    probe = GradientProbe(net, opt)
    x = torch.randn(8, 3)
    expected = []
    for scale in (1.0, 1000.0):
        opt.zero_grad()
        (net(x).sum() * scale).backward()
        expected.append(math.sqrt(sum(float(p.grad.pow(2).sum()) for p in net.parameters())))
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
        opt.step()
    summary = probe.pop_update()
    assert summary["grad_steps"] == 2 and summary["nonfinite_grad_steps"] == 0
    assert summary["grad_norm"] == __import__("pytest").approx(expected[1], rel=1e-5)  # far above the clip at 0.5
    assert summary["grad_norm_mean"] == __import__("pytest").approx(sum(expected) / 2, rel=1e-5)
    assert probe.pop_update()["grad_steps"] == 0


def test_non_finite_step_is_skipped_and_counted():
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-1)
    probe = GradientProbe(net, opt)
    before = [p.detach().clone() for p in net.parameters()]
    opt.zero_grad()
    (net(torch.randn(4, 3)).sum() * float("nan")).backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert all(torch.isfinite(p).all() for p in net.parameters())
    summary = probe.pop_update()
    assert summary["nonfinite_grad_steps"] == 1
    probe.remove()
