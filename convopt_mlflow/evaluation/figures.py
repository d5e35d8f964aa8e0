"""Plotly figures for backtests and training convergence (no mlflow here).

The tracking layer logs what these functions return; they only build figures
from plain arrays and dicts, so they can be tested and reused anywhere.

Example:
    >>> import numpy as np
    >>> fig = equity_figure(np.arange(3), {"policy": np.array([1.0, 1.1, 1.05])}, title="val")
    >>> len(fig.data)
    1
"""
from __future__ import annotations

import base64
import gzip
import json
import math
import posixpath
import urllib.parse
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import plotly
import plotly.colors
import plotly.offline
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["DASHBOARD_PANELS", "PLOTLY_BUNDLE", "STEP_AXIS_TITLE", "convergence_dashboard", "equity_figure",
           "pack_plotly", "plotly_bundle", "plotly_bundle_js", "shared_plotly_loader", "write_html"]

#: Rows of :func:`convergence_dashboard`, top to bottom: (title, history keys, log y axis).
#: A last row, "Interventions", holding one marker trace per intervention action, is added
#: only when the run has interventions.
DASHBOARD_PANELS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("Loss", ("loss", "value_loss"), False),
    ("Entropy", ("entropy",), False),
    ("Gradient norm", ("grad_norm", "param_norm"), True),
    ("Learning rate", ("lr",), True),
    ("Eval score", ("eval_score", "generalization_gap"), False),
    ("Approx KL", ("approx_kl",), False),
)
_INTERVENTION_TITLE = "Interventions"
#: Artifact path of a run's one copy of plotly.js (see :func:`shared_plotly_loader`).
PLOTLY_BUNDLE = "assets/plotly-gzip.mjs"
#: Title of every panel's x axis: each panel shows its own step numbers.
STEP_AXIS_TITLE = "environment timesteps"
_PLATEAU_COLOR = "rgba(255, 165, 0, 0.15)"
_BAND_COLORS = ("rgba(31, 119, 180, 0.07)", "rgba(148, 103, 189, 0.12)")
_PALETTE = plotly.colors.qualitative.Plotly
_KNOWN_CURVE_COLORS = {"policy": "#1f77b4", "buy_and_hold": "#7f7f7f", "flat": "#bcbd22", "oracle": "#2ca02c",
                       "signal_rule": "#98df8a"}


def equity_figure(timestamps: Sequence[Any], curves: Mapping[str, np.ndarray], *, title: str,
                  max_points: int | None = None) -> go.Figure:
    """Equity curves (e.g. policy vs buy-and-hold vs flat) over the same bars.

    Args:
        timestamps: shape ``(m,)``: datetimes or bar indices, one per equity point
            (for :func:`~convopt_mlflow.evaluation.metrics.equity_curve` output,
            ``m = n_bars + 1``).
        curves: name -> equity, each of shape ``(m,)``, starting at 1.0 by convention.
        title: figure title.
        max_points: at most this many evenly spaced points per curve (first and last kept);
            a page over a 300k-bar test split stays small. None: every point.

    Returns:
        A figure with one line trace per curve, in mapping order.

    Raises:
        ValueError: if a curve's length differs from ``len(timestamps)``.
    """
    x = _as_x(timestamps)
    keep = None
    if max_points is not None and len(x) > max_points:
        keep = np.unique(np.linspace(0, len(x) - 1, max(2, max_points)).round().astype(int))
        x = [x[i] for i in keep] if isinstance(x, list) else x[keep]
    fig = go.Figure()
    for i, (name, curve) in enumerate(curves.items()):
        y = np.asarray(curve, dtype=np.float64)
        if keep is not None and y.shape == (len(timestamps),):
            y = y[keep]
        if y.shape != (len(x),):
            raise ValueError(f"curve {name!r} has shape {y.shape}, expected ({len(x)},) to match timestamps")
        color = _KNOWN_CURVE_COLORS.get(name, _PALETTE[i % len(_PALETTE)])
        fig.add_trace(
            go.Scatter(
                x=x,
                y=np.where(np.isfinite(y), y, np.nan),  # NaN: a gap; numpy goes out as one typed array
                mode="lines",
                name=name,
                line={"color": color, "width": 2 if name == "policy" else 1.5},
                hovertemplate=f"{name}: %{{y:.4f}}<extra></extra>",
            )
        )
    fig.add_hline(y=1.0, line={"color": "black", "width": 0.5, "dash": "dot"})
    fig.update_layout(
        title=title,
        xaxis_title="time",
        yaxis_title="equity (start = 1.0)",
        hovermode="x unified",
        template="plotly_white",
    )
    return fig


