"""Exploration behind the learnable defaults (issue 8): what makes plain PPO learn on the planted-signal market.

Plain SB3 PPO (LR 3e-4, n_envs 8, n_steps 256, batch 256, 64x64 tanh) on TradingVecEnv, with
the observation given as raw lagged windows (--mode raw) or as multiscale trailing means
(--mode ms), the rewards multiplied by --rscale, optionally under SB3's VecNormalize. Prints
one JSON line: greedy val/test Sharpe and test turnover at 50k/100k/200k/400k steps.

    python benchmarks/explore_observation.py --window 16 --mode ms --rscale 770 --seed 1
"""
import json, time, argparse
import numpy as np, torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnvWrapper, VecNormalize
from gymnasium import spaces
from convopt_mlflow import config as cfgmod
from convopt_mlflow.training.setup import load_market
from convopt_mlflow.env import TradingVecEnv, deterministic_positions
from convopt_mlflow.training.setup import next_log_returns
from convopt_mlflow.evaluation import trading_metrics

p = argparse.ArgumentParser()
p.add_argument("--window", type=int, default=32)
p.add_argument("--mode", default="raw")  # raw | ms
p.add_argument("--rscale", type=float, default=1.0)
p.add_argument("--vecnorm", default="none")  # none|obs|obsrew
p.add_argument("--gamma", type=float, default=0.99)
p.add_argument("--lr", type=float, default=3e-4)
p.add_argument("--seed", type=int, default=1)
p.add_argument("--steps", type=int, default=200000)
p.add_argument("--data", default="synthetic:n_bars=300000,seed=11,signal_ic=0.05")
p.add_argument("--nsteps", type=int, default=256)
p.add_argument("--ent", type=float, default=0.0)
p.add_argument("--epochs", type=int, default=10)
a = p.parse_args()
torch.set_num_threads(1)
cfg = cfgmod.from_dict({"data": {"source": a.data}, "env": {"window": a.window, "observation": "window"}})
m = load_market(cfg)
F = m.features.n_features
W = a.window
SCALES = [s for s in (1, 2, 4, 8, 16, 32, 64) if s <= W]
def ms(obs):
    win = obs[:, :W*F].reshape(len(obs), W, F)
    parts = [win[:, W-s:, :].mean(1) for s in SCALES]
    return np.concatenate(parts + [obs[:, W*F:]], 1).astype(np.float32)
class Tx(VecEnvWrapper):
    def __init__(self, venv):
        n = len(SCALES)*F + 1 if a.mode == "ms" else venv.observation_space.shape[0]
        super().__init__(venv, observation_space=spaces.Box(-np.inf, np.inf, (n,), np.float32))
    def reset(self):
        return self.tx(self.venv.reset())
    def tx(self, o):
        return ms(o) if a.mode == "ms" else o
    def step_wait(self):
        o, r, d, i = self.venv.step_wait()
        for x in i:
            if "terminal_observation" in x: x["terminal_observation"] = self.tx(x["terminal_observation"][None])[0]
        return self.tx(o), r * a.rscale, d, i
env = Tx(TradingVecEnv(m.cores["train"], 8, seed=a.seed))
if a.vecnorm != "none":
    env = VecNormalize(env, norm_obs=True, norm_reward=(a.vecnorm == "obsrew"), gamma=a.gamma)
model = PPO("MlpPolicy", env, learning_rate=a.lr, n_steps=a.nsteps, batch_size=256, gamma=a.gamma, ent_coef=a.ent,
            n_epochs=a.epochs, seed=a.seed, device="cpu", policy_kwargs={"net_arch": [64, 64], "activation_fn": torch.nn.Tanh})
def evalsplit(split):
    def act(obs):
        o = ms(obs) if a.mode == "ms" else obs
        if a.vecnorm != "none": o = env.normalize_obs(o)
        with torch.no_grad():
            return model.policy.get_distribution(torch.as_tensor(o)).distribution.probs.argmax(-1).numpy()
    path = deterministic_positions(m.cores[split], act, getattr(m.splits, split))
    ret = next_log_returns(m, path.bars)
    return trading_metrics(path.positions, ret, cost_bps=1.0, periods_per_year=m.bars.periods_per_year)
t0 = time.time(); out = {"args": vars(a)}
done = 0
for chk in (50000, 100000, 200000, 400000):
    if chk > a.steps: break
    model.learn(chk - done, reset_num_timesteps=False); done = chk
    if a.vecnorm != "none": env.training = False
    v, t = evalsplit("val"), evalsplit("test")
    if a.vecnorm != "none": env.training = True
    out[chk] = {"val": round(v["sharpe"], 2), "test": round(t["sharpe"], 2), "turn": round(t["turnover"], 3)}
out["secs"] = round(time.time() - t0)
print(json.dumps(out), flush=True)
