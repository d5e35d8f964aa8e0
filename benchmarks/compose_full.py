"""Which components the ``full`` preset may hold: the do-no-harm rule applied to a panel benchmark's verdicts.

Reads a ``bench_panel.py`` JSON, takes each component arm's verdict against ``baseline`` (the training
without it; Holm across the arms, paired over seeds) on every market of the panel, applies
``convopt_mlflow.evaluation.do_no_harm.judge_components`` and writes the admissions with their reasons,
the admitted components, and the preset overrides ``full`` should be:

* the admitted arm's preset exactly (one admitted), or the admitted arms' preset values over
  ``baseline``'s, the reference they were judged against (several; strongest evidence first, and an arm
  that cannot run with those already in, such as the direct learner with a PPO component, is left out
  with its reason), or
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
    from convopt_mlflow.evaluation.do_no_harm import judge_components, verdict_from_dict

    markets = [m["market"] for m in panel["markets"]]
    arms = [a for a in panel["arms"] if a in ARM_COMPONENTS]
    verdicts = {arm: {m["market"]: verdict_from_dict(m["arms"][arm]["vs_baseline"])
                      for m in panel["markets"] if "vs_baseline" in m["arms"].get(arm, {})}
                for arm in arms}
    admissions = judge_components(verdicts, markets=markets)
    full, chosen, excluded = _combine([a for a in admissions if a.admitted], verdicts, PRESETS)
    if len(chosen) == 1:  # exactly the measured arm, so its panel row is full's
        why = f"full is the {chosen[0]} preset, exactly as measured on the panel"
    elif chosen:
        why = (f"full = {REFERENCE} + the admitted arms {', '.join(chosen)} (a combination the panel did not "
               f"measure as such)")
    else:
        full = dict(PRESETS[SAFE_DEFAULT])
        why = (f"no component is admitted, so full holds none: it is {SAFE_DEFAULT}'s settings (plain PPO at the "
               f"design's base LR), and every component stays available, off in full")
    components = sorted({c for arm in chosen for c in ARM_COMPONENTS[arm]})
    return {"panel": panel_path, "markets": markets, "seeds": panel["seeds"], "steps": panel["steps"],
            "n_bars": panel["n_bars"], "reference": REFERENCE, "rule": RULE,
            "admissions": [{**a.to_dict(), "arm": a.component, "components": list(ARM_COMPONENTS[a.component])}
                           for a in admissions],
            "admitted_arms": [a.component for a in admissions if a.admitted], "full_arms": list(chosen),
            "excluded": excluded, "full_components": components, "full_preset": full, "why": why}


def _combine(admitted: list, verdicts: dict, presets: dict) -> tuple[dict, list[str], list[dict]]:
    """Admitted arms into one config, strongest evidence first (markets better on, then mean effect over
    the panel): an arm whose preset cannot run with those already in (a ``ConfigError``, e.g. the direct
    learner, which replaces PPO, with a PPO component) is left out, with the reason."""
    from convopt_mlflow.config import build_config
    from convopt_mlflow.errors import ConfigError

    def strength(a):
        effects = [v.effect for v in verdicts[a.component].values()]
        return (len(a.better_on), sum(effects) / len(effects))

    full, chosen, excluded = dict(presets[REFERENCE]), [], []
    for a in sorted(admitted, key=strength, reverse=True):
        trial = {**full, **{k: v for k, v in presets[a.component].items() if k not in _set_by(chosen, presets)}}
        try:
            build_config(REFERENCE, [f"{k}={_text(v)}" for k, v in trial.items()])
        except ConfigError as exc:
            excluded.append({"arm": a.component, "reason": f"admitted, but cannot run with {', '.join(chosen)}: "
                                                           + " ".join(str(exc).split())})
            continue
        full, chosen = trial, chosen + [a.component]
    if len(chosen) == 1:
        full = dict(presets[chosen[0]])
    return full, chosen, excluded


def _set_by(arms: list[str], presets: dict) -> set[str]:
    return {k for arm in arms for k in presets[arm]}


def _text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return "+".join(str(v) for v in value)
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("panel", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    doc = compose(json.loads(args.panel.read_text()), str(args.panel))
    for a in doc["admissions"]:
        print(f"{'ADMIT ' if a['admitted'] else 'reject'} {a['arm']:<15} {a['reason']}")
    for e in doc["excluded"]:
        print(f"left out {e['arm']}: {e['reason']}")
    print(doc["why"])
    print(f"full components: {', '.join(doc['full_components']) or '(none)'}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
