"""The A/B console table: the terminal's width, no number split across lines, the verdict once."""
from __future__ import annotations

from convopt_mlflow.experiments import render
from convopt_mlflow.experiments.report import analyze


def _report():
    values = {"baseline": [0.11, 0.52, -0.31, 0.24], "lr[ppo.batch_size=512]": [0.91, 1.23, 0.45, 0.77]}
    records = [{"arm": arm, "seed": s, "run_id": f"{arm}-{s}", "value": v, "metrics": {}, "no_edge": False}
               for arm, vs in values.items() for s, v in enumerate(vs)]
    return analyze(records, arms=list(values), metric="backtest/val/sharpe", alpha=0.05, planned_cells=8)


def _cells(report, arms=True):
    return [cell for row in render._arm_rows(report) for cell in (row if arms else row[1:])]


def test_console_table_fits_the_terminal_and_splits_no_word(monkeypatch, capsys):
    report = _report()
    for width in (120, 100):
        monkeypatch.setenv("COLUMNS", str(width))
        render.console_table(report, "A/B study ab-baseline-lr")
        err = capsys.readouterr().err
        lines = err.splitlines()
        assert max(len(line) for line in lines) <= width
        # every header word and every number or CI is whole on one line; at 120 columns the arm names too
        for text in render.CONSOLE_HEADER + _cells(report, arms=width >= 120):
            assert any(text in line for line in lines), (width, text)
        # the verdict is printed once, as the caption
        assert "beats baseline on" in report["verdict"] and err.count("beats baseline on") == 1


def test_narrow_pipes_get_the_minimum_width(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "40")
    render.console_table(_report(), "t")
    lines = capsys.readouterr().err.splitlines()
    assert max(len(line) for line in lines) <= render.MIN_CONSOLE_WIDTH
    assert any("P(impr.)" in line for line in lines)
