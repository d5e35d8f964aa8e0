"""Which components the ``full`` preset may hold: the do-no-harm rule applied to a panel benchmark's verdicts.

Reads a ``bench_panel.py`` JSON, takes each component arm's verdict against ``baseline`` (the training
without it; Holm across the arms, paired over seeds) on every market of the panel, applies
``convopt_mlflow.evaluation.do_no_harm.judge_components`` and writes the admissions with their reasons,
the admitted components, and the preset overrides ``full`` should be:

* the admitted arms' preset values over ``baseline``'s (the reference they were judged against), or
* when nothing is admitted, ``baseline-3e-5``'s values with a reason: the best-evidenced configuration
  with no optional component (see the panel guide for why that reference and not ``baseline``).

``tests/test_full_composition.py`` ties ``PRESETS["full"]`` to the written file: every component on in
``full`` is admitted there and every admitted one is on.

    python benchmarks/compose_full.py benchmarks/results/panel_small5.json \\
        --out benchmarks/results/full_composition.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: Component arms of the panel -> the components (``evaluation/harm.py: components_on`` names) each turns on.
ARM_COMPONENTS = {
    "lr": ("scheduler", "monitor"),
    "curriculum": ("curriculum",),
    "augment": ("augment",),
    "replay": ("replay",),
    "meta": ("scheduler", "monitor", "meta"),  # `lr` + the meta controller, judged against baseline
    "counterfactual": ("counterfactual",),
    "direct": ("direct",),
}
REFERENCE = "baseline"
SAFE_DEFAULT = "baseline-3e-5"
RULE = ("a component is admitted when, against baseline (the same training without it), it is significantly "
        "better (Holm across the arms, paired t over seeds) on at least one panel market and significantly "
        "worse on none; a market without a verdict rejects")


def compose(panel: dict, panel_path: str = "") -> dict:
    """The admissions, the admitted components and the ``full`` overrides of one panel result."""
    from convopt_mlflow.config.presets import PRESETS
    from convopt_mlflow.evaluation.do_no_harm import admitted, judge_components, verdict_from_dict

    markets = [m["market"] for m in panel["markets"]]
    arms = [a for a in panel["arms"] if a in ARM_COMPONENTS]
    verdicts = {arm: {m["market"]: verdict_from_dict(m["arms"][arm]["vs_baseline"])
                      for m in panel["markets"] if "vs_baseline" in m["arms"].get(arm, {})}
                for arm in arms}
    admissions = judge_components(verdicts, markets=markets)
    chosen = admitted(admissions)
    if chosen:
        full = dict(PRESETS[REFERENCE])
        for arm in chosen:
            full.update(PRESETS[arm])
        why = f"full = {REFERENCE} + the admitted arm(s) {', '.join(chosen)}"
    else:
        full = dict(PRESETS[SAFE_DEFAULT])
        why = (f"no component is admitted, so full holds none: it is {SAFE_DEFAULT}'s settings (plain PPO at the "
               f"design's base LR), and every component stays available, off in full")
    components = sorted({c for arm in chosen for c in ARM_COMPONENTS[arm]})
    return {"panel": panel_path, "markets": markets, "seeds": panel["seeds"], "steps": panel["steps"],
            "n_bars": panel["n_bars"], "reference": REFERENCE, "rule": RULE,
            "admissions": [{**a.to_dict(), "arm": a.component, "components": list(ARM_COMPONENTS[a.component])}
                           for a in admissions],
            "admitted_arms": list(chosen), "full_components": components, "full_preset": full, "why": why}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("panel", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    doc = compose(json.loads(args.panel.read_text()), str(args.panel))
    for a in doc["admissions"]:
        print(f"{'ADMIT ' if a['admitted'] else 'reject'} {a['arm']:<15} {a['reason']}")
    print(doc["why"])
    print(f"full components: {', '.join(doc['full_components']) or '(none)'}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
