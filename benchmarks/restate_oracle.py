"""Re-state ``bench_learning.py`` results against the causal true oracle, and merge newer runs in.

Studies measured before the true oracle existed recorded the signal rule's Sharpe as
``{val,test}_oracle_sharpe``. The true oracle is a property of the market and its splits, not of a
run, so re-stating needs no re-training: every curve point's oracle Sharpe is replaced by the true
oracle's over the same bars, taken from a newer run on the same market and splits (``--oracle-from``;
all of its points must agree). The signal rule's value is kept as ``{val,test}_signal_rule_sharpe``.

Runs are keyed by (preset, seed); a later input replaces an earlier one (re-measured arms), and
``--drop`` removes presets of the older inputs outright. Curves may have different milestone grids:
the tables read each preset's curve at the steps it has.

    python benchmarks/restate_oracle.py results/sample_efficiency_planted.json new_augment_full.json \\
        new_b3e5_400k.json new_direct.json --oracle-from new_augment_full.json --drop augment,full \\
        --at 200000 --efficiency-reference baseline-3e-5 --out results/restated_planted.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from bench_learning import mean_ci, sample_efficiency  # noqa: E402
from combine_learning import paired_differences  # noqa: E402

SPLITS = ("val", "test")


def true_oracle_of(runs: list[dict]) -> dict[str, float]:
    """The one true-oracle Sharpe per split that every point of ``runs`` recorded."""
    out = {}
    for split in SPLITS:
        values = {round(p[f"{split}_oracle_sharpe"], 9) for r in runs for p in r["curve"]}
        if len(values) != 1:
            raise SystemExit(f"--oracle-from runs disagree on the {split} oracle: {sorted(values)[:5]}")
        out[split] = float(values.pop())
    return out


def restated(run: dict, oracle: dict[str, float]) -> dict:
    """``run`` with every point's oracle Sharpe set to the true oracle's (the old value kept)."""
    curve = []
    for point in run["curve"]:
        point = dict(point)
        for split in SPLITS:
            if abs(point[f"{split}_oracle_sharpe"] - oracle[split]) > 1e-9:
                point[f"{split}_signal_rule_sharpe"] = point[f"{split}_oracle_sharpe"]
            point[f"{split}_oracle_sharpe"] = oracle[split]
        curve.append(point)
    return {**run, "curve": curve}


def at_step(run: dict, step: int) -> dict | None:
    return next((p for p in run["curve"] if p["step"] == step), None)


def table(runs: list[dict]) -> dict:
    """Per preset and milestone: Sharpe / true oracle on val and test (mean, 95% t-CI over seeds)."""
    out: dict = {}
    for preset in sorted({r["preset"] for r in runs}):
        mine = [r for r in runs if r["preset"] == preset and r["status"] == "FINISHED"]
        steps = sorted({p["step"] for r in mine for p in r["curve"]})
        out[preset] = {str(step): {f"{split}_fraction": mean_ci([p[f"{split}_sharpe"] / p[f"{split}_oracle_sharpe"]
                                                                 for r in mine if (p := at_step(r, step))])
                                   for split in SPLITS}
                       | {f"{split}_sharpe": mean_ci([p[f"{split}_sharpe"] for r in mine if (p := at_step(r, step))])
                          for split in SPLITS}
                       for step in steps}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path)
    parser.add_argument("--oracle-from", type=Path, required=True)
    parser.add_argument("--drop", default="", help="presets of the older inputs to leave out (re-measured)")
    parser.add_argument("--at", type=int, default=200_000, help="step of the paired comparisons")
    parser.add_argument("--references", default="baseline,baseline-3e-5")
    parser.add_argument("--efficiency-reference", default="baseline-3e-5")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    docs = [json.loads(p.read_text()) for p in args.inputs]
    if any(d["data"] != docs[0]["data"] for d in docs):
        raise SystemExit("inputs differ in market: they are not one study")
    oracle = true_oracle_of(json.loads(args.oracle_from.read_text())["runs"])
    dropped = {p for p in args.drop.split(",") if p}
    newer = {p.resolve() for p in args.inputs[1:]}
    runs: dict = {}
    for path, doc in zip(args.inputs, docs):
        for run in doc["runs"]:
            if run["preset"] in dropped and path.resolve() not in newer:
                continue
            runs[(run["preset"], run["seed"])] = restated(run, oracle)
    runs = list(runs.values())
    doc = {"benchmark": "learning (re-stated against the true oracle)", "data": docs[0]["data"],
           "true_oracle_sharpe": oracle, "sources": [p.name for p in args.inputs], "dropped_from_older": sorted(dropped),
           "table": table(runs), f"paired_at_{args.at}": paired_differences(runs, tuple(args.references.split(",")),
                                                      point=lambda run: at_step(run, args.at)),
           "sample_efficiency_val": sample_efficiency(runs, args.efficiency_reference),
           "sample_efficiency_test": sample_efficiency(runs, args.efficiency_reference, key="test"),
           "runs": runs}
    write_result(doc, args.out)


if __name__ == "__main__":
    main()
