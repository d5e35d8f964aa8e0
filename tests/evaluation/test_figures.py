"""Plotly figures: structure, hover text and self-contained HTML."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from convopt_mlflow.components.convergence_types import ACTIONS
from plotly.offline import get_plotlyjs_version

from convopt_mlflow.evaluation.figures import STEP_AXIS_TITLE
from convopt_mlflow.evaluation import (
    DASHBOARD_PANELS,
    convergence_dashboard,
    equity_curve,
    equity_figure,
    write_html,
)

N_ROWS = len(DASHBOARD_PANELS) + 1  # metric panels + the interventions row
ALL_KEYS = ["loss", "value_loss", "entropy", "grad_norm", "param_norm", "lr", "eval_score",
            "generalization_gap", "approx_kl"]


def _history(plateau=(0, 1, 1, 0, 1)):
    rows = []
    for i, flag in enumerate(plateau):
        row = {"step": 2048 * (i + 1), "plateau_detected": flag}
        row.update({key: 0.5 / (i + 1) for key in ALL_KEYS})
        rows.append(row)
    return rows


INTERVENTIONS = [
    # rows shaped like interventions.json, with action names from convergence_types.ACTIONS
    {"step": 4096, "action": "lr_restart", "reason": "vanishing gradients: norm 2e-07 < 1e-06",
     "values": {"grad_norm": 2e-7, "severity": 0.8}, "applied": "new LR cycle from step 4096", "outcome": None},
    {"step": 8192, "action": "lr_restart", "reason": "loss plateau: CV 0.01 < 0.1 over 20 updates",
     "values": {"loss_cv": 0.01}, "applied": "new LR cycle from step 8192", "outcome": None},
    {"step": 6144, "action": "advance_curriculum", "reason": "loss plateau", "values": {},
     "applied": "skipped: curriculum not enabled", "outcome": None},
]


def _shapes(fig, name):
    return [s for s in fig.layout.shapes if s.name == name]


def _traces(fig):
    return {t.name: t for t in fig.data}


def test_equity_figure_one_trace_per_curve():
    positions, returns = np.array([1.0, 1.0, -1.0, 0.0]), np.array([0.01, -0.02, 0.03, 0.04])
    curves = {
        "policy": equity_curve(positions, returns, cost_bps=10),
        "buy_and_hold": equity_curve(np.ones(4), returns, cost_bps=10),
        "flat": equity_curve(np.zeros(4), returns, cost_bps=10),
    }
    timestamps = pd.date_range("2024-01-01", periods=5, freq="h")
    fig = equity_figure(timestamps, curves, title="test split")
    assert [t.name for t in fig.data] == ["policy", "buy_and_hold", "flat"]
    assert all(len(t.x) == 5 and len(t.y) == 5 for t in fig.data)
    np.testing.assert_array_equal(fig.data[2].y, np.ones(5))
    assert fig.layout.title.text == "test split"
    fig.to_json()  # serialisable


def test_equity_figure_rejects_length_mismatch():
    with pytest.raises(ValueError, match="'policy'"):
        equity_figure(np.arange(4), {"policy": np.ones(5)}, title="x")


def test_dashboard_full_history_has_every_panel_and_trace():
    assert {row["action"] for row in INTERVENTIONS} <= set(ACTIONS)
    fig = convergence_dashboard(_history(), INTERVENTIONS, title="run 1")
    traces = _traces(fig)
    assert set(traces) == set(ALL_KEYS) | {"intervention: lr_restart", "intervention: advance_curriculum"}
    assert len(fig.data) == len(ALL_KEYS) + 2
    titles = [a.text for a in fig.layout.annotations]
    assert titles == [p[0] for p in DASHBOARD_PANELS] + ["Interventions"]
    assert fig.layout.title.text == "run 1"
    # gradient norm and learning rate are log-scaled, loss is not
    assert fig.layout.yaxis3.type == "log" and fig.layout.yaxis4.type == "log"
    assert fig.layout.yaxis.type != "log"
    assert fig.layout["yaxis%d" % N_ROWS].type == "category"
    # every trace shares the timestep axis of the bottom row
    assert {fig.layout[f"xaxis{i}"].matches for i in range(1, N_ROWS)} == {f"x{N_ROWS}"}
    assert tuple(traces["lr"].x) == tuple(2048.0 * k for k in range(1, 6))
    fig.to_json()


def test_dashboard_intervention_markers_and_hover():
    fig = convergence_dashboard(_history(), INTERVENTIONS)
    restart = _traces(fig)["intervention: lr_restart"]
    assert restart.x == (4096.0, 8192.0)
    assert restart.y == ("lr_restart", "lr_restart")
    assert "vanishing gradients: norm 2e-07" in restart.hovertext[0]
    assert "values.grad_norm: 2e-07" in restart.hovertext[0]
    assert "applied: new LR cycle from step 4096" in restart.hovertext[0]
    assert "loss plateau" in restart.hovertext[1] and "values.loss_cv: 0.01" in restart.hovertext[1]
    lines = _shapes(fig, "intervention")
    assert sorted(s.x0 for s in lines) == [4096.0, 6144.0, 8192.0]
    assert all(s.yref == "paper" and s.y0 == 0 and s.y1 == 1 for s in lines)


def test_dashboard_plateau_bands_cover_consecutive_rows():
    fig = convergence_dashboard(_history(plateau=(0, 1, 1, 0, 1)), [])
    bands = sorted((s.x0, s.x1) for s in _shapes(fig, "plateau"))
    # rows 2-3 (steps 4096, 6144) until row 4 starts; the last row alone, widened by half an update
    assert bands == [(4096.0, 8192.0), (10240.0, 11264.0)]


def test_dashboard_missing_keys_omit_traces():
    history = [{"step": 100, "loss": 1.0}, {"step": 200, "loss": 0.5, "eval_score": 0.1}]
    fig = convergence_dashboard(history, [])
    traces = _traces(fig)
    assert set(traces) == {"loss", "eval_score"}
    # a key measured on some updates only is drawn through the rows that have it
    assert traces["eval_score"].x == (200,) and traces["eval_score"].y == (0.1,)
    assert _shapes(fig, "plateau") == [] and _shapes(fig, "intervention") == []
    assert len(fig.layout.annotations) == N_ROWS - 1  # panels stay, only traces are omitted


def _x_axes(fig):
    return [fig.layout[name] for name in fig.layout if name.startswith("xaxis")]


def test_dashboard_every_panel_shows_labelled_step_numbers():
    for interventions, rows in (([], N_ROWS - 1), (INTERVENTIONS, N_ROWS)):
        fig = convergence_dashboard(_history(), interventions)
        axes = _x_axes(fig)
        assert len(axes) == rows
        # shared_xaxes alone hides the tick labels of all panels but the bottom one
        assert all(axis.showticklabels is True for axis in axes)
        assert all(axis.title.text == STEP_AXIS_TITLE for axis in axes)


def test_dashboard_without_interventions_has_no_empty_interventions_panel():
    fig = convergence_dashboard(_history(), [])
    titles = [a.text for a in fig.layout.annotations]
    assert titles == [p[0] for p in DASHBOARD_PANELS]
    assert "Interventions" not in titles
    assert not any(t.name.startswith("intervention") for t in fig.data)


def test_dashboard_single_row_empty_interventions():
    fig = convergence_dashboard([{"step": 2048, "loss": 0.3, "lr": 3e-4, "plateau_detected": 1}], [])
    assert set(_traces(fig)) == {"loss", "lr"}
    assert len(_shapes(fig, "plateau")) == 1
    fig.to_json()


def test_dashboard_empty_history():
    fig = convergence_dashboard([], [])
    assert len(fig.data) == 0
    fig.to_json()


def test_dashboard_non_finite_and_non_positive_values_become_gaps():
    history = [
        {"step": 1, "grad_norm": float("inf"), "loss": float("nan")},
        {"step": 2, "grad_norm": 0.0, "loss": -1.0},
        {"step": 3, "grad_norm": 2.0, "loss": 1.0},
    ]
    traces = _traces(convergence_dashboard(history, []))
    assert traces["grad_norm"].y == (None, None, 2.0)  # log axis: 0 is dropped too
    assert traces["loss"].y == (None, -1.0, 1.0)


def test_dashboard_requires_step():
    with pytest.raises(ValueError, match="step"):
        convergence_dashboard([{"loss": 1.0}], [])


def test_write_html_embeds_plotly_js(tmp_path):
    fig = convergence_dashboard(_history(), INTERVENTIONS)
    path = write_html(fig, tmp_path / "nested" / "dashboard.html")
    assert path == tmp_path / "nested" / "dashboard.html"
    html = path.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert f"plotly.js v{get_plotlyjs_version()}" in html  # the library itself is inline
    # No script is fetched from anywhere (the bundle mentions cdn.plot.ly only as a
    # default topojson URL for geo maps, which these figures do not use).
    assert re.findall(r"<script[^>]*\bsrc=", html) == []
    assert 'src="https://cdn.plot.ly' not in html
    assert "vanishing gradients: norm 2e-07" in html


def test_write_html_for_a_run_loads_its_shared_plotly_bundle(tmp_path):
    from convopt_mlflow.evaluation.figures import PLOTLY_BUNDLE

    fig = convergence_dashboard(_history(), INTERVENTIONS)
    page = write_html(fig, tmp_path / "convergence.html", run_id="r123", page="dashboards/convergence.html")
    html = page.read_text(encoding="utf-8")
    assert f"plotly.js v{get_plotlyjs_version()}" not in html and len(html) < 200_000  # not embedded
    assert PLOTLY_BUNDLE == "assets/plotly-gzip.mjs"
    assert '"../assets/plotly-gzip.mjs"' in html  # a downloaded copy of the run: relative to the page
    assert "/get-artifact?path=assets%2Fplotly-gzip.mjs&run_uuid=r123" in html  # inside MLflow's viewer
    assert 'src="https://cdn.plot.ly' not in html and "vanishing gradients: norm 2e-07" in html


def test_shared_bundle_is_plotly_js_compressed():
    import base64
    import gzip

    from convopt_mlflow.evaluation.figures import plotly_bundle, plotly_bundle_js

    js = plotly_bundle_js()
    packed = js.split('var packed = "', 1)[1].split('"', 1)[0]
    assert gzip.decompress(base64.b64decode(packed)) == plotly_bundle().read_bytes()
    assert len(js) < 0.45 * plotly_bundle().stat().st_size and "DecompressionStream('gzip')" in js


def test_equity_figure_thins_long_curves():
    n = 50_001
    fig = equity_figure(pd.date_range("2020-01-01", periods=n, freq="h"),
                        {"policy": np.linspace(1, 2, n), "flat": np.ones(n)}, title="t", max_points=1000)
    assert all(len(t.x) <= 1000 and len(t.y) == len(t.x) for t in fig.data)
    assert fig.data[0].y[0] == 1.0 and fig.data[0].y[-1] == 2.0  # the ends are kept


def test_equity_figure_sends_curves_as_typed_arrays_with_gaps():
    """A 45k-bar backtest used to go out as Python lists (seconds per figure); NaN/inf are gaps."""
    timestamps = pd.date_range("2024-01-01", periods=3, freq="h")
    fig = equity_figure(timestamps, {"policy": np.array([1.0, np.inf, np.nan]), "flat": np.ones(3)}, title="t")
    assert isinstance(fig.data[0].y, np.ndarray)
    np.testing.assert_array_equal(fig.data[0].y, [1.0, np.nan, np.nan])
    assert json.loads(fig.to_json())["data"][0]["y"]["dtype"] == "f8"  # strict JSON, one typed array
    assert list(fig.data[0].x) == list(timestamps.to_numpy().astype("datetime64[s]"))
