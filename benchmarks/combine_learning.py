"""Merge several ``bench_learning.py`` results (same market, same milestones) into one study:
summary per preset, sample efficiency against a reference, steps to 90% of the oracle, the
per-regime table and the figure, exactly as ``bench_learning.py`` computes them for one run.

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--reference", default="baseline")
    parser.add_argument("--title", default="Learning curves")
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
           "per_regime": per_regime(runs), "runs": runs}
    write_result(doc, args.out)
    if args.figure:
        figure(runs, args.figure, args.title)


if __name__ == "__main__":
    main()
