"""The `regime` preset end to end (the direct learner observing env.context_features) at a tiny budget:
the logged model rebuilds exactly the features training saw and acts as the backtest did; and the
optional feature sets leave val and test on the bars of an arm without them."""
from __future__ import annotations

import pytest

from convopt_mlflow.config import build_config
from convopt_mlflow.training.coordinator import train
from convopt_mlflow.training.setup import load_market

from .conftest import TINY_RUN, assert_model_rebuilds_training

REGIME_MARKET = "synthetic:n_bars=3000,seed=2,signal_ic=0.1,signal_regimes=1:-1:0"


@pytest.mark.parametrize("momentum, ewm", [("false", "false"), ("true", "false"), ("true", "true")])
def test_the_regime_preset_trains_and_its_model_rebuilds_the_context_features(tracked, momentum, ewm):
    """With env.context_momentum / env.context_ewm off (the columns of models saved before them) or on, the
    pyfunc rebuilds the set its own feature names hold."""
    cfg = build_config("regime", {**TINY_RUN, "data.source": REGIME_MARKET, "run.total_timesteps": "1024",
                                  "direct.window": "32", "direct.batch_windows": "8",
                                  "env.context_momentum": momentum, "env.context_ewm": ewm})
    assert cfg.direct.enabled and cfg.env.context_features
    assert build_config("regime").env.context_momentum  # the preset observes the drift z-scores
    result = train(cfg, preset="regime", checkpoint_root=tracked.checkpoint_root(f"regime-context-{momentum}-{ewm}"))
    assert result.status == "FINISHED"
    params = tracked.client.get_run(result.run_id).data.params
    assert params["env.context_features"] == "True" and params["direct.enabled"] == "True"
    market = load_market(cfg)
    assert "ctx_signed_signal_64" in market.base_feature_names
    assert ("ctx_momentum_64" in market.base_feature_names) == (momentum == "true")
    assert ("ctx_ewm_16" in market.base_feature_names) == (ewm == "true")
    assert params["env.context_ewm"] == ewm.capitalize()
    assert_model_rebuilds_training(result.run_id, cfg, market)


def test_optional_feature_sets_leave_val_and_test_on_the_same_bars():
    """A/B arms that differ only in env.regime_features / env.context_features are tested on the same
    bars (the A/B report pairs their test PnL bar by bar); only their train split starts later."""
    def market(**flags):
        return load_market(build_config("baseline", {**TINY_RUN, "data.source": REGIME_MARKET, **flags}))

    plain, context, regime = market(), market(**{"env.context_features": "true"}), \
        market(**{"env.regime_features": "true"})
    for other in (context, regime):
        assert other.splits.val == plain.splits.val and other.splits.test == plain.splits.test
        assert other.splits.holdout == plain.splits.holdout and other.splits.train[1] == plain.splits.train[1]
        assert other.splits.train[0] == other.features.warmup > plain.features.warmup
