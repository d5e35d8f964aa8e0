"""One walk per split and weights: the final model's validation score and the validation
backtest share a walk, and any change of weights walks again."""
from __future__ import annotations

import numpy as np
import torch

from convopt_mlflow.config import build_config
from convopt_mlflow.env import deterministic_positions
from convopt_mlflow.training.evaluate import backtest_split, greedy_actions, validation_scorer
from convopt_mlflow.training.setup import load_market, make_env, make_model


def _market_and_policy():
    cfg = build_config("baseline", ["data.source=synthetic:n_bars=4000,seed=2,signal_ic=0.1",
                                    "ppo.net_arch=8", "env.n_envs=2"])
    market = load_market(cfg)
    return cfg, market, make_model(cfg, make_env(cfg, market)).policy


def test_the_validation_score_and_the_validation_backtest_share_one_walk():
    cfg, market, policy = _market_and_policy()
    score = validation_scorer(market, cost_bps=cfg.env.cost_bps)(policy)
    first = backtest_split(policy, market, "val", cost_bps=cfg.env.cost_bps)
    again = backtest_split(policy, market, "val", cost_bps=cfg.env.cost_bps)
    assert first["path"] is again["path"]  # walked once
    assert first["metrics"]["sharpe"] == score["score"]
    fresh = deterministic_positions(market.cores["val"], greedy_actions(policy), market.splits.val)
    np.testing.assert_array_equal(first["path"].positions, fresh.positions)
    first["metrics"]["sharpe"] = 99.0  # a consumer changing its copy changes nobody else's
    assert backtest_split(policy, market, "val", cost_bps=cfg.env.cost_bps)["metrics"]["sharpe"] == score["score"]


def test_new_weights_or_another_split_walk_again():
    cfg, market, policy = _market_and_policy()
    before = backtest_split(policy, market, "val", cost_bps=cfg.env.cost_bps)
    test = backtest_split(policy, market, "test", cost_bps=cfg.env.cost_bps)
    assert test["path"] is not before["path"] and test["path"].bars[0] > before["path"].bars[-1]
    with torch.no_grad():
        policy.action_net.bias.copy_(torch.tensor([0.0, 0.0, 50.0]))  # now always long
    after = backtest_split(policy, market, "val", cost_bps=cfg.env.cost_bps)
    assert after["path"] is not before["path"]
    assert (after["path"].positions == 1.0).all()
