"""`convopt predict`: a model trained on googl-1d predicts on the bundled CSV exactly as it ships."""
from __future__ import annotations

import importlib.resources
import json
import py_compile
import shutil
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from convopt_mlflow import cli
from convopt_mlflow.data import load_bars
from convopt_mlflow.data.loading import BUNDLED
from convopt_mlflow.tracking.integrity import MODEL_HASHES_TAG
from convopt_mlflow.tracking.registry import register_verified_model

TINY = ["env.n_envs=2", "ppo.n_steps=64", "ppo.batch_size=64", "ppo.n_epochs=1", "ppo.net_arch=8", "env.window=8",
        "env.episode_length=64", "run.eval_freq=256", "run.checkpoint_freq=512", "monitoring_window=4"]


@pytest.fixture(scope="module")
def trained(module_mlflow, tmp_path_factory):
    """(run id, path of STOCKS_GOOGL.csv copied byte for byte) after a tiny googl-1d training run."""
    uri, root = module_mlflow
    argv = ["train", "--data", "googl-1d", "--total-timesteps", "512", "--quiet", "--experiment", "predict-test"]
    assert cli.main(argv + [item for kv in TINY for item in ("--set", kv)]) == 0
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("predict-test").experiment_id])
    csv = tmp_path_factory.mktemp("data") / "STOCKS_GOOGL.csv"
    with importlib.resources.as_file(importlib.resources.files("gym_anytrading").joinpath(BUNDLED["googl-1d"])) as src:
        shutil.copyfile(src, csv)
    return run.info.run_id, csv


def test_predict_on_the_shipped_csv_writes_every_bar(trained, tmp_path, capsys):
    run_id, csv = trained
    out = tmp_path / "positions.csv"
    assert cli.main(["predict", "--model", f"runs:/{run_id}/model", "--data", str(csv), "--out", str(out)]) == 0
    table = pd.read_csv(out, parse_dates=["timestamp"])
    shipped = pd.read_csv(csv)
    assert len(table) == len(shipped) == 2335
    assert (table["timestamp"] == pd.to_datetime(shipped["Date"])).all()
    assert list(table.columns) == ["timestamp", "position", "prob_short", "prob_flat", "prob_long", "agreement",
                                   "ready"]
    ready = table[table["ready"]]
    assert len(ready) > 2000 and set(ready["position"]) <= {-1.0, 0.0, 1.0}
    assert ready[["prob_short", "prob_flat", "prob_long"]].sum(axis=1).round(5).eq(1.0).all()
    assert (ready["agreement"] == 1.0).all() and table.loc[~table["ready"], "prob_long"].isna().all()
    assert "2335 rows" in capsys.readouterr().err

    # Parquet by extension; the same table.
    parquet = tmp_path / "positions.parquet"
    assert cli.main(["predict", "--model", f"runs:/{run_id}/model", "--data", str(csv), "--out", str(parquet)]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(parquet).drop(columns="timestamp"),
                                  table.drop(columns="timestamp"), check_dtype=False)


def test_predict_a_registered_model_by_alias_prints_a_summary(trained, capsys):
    run_id, _ = trained
    version = register_verified_model(f"runs:/{run_id}/model", "convopt-ensemble")
    MlflowClient().set_registered_model_alias("convopt-ensemble", "challenger", version.version)
    assert cli.main(["predict", "--model", "models:/convopt-ensemble@challenger", "--data", "googl-1d"]) == 0
    printed = capsys.readouterr().out
    assert "models:/convopt-ensemble@challenger" in printed and "2335 bars" in printed
    assert "last decision: 2018-08-29" in printed


