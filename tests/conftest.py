"""Shared fixtures: real sqlite MLflow stores, isolated from the caller's MLflow environment."""
from pathlib import Path

import pytest

_RUN_ENV = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "CONVOPT_CHECKPOINT_ROOT")


def _isolate(patch: pytest.MonkeyPatch, root: Path) -> str:
    """Point MLflow at a fresh sqlite store in ``root``, run there, and drop inherited run settings."""
    uri = f"sqlite:///{root}/mlflow.db"
    patch.chdir(root)
    patch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in _RUN_ENV:
        patch.delenv(name, raising=False)
    return uri


@pytest.fixture()
def mlflow_uri(tmp_path, monkeypatch):
    """A temporary sqlite tracking URI set for one test; the test runs in ``tmp_path``."""
    return _isolate(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def module_mlflow(tmp_path_factory):
    """``(uri, root)`` of one store shared by a test module (creating a store costs ~1.5 s)."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        yield _isolate(patch, root), root
