"""The end-of-run summary's lines: the shipped step, the no-edge explanation, the Sharpe unit, the UI address."""
from __future__ import annotations

import io

from convopt_mlflow.evaluation.summary import RunSummary, print_summary, run_note

METRICS = {"backtest/test/sharpe": 2.5, "backtest/val/sharpe": -0.4, "benchmark/test/flat/sharpe": 0.0,
           "model/val_score": -0.4, "model/last_val_score": -0.9, "model/step": 51_200.0}
TAGS = {"convopt.model_step": "51200", "convopt.model_source": "best", "convopt.no_edge": "true"}


def _summary(metrics=METRICS, tags=TAGS, uri="sqlite:///mlflow.db"):
    return RunSummary("abc123", "baseline-s0", "baseline", "eurusd-1h", "FINISHED", metrics, tags,
                      tracking_uri=uri, experiment_id="1")


def _plain(summary):
    out = io.StringIO()
    print_summary(summary, out, rich_output=False)
    return out.getvalue()


def test_summary_says_which_steps_weights_were_shipped():
    text = _plain(_summary())
    assert "shipped: the weights of step 51,200 (the best checkpoint by validation Sharpe, -0.400; " \
           "the last update scored -0.900)" in text
    last = _summary(tags={"convopt.model_step": "100000", "convopt.model_source": "last"})
    assert "shipped: the weights of step 100,000 (the last update, validation Sharpe -0.400)" in _plain(last)
    assert "Shipped: the weights of step 51,200" in run_note(_summary())


def test_no_edge_line_says_what_was_compared_on_which_split():
    (line,) = [ln for ln in _plain(_summary()).splitlines() if "no edge" in ln]
    assert "validation Sharpe (annualized) of -0.400, not above flat's 0; validation alone decides" in line
    assert "(the test split, 2.500, is only reported)" in line
    edge = _summary(tags={**TAGS, "convopt.no_edge": "false"})
    assert "no edge" not in _plain(edge) and "no_edge" not in run_note(edge)


def test_sharpe_is_named_annualized_in_table_and_note():
    assert "Sharpe (annualized)" in _plain(_summary())
    assert "| Sharpe (annualized) | test |" in run_note(_summary())
    assert "Test Sharpe (annualized) **2.5**" in run_note(_summary())


def test_open_line_is_a_full_url():
    last = _plain(_summary()).rstrip().splitlines()[-1].strip()
    assert last == ("open it: mlflow ui --backend-store-uri sqlite:///mlflow.db, "
                    "then http://127.0.0.1:5000/#/experiments/1/runs/abc123")
    served = _plain(_summary(uri="http://tracking:5000/")).rstrip().splitlines()[-1].strip()
    assert served == "open it: http://tracking:5000/#/experiments/1/runs/abc123"
