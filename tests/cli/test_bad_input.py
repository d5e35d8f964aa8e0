"""Every class of bad input: exit 2, one message naming the problem, no traceback, no run."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from convopt_mlflow import cli

GOOD_ROWS = [f"2020-01-{1 + i // 24:02d} {i % 24:02d}:00,1.0,1.1,0.9,1.05,10" for i in range(100)]


@pytest.fixture()
def store(mlflow_uri):
    return mlflow_uri


def _no_runs(uri: str) -> bool:
    db = Path(uri.removeprefix("sqlite:///"))
    if not db.exists():
        return True
    client = MlflowClient(tracking_uri=uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return not client.search_runs(exps) if exps else True


def _csv(tmp_path, rows, header="timestamp,open,high,low,close,volume"):
    path = tmp_path / "bars.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return str(path)


def test_broken_csv_lists_every_problem_with_rows(tmp_path, store, capsys):
    rows = list(GOOD_ROWS)
    rows[3] = rows[3].replace("1.05", "-1.0")           # negative close
    rows[7] = rows[7].replace(",1.1,", ",0.95,")        # high below close
    rows[10] = rows[9]                                   # repeated timestamp
    code = cli.main(["train", "--data", _csv(tmp_path, rows), "--total-timesteps", "512"])
    err = capsys.readouterr().err
    assert code == 2
    assert "invalid market data" in err and "Traceback" not in err
    assert "row" in err and "negative" in err.lower() or "<= 0" in err
    assert _no_runs(store)


@pytest.mark.parametrize("argv,needle", [
    (["train", "--preset", "nope"], "unknown preset 'nope'"),
    (["train", "--set", "ppo.batchsize=3"], "unknown config key 'ppo.batchsize'"),
    (["train", "--total-timesteps", "lots"], "bad value 'lots' for run.total_timesteps"),
    (["train", "--n-envs", "0"], "env.n_envs=0: must be >= 1"),
    (["train", "--set", "replay_ratio=-3"], "replay_ratio=-3.0: must be in [0, 1]"),
    (["train", "--set", "ensemble_size=0"], "ensemble_size=0: must be >= 1"),
    (["train", "--set", "monitor.interventions=advance_curriculum"], "advance_curriculum needs curriculum_enabled"),
    (["train", "--preset", "curriculum", "--set", "curriculum.final_share=1"],
     "curriculum.final_share=1.0: must be in [0, 1)"),
    (["train", "--set", "ppo.batchsize=3"], "did you mean `ppo.batch_size`?"),
    (["train", "--preset", "basline"], "did you mean `baseline`"),
    (["train", "--data", "/nonexistent/bars.csv"], "/nonexistent/bars.csv"),
    (["train", "--data", "synthetic:n_bars=abc"], "n_bars"),
    (["train", "--data", "synthetic:colour=red"], "colour"),
    (["train", "--data", "synthetic:mechanism=gbm"], "unknown synthetic mechanism 'gbm'"),
    (["train", "--data", "synthetic:mechanism=noise,signal_ic=0.1"], "belong to mechanism=regimes"),
    (["train", "--resume", "0123456789abcdef0123456789abcdef"], "0123456789abcdef0123456789abcdef"),
    (["data", "check", "/nonexistent.parquet"], "/nonexistent.parquet"),
])
def test_bad_params_exit_2_before_any_run(argv, needle, store, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err and "Traceback" not in err
    assert err.count("convopt: error:") == 1
    assert _no_runs(store)


def test_too_few_bars_says_how_many_are_needed(tmp_path, store, capsys):
    code = cli.main(["train", "--data", _csv(tmp_path, GOOD_ROWS[:40]), "--set", "data.max_gap=none"])
    err = capsys.readouterr().err
    assert code == 2 and "40" in err and "need" in err.lower()
    assert _no_runs(store)


def test_unsupported_file_type(tmp_path, store, capsys):
    path = tmp_path / "bars.xlsx"
    path.write_text("x")
    assert cli.main(["data", "check", str(path)]) == 2
    assert "xlsx" in capsys.readouterr().err


def test_subprocess_exit_code_and_no_traceback(tmp_path, store):
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    proc = subprocess.run([sys.executable, "-m", "convopt_mlflow.cli", "train", "--preset", "bogus"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "unknown preset 'bogus'" in proc.stderr and "Traceback" not in proc.stderr
    assert _no_runs(store)


def test_usage_error_is_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--preset"])  # argparse's own errors stay exit 2
    assert exit_.value.code == 2


def test_unknown_option_lists_that_commands_options(capsys):
    assert cli.main(["train", "--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized argument(s) for `convopt train`: --no-such-flag" in err
    assert "--preset" in err and "--total-timesteps" in err and "--registry-name" not in err  # not ab-test's
    assert "usage: convopt [-h]" not in err and err.count("\n") == 1  # one line, not every subcommand's usage
    assert cli.main(["data", "check", "x", "--nosuchparam", "1"]) == 2
    assert "`convopt data check`: --nosuchparam 1; its options are: --max-gap" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["promote"], ["runs", "cleanup"],
                                  ["predict", "--model", "models:/convopt-ensemble@champion", "--data", "eurusd-1h"]])
def test_read_only_commands_create_no_store_in_an_empty_folder(tmp_path, argv):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}  # MLflow's default: ./mlflow.db
    proc = subprocess.run([sys.executable, "-m", "convopt_mlflow.cli", *argv], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"no MLflow store here: {tmp_path / 'mlflow.db'} does not exist" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no mlruns
