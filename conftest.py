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


@pytest.fixture(autouse=True)
def _doctest_mlflow_store(request):
    """Each doctest of ``convopt_mlflow.tracking`` and ``convopt_mlflow.experiments`` runs in a
    fresh directory whose fresh MLflow store ``MLFLOW_TRACKING_URI`` names."""
    if not (isinstance(request.node, pytest.DoctestItem)
            and request.node.name.startswith(("convopt_mlflow.tracking.", "convopt_mlflow.experiments."))):
        yield
        return
    template = request.getfixturevalue("mlflow_template")
    with pytest.MonkeyPatch.context() as patch:
        template.isolate(patch, request.getfixturevalue("tmp_path"))
        yield
