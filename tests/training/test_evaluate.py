"""One walk per split and weights: the final model's validation score and the validation
backtest share a walk, weights seen again within the last few walks reuse theirs, and any
other change of weights walks again."""
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


def test_earlier_weights_scored_again_reuse_their_walk_up_to_the_kept_number():
    """The final selection scores the best checkpoint's weights again after later evaluations:
    their walk is reused while fewer than KEPT_WALKS other weights were walked since."""
    from convopt_mlflow.training import evaluate

    cfg, market, policy = _market_and_policy()
    score = evaluate.validation_scorer(market, cost_bps=cfg.env.cost_bps)
    best = {k: v.clone() for k, v in policy.state_dict().items()}
    first = backtest_split(policy, market, "val", cost_bps=cfg.env.cost_bps)["path"]

    def walk_others(n: int, offset: int) -> None:  # later evaluations: other weights
        for k in range(n):
            with torch.no_grad():
                policy.action_net.bias.copy_(torch.tensor([0.0, 0.0, float(offset + k + 1)]))
            score(policy)

    walk_others(evaluate.KEPT_WALKS - 1, 0)
    policy.load_state_dict(best)  # still kept: not walked again
    assert backtest_split(policy, market, "val", cost_bps=cfg.env.cost_bps)["path"] is first
    walk_others(evaluate.KEPT_WALKS, 100)
    policy.load_state_dict(best)  # KEPT_WALKS other weights walked since it was last used: walked again
    again = backtest_split(policy, market, "val", cost_bps=cfg.env.cost_bps)["path"]
    assert again is not first
    np.testing.assert_array_equal(again.positions, first.positions)
    assert len(evaluate._WALKS[id(market.cores["val"])][1]) == evaluate.KEPT_WALKS
