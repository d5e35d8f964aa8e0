"""End-of-run reporting: backtests, dashboards, the interventions table and the model.

Artifacts written here:
    interventions.json / interventions.csv   every intervention: step, action, reason, values, applied, outcome
    dashboards/convergence.html              loss, entropy, grad norm, LR, eval, interventions, plateaus,
                                             curriculum-stage and regime bands (when logged)
    dashboards/activity.html                 replay/* and augment/* metrics (when logged)
    backtest/equity_{val,test}.html          policy vs buy-and-hold vs flat
    assets/plotly.min.mjs                    the run's one copy of plotly.js, loaded by every page
    model/                                   pyfunc (models from code), state_dict weights + policy.json
"""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Callable

from ..evaluation import convergence_dashboard, equity_figure
from .evaluate import backtest_split, fit_market_oracle

SPLITS = ("val", "test")
#: Points per curve of an equity page: a screen shows no more, and the page stays small.
EQUITY_POINTS = 4000


def warm_figures(timestamps: Any = None) -> None:
    """A process's first use of plotly, ahead of time: its lazy modules and default template (one
    tiny equity page over ``timestamps``, two of them; default two UTC dates, as a market's index),
    the dashboards' modules, and the run's shared plotly.js script, once per process
    (:func:`~convopt_mlflow.tracking.html.bundle_script`). Touches no run; a run's first
    page would otherwise pay it (about 0.3 s)."""
    import numpy as np
    import pandas as pd

    from ..evaluation import dashboards  # noqa: F401 - write_progress_artifacts' figures
    from ..tracking.html import bundle_script

    if timestamps is None:
        timestamps = pd.date_range("2000-01-01", periods=2, freq="D", tz="UTC")
    fig = equity_figure(timestamps, {"flat": np.ones(len(timestamps))}, title="", max_points=EQUITY_POINTS)
    fig.to_html(include_plotlyjs=False, full_html=True)
    bundle_script()


def interventions_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["step", "action", "reason", "values", "applied", "outcome"])
    for row in rows:
        writer.writerow([row["step"], row["action"], row["reason"], json.dumps(row.get("values", {})),
                         row.get("applied", ""), json.dumps(row.get("outcome"))])
    return buffer.getvalue()


def write_progress_artifacts(handle: Any, convergence: Any, actuator: Any) -> None:
    """Interventions table and convergence dashboard; also called on failure/kill paths."""
    rows = list(convergence.interventions)
    rows += [{"step": s["at"], "action": "skip_corrupt_checkpoint", "reason": s["reason"], "values": {"step": s["step"]},
              "applied": "used an older checkpoint", "outcome": None} for s in actuator.skipped_checkpoints]
    handle.log_text(json.dumps(rows, indent=1, default=str), "interventions.json")
    handle.log_text(interventions_csv(rows), "interventions.csv")
    from ..evaluation.dashboards import ACTIVITY_PREFIXES, BAND_KEYS, activity_figure, level_spans
    from ..tracking.describe import metric_series

    from ..tracking.html import log_figure

    series = metric_series(handle.run_id, handle.client, keys=BAND_KEYS, prefixes=ACTIVITY_PREFIXES)
    if convergence.history:
        bands = {key: level_spans(*series[key]) for key in BAND_KEYS if key in series}
        fig = convergence_dashboard(convergence.history, rows, title=f"Convergence - run {handle.run_id[:8]}",
                                    bands=bands)
        log_figure(handle, fig, "dashboards", "convergence.html")
    activity = activity_figure(series, title=f"Replay and augmentation - run {handle.run_id[:8]}")
    if activity is not None:
        log_figure(handle, activity, "dashboards", "activity.html")


def oracle_fraction(sharpe: float, oracle_sharpe: float) -> float:
    """The agent's Sharpe as a fraction of the oracle's; 0 when the oracle has no edge there."""
    return float(sharpe / oracle_sharpe) if oracle_sharpe > 0 else 0.0


def model_inputs(cfg: Any, market: Any) -> tuple[dict[str, Any], Any]:
    """The pyfunc's feature config and an input example (bars) long enough for one decision."""
    feature_config = {
        "window": cfg.env.window, "observation": cfg.env.observation, "vol_window": cfg.data.vol_window,
        "cost_bps": cfg.env.cost_bps, "long_only": cfg.env.long_only, "feature_names": market.base_feature_names,
    }
    rows = market.features.warmup + 64 + cfg.env.window * (cfg.env.observation == "window")
    return feature_config, market.bars.frame.iloc[:rows]


def finalize_run(handle: Any, cfg: Any, market: Any, model: Any,
                 stopped: Callable[[], bool] = lambda: False) -> dict[str, float] | None:
    """Backtest val and test (next to flat, buy-and-hold and, on a synthetic market, the true
    oracle and, with a planted signal, the signal rule), log metrics + equity curves + the model; return the metrics, or None when
    ``stopped()`` turned true between two steps.

    Idempotent, so a resume after a kill at any point finishes the job: metrics the run
    already holds at this step are not logged again, and a complete logged model is kept
    (a half-written one is replaced).
    """
    from ..tracking import finished_model_uri, log_policy_model, metric_steps, policy_spec
    from ..tracking.html import log_figure

    step = model.num_timesteps
    metrics: dict[str, float] = {}
    oracle = fit_market_oracle(market, cost_bps=cfg.env.cost_bps, long_only=cfg.env.long_only)
    if oracle is not None:
        metrics.update({"benchmark/signal_rule/theta": oracle.theta,
                        "benchmark/train/signal_rule/sharpe": oracle.train_sharpe})
    for split in SPLITS:
        if stopped():
            return None
        result = backtest_split(model.policy, market, split, cost_bps=cfg.env.cost_bps, oracle=oracle)
        metrics.update({f"backtest/{split}/{k}": float(v) for k, v in result["metrics"].items()})
        for bench, values in result["benchmarks"].items():
            metrics.update({f"benchmark/{split}/{bench}/{k}": float(v) for k, v in values.items()})
        for who, regimes in result["per_regime"].items():
            prefix = f"backtest/{split}" if who == "policy" else f"benchmark/{split}/{who}"
            metrics.update({f"{prefix}/regime/{name}/{k}": float(v)
                            for name, values in regimes.items() for k, v in values.items()})
        if "oracle" in result["benchmarks"]:  # the true oracle: every synthetic market
            metrics[f"backtest/{split}/oracle_fraction"] = oracle_fraction(
                result["metrics"]["sharpe"], result["benchmarks"]["oracle"]["sharpe"])
        fig = equity_figure(result["timestamps"], result["curves"], title=f"Equity on {split} ({market.bars.name})",
                            max_points=EQUITY_POINTS)
        log_figure(handle, fig, "backtest", f"equity_{split}.html")
    if stopped():
        return None
    logged = metric_steps(handle)
    handle.log_metrics({k: v for k, v in metrics.items() if logged.get(k) != step}, step=step)
    uri = finished_model_uri(handle)
    if uri is None:
        if stopped():
            return None
        feature_config, example = model_inputs(cfg, market)
        uri = log_policy_model(handle.run_id, step=step, members=[model.policy.state_dict()],
                               spec=policy_spec(model), feature_config=feature_config, input_example=example)
    handle.set_tags({"convopt.model_uri": uri})
    return metrics
