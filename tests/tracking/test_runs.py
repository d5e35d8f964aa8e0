"""Run lifecycle against a real sqlite store."""
from __future__ import annotations

import importlib.metadata
import json

import numpy as np
import pandas as pd
import pytest

from convopt_mlflow.errors import ConfigError, RunNotFoundError
from convopt_mlflow.tracking import (
    MLflowOutputFormat,
    RunHandle,
    get_run_config,
    log_dataset,
    open_run,
    resolve_tracking_uri,
)


def new_run(store, **tags) -> RunHandle:
    return open_run(experiment="runs", run_id=None, tags=tags, client=store.client)


def test_resolve_tracking_uri_follows_the_environment(store):
    assert resolve_tracking_uri() == store.uri


def test_default_tracking_uri_is_sqlite_in_the_cwd(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"


def test_open_run_creates_experiment_and_tagged_run(store):
    handle = open_run(
        experiment="fresh-exp", run_id=None, tags={"convopt.role": "train", "convopt.seed": 3}, run_name="r1"
    )
    run = store.client.get_run(handle.run_id)
    experiment = store.client.get_experiment_by_name("fresh-exp")
    assert handle.experiment_id == experiment.experiment_id == run.info.experiment_id
    assert handle.artifact_uri == run.info.artifact_uri
    assert run.info.status == "RUNNING"
    assert run.info.run_name == "r1"
    tags = run.data.tags
    assert tags["convopt.role"] == "train"
    assert tags["convopt.seed"] == "3"
    assert tags["convopt.version"] == importlib.metadata.version("convopt-mlflow")
    assert "mlflow.user" in tags  # MLflow's own context tags, as a fluent run would get
    # A second run lands in the same experiment.
    again = open_run(experiment="fresh-exp", run_id=None, tags={})
    assert again.experiment_id == handle.experiment_id


def test_open_run_without_experiment_uses_the_convopt_one(store, monkeypatch):
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    handle = open_run(experiment=None, run_id=None, tags={}, client=store.client)
    assert handle.experiment_id == store.client.get_experiment_by_name("convopt").experiment_id != "0"


def test_experiment_environment_variables_win_over_the_default(store, monkeypatch):
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    by_name = open_run(experiment=None, run_id=None, tags={}, client=store.client)
    assert by_name.experiment_id == store.client.get_experiment_by_name("from-env").experiment_id
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "0")
    assert open_run(experiment=None, run_id=None, tags={}, client=store.client).experiment_id == "0"


def test_deleted_experiment_is_a_config_error(store):
    experiment_id = store.client.create_experiment("gone")
    store.client.delete_experiment(experiment_id)
    with pytest.raises(ConfigError, match="'gone' is deleted"):
        open_run(experiment="gone", run_id=None, tags={}, client=store.client)


@pytest.mark.parametrize("status", ["FINISHED", "FAILED", "KILLED"])
def test_end_sets_the_status(store, status):
    handle = new_run(store)
    handle.end(status)
    assert store.client.get_run(handle.run_id).info.status == status


def test_end_refuses_unknown_status(store):
    with pytest.raises(ValueError, match="RUNNING"):
        new_run(store).end("RUNNING")


def test_resume_reopens_a_killed_run_and_keeps_its_id(store):
    first = new_run(store, **{"convopt.pid": "1"})
    first.end("KILLED")
    resumed = open_run(experiment="ignored", run_id=first.run_id, tags={"convopt.pid": "2"}, client=store.client)
    run = store.client.get_run(first.run_id)
    assert resumed.run_id == first.run_id
    assert resumed.experiment_id == first.experiment_id
    assert run.info.status == "RUNNING"
    assert run.data.tags["convopt.pid"] == "2"
    assert store.client.get_experiment_by_name("ignored") is None


def test_resume_of_a_missing_or_deleted_run_is_run_not_found(store):
    with pytest.raises(RunNotFoundError, match="does not exist"):
        open_run(experiment=None, run_id="0123456789abcdef0123456789abcdef", tags={}, client=store.client)
    handle = new_run(store)
    store.client.delete_run(handle.run_id)
    with pytest.raises(RunNotFoundError, match="deleted"):
        open_run(experiment=None, run_id=handle.run_id, tags={}, client=store.client)


def test_log_params_batches_stringifies_truncates_and_skips_existing(store):
    handle = new_run(store)
    flat = {f"p.{i:03d}": i * 0.5 for i in range(250)}
    flat["long"] = "x" * 7000
    flat["none"] = None
    result = handle.log_params(flat)
    assert (result.written, result.unchanged, dict(result.conflicts)) == (252, 0, {})
    params = store.client.get_run(handle.run_id).data.params
    assert len(params) == 252
    assert params["p.000"] == "0.0"
    assert params["p.249"] == "124.5"
    assert params["none"] == "None"
    assert len(params["long"]) == 6000
    assert params["long"].endswith("...[truncated]")

    # On resume the same config logs again without error; a changed value is reported, not written.
    again = handle.log_params({**flat, "p.001": 99, "new": "y"})
    assert (again.written, again.unchanged) == (1, 251)
    assert dict(again.conflicts) == {"p.001": ("0.5", "99")}
    params = store.client.get_run(handle.run_id).data.params
    assert params["p.001"] == "0.5"
    assert params["new"] == "y"


