"""Views of the A/B report: Markdown, a plotly HTML page, and a rich console table.

Plotting lives apart from the statistics (``report.py``); this module only draws them.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _arm_rows(report: Mapping[str, Any]) -> list[list[str]]:
    by_arm = {c["arm"]: c for c in report["comparisons"]}
    rows = []
    for arm in report["arms"]:
        s, c = report["summaries"].get(arm, {}), by_arm.get(arm, {})
        ci = f"[{_fmt(s.get('mean_ci_low'))}, {_fmt(s.get('mean_ci_high'))}]" if s else "-"
        rows.append([arm + (" (baseline)" if arm == report["baseline"] else ""), _fmt(s.get("n")), _fmt(s.get("mean")),
                     ci, _fmt(s.get("iqm")), _fmt(c.get("mean_difference")), _fmt(c.get("p_adjusted")),
                     _fmt(c.get("hedges_g")), _fmt(c.get("probability_of_improvement")),
                     "yes" if c.get("significant") else ("-" if not c else "no")])
    return rows


HEADER = ["arm", "n", "mean", "95% CI", "IQM", "diff vs baseline", "p (Holm)", "Hedges g", "P(improve)", "significant"]


def markdown(report: Mapping[str, Any], title: str) -> str:
    lines = [f"# {title}", "", f"**Verdict.** {report['verdict']}", "",
             f"Primary metric `{report['metric']}`, alpha = {report['alpha']}, paired over seeds "
             f"{report['seeds_compared']} (the same seed is the same env seed and data in every arm); "
             f"{report['cells']['complete']} of {report['cells']['planned']} planned trials complete.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in _arm_rows(report)]
    failures = report.get("failures") or {}
    if failures.get("cells"):
        lines += ["", f"**Failed cells** (rule `{failures['rule']}`): " + ", ".join(
            f"{c['arm']} seed {c['seed']} ({c['reason']})" for c in failures["cells"]) + "; failure rate " + ", ".join(
            f"{arm} {100 * rate:.0f}%" for arm, rate in failures["rate"].items()) + "."]
    lines += ["", "## Secondary metrics (mean ± std over seeds)", "",
              "| arm | " + " | ".join(_secondary_keys(report)) + " |", "|---|" + "---|" * len(_secondary_keys(report))]
    for arm in report["arms"]:
        cells = [f"{_fmt(v['mean'])} ± {_fmt(v['std'])}" if (v := report["secondary"][arm].get(k)) else "-"
                 for k in _secondary_keys(report)]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "## Power", "", power_note(report)]
    if report.get("dsr"):
        d = report["dsr"]
        lines += ["", "## Deflated Sharpe ratio", "",
                  f"Best arm `{d['arm']}` (seed-averaged test PnL): PSR {_fmt(d['psr'])}, DSR {_fmt(d['dsr'])} "
                  f"given {d['n_trials']} arms tried" + (f"; Jobson-Korkie/Memmel test against the baseline: "
                                                         f"z = {_fmt(d['sharpe_difference_z'])}, p = {_fmt(d['sharpe_difference_p'])}"
                                                         if "sharpe_difference_z" in d else "") + "."]
    if report.get("sequential"):
        lines += ["", "## Sequential design", "", sequential_note(report["sequential"])]
    return "\n".join(lines) + "\n"


def _secondary_keys(report: Mapping[str, Any]) -> list[str]:
    return sorted({k for arm in report["arms"] for k in report["secondary"][arm]})


def power_note(report: Mapping[str, Any]) -> str:
    if "mde" not in report:
        return "Not enough paired seeds for a power statement."
    m = report["mde"]
    diffs = ", ".join(f"{c['arm']}: {_fmt(c['mde_difference'])}" for c in report["comparisons"])
    return (f"With {m['n_pairs']} paired seeds, the test at the verdict's level ({m.get('method', '')}; "
            f"level {_fmt(m.get('level', m['alpha']))}) has 80% power for a "
            f"standardized effect d_z >= {_fmt(m['standardized'])}; in metric units ({diffs}). "
            f"A non-significant result does not rule out smaller effects.")


def sequential_note(seq: Mapping[str, Any]) -> str:
    looks = "; ".join(f"look {r['look']} at {r['seeds']} seeds: {r['decisions']}" for r in seq["rounds"])
    return (f"Group-sequential (Lan-DeMets O'Brien-Fleming spending, alpha split over comparisons). {looks}. "
            f"Stopped after {seq['trials_run']} of {seq['trials_planned']} planned trials: "
            f"{100 * seq['compute_saved']:.0f}% of the compute saved.")


#: The console table's header: short words, so every column fits a 100-column terminal unwrapped.
CONSOLE_HEADER = ["arm", "n", "mean", "95% CI", "IQM", "diff", "p (Holm)", "Hedges g", "P(impr.)", "sig."]
#: Narrower terminals still get this many columns (a pipe gets rich's 80 or $COLUMNS).
MIN_CONSOLE_WIDTH = 80


def console_table(report: Mapping[str, Any], title: str, console: Any = None) -> None:
    """Print the headline table (stderr, at the terminal's width) with the verdict once, as its caption.

    Numbers never wrap; only the arm column wraps, at word boundaries where it can. Where the
    terminal is too narrow for every column and the arm names, the least needed columns
    (:data:`OPTIONAL_COLUMNS`, in that order) are left out and the caption says which.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if console is None:
        console = Console(stderr=True)  # rich detects the terminal's width
        if console.width < MIN_CONSOLE_WIDTH:
            console = Console(stderr=True, width=MIN_CONSOLE_WIDTH)
    rows = _arm_rows(report)
    shown = fitting_columns(rows, console.width)
    dropped = [name for name in CONSOLE_HEADER if name not in shown]
    caption = report["verdict"] + (f" (left out at this width: {', '.join(dropped)})" if dropped else "")
    table = Table(title=Text(title), caption=Text(caption), caption_justify="left")
    for name in shown:
        if name == "arm":
            table.add_column(name, justify="left", overflow="fold", min_width=ARM_MIN_WIDTH)
        else:
            table.add_column(name, justify="right", no_wrap=True)
    keep = [CONSOLE_HEADER.index(name) for name in shown]
    for row in rows:
        table.add_row(*(Text(row[i]) for i in keep))  # text, not markup: "lr[ppo.n_steps=64]" keeps its brackets
    console.print(table)


#: Left out first, in this order, when the terminal cannot show every column beside the arm names.
OPTIONAL_COLUMNS = ("IQM", "P(impr.)", "Hedges g", "95% CI", "n")
#: The arm column is never squeezed below this (or its longest name, if shorter).
ARM_MIN_WIDTH = 16


def fitting_columns(rows: Sequence[Sequence[str]], width: int) -> list[str]:
    """The columns of :data:`CONSOLE_HEADER` that fit ``width`` characters with a readable arm column.

    Each column costs its widest cell (header included) plus 3 characters of padding and border.
    """
    def cost(i: int) -> int:
        return max(len(CONSOLE_HEADER[i]), *(len(row[i]) for row in rows)) + 3 if rows else len(CONSOLE_HEADER[i]) + 3

    longest_arm = max((len(row[0]) for row in rows), default=len("arm"))
    arm = min(longest_arm, ARM_MIN_WIDTH) + 3
    shown = list(CONSOLE_HEADER)
    for name in OPTIONAL_COLUMNS:
        if arm + 1 + sum(cost(CONSOLE_HEADER.index(c)) for c in shown if c != "arm") <= width:
            break
        shown.remove(name)
    return shown


def html(report: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
         curves: Mapping[str, Sequence[tuple[int, float]]], title: str, *, plotly_loader: str | None = None) -> str:
    """One page: distributions with CIs, learning curves with bands, P(improvement), power.

    Without ``plotly_loader`` the page embeds plotly.js (self-contained, about 4.8 MB); with one (a
    ``<script>`` from :func:`~convopt_mlflow.evaluation.figures.shared_plotly_loader`) it loads the
    run's shared copy instead, like every other page of a run."""
    import plotly.graph_objects as go

    figures = [_distributions(go, report, records), _learning_curves(go, report, records, curves),
               _improvement_matrix(go, report)]
    parts = [f"<h1>{title}</h1><p><b>Verdict.</b> {report['verdict']}</p>"]
    for i, fig in enumerate(f for f in figures if f is not None):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0 and plotly_loader is None)))
    parts.append(f"<h2>Power</h2><p>{power_note(report)}</p>")
    if report.get("sequential"):
        parts.append(f"<h2>Sequential design</h2><p>{sequential_note(report['sequential'])}</p>")
    head = f"<meta charset='utf-8'><title>{title}</title>{plotly_loader or ''}"
    return f"<html><head>{head}</head><body>{''.join(parts)}</body></html>"


