"""The do-no-harm rule on hand-made verdicts: admit, reject for harm, reject for no gain, unmeasured."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from convopt_mlflow.evaluation import do_no_harm
from convopt_mlflow.evaluation.do_no_harm import Verdict, admitted, judge_component, judge_components, verdict_from_dict

MARKETS = ("planted", "trend", "noise")
SAME = Verdict(0.1, 0.6, False)


def test_better_on_one_market_and_worse_on_none_is_admitted():
    a = judge_component("replay", {"planted": Verdict(0.9, 0.01, True), "trend": SAME, "noise": Verdict(-0.3, 0.2, False)},
                        markets=MARKETS)
    assert a.admitted and a.better_on == ("planted",) and a.worse_on == ()
    assert a.reason == "better on planted (effect +0.9, p_holm 0.01); not significantly worse on any of 3 markets"


def test_significantly_worse_anywhere_rejects_even_with_gains_elsewhere():
    a = judge_component("augment", {"planted": Verdict(1.2, 0.001, True), "trend": Verdict(-0.8, 0.04, True),
                                    "noise": Verdict(-0.5, 0.01, True)}, markets=MARKETS)
    assert not a.admitted and a.better_on == ("planted",) and a.worse_on == ("trend", "noise")
    assert a.reason.startswith("worse than its reference on trend (effect -0.8, p_holm 0.04), noise")


def test_no_significant_gain_anywhere_rejects_and_names_the_closest():
    a = judge_component("lr", {"planted": Verdict(0.7, 0.08, False), "trend": SAME, "noise": Verdict(2.0, 0.3, False)},
                        markets=MARKETS)
    assert not a.admitted and a.better_on == a.worse_on == ()
    assert a.reason == "not significantly better on any of 3 markets (smallest p_holm: planted (effect +0.7, p_holm 0.08))"


def test_a_large_effect_that_is_not_significant_is_neither_gain_nor_harm():
    a = judge_component("meta", {"planted": Verdict(0.5, 0.02, True), "trend": Verdict(-3.0, 0.07, False),
                                 "noise": SAME}, markets=MARKETS)
    assert a.admitted and a.worse_on == ()


def test_a_significant_zero_or_nan_effect_is_neither_better_nor_worse():
    assert not Verdict(0.0, 0.01, True).better and not Verdict(0.0, 0.01, True).worse
    assert not Verdict(math.nan, math.nan, True).better and not Verdict(math.nan, math.nan, True).worse
    a = judge_component("x", {m: Verdict(math.nan, math.nan, False) for m in MARKETS}, markets=MARKETS)
    assert not a.admitted and "not significantly better on any of 3 markets" in a.reason


def test_a_market_without_a_verdict_is_unmeasured_harm_and_rejects():
    a = judge_component("direct", {"planted": Verdict(0.9, 0.01, True), "trend": SAME}, markets=MARKETS)
    assert not a.admitted and a.unmeasured == ("noise",)
    assert a.reason == "no verdict on noise: harm there is unmeasured"


def test_judge_components_keeps_order_and_admitted_lists_the_admitted():
    verdicts = {"curriculum": {m: SAME for m in MARKETS},
                "replay": {**{m: SAME for m in MARKETS}, "trend": Verdict(0.4, 0.03, True)},
                "augment": {**{m: SAME for m in MARKETS}, "noise": Verdict(-0.4, 0.03, True)}}
    admissions = judge_components(verdicts, markets=MARKETS)
    assert [a.component for a in admissions] == ["curriculum", "replay", "augment"]
    assert admitted(admissions) == ("replay",)
    assert admissions[1].to_dict() == {"component": "replay", "admitted": True, "reason": admissions[1].reason,
                                       "better_on": ("trend",), "worse_on": (), "unmeasured": ()}
    with pytest.raises(ValueError, match="at least one market"):
        judge_components(verdicts, markets=())


def test_verdict_from_a_panel_json_row():
    row = {"effect": -0.42, "effect_ci": [-0.8, -0.1], "p": 0.01, "p_holm": 0.04, "significant": True,
           "decision": "worse"}
    assert verdict_from_dict(row) == Verdict(-0.42, 0.04, True) and verdict_from_dict(row).worse


def test_the_rule_is_pure():
    tree = ast.parse(Path(do_no_harm.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"stable_baselines3", "mlflow", "optuna", "torch"}
