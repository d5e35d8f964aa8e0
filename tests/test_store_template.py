"""The session's template store (conftest.py): each copy is a fresh, independent MLflow store whose
``Default`` experiment keeps its artifacts in the copy's own folder, as a store MLflow built there would."""
from mlflow.tracking import MlflowClient


def test_copies_are_empty_independent_and_keep_default_artifacts_at_home(tmp_path, mlflow_template):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = MlflowClient(mlflow_template.copy_to(tmp_path / "a")), MlflowClient(mlflow_template.copy_to(tmp_path / "b"))
    assert [e.name for e in a.search_experiments()] == ["Default"] and not a.search_registered_models()
    run = a.create_run("0")
    assert run.info.artifact_uri.removeprefix("file://").startswith(str((tmp_path / "a" / "mlruns" / "0").resolve()))
    a.create_registered_model("m")
    assert not b.search_runs(["0"]) and not b.search_registered_models()
