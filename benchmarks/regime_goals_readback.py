"""Read back an A/B study's trial runs from MLflow: test Sharpe, true-oracle fraction, per-regime test
Sharpe and, for runs with the stratified meta controller, the per-stratum bandit arm counts, value
estimates and rewards and how many updates trained on each stratum (``meta/regime``).

    python benchmarks/regime_goals_readback.py --tracking-uri sqlite:///mlflow.db --experiment regime-goal-a \\
        --out benchmarks/results/regime_goal_a.json

Also copies the study's own report (``ab/report.md`` of the parent run) next to the JSON.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

from convopt_mlflow.components.meta import ADJUSTMENTS  # noqa: E402
from convopt_mlflow.components.strata import STRATA  # noqa: E402

KEYS = ("backtest/test/sharpe", "backtest/test/oracle_fraction", "benchmark/test/oracle/sharpe",
        "backtest/val/sharpe", "backtest/val/oracle_fraction")


def read(client, experiment: str) -> tuple[list[dict], str | None]:
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    rows, parent = [], None
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        if tags.get("convopt.role") != "ab-trial":
            if "ab/report.md" in [a.path for a in client.list_artifacts(run.info.run_id, "ab")]:
                parent = run.info.run_id
            continue
        row = {"arm": tags.get("convopt.arm"), "seed": int(tags.get("convopt.seed", -1)), "status": run.info.status,
               **{k: metrics.get(k) for k in KEYS},
               "test_regime_sharpe": {k.split("/")[3]: v for k, v in metrics.items()
                                      if k.startswith("backtest/test/regime/") and k.endswith("/sharpe")},
               "test_oracle_regime_sharpe": {k.split("/")[4]: v for k, v in metrics.items()
                                             if k.startswith("benchmark/test/oracle/regime/")
                                             and k.endswith("/sharpe")}}
        if any(k.startswith("meta/") for k in metrics):
            updates = Counter(int(p.value) for p in client.get_metric_history(run.info.run_id, "meta/regime"))
            row["meta"] = {
                "updates_per_stratum": {STRATA[k]: n for k, n in sorted(updates.items()) if k < len(STRATA)},
                "arm_counts": {g: {a: metrics.get(f"meta/{g}/{a}_n") for a in ADJUSTMENTS} for g in STRATA},
                "arm_values": {g: {a: metrics.get(f"meta/{g}/{a}_q") for a in ADJUSTMENTS} for g in STRATA},
                "rewards": {g: [p.value for p in client.get_metric_history(run.info.run_id, f"meta/{g}/reward")]
                            for g in STRATA},
            }
        rows.append(row)
    return sorted(rows, key=lambda r: (r["arm"] or "", r["seed"])), parent


def _mean(group: list[dict], key: str) -> float | None:
    return sum(r[key] for r in group) / len(group) if group else None


def _regime_means(group: list[dict], key: str) -> dict[str, float]:
    """Mean over the group's runs of each regime's value under ``key`` (runs that have it)."""
    names = sorted({name for r in group for name in r.get(key, {})})
    return {name: sum(r[key][name] for r in group if name in r[key]) / sum(name in r[key] for r in group)
            for name in names}


def paired_effects(rows: list[dict], baseline: str, metric: str) -> dict:
    """Per arm: mean paired difference to ``baseline`` over common seeds, its 95% t CI, d_z, and the MDE
    (80% power, alpha 0.05 two-sided, Holm over the arms compared) in d_z and in metric units."""
    import numpy as np
    from scipy import stats as st

    from convopt_mlflow.stats import minimum_detectable_effect

    base = {r["seed"]: r[metric] for r in rows if r["arm"] == baseline and r.get(metric) is not None}
    arms = sorted({r["arm"] for r in rows} - {baseline})
    out = {}
    for arm in arms:
        other = {r["seed"]: r[metric] for r in rows if r["arm"] == arm and r.get(metric) is not None}
        seeds = sorted(set(base) & set(other))
        d = np.array([other[s] - base[s] for s in seeds])
        if d.size < 2:
            continue
        sd = float(d.std(ddof=1))
        half = float(st.t.ppf(0.975, d.size - 1) * sd / np.sqrt(d.size))
        mde = minimum_detectable_effect(d.size, paired=True, comparisons=len(arms))
        out[arm] = {"n": int(d.size), "metric": metric, "mean_diff": float(d.mean()),
                    "ci95": [float(d.mean()) - half, float(d.mean()) + half], "sd_diff": sd,
                    "d_z": float(d.mean()) / sd if sd > 0 else None, "p_t": float(st.ttest_1samp(d, 0.0).pvalue),
                    "mde_d_z": mde, "mde_metric_units": mde * sd}
    return out


def main() -> None:
    from mlflow.tracking import MlflowClient

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--baseline", default=None, help="arm the others are paired against (by seed)")
    parser.add_argument("--metric", default="backtest/test/sharpe")
    args = parser.parse_args()
    client = MlflowClient(tracking_uri=args.tracking_uri)
    rows, parent = read(client, args.experiment)
    summary = {}
    for arm in sorted({r["arm"] for r in rows}):
        group = [r for r in rows if r["arm"] == arm and r["backtest/test/sharpe"] is not None]
        summary[arm] = {"n": len(group), "test_sharpe": _mean(group, "backtest/test/sharpe"),
                        "oracle_fraction": _mean(group, "backtest/test/oracle_fraction"),
                        "oracle_sharpe": _mean(group, "benchmark/test/oracle/sharpe"),
                        "test_regime_sharpe": _regime_means(group, "test_regime_sharpe"),
                        "test_oracle_regime_sharpe": _regime_means(group, "test_oracle_regime_sharpe")}
    paired = paired_effects(rows, args.baseline, args.metric) if args.baseline else {}
    write_result({"experiment": args.experiment, "machine": machine_info(), "summary": summary,
                  "paired_vs_baseline": paired, "runs": rows}, args.out)
    for arm, values in paired.items():
        print("paired", arm, values)
    if parent is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(parent, "ab/report.md", tmp)
            shutil.copy(path, args.out.with_suffix(".md"))
    for arm, values in summary.items():
        print(arm, values)


if __name__ == "__main__":
    main()
