"""env.regime_features end to end: the env observes the regime probabilities and the logged model
rebuilds exactly the features training saw from the OHLCV bars it is given."""
from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import torch

from convopt_mlflow.data.features import REGIME_FEATURES
from convopt_mlflow.env import deterministic_positions
from convopt_mlflow.training.coordinator import train
from convopt_mlflow.training.evaluate import greedy_actions
from convopt_mlflow.training.setup import load_market, make_env, make_model


def test_logged_model_rebuilds_the_regime_features_training_saw(tracked):
    cfg = tracked.config(env__regime_features="true", run__total_timesteps=512)  # `full`: augmentation on too
    result = train(cfg, preset="everything", checkpoint_root=tracked.checkpoint_root("regime-features"))
    market = load_market(cfg)
    assert market.base_feature_names[-3:] == list(REGIME_FEATURES)
    assert sum(name.startswith("regime_") for name in market.features.names) == 3 * 4  # multiscale @1,2,4,8
    frame = market.bars.frame
    loaded = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    rebuilt = loaded.unwrap_python_model()._core(frame)
    np.testing.assert_array_equal(rebuilt.features[:-1], market.features.values)  # [-1]: the model's padding bar
    assert rebuilt.warmup == market.features.warmup

    model = make_model(cfg, make_env(cfg, market))
    (weights,) = Path(mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/model")).rglob("member_0.pt")
    model.policy.load_state_dict(torch.load(weights, weights_only=True))
    out = loaded.predict(frame)
    path = deterministic_positions(market.cores["test"], greedy_actions(model.policy), (0, len(frame)))
    np.testing.assert_array_equal(out["position"].to_numpy()[path.bars], path.positions)
