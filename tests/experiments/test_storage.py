"""The storage factory and every refusal: exit 2, one message, nothing left behind."""
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from convopt_mlflow import cli
from convopt_mlflow.errors import UserError
from convopt_mlflow.experiments.storage import get_storage, redact, storage_kind

from .conftest import DATA, TINY


def test_default_is_a_sqlite_file_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = get_storage(None)
    assert isinstance(storage, optuna.storages.RDBStorage) and (tmp_path / "optuna.db").exists()


def test_journal_for_several_workers_on_one_machine(tmp_path):
    storage = get_storage(f"journal:///{tmp_path}/ab.log", workers=4)
    optuna.create_study(study_name="j", storage=storage)
    assert (tmp_path / "ab.log").exists()


@pytest.mark.parametrize("url,workers,needle", [
    ("mysql://u@h/db", 1, "unsupported --storage 'mysql://u@h/db'"),
    ("sqlite:///x.db", 2, "PostgreSQL"),
    ("postgresql://bob:hunter2@127.0.0.1:1/nodb", 1, "cannot open --storage 'postgresql://bob:***@127.0.0.1:1/nodb'"),
])
def test_bad_storage_is_a_user_error_naming_the_url(url, workers, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as error:
        get_storage(url, workers=workers)
    assert needle in str(error.value) and "hunter2" not in str(error.value)
    assert not list(tmp_path.iterdir())


def test_sqlite_refusal_names_both_alternatives():
    with pytest.raises(UserError, match="journal"):
        get_storage(None, workers=3)
    assert redact("postgresql://a:b@c/d") == "postgresql://a:***@c/d" and storage_kind("x.log") == "journal"


def _nothing_left(root: Path, uri: str) -> bool:
    if (root / "optuna.db").exists():
        return False
    if not Path(uri.removeprefix("sqlite:///")).exists():
        return True
    client = MlflowClient(tracking_uri=uri)
    return not client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.parametrize("extra,needle", [
    (["--arms", "baseline,ful"], "unknown arm 'ful': no preset 'ful'; did you mean 'full'?"),
    (["--arms", "baseline,lr:ppo.batchsize=3"], "unknown config key 'ppo.batchsize'"),
    (["--arms", "baseline,lr:data.source=eurusd-1h"], "every arm must share"),
    (["--arms", "baseline"], "at least two arms"),
    (["--arms", "baseline,lr", "--storage", "ftp://x"], "unsupported --storage 'ftp://x'"),
    (["--arms", "baseline,lr", "--workers", "2"], "cannot share sqlite storage"),
    (["--arms", "baseline,lr", "--seeds", "1"], "--seeds must be at least 2"),
    (["--arms", "baseline,lr", "--seeds", "2", "--sequential"], "--sequential needs at least 3 seeds per arm"),
    (["--arms", "baseline,lr", "--on-failure", "best"], "--on-failure must be one of refuse, worst; got 'best'"),
    (["--arms", "baseline,lr", "--data", "/nonexistent/bars.csv"], "/nonexistent/bars.csv"),
])
def test_ab_test_bad_input_exits_2_before_anything_exists(extra, needle, mlflow_uri, tmp_path, capsys):
    code = cli.main(["ab-test", "--data", DATA, "--total-timesteps", "1024", "--set", TINY, *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err and err.count("convopt: error:") == 1 and "Traceback" not in err
    assert _nothing_left(tmp_path, mlflow_uri)


def test_worker_on_a_missing_study_exits_2(tmp_path, mlflow_uri, capsys):
    code = cli.main(["worker", "--study", "nope", "--storage", f"journal:///{tmp_path}/ab.log"])
    assert code == 2 and "no A/B study 'nope'" in capsys.readouterr().err
