"""Merge several ``bench_learning.py`` results (same market, same milestones) into one study:
summary per preset, sample efficiency against a reference, steps to 90% of the oracle, the
per-regime table and the figure, exactly as ``bench_learning.py`` computes them for one run, plus
paired differences of every preset against the references on their shared seeds.

Arms of one study are often run as several invocations (reference arms first, component arms
once they exist); runs are keyed by (preset, seed), so an arm run twice keeps its last result.

    python benchmarks/combine_learning.py a.json b.json --out study.json --figure study.html \\
        --reference baseline --title "..."
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from bench_learning import figure, per_regime, sample_efficiency, summarize  # noqa: E402


def paired_differences(runs: list[dict], references: tuple[str, ...], *, n_boot: int = 10_000,
                       seed: int = 0, point=lambda run: run["curve"][-1]) -> dict:
    """Each preset against each reference at one curve point (``point(run)``, the last milestone by
    default; None: the run has no such point), on the seeds both ran (common random numbers): mean
    paired difference of Sharpe / oracle on val and test, its 95% seed-bootstrap CI, the paired
    t-test p-value and how many seeds the preset won."""
    import numpy as np
    from scipy import stats

    rng = np.random.default_rng(seed)
    by = {(r["preset"], r["seed"]): p for r in runs if r["status"] == "FINISHED" and r["curve"]
          and (p := point(r)) is not None}
    out: dict = {}
    for ref in references:
        for preset in sorted({p for p, _ in by} - {ref}):
            seeds = sorted(s for (p, s) in by if p == preset and (ref, s) in by)
            if len(seeds) < 2:
                continue
            row = {"n": len(seeds), "seeds": seeds}
            for key in ("val", "test"):
                frac = lambda p: p[f"{key}_sharpe"] / p[f"{key}_oracle_sharpe"]  # noqa: E731
                a = np.array([frac(by[(preset, s)]) for s in seeds])
                b = np.array([frac(by[(ref, s)]) for s in seeds])
                diff = a - b
                boot = diff[rng.integers(0, diff.size, (n_boot, diff.size))].mean(axis=1)
                row[key] = {"mean_difference": float(diff.mean()),
                            "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
                            "paired_t_p": float(stats.ttest_rel(a, b).pvalue), "wins": int((diff > 0).sum())}
            out[f"{preset} - {ref}"] = row
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--reference", default="baseline")
    parser.add_argument("--title", default="Learning curves")
    parser.add_argument("--also-against", nargs="*", default=["baseline-3e-5"],
                        help="more references for the paired differences")
    args = parser.parse_args(argv)
    docs = [json.loads(p.read_text()) for p in args.inputs]
    milestones = docs[0]["milestones"]
    if any(d["milestones"] != milestones or d["data"] != docs[0]["data"] for d in docs):
        raise SystemExit("inputs differ in market or milestones: they are not one study")
    runs = list({(r["preset"], r["seed"]): r for d in docs for r in d["runs"]}.values())
    doc = {"benchmark": "learning", "data": docs[0]["data"], "milestones": milestones,
           "sources": [{"file": p.name, "overrides": d.get("overrides", {}), "machine": d.get("machine"),
                        "wall_seconds": d.get("wall_seconds")} for p, d in zip(args.inputs, docs)],
           "summary": summarize(runs, milestones),
           "sample_efficiency": sample_efficiency(runs, args.reference),
           "steps_to_90pct_oracle_val": sample_efficiency(runs, args.reference, key="val", target=0.9),
           "steps_to_90pct_oracle_test": sample_efficiency(runs, args.reference, key="test", target=0.9),
           "per_regime": per_regime(runs),
           "paired_vs_references": paired_differences(runs, (args.reference, *args.also_against)), "runs": runs}
    write_result(doc, args.out)
    if args.figure:
        figure(runs, args.figure, args.title)


if __name__ == "__main__":
    main()
