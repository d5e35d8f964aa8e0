"""Dashboards from metric series: rows, markers, bands, activity panels (pure, hand-made inputs)."""
from __future__ import annotations

import numpy as np

from convopt_mlflow.evaluation.dashboards import (
    activity_figure,
    history_from_series,
    interventions_from_series,
    level_spans,
    series_convergence_figure,
)


def _s(steps, values):
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def test_level_spans_cover_runs_of_equal_values():
    assert level_spans(*_s([0, 10, 20, 30, 40], [0, 0, 1, 1, 2])) == [(0, 20, 0), (20, 40, 1), (40, 40, 2)]
    assert level_spans(*_s([], [])) == []


def test_history_rows_merge_keys_by_step_and_flip_the_entropy_loss():
    rows = history_from_series({"train/loss": _s([256, 512], [1.0, 0.5]), "train/entropy_loss": _s([256], [-0.7]),
                                "eval/score": _s([512], [0.2])})
    assert rows == [{"step": 256.0, "loss": 1.0, "entropy": 0.7}, {"step": 512.0, "loss": 0.5, "eval_score": 0.2}]


def test_intervention_markers_take_reasons_when_the_table_exists():
    series = {"intervention/lr_restart": _s([512], [1]), "intervention/lr_restart_count": _s([512], [1])}
    live = interventions_from_series(series)
    assert [(m["step"], m["action"]) for m in live] == [(512.0, "lr_restart")]
    done = interventions_from_series(series, [{"step": 512, "action": "lr_restart", "reason": "plateau"},
                                              {"step": 9, "action": "skip_corrupt_checkpoint", "reason": "sha"}])
    assert [m["reason"] for m in done] == ["sha", "plateau"]


def test_convergence_figure_has_bands_markers_and_labelled_axes():
    series = {"train/loss": _s([256, 512, 768], [1, 2, 3]), "curriculum/stage": _s([256, 512, 768], [0, 1, 1]),
              "meta/regime": _s([256, 768], [2, 2]), "intervention/increase_entropy": _s([512], [1])}
    fig = series_convergence_figure(series)
    shapes = [s.name for s in fig.layout.shapes]
    assert shapes.count("curriculum/stage") == 2 and shapes.count("meta/regime") == 1
    assert "intervention" in shapes
    assert any(t.name == "intervention: increase_entropy" and list(t.x) == [512.0] for t in fig.data)
    assert fig.layout.xaxis7.title.text == "environment timesteps"
    assert fig.layout.yaxis.title.text == "loss, value_loss"


def test_activity_figure_only_when_replay_or_augment_metrics_exist():
    assert activity_figure({"train/loss": _s([1], [1])}) is None
    fig = activity_figure({"replay/priority_mean": _s([256, 512], [1, 2]), "augment/share": _s([256], [0.5])})
    assert {t.name for t in fig.data} == {"replay/priority_mean", "augment/share"}
    assert fig.layout.xaxis.title.text == fig.layout.xaxis2.title.text == "environment timesteps"


def test_thin_keeps_the_ends_and_at_most_max_points():
    from convopt_mlflow.evaluation.dashboards import thin

    steps, values = thin(*_s(range(10_000), range(10_000)), 100)
    assert len(steps) <= 100 and steps[0] == 0 and steps[-1] == 9_999
    np.testing.assert_array_equal(steps, values)
    short = _s([1, 2], [3, 4])
    assert thin(*short, 100)[0] is short[0] or list(thin(*short, 100)[0]) == [1, 2]
    fig = series_convergence_figure({"train/loss": _s(range(5000), range(5000)),
                                     "intervention/lr_restart": _s([17], [1])}, max_points=50)
    assert len(fig.data[0].x) <= 50 and any(list(t.x) == [17.0] for t in fig.data)
