"""`full` holds exactly the components the market panel admits (benchmarks/results/full_composition.json),
and that file is the do-no-harm rule applied to the panel result it names: change either without the
other and this fails."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from convopt_mlflow.config import PRESETS, build_config
from convopt_mlflow.evaluation.harm import components_on

ROOT = Path(__file__).resolve().parents[1]
COMPOSITION = ROOT / "benchmarks" / "results" / "full_composition.json"


def composition() -> dict:
    return json.loads(COMPOSITION.read_text())


def test_full_holds_exactly_the_admitted_components():
    doc = composition()
    on = set(components_on(build_config("full")))
    admitted = {c for a in doc["admissions"] if a["admitted"] for c in a["components"]}
    assert on == set(doc["full_components"]) and on <= admitted, (on, admitted)
    # every admitted arm is in full, or left out with its reason (it cannot run with a stronger one)
    left_out = {e["arm"] for e in doc["excluded"]}
    assert {a["arm"] for a in doc["admissions"] if a["admitted"]} == set(doc["full_arms"]) | left_out
    assert not set(doc["full_arms"]) & left_out and all(e["reason"] for e in doc["excluded"])
    assert on == {c for arm in doc["full_arms"] for a in doc["admissions"] if a["arm"] == arm for c in a["components"]}


def test_full_is_the_composed_preset():
    assert PRESETS["full"] == composition()["full_preset"]


def test_the_composition_is_the_rule_applied_to_the_panel_it_names():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from compose_full import compose
    finally:
        sys.path.pop(0)
    doc = composition()
    panel = json.loads((ROOT / doc["panel"]).read_text())
    again = json.loads(json.dumps(compose(panel, doc["panel"])))
    assert again == doc


def test_a_rejected_component_stays_available_off_in_full():
    doc = composition()
    admitted = {c for a in doc["admissions"] if a["admitted"] for c in a["components"]}
    full_on = set(components_on(build_config("full")))
    for a in doc["admissions"]:
        if not a["admitted"]:
            assert set(a["components"]) <= set(components_on(build_config(a["arm"]))), a  # still available
            assert not (set(a["components"]) - admitted) & full_on, a  # and off in full


def _panel(verdicts: dict[str, dict[str, tuple[float, float, bool]]]) -> dict:
    markets = sorted({m for per in verdicts.values() for m in per})
    return {"arms": ["baseline", *verdicts], "seeds": [1, 2], "steps": 100, "n_bars": 1000,
            "markets": [{"market": m, "arms": {arm: {"vs_baseline": dict(zip(("effect", "p_holm", "significant"),
                                                                              per[m]))}
                                               for arm, per in verdicts.items()}} for m in markets]}


def test_compose_with_nothing_admitted_is_baseline_3e5_with_no_component():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from compose_full import compose

    sys.path.pop(0)
    doc = compose(_panel({"augment": {"a": (0.5, 0.2, False), "b": (-1.0, 0.01, True)},
                          "replay": {"a": (0.1, 0.9, False), "b": (0.2, 0.8, False)}}))
    assert doc["admitted_arms"] == doc["full_arms"] == [] and doc["full_preset"] == PRESETS["baseline-3e-5"]
    assert [a["reason"][:5] for a in doc["admissions"]] == ["worse", "not s"]


def test_compose_leaves_out_an_admitted_arm_that_cannot_run_with_a_stronger_one():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from compose_full import compose

    sys.path.pop(0)
    doc = compose(_panel({"direct": {"a": (0.5, 0.01, True), "b": (0.0, 0.9, False)},
                          "counterfactual": {"a": (0.9, 0.01, True), "b": (0.4, 0.02, True)},
                          "augment": {"a": (0.3, 0.04, True), "b": (0.1, 0.5, False)}}))
    assert doc["admitted_arms"] == ["direct", "counterfactual", "augment"]
    assert doc["full_arms"] == ["counterfactual", "augment"]  # two markets better first, then the larger mean effect
    assert [e["arm"] for e in doc["excluded"]] == ["direct"] and "direct.enabled=true" in doc["excluded"][0]["reason"]
    assert set(components_on(build_config("baseline", [f"{k}={v}" for k, v in doc["full_preset"].items()]))) == {
        "counterfactual", "augment"}
