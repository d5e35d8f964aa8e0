"""Fixtures for the tests and the doctests: fresh sqlite MLflow stores made by copying one template.

MLflow builds a new sqlite store by running every schema migration, about 1.5 s a store on a quiet
machine (10 s and more on a loaded one). The first store of a session is built that way; every
other one is a copy of it whose ``Default`` experiment keeps its artifacts in the copy's own
``./mlruns/0``, as MLflow would have set it there.
"""
from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

_RUN_ENV = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "CONVOPT_CHECKPOINT_ROOT")


@dataclass(frozen=True)
class StoreTemplate:
    """An empty sqlite MLflow store (tracking and registry tables) to copy from."""

    db: Path

    def copy_to(self, root: Path) -> str:
        """A fresh store ``root/mlflow.db``; returns its tracking URI."""
        db = root / "mlflow.db"
        shutil.copyfile(self.db, db)
        connection = sqlite3.connect(db)
        with connection:
            connection.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                               (str((root / "mlruns" / "0").resolve()),))
        connection.close()
        return f"sqlite:///{db}"

    def isolate(self, patch: pytest.MonkeyPatch, root: Path) -> str:
        """Point MLflow at a fresh store in ``root``, run there, and drop inherited run settings."""
        uri = self.copy_to(root)
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        for name in _RUN_ENV:
            patch.delenv(name, raising=False)
        return uri


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> StoreTemplate:
    """The session's empty store, built once by MLflow itself."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow-template")
    MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}").search_experiments()
    return StoreTemplate(root / "mlflow.db")


def _seed_models(n: int) -> dict:
    """``n`` untrained tiny policies, each logged as ``runs:/<run_id>/model`` on its own run of the
    current store, as a seed run of an A/B study logs its model (``convopt.no_edge=false``), and the
    synthetic bars they decide on: what the registry doctests start from."""
    from mlflow.tracking import MlflowClient
    from stable_baselines3 import PPO

    from convopt_mlflow.data import compute_features, generate_market
    from convopt_mlflow.env import MarketCore, TradingVecEnv
    from convopt_mlflow.tracking.model import log_policy_model, policy_spec

    bars = generate_market(200, seed=0).frame
    features = compute_features(bars, vol_window=4)
    core = MarketCore(features.values, features.log_returns, window=4, episode_length=32, cost_bps=1.0,
                      warmup=features.warmup)
    config = {"window": 4, "observation": "window", "vol_window": 4, "cost_bps": 1.0, "long_only": False,
              "feature_names": features.names}
    client, uris = MlflowClient(), []
    for seed in range(n):
        ppo = PPO("MlpPolicy", TradingVecEnv(core, n_envs=1, seed=seed), policy_kwargs={"net_arch": [8]},
                  seed=seed, device="cpu")
        run_id = client.create_run("0", tags={"convopt.no_edge": "false"}).info.run_id
        log_policy_model(run_id, members=[ppo.policy.state_dict()], spec=policy_spec(ppo), feature_config=config,
                         input_example=bars.iloc[:40])
        client.set_terminated(run_id)
        uris.append(f"runs:/{run_id}/model")
    return {"bars": bars, "model_uri": uris[0], "model_uris": uris,
            "parent_run_id": client.create_run("0").info.run_id}


#: doctests that start from logged models (:func:`_seed_models`): module -> how many
_SEEDED = {"convopt_mlflow.tracking.registry": 1, "convopt_mlflow.tracking.registration": 2}


@pytest.fixture(autouse=True)
def _doctest_mlflow_store(request, doctest_namespace):
    """Each doctest of ``convopt_mlflow.tracking`` and ``convopt_mlflow.experiments`` runs in a
    fresh directory whose fresh MLflow store ``MLFLOW_TRACKING_URI`` names; those of
    :data:`_SEEDED` find ``bars``, ``model_uri``, ``model_uris`` and ``parent_run_id`` in it."""
    name = request.node.name if isinstance(request.node, pytest.DoctestItem) else ""
    if not name.startswith(("convopt_mlflow.tracking.", "convopt_mlflow.experiments.")):
        yield
        return
    template = request.getfixturevalue("mlflow_template")
    with pytest.MonkeyPatch.context() as patch:
        template.isolate(patch, request.getfixturevalue("tmp_path"))
        seeded = _seed_models(_SEEDED[name]) if name in _SEEDED else {}
        doctest_namespace.update(seeded)
        yield
        for key in seeded:
            doctest_namespace.pop(key, None)
