"""The observation forms and the reward scale, seen by the env, the backtest and the logged model alike."""
from __future__ import annotations

import mlflow
import numpy as np
import pytest

from convopt_mlflow.config import build_config
from convopt_mlflow.data.features import compute_features, multiscale_features
from convopt_mlflow.data.synthetic import generate_market
from convopt_mlflow.env import deterministic_positions
from convopt_mlflow.training.coordinator import train
from convopt_mlflow.training.evaluate import greedy_actions
from convopt_mlflow.training.setup import load_market, make_env, make_model, reward_scale


def test_multiscale_columns_are_trailing_means_and_never_look_ahead():
    frame = generate_market(600, seed=4, signal_ic=0.1).frame
    base = compute_features(frame, vol_window=20)
    summary = multiscale_features(base, 16)
    assert summary.warmup == base.warmup + 15
    for t in (summary.warmup, 400, 599):
        for j, name in enumerate(base.names):
            for k, m in enumerate((1, 2, 4, 8, 16)):
                assert summary.names[j * 5 + k] == f"{name}@{m}"
                assert summary.values[t, j * 5 + k] == pytest.approx(base.values[t - m + 1:t + 1, j].mean(), abs=1e-5)
    changed = frame.copy()
    changed.iloc[450:, :4] *= 1.3  # rescaling every bar from 450 on leaves the past untouched
    again = multiscale_features(compute_features(changed, vol_window=20), 16)
    np.testing.assert_array_equal(again.values[:450], summary.values[:450])


def test_auto_reward_scale_is_one_over_the_train_return_std():
    cfg = build_config("baseline", {"data.source": "synthetic:n_bars=3000,seed=1,signal_ic=0.1"})
    market = load_market(cfg)
    start, stop = market.splits.train
    returns = market.features.log_returns[max(start, market.features.warmup) + 1:stop]
    assert reward_scale(cfg, market) == pytest.approx(1.0 / returns.std())
    env = make_env(cfg, market)
    env.reset()
    bars = env.unwrapped.current_bars
    _, rewards, _, _ = env.step(np.full(cfg.env.n_envs, 2))  # everyone goes long from flat
    _, raw = market.cores["train"].step(bars, np.zeros(bars.size), np.full(bars.size, 2))
    np.testing.assert_allclose(rewards, (raw * reward_scale(cfg, market)).astype(np.float32), rtol=1e-6)
    fixed = build_config("baseline", {"data.source": "synthetic:n_bars=3000,seed=1,signal_ic=0.1",
                                      "env.reward_scale": "1"})
    assert reward_scale(fixed, market) == 1.0


@pytest.mark.parametrize("observation", ["multiscale", "window"])
def test_logged_model_sees_what_the_training_env_saw(tracked, observation):
    cfg = tracked.config(env__observation=observation, run__total_timesteps=512)
    result = train(cfg, preset="everything", checkpoint_root=tracked.checkpoint_root(f"obs-{observation}"))
    market = load_market(cfg)
    model = make_model(cfg, make_env(cfg, market))
    local = mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/model")
    import torch
    from pathlib import Path
    (weights,) = Path(local).rglob("member_0.pt")
    model.policy.load_state_dict(torch.load(weights, weights_only=True))
    frame = market.bars.frame
    out = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model").predict(frame)
    path = deterministic_positions(market.cores["test"], greedy_actions(model.policy), (0, len(frame)))
    np.testing.assert_array_equal(out["position"].to_numpy()[path.bars], path.positions)
    assert int(np.flatnonzero(out["ready"].to_numpy())[0]) == path.bars[0]


def test_regime_market_oracle_trades_the_regime_aware_signal():
    """With signal_regimes the oracle's signal is loading[regime] * z, so it beats trading z blindly."""
    from convopt_mlflow.evaluation.oracle import fit_oracle

    spec = "synthetic:n_bars=60000,seed=5,signal_ic=0.08,signal_regimes=1:-1:0"
    market = load_market(build_config("baseline", {"data.source": spec}))
    truth = generate_market(60_000, seed=5, signal_ic=0.08, signal_regimes="1:-1:0")
    np.testing.assert_array_equal(market.planted_signal, truth.effective_signal)
    returns = np.diff(np.log(truth.frame["close"].to_numpy()))
    aware = fit_oracle(truth.effective_signal[:-1], returns, cost_bps=1.0, periods_per_year=8760.0)
    blind = fit_oracle(truth.signal[:-1], returns, cost_bps=1.0, periods_per_year=8760.0)
    assert aware.train_sharpe > 1.0 and aware.train_sharpe > blind.train_sharpe + 1.0
