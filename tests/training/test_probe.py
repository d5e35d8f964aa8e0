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


def test_probe_clipping_trains_exactly_like_sb3_clipping():
    """ConvoptPPO + ConvergenceCallback (probe clips) == plain PPO (SB3 clips), bit for bit."""
    import numpy as np
    from stable_baselines3 import PPO

    from convopt_mlflow.env import MarketCore, TradingVecEnv
    from convopt_mlflow.training.callbacks import ConvergenceCallback
    from convopt_mlflow.training.coordinator import _NullMonitor
    from convopt_mlflow.training.ppo import ConvoptPPO

    rng = np.random.default_rng(0)
    core = MarketCore(rng.normal(size=(600, 3)).astype(np.float32), rng.normal(0, 0.01, 600), window=4,
                      episode_length=32, cost_bps=1.0)
    kwargs = dict(n_steps=32, batch_size=32, n_epochs=2, max_grad_norm=0.01, seed=3, device="cpu",
                  policy_kwargs={"net_arch": [8]})
    plain = PPO("MlpPolicy", TradingVecEnv(core, 2, seed=3), **kwargs)
    plain.learn(256)
    ours = ConvoptPPO("MlpPolicy", TradingVecEnv(core, 2, seed=3), **kwargs)
    callback = ConvergenceCallback(_NullMonitor(), param_watch=False)
    ours.learn(256, callback=callback)
    assert ours.max_grad_norm == 0.01  # restored after learn
    for a, b in zip(plain.policy.state_dict().values(), ours.policy.state_dict().values()):
        assert torch.equal(a, b)
    assert callback.history and max(row["grad_norm"] for row in callback.history) > 0.01  # pre-clip, above the clip
