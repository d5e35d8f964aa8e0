"""The issue's goal for ``full`` on a panel already run: on every market not significantly worse than
``baseline-3e-5`` (Holm across the markets, paired t over seeds), and better on average across the panel.

It needs no new training when ``full`` is exactly one arm of the panel (``compose_full.py`` makes it so
when one component arm is admitted, and ``full`` is ``baseline-3e-5`` itself when none is): the per-seed
test Sharpes are read back from each market's A/B report (``ab/report.json`` of the study's parent run
in ``--work-dir``/<market>/mlflow.db), and the arm whose config equals ``full``'s is compared with
``baseline-3e-5`` seed by seed (same seeds, same bars). When no panel arm equals ``full`` it says so and
stops: then ``bench_panel.py --presets baseline,baseline-3e-5,full`` is the check.

    python benchmarks/check_full_goal.py --work-dir /tmp/panel5 --panel benchmarks/results/panel_small5.json \\
        --out benchmarks/results/full_goal.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

REFERENCE = "baseline-3e-5"


def full_arm(arms: list[str]) -> str | None:
    """The panel arm whose config is ``full``'s (None if none is)."""
    from convopt_mlflow.config import PRESETS, build_config

    full = build_config("full")
    for arm in arms:
        if arm in PRESETS and build_config(arm) == full:
            return arm
    return None


def seed_values(work_dir: Path, market: str) -> dict[str, dict[int, float]]:
    """arm -> seed -> test Sharpe, from the market study's A/B report."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(work_dir / market).resolve()}/mlflow.db")
    runs = [r for e in client.search_experiments() for r in client.search_runs(
        [e.experiment_id], filter_string="tags.`convopt.role` = 'ab-parent'")]
    if not runs:
        raise SystemExit(f"check_full_goal: no A/B parent run in {work_dir / market}")
    report = json.loads(Path(client.download_artifacts(runs[0].info.run_id, "ab/report.json")).read_text())
    values: dict[str, dict[int, float]] = {}
    for t in report["trials"]:
        values.setdefault(t["arm"], {})[int(t["seed"])] = float(t["value"])
    return values


def check(work_dir: Path, panel: dict, alpha: float = 0.05) -> dict:
    from convopt_mlflow.stats import compare_arms
    from convopt_mlflow.stats._multiple import holm_bonferroni

    arm = full_arm(panel["arms"])
    if arm is None:
        return {"full_arm": None, "met": None, "why": "no panel arm has full's config: run the panel with full"}
    rows, xs, ys = [], [], []
    for m in panel["markets"]:
        values = seed_values(work_dir, m["market"])
        seeds = sorted(set(values[arm]) & set(values[REFERENCE]))
        x = np.array([values[arm][s] for s in seeds])
        y = np.array([values[REFERENCE][s] for s in seeds])
        if arm == REFERENCE:
            rows.append({"market": m["market"], "n": len(seeds), "effect": 0.0, "p": 1.0})
            continue
        xs.append(x), ys.append(y)
        c = compare_arms(x, y, rng=0, arm="full", baseline=REFERENCE, paired=True, primary="paired_t", alpha=alpha)
        rows.append({"market": m["market"], "n": len(seeds), "effect": float(c.mean_difference),
                     "effect_ci": [float(v) for v in c.difference_ci], "p": float(c.p_value),
                     "full_mean": float(x.mean()), "reference_mean": float(y.mean())})
    p_holm, reject = holm_bonferroni([r["p"] for r in rows], alpha)
    for r, p, rej in zip(rows, p_holm, reject):
        r["p_holm"] = float(p)
        r["decision"] = ("worse" if rej and r["effect"] < 0 else "better" if rej and r["effect"] > 0
                         else "no significant difference")
    worse = [r["market"] for r in rows if r["decision"] == "worse"]
    mean_effect = float(np.mean([r["effect"] for r in rows]))
    average = None
    if xs and all(x.size == xs[0].size for x in xs + ys):  # (seeds, markets): the panel average, paired by seed
        c = compare_arms(np.stack(xs, 1), np.stack(ys, 1), rng=0, arm="full", baseline=REFERENCE, paired=True,
                         primary="paired_t", alpha=alpha)
        average = {"effect": float(c.mean_difference), "effect_ci": [float(v) for v in c.difference_ci],
                   "p": float(c.p_value), "significant": bool(c.significant),
                   "test": "paired t over seeds of the per-seed mean across markets"}
    return {"full_arm": arm, "reference": REFERENCE, "alpha": alpha, "correction": "Holm across the markets",
            "markets": rows, "worse_on": worse, "mean_effect_across_markets": mean_effect, "average": average,
            "markets_ahead": sum(r["effect"] > 0 for r in rows),
            "not_worse_anywhere": not worse, "better_on_average": mean_effect > 0,
            "met": not worse and mean_effect > 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--panel", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    doc = check(args.work_dir, json.loads(args.panel.read_text()))
    doc["panel"] = str(args.panel)
    print(json.dumps({k: v for k, v in doc.items() if k != "markets"}, indent=1))
    for r in doc.get("markets", []):
        print(f"{r['market']:<14} effect {r['effect']:+.3f}  p {r['p']:.3g}  p_holm {r.get('p_holm', 1):.3g}  "
              f"{r.get('decision', '')}")
    write_result(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
