"""One real sqlite MLflow store per test module (creating one costs about 1.5 s)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from mlflow.tracking import MlflowClient


@dataclass(frozen=True)
class Store:
    uri: str
    client: MlflowClient


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """A fresh sqlite tracking store; the cwd is its directory so ./mlruns artifacts land there."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        patch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        yield Store(uri, MlflowClient(tracking_uri=uri))
