"""Out-of-sample evaluation: backtest metrics (pure numpy) and plotly figures."""
from __future__ import annotations

from convopt_mlflow.evaluation.figures import (
    DASHBOARD_PANELS,
    convergence_dashboard,
    equity_figure,
    write_html,
)
from convopt_mlflow.evaluation.metrics import (
    TRADING_METRIC_KEYS,
    benchmark_metrics,
    equity_curve,
    net_log_pnl,
    trading_metrics,
)

__all__ = [
    "DASHBOARD_PANELS",
    "TRADING_METRIC_KEYS",
    "benchmark_metrics",
    "convergence_dashboard",
    "equity_curve",
    "equity_figure",
    "net_log_pnl",
    "trading_metrics",
    "write_html",
]
