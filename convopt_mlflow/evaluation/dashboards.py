"""Dashboards built from a run's logged metric series (no mlflow here).

A *series* is ``key -> (steps, values)``: the points of one MLflow metric, steps in
environment timesteps, both arrays of shape ``(n,)``. The same functions draw the
end-of-run artifacts and the live dashboard, which has nothing but the series.

- :func:`history_from_series`: series -> the per-update rows of
  :func:`~convopt_mlflow.evaluation.figures.convergence_dashboard`;
- :func:`interventions_from_series`: the ``intervention/<action>`` points as markers;
- :func:`level_spans`: a piecewise-constant metric (``curriculum/stage``,
  ``meta/regime``) as ``(start, end, level)`` bands;
- :func:`activity_figure`: replay and augmentation activity, one panel per namespace;
- :func:`series_convergence_figure`: the convergence dashboard straight from series.

Example:
    >>> import numpy as np
    >>> level_spans(np.array([0, 10, 20, 30]), np.array([0, 0, 1, 1]))
    [(0.0, 20.0, 0.0), (20.0, 30.0, 1.0)]
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .figures import _PALETTE, _json_safe, convergence_dashboard

__all__ = ["ACTIVITY_PREFIXES", "BAND_KEYS", "HISTORY_KEYS", "activity_figure", "history_from_series",
           "interventions_from_series", "level_spans", "series_convergence_figure", "thin"]

Series = Mapping[str, tuple[np.ndarray, np.ndarray]]

#: MLflow metric key -> history key of the convergence dashboard (sign: entropy = -entropy_loss).
HISTORY_KEYS: dict[str, str] = {
    "train/loss": "loss", "train/value_loss": "value_loss", "train/entropy_loss": "entropy",
    "convergence/grad_norm": "grad_norm", "convergence/param_norm": "param_norm", "lr": "lr",
    "eval/score": "eval_score", "convergence/generalization_gap": "generalization_gap",
    "train/approx_kl": "approx_kl", "convergence/plateau_detected": "plateau_detected",
}
#: Piecewise-constant metrics drawn as bands over the convergence dashboard.
BAND_KEYS = ("curriculum/stage", "meta/regime")
#: Namespaces of the activity dashboard, one panel each.
ACTIVITY_PREFIXES = ("replay/", "augment/")
_INTERVENTION = "intervention/"


def history_from_series(series: Series) -> list[dict[str, float]]:
    """One row per logged step: ``{"step": s, <history key>: value, ...}``, sorted by step."""
    rows: dict[float, dict[str, float]] = {}
    for key, name in HISTORY_KEYS.items():
        if key not in series:
            continue
        steps, values = series[key]
        sign = -1.0 if key == "train/entropy_loss" else 1.0
        for step, value in zip(np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)):
            rows.setdefault(float(step), {"step": float(step)})[name] = sign * float(value)
    return [rows[s] for s in sorted(rows)]


def interventions_from_series(series: Series, reasons: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """Markers for every point of ``intervention/<action>`` (not the ``_count`` running totals).

    ``reasons``: rows of the run's ``interventions.json`` (step, action, reason, ...) when the
    run has written it; their reason and values are attached to the matching marker.
    """
    known = {(float(r["step"]), str(r["action"])): r for r in reasons}
    out = []
    for key, (steps, _) in series.items():
        if not key.startswith(_INTERVENTION) or key.endswith("_count"):
            continue
        action = key[len(_INTERVENTION):]
        for step in np.asarray(steps, dtype=np.float64):
            row = known.get((float(step), action))
            out.append(dict(row) if row is not None else {"step": float(step), "action": action,
                                                           "reason": "(reason in interventions.csv at run end)"})
    for (step, action), row in known.items():  # e.g. skip_corrupt_checkpoint: on record, never a metric
        if f"{_INTERVENTION}{action}" not in series:
            out.append(dict(row))
    return sorted(out, key=lambda r: float(r["step"]))


def level_spans(steps: np.ndarray, values: np.ndarray) -> list[tuple[float, float, float]]:
    """``(start step, end step, level)`` for each run of equal consecutive values.

    A span ends where the next one starts; the last ends at the last step.
    """
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    spans: list[tuple[float, float, float]] = []
    start = 0
    for i in range(1, len(steps) + 1):
        if i == len(steps) or values[i] != values[start]:
            end = steps[i] if i < len(steps) else steps[-1]
            spans.append((float(steps[start]), float(end), float(values[start])))
            start = i
    return spans


def thin(steps: np.ndarray, values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` evenly spaced points of a series, the first and last always kept."""
    steps, values = np.asarray(steps), np.asarray(values)
    if len(steps) <= max_points:
        return steps, values
    keep = np.unique(np.linspace(0, len(steps) - 1, max(2, max_points)).round().astype(int))
    return steps[keep], values[keep]


def series_convergence_figure(series: Series, reasons: Sequence[Mapping[str, Any]] = (), *,
                              title: str = "Convergence", max_points: int | None = None) -> go.Figure:
    """The convergence dashboard from metric series, with curriculum-stage and regime bands.

    ``max_points``: curves are thinned to at most this many points each (:func:`thin`);
    bands and intervention markers never are.
    """
    bands = {key: level_spans(*series[key]) for key in BAND_KEYS if key in series and len(series[key][0])}
    curves = {k: thin(*v, max_points) if max_points and k in HISTORY_KEYS else v for k, v in series.items()}
    return convergence_dashboard(history_from_series(curves), interventions_from_series(series, reasons),
                                 title=title, bands=bands)


def activity_figure(series: Series, *, title: str = "Replay and augmentation") -> go.Figure | None:
    """One panel per namespace in :data:`ACTIVITY_PREFIXES` that has metrics; None when none has.

    Each metric of the namespace is one line over environment timesteps.
    """
    panels = [(p, sorted(k for k in series if k.startswith(p))) for p in ACTIVITY_PREFIXES]
    panels = [(p, keys) for p, keys in panels if keys]
    if not panels:
        return None
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=[f"{p.rstrip('/')} activity" for p, _ in panels])
    color = 0
    for row, (prefix, keys) in enumerate(panels, start=1):
        for key in keys:
            steps, values = series[key]
            fig.add_trace(go.Scatter(x=np.asarray(steps, dtype=np.float64).tolist(),
                                     y=_json_safe(np.asarray(values), positive=False), mode="lines", name=key,
                                     line={"color": _PALETTE[color % len(_PALETTE)]},
                                     hovertemplate=f"{key}: %{{y:.4g}}<br>step %{{x:,}}<extra></extra>"),
                          row=row, col=1)
            color += 1
        fig.update_yaxes(title_text=f"{prefix}* value", row=row, col=1)
        fig.update_xaxes(title_text="environment timesteps", row=row, col=1)
    fig.update_layout(title=title, height=260 * len(panels) + 80, template="plotly_white", hovermode="closest")
    return fig
