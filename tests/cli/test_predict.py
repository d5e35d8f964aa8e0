"""`convopt predict`: a model trained on googl-1d predicts on the bundled CSV exactly as it ships."""
from __future__ import annotations

import importlib.resources
import shutil

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from convopt_mlflow import cli
from convopt_mlflow.data.loading import BUNDLED
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
