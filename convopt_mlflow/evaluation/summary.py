"""What a finished run says about itself: the MLflow run description and the console table.

Both views are built from one :class:`RunSummary`, read back from the run's latest
metric values and tags (so a resumed or re-read run says the same thing):

- :func:`run_note`: markdown for the run's description (tag ``mlflow.note.content``);
- :func:`print_summary`: a rich table on a terminal, plain aligned lines otherwise.

Example:
    >>> s = RunSummary("abc123", "baseline-s0", "baseline", "eurusd_1h", "FINISHED",
    ...                {"backtest/test/sharpe": 0.5, "benchmark/test/flat/sharpe": 0.0}, {})
    >>> s.rows()[0][:2]
    ('Sharpe (annualized)', 'test')
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import IO, Mapping, Sequence

__all__ = ["DASHBOARD_ARTIFACTS", "SHARPE_LABEL", "RunSummary", "print_summary", "run_note"]

#: Artifacts a training run links from its description (those it holds).
DASHBOARD_ARTIFACTS = ("dashboards/convergence.html", "dashboards/activity.html",
                       "backtest/equity_test.html", "backtest/equity_val.html", "interventions.csv")
#: How every user-facing Sharpe is named: annualized with the data's bars per year.
SHARPE_LABEL = "Sharpe (annualized)"
#: Where MLflow's ``mlflow ui`` serves by default.
UI_ADDRESS = "http://127.0.0.1:5000"
_MEASURES = ((SHARPE_LABEL, "sharpe"), ("total return", "total_return"), ("max drawdown", "max_drawdown"),
             ("turnover /bar", "turnover"))
_BENCHMARKS = ("flat", "buy_and_hold", "oracle")
_SPLITS = ("test", "val")


@dataclass(frozen=True)
class RunSummary:
    """The facts of one run that its description and console table show.

    Attributes:
        metrics: the run's latest value per metric key (``backtest/{split}/*``,
            ``benchmark/{split}/{flat,buy_and_hold,oracle}/*``, ``intervention/*_count``).
        artifacts: artifact paths the run holds, linked from the description.
    """

    run_id: str
    run_name: str
    preset: str
    data: str
    status: str
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    tracking_uri: str = ""
    experiment_id: str = ""
    artifacts: Sequence[str] = field(default_factory=tuple)

    def rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """``(measure, split, policy, flat, buy_and_hold, oracle)`` rows, formatted; '-' where unknown."""
        out = []
        for split in _SPLITS:
            for label, key in _MEASURES:
                policy = self.metrics.get(f"backtest/{split}/{key}")
                if policy is None:
                    continue
                benches = [self.metrics.get(f"benchmark/{split}/{b}/{key}") for b in _BENCHMARKS]
                out.append((label, split, _fmt(policy), *(_fmt(v) for v in benches)))
        return out

    def interventions(self) -> dict[str, int]:
        """Action -> times fired, from the ``intervention/<action>_count`` metrics."""
        return {k[len("intervention/"):-len("_count")]: int(v) for k, v in sorted(self.metrics.items())
                if k.startswith("intervention/") and k.endswith("_count")}

    def oracle_fraction(self) -> float | None:
        return self.metrics.get("backtest/test/oracle_fraction")

    def ui_command(self) -> str:
        """The command that serves the run's store; empty when it is already a tracking server."""
        uri = self.tracking_uri or "sqlite:///mlflow.db"
        return "" if uri.startswith(("http://", "https://")) else f"mlflow ui --backend-store-uri {uri}"

    def run_path(self) -> str:
        """Where the run opens in the UI, relative to its address."""
        return f"#/experiments/{self.experiment_id}/runs/{self.run_id}" if self.experiment_id else ""

    def run_url(self) -> str:
        """The run's full address: on the tracking server, or where ``mlflow ui`` serves by default."""
        uri = self.tracking_uri or ""
        base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI_ADDRESS
        return f"{base}/{self.run_path()}"

    def open_line(self) -> str:
        command = self.ui_command()
        return f"open it: {command}, then {self.run_url()}" if command else f"open it: {self.run_url()}"

    def shipped_line(self) -> str:
        """Which step's weights the run shipped, and why (tags ``convopt.model_step``/``model_source``)."""
        step, source = self.tags.get("convopt.model_step"), self.tags.get("convopt.model_source")
        if step is None:
            return ""
        score, last = self.metrics.get("model/val_score"), self.metrics.get("model/last_val_score")
        text = f"shipped: the weights of step {int(step):,}"
        if source == "best":
            text += " (the best checkpoint by validation Sharpe"
            text += f", {score:.3f}; the last update scored {last:.3f})" if score is not None and last is not None \
                else ")"
        else:
            text += " (the last update" + (f", validation Sharpe {score:.3f})" if score is not None else ")")
        return text

    def _deflated(self) -> str:
        """What the score was judged against: the deflated Sharpe rule's numbers, or (older runs) flat's 0."""
        m = self.metrics
        n, sr0, threshold = m.get("model/edge/n_trials"), m.get("model/edge/sr0"), m.get("model/edge/threshold")
        if n is None or sr0 is None or threshold is None:
            return "not above flat's 0"
        dsr = m.get("model/edge/dsr")
        judged = f"deflated Sharpe ratio {dsr:.3f}" if dsr is not None else "it never trades on validation, so no"
        return (f"selected over {int(n)} validation scores, against {sr0:.3f}, the best that {int(n)} no-edge "
                f"tries would score: {judged} not above {threshold:g}")

    def edge_line(self) -> str:
        """One line explaining ``convopt.no_edge``: what was compared, on which split; empty with an edge."""
        if self.tags.get("convopt.no_edge") != "true":
            return ""
        score = self.metrics.get("model/val_score", self.metrics.get("backtest/val/sharpe"))
        test = self.metrics.get("backtest/test/sharpe")
        shown = f" {score:.3f}" if score is not None and math.isfinite(score) else ""
        line = (f"no edge over staying flat: the shipped weights score a validation {SHARPE_LABEL} of{shown}, "
                f"{self._deflated()}; validation alone decides this")
        if test is not None and math.isfinite(test):
            line += f" (the test split, {test:.3f}, is only reported)"
        return line


def run_note(summary: RunSummary) -> str:
    """Markdown for the run's description: data, preset, result vs benchmarks, interventions, dashboards."""
    lines = [f"**{summary.run_name}**: preset `{summary.preset}` on `{summary.data}`, {summary.status.lower()}."]
    fraction = summary.oracle_fraction()
    test = summary.metrics.get("backtest/test/sharpe")
    if test is not None:
        head = f"Test {SHARPE_LABEL} **{test:.3g}**"
        bh = summary.metrics.get("benchmark/test/buy_and_hold/sharpe")
        if bh is not None:
            head += f" (buy-and-hold {bh:.3g}, flat 0"
            oracle = summary.metrics.get("benchmark/test/oracle/sharpe")
            head += f", oracle {oracle:.3g}; {100 * fraction:.0f}% of the oracle)" if oracle is not None and \
                fraction is not None else ")"
        lines.append(head + ".")
    if summary.shipped_line():
        lines.append(summary.shipped_line()[0].upper() + summary.shipped_line()[1:] + ".")
    if summary.edge_line():
        lines.append(f"`convopt.no_edge`: {summary.edge_line()}.")
    if summary.tags.get("convopt.harm_warning"):
        lines.append(f"**Harm warning** (`convopt.harm_warning`): {summary.tags['convopt.harm_warning']}")
    rows = summary.rows()
    if rows:
        lines += ["", "| measure | split | policy | flat | buy & hold | oracle |", "|---|---|---:|---:|---:|---:|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    counts = summary.interventions()
    lines.append("")
    lines.append("Interventions: " + (", ".join(f"{a} x{n}" for a, n in counts.items()) if counts else "none") + ".")
    for key in ("convopt.stop_reason", "convopt.degraded", "convopt.failure_reason"):
        if summary.tags.get(key):
            lines.append(f"`{key}`: {summary.tags[key]}")
    if summary.artifacts:
        lines.append("")
        lines.append("Dashboards (Artifacts tab): " + ", ".join(f"`{a}`" for a in summary.artifacts) + ".")
    return "\n".join(lines)


def print_summary(summary: RunSummary, stream: IO[str] | None = None, *, rich_output: bool | None = None) -> None:
    """The end-of-run table: test/val vs flat, buy-and-hold and oracle; turnover; interventions;
    the run id and the ``mlflow ui`` command. A rich table on a terminal, plain lines otherwise."""
    stream = stream if stream is not None else sys.stderr
    if rich_output is None:
        rich_output = bool(getattr(stream, "isatty", lambda: False)())
    counts = summary.interventions()
    kinds = ", ".join(f"{a} x{n}" for a, n in counts.items()) if counts else "none"
    footer = [f"interventions: {kinds}", summary.shipped_line(), summary.edge_line(),
              f"run {summary.run_id} ({summary.run_name}, {summary.status})", summary.open_line()]
    footer = [line for line in footer if line]
    if summary.tags.get("convopt.harm_warning"):
        footer.insert(0, f"harm warning: {summary.tags['convopt.harm_warning']}")
    header = ("measure", "split", "policy", "flat", "buy & hold", "oracle")
    if rich_output:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"convopt {summary.run_name}: {summary.preset} on {summary.data}", title_justify="left")
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i < 2 else "right")
        for row in summary.rows():
            table.add_row(*row)
        console = Console(file=stream)
        console.print(table)
        for line in footer:
            console.print(line, highlight=False, markup=False)
        return
    widths = [max(len(str(r[i])) for r in [header, *summary.rows()]) for i in range(len(header))]
    for row in [header, *summary.rows()]:
        print("  " + "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))), file=stream)
    for line in footer:
        print(f"  {line}", file=stream)


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.3f}"