def _distributions(go, report, records):
    fig = go.Figure()
    for arm in report["arms"]:
        values = [r["value"] for r in records if r["arm"] == arm]
        fig.add_trace(go.Box(y=values, name=arm, boxpoints="all", jitter=0.3, pointpos=0))
        s = report["summaries"].get(arm)
        if s:
            fig.add_trace(go.Scatter(x=[arm], y=[s["mean"]], mode="markers", marker=dict(symbol="diamond", size=12),
                                     error_y=dict(type="data", symmetric=False, array=[s["mean_ci_high"] - s["mean"]],
                                                  arrayminus=[s["mean"] - s["mean_ci_low"]]),
                                     name=f"{arm} mean, 95% CI", showlegend=False))
    fig.update_layout(title=f"{report['metric']} per seed, with the mean and its 95% bootstrap CI", yaxis_title=report["metric"],
                      xaxis_title="arm")
    return fig


def _learning_curves(go, report, records, curves):
    fig = go.Figure()
    for arm in report["arms"]:
        series = [curves[r["run_id"]] for r in records if r["arm"] == arm and curves.get(r["run_id"])]
        if not series:
            continue
        steps = np.unique(np.concatenate([[s for s, _ in c] for c in series]))
        grid = np.array([np.interp(steps, *np.array(c, dtype=float).T) for c in series])
        mean, low, high = grid.mean(0), grid.min(0), grid.max(0)
        fig.add_trace(go.Scatter(x=np.r_[steps, steps[::-1]], y=np.r_[high, low[::-1]], fill="toself", opacity=0.2,
                                 line=dict(width=0), name=f"{arm} min-max over seeds", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=steps, y=mean, mode="lines+markers", name=f"{arm} mean"))
    fig.update_layout(title="Validation score (eval/score) during training", xaxis_title="env steps",
                      yaxis_title="eval/score")
    return fig


def _improvement_matrix(go, report):
    arms = report["arms"]
    if not report["pairs"]:
        return None
    matrix = np.full((len(arms), len(arms)), np.nan)
    for c in report["pairs"]:
        i, j = arms.index(c["arm"]), arms.index(c["baseline"])
        matrix[i, j] = c["probability_of_improvement"]
        matrix[j, i] = 1.0 - c["probability_of_improvement"]
    fig = go.Figure(go.Heatmap(z=matrix, x=arms, y=arms, zmin=0, zmax=1, colorscale="RdBu",
                               text=np.round(matrix, 2), texttemplate="%{text}"))
    fig.update_layout(title="P(row arm > column arm)", xaxis_title="column arm", yaxis_title="row arm")
    return fig
