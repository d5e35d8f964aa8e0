"""How many runs of a ``bench_panel.py`` work folder end ``no_edge``, under the old rule and the new one.

The old rule: the shipped weights' validation Sharpe (``model/val_score``) is not above 0. The new one
(``convopt.no_edge``, :mod:`convopt_mlflow.evaluation.edge`): their deflated Sharpe ratio, against the
best that ``model/edge/n_trials`` no-edge tries would score, is not above 0.95. Both are read back from
the same runs' MLflow stores, so the two counts are over the same models.

    python benchmarks/no_edge_rates.py /tmp/noedge-check/wd --out benchmarks/results/no_edge_check.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def market_rates(db: Path) -> dict:
    """Per arm: runs, old-rule and new-rule no-edge counts, and the runs' verdict numbers."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, "attributes.status = 'FINISHED' and tags.`convopt.arm` != ''",
                              max_results=5000)
    arms: dict[str, dict] = {}
    for run in runs:
        m, t = run.data.metrics, run.data.tags
        if "model/val_score" not in m:
            continue
        row = arms.setdefault(t["convopt.arm"], {"runs": 0, "no_edge_old": 0, "no_edge_new": 0, "flips_to_no_edge": 0,
                                                "seeds": []})
        old, new = not m["model/val_score"] > 0, t.get("convopt.no_edge") == "true"
        row["runs"] += 1
        row["no_edge_old"] += int(old)
        row["no_edge_new"] += int(new)
        row["flips_to_no_edge"] += int(new and not old)
        row["seeds"].append({"seed": int(t.get("convopt.seed", -1)), "val_score": m["model/val_score"],
                             "test_sharpe": m.get("backtest/test/sharpe", float("nan")),
                             "n_trials": m.get("model/edge/n_trials"), "sr0": m.get("model/edge/sr0"),
                             "psr": m.get("model/edge/psr"), "dsr": m.get("model/edge/dsr"),
                             "no_edge_old": old, "no_edge_new": new})
    for row in arms.values():
        row["seeds"].sort(key=lambda s: s["seed"])
        row["mean_test_sharpe"] = float(np.nanmean([s["test_sharpe"] for s in row["seeds"]]))
    return arms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work_dir", type=Path, help="bench_panel.py --work-dir (one folder per market)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = {m.parent.name: market_rates(m) for m in sorted(args.work_dir.glob("*/mlflow.db"))}
    for market, arms in result.items():
        for arm, row in arms.items():
            print(f"{market:10s} {arm:28s} runs {row['runs']}  no_edge old {row['no_edge_old']}  "
                  f"new {row['no_edge_new']}  (flipped to no_edge {row['flips_to_no_edge']})  "
                  f"mean test Sharpe {row['mean_test_sharpe']:.2f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
