"""Run and arm names show what differs from the preset, compactly, on one line."""
from __future__ import annotations

from convopt_mlflow import config as cfgmod
from convopt_mlflow.config.names import MAX_LABEL_CHARS, config_differences, overrides_label, preset_label
from convopt_mlflow.experiments.arms import parse_arms
from convopt_mlflow.experiments.session import parent_run_name
from convopt_mlflow.tracking.live import evidence_summary
from convopt_mlflow.training.run_meta import run_display_name


def test_run_names_show_overrides_compactly():
    assert run_display_name("baseline", 0, cfg=cfgmod.build_config("baseline")) == "baseline-s0"
    lr = cfgmod.build_config("baseline", ["base_learning_rate=1e-4"])
    assert run_display_name("baseline", 0, cfg=lr) == "baseline[lr=0.0001]-s0"
    short = cfgmod.build_config("baseline", ["run.total_timesteps=60000", "run.seed=2", "run.progress_bar=false",
                                             "data.source=synthetic:n_bars=3000,seed=1"])
    assert run_display_name("baseline", 2, cfg=short) == "baseline[steps=60k]-s2"  # seed, data, bookkeeping left out
    assert run_display_name("full", 1, "member2", cfg=cfgmod.build_config("full")) == "full-s1-member2"


def test_long_override_sets_stay_short_and_distinct():
    many = {f"ppo.key{i}": str(i) for i in range(10)}
    other = {**many, "ppo.key9": "99"}
    a, b = overrides_label(many), overrides_label(other)
    assert len(a) <= MAX_LABEL_CHARS and len(b) <= MAX_LABEL_CHARS and a != b
    assert a.startswith("key0=0,key1=1,") and "+" in a and "#" in a
    assert preset_label("lr", {}) == "lr"


def test_config_differences_ignore_seed_data_and_bookkeeping():
    base = cfgmod.flatten(cfgmod.build_config("baseline"))
    cfg = cfgmod.flatten(cfgmod.build_config("baseline", ["run.seed=5", "data.source=googl-1d", "run.experiment=x",
                                                          "ppo.batch_size=512"]))
    assert config_differences(cfg, base) == {"ppo.batch_size": 512}


def test_arm_labels_and_the_ab_parent_name():
    (base, lr) = parse_arms("baseline,lr:ppo.batch_size=512,ppo.n_epochs=4")
    assert base.label == "baseline" and lr.label == "lr[batch_size=512,n_epochs=4]"
    assert "\n" not in lr.label and lr.name == "lr:ppo.batch_size=512,ppo.n_epochs=4"  # the study's key is unchanged
    assert parent_run_name("ab-baseline-lr") == "ab-baseline-lr"  # the default study name: not ab-ab-...
    assert parent_run_name("nightly") == "ab-nightly"


def test_registry_evidence_is_the_evidence_in_words():
    tags = {"convopt.arm": "lr", "convopt.evidence.baseline": "baseline", "convopt.evidence.metric": "backtest/val/sharpe",
            "convopt.evidence.mean_difference": "0.7", "convopt.evidence.ci_low": "0.5875", "convopt.evidence.ci_high": "0.78",
            "convopt.evidence.p_adjusted": "0.001329", "convopt.evidence.hedges_g": "1.82", "convopt.evidence.n": "4",
            "convopt.evidence.dsr": "None", "convopt.model.sha256": '{"files": {"MLmodel": "ab12..."}}',
            "convopt.promotion.decision": "promoted"}
    assert evidence_summary(tags) == ("lr vs baseline on backtest/val/sharpe: diff 0.7 [0.588, 0.78], p (Holm) 0.00133, "
                                      "g 1.82, n 4; promotion: promoted")
    assert evidence_summary({"convopt.model.sha256": "{}"}) == ""