def convergence_dashboard(
    history: Sequence[Mapping[str, float]],
    interventions: Sequence[Mapping[str, Any]],
    *,
    title: str = "Convergence",
    bands: Mapping[str, Sequence[tuple[float, float, Any]]] | None = None,
) -> go.Figure:
    """Training curves, plateaus and interventions on one shared timestep axis.

    Args:
        history: one row per PPO update; ``step`` (env timesteps) is required, and
            any of the keys named in :data:`DASHBOARD_PANELS` plus
            ``plateau_detected`` (0/1) may be present. A missing key, ``None`` or a
            non-finite value leaves a gap; a key absent from every row gives no trace.
            Log-scaled panels drop values <= 0.
        interventions: one mapping per intervention with ``step``, ``action`` and
            ``reason``; every other key (scalars, or mappings such as the values that
            triggered it) is shown in the hover text.
        title: figure title.
        bands: name (e.g. ``"curriculum/stage"``, ``"meta/regime"``) -> ``(start step,
            end step, level)`` spans, drawn as alternating shaded bands (layout shapes
            named after the key) labelled with the level; see
            :func:`~convopt_mlflow.evaluation.dashboards.level_spans`.

    Returns:
        A figure with ``len(DASHBOARD_PANELS)`` rows (plus an "Interventions" row
        when ``interventions`` is not empty) sharing the x axis, each panel with its
        own step tick labels and axis title: one trace per history key present, one
        marker trace per distinct action in the interventions row, a dotted vertical line
        (layout shape named ``"intervention"``)
        across all rows at each intervention, and a shaded band (layout shape
        named ``"plateau"``) over each run of consecutive rows with
        ``plateau_detected == 1``.
    """
    rows = sorted(history, key=_step_of)
    steps = np.array([_step_of(r) for r in rows], dtype=np.float64)
    # a run without interventions gets no empty "Interventions" panel
    titles = [panel[0] for panel in DASHBOARD_PANELS] + ([_INTERVENTION_TITLE] if interventions else [])
    n_rows = len(titles)
    fig = make_subplots(
        rows=n_rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.3 / n_rows,  # room for each panel's own tick labels and axis title
        subplot_titles=titles,
        row_heights=[1.0] * len(DASHBOARD_PANELS) + ([0.6] if interventions else []),
    )
    color_index = 0
    for row, (_, keys, log_y) in enumerate(DASHBOARD_PANELS, start=1):
        for key in keys:
            # a key measured only on some updates (eval_score) is drawn through the rows that have it;
            # a non-finite value where it was measured stays a gap
            present = [(x, r[key]) for x, r in zip(steps, rows) if r.get(key) is not None]
            if not present:
                continue
            y = _json_safe(np.array([float(v) for _, v in present]), positive=log_y)
            fig.add_trace(
                go.Scatter(
                    x=[x for x, _ in present],
                    y=y,
                    mode="lines+markers" if len(present) <= max(1, len(rows) // 4) else "lines",
                    name=key,
                    line={"color": _PALETTE[color_index % len(_PALETTE)]},
                    hovertemplate=f"{key}: %{{y:.4g}}<br>step %{{x:,}}<extra></extra>",
                ),
                row=row,
                col=1,
            )
            color_index += 1
        if log_y:
            fig.update_yaxes(type="log", row=row, col=1)

    if interventions:
        _add_interventions(fig, interventions, row=n_rows)
    for x0, x1 in _plateau_spans(rows, steps):
        fig.add_shape(
            type="rect", name="plateau", xref="x", yref="paper", x0=x0, x1=x1, y0=0, y1=1,
            fillcolor=_PLATEAU_COLOR, line={"width": 0}, layer="below",
        )
    for i, (name, spans) in enumerate((bands or {}).items()):
        for j, (x0, x1, level) in enumerate(spans):
            fig.add_shape(type="rect", name=name, xref="x", yref="paper", x0=x0, x1=x1, y0=0, y1=1,
                          fillcolor=_BAND_COLORS[(i + j) % 2], line={"width": 0}, layer="below",
                          label={"text": f"{name} {_format(level)}", "textposition": "top left",
                                 "font": {"size": 9}})
    # shared_xaxes hides the tick labels of every panel but the bottom one: show them all
    fig.update_xaxes(showticklabels=True, title_text=STEP_AXIS_TITLE, title_font={"size": 9},
                     title_standoff=2, tickformat=",d")
    for row, (_, keys, _) in enumerate(DASHBOARD_PANELS, start=1):
        fig.update_yaxes(title_text=", ".join(keys), title_font={"size": 9}, row=row, col=1)
    fig.update_layout(title=title, height=230 * n_rows, hovermode="closest", template="plotly_white")
    return fig


def plotly_bundle() -> Path:
    """plotly.js as shipped in the plotly wheel (about 4.8 MB): nothing is fetched from a CDN."""
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def pack_plotly(source: bytes) -> bytes:
    """plotly.js gzipped as :func:`plotly_bundle_js` carries it (level 9, no timestamp: the same bytes
    every time; about 0.15 s of CPU for plotly's 4.8 MB, which the tracking glue keeps on disk)."""
    return gzip.compress(source, compresslevel=9, mtime=0)


def plotly_bundle_js(packed: bytes | None = None) -> str:
    """The run's shared plotly.js: gzip + base64 (about 2 MB instead of 4.8), unpacked by the browser.

    ``packed``: :func:`pack_plotly` of :func:`plotly_bundle`, when the caller has it already.
    Run as a classic script, it decompresses plotly.js (``DecompressionStream``), runs it, and
    then draws every figure the page's stub (:func:`shared_plotly_loader`) queued meanwhile.
    """
    packed = base64.b64encode(packed or pack_plotly(plotly_bundle().read_bytes())).decode("ascii")
    return (f"/* plotly.js v{plotly.offline.get_plotlyjs_version()} (MIT), gzip + base64; see convopt_mlflow."
            "evaluation.figures.plotly_bundle_js */\n(function () {\n"
            f"  var packed = \"{packed}\";\n"
            "  var bytes = Uint8Array.from(atob(packed), function (c) { return c.charCodeAt(0); });\n"
            "  var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));\n"
            "  new Response(stream).text().then(function (code) {\n"
            "    var queue = (window.Plotly && window.Plotly.__queue) || [];\n"
            "    var script = document.createElement('script');\n"
            "    script.text = code;\n"
            "    document.head.appendChild(script);\n"
            "    queue.forEach(function (call) {\n"
            "      window.Plotly.newPlot.apply(window.Plotly, call.args).then(call.resolve, call.reject);\n"
            "    });\n"
            "  });\n"
            "})();\n")


#: Defines ``Plotly.newPlot`` until the real one is unpacked: calls are queued, then replayed.
_PLOTLY_STUB = ("window.Plotly = window.Plotly || {__queue: [], newPlot: function () {\n"
                "  var args = arguments, queue = this.__queue;\n"
                "  return new Promise(function (resolve, reject) { queue.push({args: args, resolve: resolve, "
                "reject: reject}); });\n}};\n")


def shared_plotly_loader(run_id: str, page: str, bundle: str = PLOTLY_BUNDLE) -> str:
    """A ``<script>`` that loads the run's one copy of plotly.js, for a page at artifact path ``page``.

    Inside MLflow's artifact viewer the page is a ``blob:`` document in a sandboxed iframe, where
    a relative ``src`` resolves to nothing: the bundle is loaded from the server that showed it,
    ``<origin>/get-artifact?path=<bundle>&run_uuid=<run>``. MLflow serves ``.js`` artifacts as
    ``text/plain`` with ``nosniff`` (a browser refuses to run them) and ``.mjs`` as
    ``text/javascript``, hence the bundle's name. A downloaded copy of the run's artifacts
    (``file:``) loads it by relative path. The bundle (:func:`plotly_bundle_js`) unpacks
    plotly.js asynchronously; the stub queues the page's ``Plotly.newPlot`` calls until then.
    """
    relative = posixpath.relpath(bundle, posixpath.dirname(page) or ".")
    query = f"path={urllib.parse.quote(bundle, safe='')}&run_uuid={urllib.parse.quote(run_id, safe='')}"
    return ("<script>" + _PLOTLY_STUB + "(function () { var src = " + json.dumps(relative) + ";\n"
            "  if (location.protocol === 'blob:') { src = new URL(location.href.slice(5)).origin + "
            "'/get-artifact?" + query + "'; }\n"
            "  document.write('<script src=\"' + src + '\"><\\/script>'); })();</script>")


def write_html(fig: go.Figure, path: str | Path, *, run_id: str | None = None, page: str | None = None) -> Path:
    """Write ``fig`` as an HTML page that works offline (nothing from a CDN).

    Without ``run_id`` the page embeds plotly.js (self-contained, about 4.8 MB). With the run's
    id and the page's artifact path (``page``, e.g. ``"dashboards/convergence.html"``) it loads
    the run's shared copy at :data:`PLOTLY_BUNDLE` instead (:func:`shared_plotly_loader`), so a
    run holds plotly.js once, not once per page. Parent directories are created.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if run_id is None:
        fig.write_html(out, include_plotlyjs=True, full_html=True)
        return out
    html = fig.to_html(include_plotlyjs=False, full_html=True)
    loader = shared_plotly_loader(run_id, page or out.name)
    out.write_text(html.replace("<head>", "<head>" + loader, 1), encoding="utf-8")
    return out


def _add_interventions(fig: go.Figure, interventions: Sequence[Mapping[str, Any]], *, row: int) -> None:
    by_action: dict[str, list[Mapping[str, Any]]] = {}
    for item in interventions:
        by_action.setdefault(str(item.get("action", "intervention")), []).append(item)
    for i, (action, items) in enumerate(by_action.items()):
        color = _PALETTE[i % len(_PALETTE)]
        xs = [_step_of(item) for item in items]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[action] * len(items),
                mode="markers",
                name=f"intervention: {action}",
                marker={"symbol": "triangle-down", "size": 11, "color": color},
                hovertext=[_intervention_hover(item) for item in items],
                hoverinfo="text",
            ),
            row=row,
            col=1,
        )
        for x in xs:
            fig.add_shape(
                type="line", name="intervention", xref="x", yref="paper", x0=x, x1=x, y0=0, y1=1,
                line={"color": color, "width": 1, "dash": "dot"}, layer="below",
            )
    fig.update_yaxes(type="category", row=row, col=1)


def _intervention_hover(item: Mapping[str, Any]) -> str:
    lines = [
        f"<b>{item.get('action', 'intervention')}</b> at step {_format(_step_of(item))}",
        f"reason: {item.get('reason', '')}",
    ]
    for key, value in item.items():
        if key in ("step", "action", "reason"):
            continue
        if isinstance(value, Mapping):
            lines.extend(f"{key}.{k}: {_format(v)}" for k, v in value.items())
        else:
            lines.append(f"{key}: {_format(value)}")
    return "<br>".join(lines)


def _plateau_spans(rows: Sequence[Mapping[str, Any]], steps: np.ndarray) -> list[tuple[float, float]]:
    """Runs of consecutive rows with plateau_detected == 1, as (start step, end step).

    A run extends to the step of the row after it (the plateau held until then);
    a run at the end stops at the last row, widened by half a typical update so
    that a one-row plateau is still visible.
    """
    flags = [bool(r.get("plateau_detected") or 0) for r in rows]
    spacing = float(np.median(np.diff(steps))) if len(steps) > 1 else 1.0
    spans: list[tuple[float, float]] = []
    start = None
    for i, flag in enumerate(flags + [False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            x1 = steps[i] if i < len(steps) else steps[-1] + 0.5 * spacing
            x0 = steps[start] - (0.5 * spacing if x1 == steps[start] else 0.0)
            spans.append((float(x0), float(x1)))
            start = None
    return spans


def _step_of(item: Mapping[str, Any]) -> float:
    try:
        return float(item["step"])
    except KeyError:
        raise ValueError(f"every history row and intervention needs a 'step', got keys {sorted(item)}") from None


def _as_x(timestamps: Sequence[Any]) -> np.ndarray | list[Any]:
    if isinstance(timestamps, list):
        return timestamps
    x = np.asarray(timestamps)
    # bars are at most per second: shorter ISO strings than nanoseconds, same instants
    return x.astype("datetime64[s]") if x.dtype.kind == "M" and (x == x.astype("datetime64[s]")).all() else x


def _json_safe(values: np.ndarray, *, positive: bool) -> list[float | None]:
    """Replace NaN/inf (and, for log axes, values <= 0) with None, i.e. a gap in the line."""
    return [
        float(v) if math.isfinite(v) and (v > 0 or not positive) else None
        for v in np.asarray(values, dtype=np.float64)
    ]


def _format(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return f"{int(v):,}" if v.is_integer() and abs(v) < 1e15 else f"{v:.4g}"
    return str(value)