@pytest.mark.parametrize("model,data,out,needle", [
    ("runs:/{run}/model", "broken", None, "invalid market data"),
    ("runs:/{run}/model", "short", None, "need more than 119 bars, got 20"),
    ("runs:/{run}/model", "novolume", None, "volume"),  # the model's volume_z feature needs it
    ("runs:/{run}/model", "/nonexistent/bars.csv", None, "no such data file"),
    ("models:/convopt-ensemble@nobody", "googl", None, "alias 'nobody'"),
    ("runs:/{run}/nomodel", "googl", None, "has no tag 'convopt.model_files_sha256.nomodel'"),
    ("runs:/{run}/model", "googl", "positions.xlsx", "use a .csv or .parquet"),
])
def test_bad_input_exits_2_with_one_message(trained, tmp_path, capsys, model, data, out, needle):
    run_id, csv = trained
    if data in ("broken", "short", "novolume", "googl"):
        lines = csv.read_text().splitlines()
        if data == "broken":
            lines[5] = lines[5].replace(lines[5].split(",")[4], "-1.0", 1)  # a negative close
        elif data == "short":
            lines = lines[:21]
        elif data == "novolume":
            lines = [line.rsplit(",", 1)[0] for line in lines]
        path = tmp_path / f"{data}.csv"
        path.write_text("\n".join(lines) + "\n")
        data = str(path)
    argv = ["predict", "--model", model.format(run=run_id), "--data", data]
    if out:
        argv += ["--out", str(tmp_path / out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and err.count("convopt: error") == 1
    assert not list(tmp_path.glob("positions*"))
    assert mlflow.active_run() is None


def _artifact_dir(run_id: str) -> Path:
    """The logged model's stored artifact directory, as an attacker with store access sees it."""
    client = MlflowClient()
    model_id = json.loads(client.get_run(run_id).data.tags[MODEL_HASHES_TAG])["model_id"]
    return Path(client.get_logged_model(model_id).artifact_location.removeprefix("file://"))


PLANTED = """
open({marker!r}, "w").close()
_genuine_predict = PolicyEnsembleModel.predict


def _planted_predict(self, context, model_input, params=None):
    table = _genuine_predict(self, context, model_input, params)
    table["position"] = 1.0
    return table


PolicyEnsembleModel.predict = _planted_predict
"""


def test_planted_unchecked_bytecode_never_runs(trained, tmp_path):
    """The attack: a .pyc compiled from a modified model_code.py, which Python would use unchecked."""
    run_id, csv = trained
    artifact = _artifact_dir(run_id)
    genuine = tmp_path / "genuine.csv"
    assert cli.main(["predict", "--model", f"runs:/{run_id}/model", "--data", str(csv), "--out", str(genuine)]) == 0
    marker = tmp_path / "planted-code-ran"
    modified = tmp_path / "model_code.py"
    modified.write_text((artifact / "model_code.py").read_text() + PLANTED.format(marker=str(marker)))
    pyc = artifact / "__pycache__" / f"model_code.{sys.implementation.cache_tag}.pyc"
    py_compile.compile(str(modified), cfile=str(pyc), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    try:
        # The plant is live: plain MLflow loading the artifact where it lies runs the planted code.
        planted = mlflow.pyfunc.load_model(str(artifact)).predict(load_bars(str(csv), max_gap=None).frame.iloc[:300])
        assert marker.exists() and (planted["position"] == 1.0).all()
        marker.unlink()

        out = tmp_path / "positions.csv"
        assert cli.main(["predict", "--model", f"runs:/{run_id}/model", "--data", str(csv), "--out", str(out)]) == 0
        assert not marker.exists()
        pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(genuine))
        assert pyc.exists()  # deleted from the verified copy only; the store is not ours to clean
    finally:
        shutil.rmtree(artifact / "__pycache__")


def test_an_unrecorded_file_refuses_the_model_naming_every_such_file(trained, tmp_path, capsys):
    run_id, csv = trained
    artifact = _artifact_dir(run_id)
    extras = [artifact / "evil.json", artifact / "artifacts" / "extra.py"]
    for path in extras:
        path.write_text("{}\n")
    try:
        out = tmp_path / "positions.csv"
        assert cli.main(["predict", "--model", f"runs:/{run_id}/model", "--data", str(csv), "--out", str(out)]) == 2
    finally:
        for path in extras:
            path.unlink()
    err = capsys.readouterr().err
    assert err.count("convopt: error") == 1 and "Traceback" not in err
    assert "files 'artifacts/extra.py', 'evil.json' are in the artifact but their sha256 were never recorded" in err
    assert not out.exists() and mlflow.active_run() is None
