"""Every preset against ``baseline`` and ``baseline-3e-5`` on every market of the panel, through the A/B module.

One ``convopt ab-test`` study per market (``experiments.session.run_ab_test``, arms
``baseline,baseline-3e-5,<the other presets>``, the same seeds in every arm, primary metric
``backtest/test/sharpe``: the decision is on the test split). Markets run in parallel processes
(``--jobs``), each with its own temporary sqlite MLflow store and Optuna storage, one worker each.

Per market and arm the result holds the test Sharpe over seeds (mean and 95% t-interval) and, on a
synthetic market, the same as a **fraction of the market's true-oracle test Sharpe**
(``benchmark/test/oracle/sharpe``, the same bars for every run; ``data/panel.py``,
``evaluation/true_oracle.py``). A market whose oracle is flat (``noise``, ``garch``) has no
fraction: its row reports raw Sharpe and the share of runs tagged ``convopt.no_edge``, which is the
right verdict there. Real markets (``eurusd-1h``, ``googl-1d``) report raw Sharpe. The verdicts are
the A/B module's: each arm vs ``baseline`` (Holm across the arms, paired t), and each arm vs
``baseline-3e-5`` (from the module's all-pairs comparisons, Holm across every pair, so more
conservative).

    python benchmarks/bench_panel.py --budget small --seeds 5 --steps 15000 --jobs 1 \\
        --markets planted,regime-signal,trend,spike,garch,noise --work-dir /tmp/panel5 \\
        --out benchmarks/results/panel_small5.json            # what was run for full's composition: 43 min
    python benchmarks/bench_panel.py --budget full --jobs 2 ...    # when asked: hours
    python benchmarks/bench_panel.py --budget micro --presets baseline,augment --markets noise,spike   # smoke

Budgets (``--steps``, ``--seeds``, ``--n-bars`` override them):

* ``micro``: 2,000 steps, 2 seeds, 20k-bar synthetic markets: a smoke test of the pipeline only.
* ``small``: 20,000 steps, 3 seeds, 50k-bar synthetic markets (``--markets`` default: planted, trend,
  spike, noise); a ``full`` arm, if named, runs as one model (``ensemble_size=1``).
* ``full``: 200,000 steps, 5 seeds, the panel's own 300k-bar markets, every market.

A partial JSON is written after each market, so a run that is stopped keeps the markets it finished.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

# `full` is composed from this panel's verdicts (compose_full.py) and equals one of these arms, so it is not
# an arm of its own (check_full_goal.py reads its row); name it with --presets to run it anyway.
DEFAULT_PRESETS = ("baseline", "baseline-3e-5", "lr", "curriculum", "augment", "replay", "meta", "counterfactual",
                   "direct")
REFERENCES = ("baseline", "baseline-3e-5")
METRIC = "backtest/test/sharpe"
BUDGETS = {
    "micro": {"steps": 2_000, "seeds": 2, "n_bars": 20_000, "single_full": True,
              "markets": ("planted", "noise")},
    "small": {"steps": 20_000, "seeds": 3, "n_bars": 50_000, "single_full": True,
              "markets": ("planted", "trend", "spike", "noise")},
    "full": {"steps": 200_000, "seeds": 5, "n_bars": None, "single_full": False, "markets": None},
}


def market_source(name: str, n_bars: int | None) -> str:
    """The panel market's data source, its synthetic markets shortened to ``n_bars`` (None: as in the panel)."""
    from convopt_mlflow.data.panel import PANEL

    spec = PANEL[name]
    if n_bars and spec.startswith("synthetic"):
        spec = spec.replace("n_bars=300000", f"n_bars={n_bars}")
    return spec


def arms_for(presets: list[str], single_full: bool) -> tuple[str, ...]:
    """The A/B arms: the two references first (``baseline`` is the module's baseline), then the rest."""
    ordered = [p for p in REFERENCES if p in presets] + [p for p in presets if p not in REFERENCES]
    if ordered[0] != "baseline":
        raise SystemExit("bench_panel: --presets must include baseline (the A/B baseline)")
    return tuple(f"{p}:ensemble_size=1" if single_full and p == "full" else p for p in ordered)


