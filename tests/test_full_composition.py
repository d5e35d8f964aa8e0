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
    assert on == admitted == set(doc["full_components"]), (on, admitted)


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