def test_set_tags_and_text_dict_artifacts(store, tmp_path):
    handle = new_run(store)
    handle.set_tags({f"t.{i}": i for i in range(150)})
    tags = store.client.get_run(handle.run_id).data.tags
    assert [tags[f"t.{i}"] for i in (0, 149)] == ["0", "149"]

    handle.log_text("# report\n", "reports/report.md")
    handle.log_dict({"a": 1}, "config.json")
    local = tmp_path / "interventions.csv"
    local.write_text("step,action\n64,lr_boost\n")
    handle.log_artifact(local, "tables")
    listed = {a.path for a in store.client.list_artifacts(handle.run_id)}
    assert listed == {"reports", "config.json", "tables"}
    assert get_run_config(handle.run_id) == {"a": 1}
    text = store.client.download_artifacts(handle.run_id, "tables/interventions.csv", str(tmp_path / "dl"))
    assert open(text).read() == "step,action\n64,lr_boost\n"


def test_get_run_config_round_trip_and_errors(store):
    config = {"ppo": {"learning_rate": 3e-5, "net_arch": [64, 64]}, "preset": "full", "seed": 7}
    handle = new_run(store)
    handle.log_dict(config, "config.json")
    assert get_run_config(handle.run_id, client=store.client) == config

    bare = new_run(store)
    with pytest.raises(RunNotFoundError, match="config.json"):
        get_run_config(bare.run_id)
    with pytest.raises(RunNotFoundError, match="does not exist"):
        get_run_config("ffffffffffffffffffffffffffffffff")
    broken = new_run(store)
    broken.log_text("[1, 2]", "config.json")
    with pytest.raises(RunNotFoundError, match="not a JSON object"):
        get_run_config(broken.run_id)


def test_last_logged_step_is_the_max_over_all_histories(store):
    handle = new_run(store)
    assert handle.last_logged_step() == -1
    writer = MLflowOutputFormat(handle.run_id, store.client)
    writer.write({"a": 1.0, "b": 1.0}, {}, step=64)
    writer.write({"a": 2.0}, {}, step=192)
    writer.write({"b": 3.0}, {}, step=128)
    # Logged later but at an earlier step: must not lower the answer.
    writer.write({"a": 0.0}, {}, step=10)
    assert handle.last_logged_step() == 192
    expected = max(
        m.step for key in ("a", "b") for m in store.client.get_metric_history(handle.run_id, key)
    )
    assert expected == 192


@pytest.mark.parametrize(
    ("source", "source_type"),
    [("bundled:eurusd_1h", "code"), ("/data/bars.parquet", "local"), ("https://example.com/bars.csv", "http")],
)
def test_log_dataset_records_name_digest_source_and_context(store, source, source_type):
    handle = new_run(store)
    frame = pd.DataFrame({"close": [1.0, 1.1, 1.2], "volume": [10.0, 20.0, 30.0]})
    # MLflow keeps one dataset per (experiment, name, digest): the digest differs per case.
    digest = f"d1g3st-{source_type}"
    log_dataset(handle, frame, name="EURUSD-1h", source=source, digest=digest, context="validation")
    inputs = store.client.get_run(handle.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert (dataset.name, dataset.digest, dataset.source_type) == ("EURUSD-1h", digest, source_type)
    assert source in dataset.source
    assert json.loads(dataset.profile)["num_rows"] == 3
    assert {t.key: t.value for t in inputs[0].tags} == {"mlflow.data.context": "validation"}


def test_frame_schema_is_mlflows_schema_without_its_per_cell_loop(store):
    """The logged dataset's schema is exactly what MLflow infers from every row, including a
    missing value far past the rows whose types are sampled (it makes that column optional)."""
    from mlflow.types.utils import _infer_schema

    from convopt_mlflow.data import load_bars
    from convopt_mlflow.tracking.datasets import frame_schema

    frame = load_bars("synthetic:n_bars=3000,seed=3,signal_ic=0.05").frame.copy()
    frame["flag"] = frame["close"] > frame["open"]
    frame["label"] = "bar"
    frame["count"] = np.arange(len(frame), dtype=np.int64)
    frame.loc[frame.index[-1], "volume"] = np.nan
    assert frame_schema(frame) == _infer_schema(frame)
    assert not {c.name: c.required for c in frame_schema(frame).inputs}["volume"]
    handle = new_run(store)
    log_dataset(handle, frame, name="synthetic", source="synthetic(seed=3)", digest="d-schema")
    logged = store.client.get_run(handle.run_id).inputs.dataset_inputs[0].dataset
    assert json.loads(logged.schema)["mlflow_colspec"] == _infer_schema(frame).to_dict()
    assert json.loads(logged.profile)["num_rows"] == 3000