def run_market(name: str, source: str, arms: tuple[str, ...], seeds: list[int], steps: int,
               overrides: dict[str, str], work_dir: str = "") -> dict:
    """One A/B study on one market, in its own stores (under ``work_dir``/<market>, where a rerun of the
    same command resumes the study, or a temporary folder); the per-arm rows and verdicts."""
    if work_dir:
        tmp = str(Path(work_dir, name).resolve())
        Path(tmp).mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix=f"bench-panel-{name}-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    from convopt_mlflow.experiments.session import run_ab_test
    from convopt_mlflow.experiments.spec import StudySpec

    common = {"data.source": source, "run.total_timesteps": str(steps), "run.progress_bar": "false", **overrides}
    spec = StudySpec(arms=arms, seeds=tuple(seeds), common=common, metric=METRIC)
    started = time.perf_counter()
    result = run_ab_test(spec, study_name=f"panel-{name}", storage=f"sqlite:///{tmp}/optuna.db", workers=1,
                         checkpoint_root=f"{tmp}/checkpoints", console=False, registry_name=None)
    seconds = time.perf_counter() - started
    return summarize_market(name, source, arms, result.report, result.records, seconds)


def summarize_market(name: str, source: str, arms, report: dict, records: list[dict], seconds: float) -> dict:
    """Per-arm test Sharpe (mean, 95% t-CI), fraction of the true oracle, and the A/B verdicts (JSON-able)."""
    from scipy import stats as st

    oracle = [r["metrics"].get("benchmark/test/oracle/sharpe") for r in records]
    oracle = [o for o in oracle if o is not None and np.isfinite(o)]
    oracle_sharpe = float(np.mean(oracle)) if oracle else None
    has_edge = oracle_sharpe is not None and oracle_sharpe > 0
    by_name = {c["arm"]: c for c in report.get("comparisons", [])}
    pairs = report.get("pairs", [])
    rows = {}
    for arm in arms:
        values = np.array([r["value"] for r in records if r["arm"] == arm], dtype=float)
        values = values[np.isfinite(values)]
        mean = float(values.mean()) if values.size else float("nan")
        half = (float(st.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))
                if values.size > 1 else float("nan"))
        row = {"n": int(values.size), "test_sharpe": mean, "test_sharpe_ci": [mean - half, mean + half],
               "no_edge_share": float(np.mean([bool(r.get("no_edge")) for r in records if r["arm"] == arm] or [0])),
               "val_sharpe": float(np.mean([r["metrics"].get("backtest/val/sharpe", np.nan)
                                            for r in records if r["arm"] == arm] or [np.nan]))}
        if has_edge:
            row["fraction_of_oracle"] = mean / oracle_sharpe
            row["fraction_of_oracle_ci"] = [(mean - half) / oracle_sharpe, (mean + half) / oracle_sharpe]
        if arm in by_name:
            row["vs_baseline"] = _verdict(by_name[arm], sign=1.0, correction="Holm across arms vs baseline")
        vs_ref = [c for c in pairs if {c["arm"], c["baseline"]} == {arm, "baseline-3e-5"}]
        if vs_ref:
            sign = 1.0 if vs_ref[0]["arm"] == arm else -1.0  # the pair is (earlier arm) - (later arm)
            row["vs_baseline-3e-5"] = _verdict(vs_ref[0], sign=sign, correction="Holm across all pairs")
        rows[arm] = row
    return {"market": name, "source": source, "oracle_test_sharpe": oracle_sharpe, "edge": has_edge,
            "arms": rows, "verdict": report.get("verdict"), "seconds": seconds}


def _verdict(c: dict, *, sign: float, correction: str) -> dict:
    low, high = c["difference_ci_low"], c["difference_ci_high"]
    ci = [sign * low, sign * high] if sign > 0 else [sign * high, sign * low]
    better = c["significant"] and sign * c["mean_difference"] > 0
    worse = c["significant"] and sign * c["mean_difference"] < 0
    return {"effect": sign * c["mean_difference"], "effect_ci": ci, "hedges_g": sign * c["hedges_g"],
            "p": c["p_value"], "p_holm": c["p_adjusted"], "significant": bool(c["significant"]),
            "decision": "better" if better else "worse" if worse else "no significant difference",
            "correction": correction}


