"""EagerAdam: torch's Adam, step for step, without importing torch._dynamo."""
from __future__ import annotations

import subprocess
import sys

import torch

from convopt_mlflow.training.eager_torch import EagerAdam


def _train(optimizer_class, steps: int = 20, **kwargs):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = optimizer_class(net.parameters(), lr=1e-2, eps=1e-5, **kwargs)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    return net, opt


def test_same_weights_and_state_as_torch_adam_bit_for_bit():
    for kwargs in ({}, {"weight_decay": 1e-3}):
        ours, ours_opt = _train(EagerAdam, **kwargs)
        torch_net, torch_opt = _train(torch.optim.Adam, **kwargs)
        for a, b in zip(ours.parameters(), torch_net.parameters()):
            assert torch.equal(a, b)
        ours_state, torch_state = ours_opt.state_dict(), torch_opt.state_dict()
        assert ours_state["param_groups"] == torch_state["param_groups"]
        for key in torch_state["state"]:
            for name, value in torch_state["state"][key].items():
                assert torch.equal(ours_state["state"][key][name], value)


def test_state_dict_loads_into_either_class():
    _, torch_opt = _train(torch.optim.Adam)
    net, ours = _train(EagerAdam, steps=1)
    ours.load_state_dict(torch_opt.state_dict())
    back = torch.optim.Adam(net.parameters(), lr=1e-2, eps=1e-5)
    back.load_state_dict(ours.state_dict())
    assert back.state_dict()["param_groups"] == torch_opt.state_dict()["param_groups"]


def test_step_keeps_the_callers_grad_mode():
    _, opt = _train(EagerAdam, steps=1)
    with torch.enable_grad():
        opt.step()
        assert torch.is_grad_enabled()


def test_a_fresh_process_trains_without_importing_dynamo():
    code = ("import sys, torch\n"
            "from convopt_mlflow.training.eager_torch import EagerAdam\n"
            "w = torch.nn.Parameter(torch.ones(3)); opt = EagerAdam([w], lr=0.1)\n"
            "for _ in range(3):\n"
            "    opt.zero_grad(); (w ** 2).sum().backward(); opt.step()\n"
            "opt.load_state_dict(opt.state_dict())\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_after_dynamo_is_imported_it_is_still_adam():
    code = ("import torch, torch._dynamo\n"
            "from convopt_mlflow.training.eager_torch import EagerAdam\n"
            "torch.manual_seed(0); a = torch.nn.Parameter(torch.randn(5)); b = torch.nn.Parameter(a.detach().clone())\n"
            "oa, ob = EagerAdam([a], lr=0.1, eps=1e-5), torch.optim.Adam([b], lr=0.1, eps=1e-5)\n"
            "for p, o in ((a, oa), (b, ob)):\n"
            "    for _ in range(3):\n"
            "        o.zero_grad(); (p ** 3).sum().backward(); o.step()\n"
            "print(torch.equal(a, b))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
