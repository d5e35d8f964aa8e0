"""env.regime_features end to end: the env observes the regime probabilities and the logged model
rebuilds exactly the features training saw from the OHLCV bars it is given."""
from __future__ import annotations

from convopt_mlflow.data.features import REGIME_FEATURES
from convopt_mlflow.training.coordinator import train
from convopt_mlflow.training.setup import load_market

from .conftest import assert_model_rebuilds_training


def test_logged_model_rebuilds_the_regime_features_training_saw(tracked):
    cfg = tracked.config(env__regime_features="true", run__total_timesteps=512)  # `full`: augmentation on too
    result = train(cfg, preset="everything", checkpoint_root=tracked.checkpoint_root("regime-features"))
    market = load_market(cfg)
    assert market.base_feature_names[-3:] == list(REGIME_FEATURES)
    assert sum(name.startswith("regime_") for name in market.features.names) == 3 * 4  # multiscale @1,2,4,8
    assert_model_rebuilds_training(result.run_id, cfg, market)