def figure(doc: dict):
    """Per market, each arm's fraction of the oracle (synthetic markets with an edge) or test Sharpe (others)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    markets = doc["markets"]
    edge = [m for m in markets if m["edge"]]
    other = [m for m in markets if not m["edge"]]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], subplot_titles=(
        "test Sharpe / true-oracle test Sharpe (95% CI)", "test Sharpe, no oracle edge or real data (95% CI)"))
    for arm in doc["arms"]:
        for col, group, key in ((1, edge, "fraction_of_oracle"), (2, other, "test_sharpe")):
            if not group:
                continue
            y = [m["arms"][arm].get(key, np.nan) for m in group]
            ci = [m["arms"][arm].get(f"{key}_ci", [np.nan, np.nan]) for m in group]
            fig.add_trace(go.Bar(name=arm, legendgroup=arm, showlegend=col == 1 or not edge,
                                 x=[m["market"] for m in group], y=y,
                                 error_y={"type": "data", "symmetric": False,
                                          "array": [c[1] - v for c, v in zip(ci, y)],
                                          "arrayminus": [v - c[0] for c, v in zip(ci, y)]}), row=1, col=col)
    fig.update_layout(barmode="group", title=f"Panel benchmark ({doc['budget']} budget, {doc['steps']} steps, "
                                             f"{len(doc['seeds'])} seeds)", height=520)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS))
    parser.add_argument("--markets", default="", help="comma-separated panel names (default: the budget's)")
    parser.add_argument("--seeds", type=int, default=0, help="seeds per arm (default: the budget's)")
    parser.add_argument("--steps", type=int, default=0, help="environment steps per run (default: the budget's)")
    parser.add_argument("--n-bars", type=int, default=-1, help="synthetic market length (0: the panel's 300k)")
    parser.add_argument("--jobs", type=int, default=1, help="markets run in parallel processes")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, every run")
    parser.add_argument("--work-dir", default="", help="keep each market's stores here; rerunning resumes the studies")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args(argv)
    from convopt_mlflow.data.panel import PANEL

    budget = BUDGETS[args.budget]
    markets = [m for m in args.markets.split(",") if m] or list(budget["markets"] or PANEL)
    unknown = [m for m in markets if m not in PANEL]
    if unknown:
        parser.error(f"unknown panel market(s) {', '.join(unknown)}; known: {', '.join(PANEL)}")
    presets = [p for p in args.presets.split(",") if p]
    arms = arms_for(presets, budget["single_full"])
    seeds = list(range(1, (args.seeds or budget["seeds"]) + 1))
    steps = args.steps or budget["steps"]
    n_bars = budget["n_bars"] if args.n_bars < 0 else (args.n_bars or None)
    overrides = dict(item.split("=", 1) for item in args.set)
    started = time.perf_counter()
    results = {}
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_market, m, market_source(m, n_bars), arms, seeds, steps, overrides,
                           args.work_dir): m
                   for m in markets}
        for future in as_completed(futures):
            result = future.result()
            results[futures[future]] = result
            print(f"{result['market']}: {result['seconds']:.0f} s; {result['verdict']}", flush=True)
            if len(results) < len(markets):  # a partial result after each market, in case the rest never ends
                write_result(_doc(args, arms, seeds, steps, n_bars, overrides, [results[m] for m in markets
                                                                                 if m in results], started), args.out)
    doc = _doc(args, arms, seeds, steps, n_bars, overrides, [results[m] for m in markets], started)
    _print_table(doc)
    write_result(doc, args.out)
    if args.figure:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        figure(doc).write_html(str(args.figure), include_plotlyjs=True)  # offline: plotly.js inlined, once
        print(f"wrote {args.figure}")
    return 0


def _doc(args, arms, seeds, steps, n_bars, overrides, done: list[dict], started: float) -> dict:
    return {"budget": args.budget, "arms": list(arms), "seeds": seeds, "steps": steps, "n_bars": n_bars,
            "metric": METRIC, "overrides": overrides, "markets": done,
            "seconds": time.perf_counter() - started, "machine": machine_info()}


def _print_table(doc: dict) -> None:
    print(f"{'market':<14} {'arm':<28} {'test Sharpe':>12} {'/ oracle':>10}  vs baseline / vs baseline-3e-5")
    for m in doc["markets"]:
        for arm, row in m["arms"].items():
            fraction = row.get("fraction_of_oracle")
            verdicts = " / ".join(row[k]["decision"] + f" (p_holm {row[k]['p_holm']:.2g})"
                                  for k in ("vs_baseline", "vs_baseline-3e-5") if k in row)
            print(f"{m['market']:<14} {arm:<28} {row['test_sharpe']:>12.3f} "
                  f"{'' if fraction is None else f'{100 * fraction:.0f}%':>10}  {verdicts}")


if __name__ == "__main__":
    sys.exit(main())
