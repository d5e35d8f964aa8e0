"""Shared fixtures: real sqlite MLflow stores, isolated from the caller's MLflow environment.

Each store is a fresh copy of the session's empty one (``mlflow_template``: the repository's conftest.py).
"""
import pytest


@pytest.fixture()
def mlflow_uri(tmp_path, monkeypatch, mlflow_template):
    """A temporary sqlite tracking URI set for one test; the test runs in ``tmp_path``."""
    return mlflow_template.isolate(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def module_mlflow(tmp_path_factory, mlflow_template):
    """``(uri, root)`` of one store shared by a test module."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        yield mlflow_template.isolate(patch, root), root
