"""Shared fixtures: a fresh, real sqlite MLflow store per test."""
import pytest


@pytest.fixture()
def mlflow_uri(tmp_path, monkeypatch):
    """A temporary sqlite tracking URI set for the test; the test runs in ``tmp_path``."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    return uri
