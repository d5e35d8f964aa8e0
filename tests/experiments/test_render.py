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
        # every header word and every number or CI shown is whole on one line; at 120 columns the arm names too
        shown = render.fitting_columns(render._arm_rows(report), width)
        keep = [render.CONSOLE_HEADER.index(name) for name in shown]
        cells = [row[i] for row in render._arm_rows(report) for i in keep if i > 0 or width >= 120]
        for text in shown + cells:
            assert any(text in line for line in lines), (width, text)
        # the verdict is printed once, as the caption
        assert "beats baseline on" in report["verdict"] and err.count("beats baseline on") == 1


def test_narrow_pipes_get_the_minimum_width_and_keep_the_arm_names(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "40")
    report = _report()
    render.console_table(report, "t")
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert max(len(line) for line in lines) <= render.MIN_CONSOLE_WIDTH
    # at 80 columns the arm names stay readable (16+ characters), and what was left out is said
    assert any("lr[ppo.batch_size" in line for line in lines) and any("baseline" in line for line in lines)
    assert "left out at this width: IQM" in " ".join(line.strip() for line in lines)
    for text in ("mean", "diff", "p (Holm)", "sig.") + tuple(_cells(report, arms=False)[1:3]):
        assert any(text in line for line in lines), text


def test_every_column_is_shown_when_the_terminal_is_wide_enough():
    rows = render._arm_rows(_report())
    assert render.fitting_columns(rows, 200) == render.CONSOLE_HEADER
    narrow = render.fitting_columns(rows, 80)
    assert narrow[0] == "arm" and "IQM" not in narrow and "p (Holm)" in narrow and "sig." in narrow
