"""What a finished run shows in the MLflow UI and on the console: name, experiment, description, table."""
from __future__ import annotations

import io

from convopt_mlflow.cli import main
from convopt_mlflow.evaluation.summary import print_summary
from convopt_mlflow.tracking.describe import NOTE_TAG, read_summary

from .conftest import TINY_RUN


def test_run_is_named_described_and_in_the_convopt_experiment(tracked, capsys):
    sets = ",".join(f"{k}={v}" for k, v in TINY_RUN.items() if k != "data.source")
    assert main(["train", "--preset", "baseline", "--seed", "3", "--data", TINY_RUN["data.source"], "--set", sets]) == 0
    experiment = tracked.client.get_experiment_by_name("convopt")
    (run,) = tracked.client.search_runs([experiment.experiment_id], "tags.`convopt.seed` = '3'")
    name = run.info.run_name  # the overrides, compactly: baseline[monitoring_window=4,+N#hash]-s3
    assert name.startswith("baseline[monitoring_window=4,+") and name.endswith("]-s3") and len(name) <= 45, name
    note = run.data.tags[NOTE_TAG]
    assert f"**{name}**: preset `baseline` on `synthetic:" in note
    assert "Test Sharpe" in note and "buy-and-hold" in note and "oracle" in note
    assert "| Sharpe (annualized) | test |" in note and "Interventions:" in note
    assert "`dashboards/convergence.html`" in note and "`backtest/equity_test.html`" in note
    err = capsys.readouterr().err  # captured: not a terminal, so plain lines
    assert f"run {run.info.run_id} ({name}, FINISHED)" in err
    assert f"open it: mlflow ui --backend-store-uri {tracked.uri}, then http://127.0.0.1:5000/#/experiments/" in err
    assert "shipped: the weights of step " in err
    assert "Sharpe" in err and "buy & hold" in err and "\x1b[" not in err


def test_console_table_is_rich_on_a_terminal_and_plain_otherwise(tracked):
    (run,) = tracked.client.search_runs([tracked.client.get_experiment_by_name("convopt").experiment_id],
                                        "tags.`convopt.seed` = '3'")
    summary = read_summary(run.info.run_id, tracked.client)
    plain, fancy = io.StringIO(), io.StringIO()
    print_summary(summary, plain, rich_output=False)
    print_summary(summary, fancy, rich_output=True)
    for text in (plain.getvalue(), fancy.getvalue()):
        assert "turnover /bar" in text and "oracle" in text and "interventions:" in text
        assert run.info.run_id in text
    assert "┃" in fancy.getvalue() and "┃" not in plain.getvalue()  # rich draws a box
    test_sharpe = f"{run.data.metrics['backtest/test/sharpe']:.3f}"
    assert test_sharpe in plain.getvalue()
