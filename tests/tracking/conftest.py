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
def store(module_mlflow):
    """A fresh sqlite tracking store; the cwd is its directory so ./mlruns artifacts land there."""
    uri, _ = module_mlflow
    return Store(uri, MlflowClient(tracking_uri=uri))
