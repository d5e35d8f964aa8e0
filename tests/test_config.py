import dataclasses
import json

import pytest

from convopt_mlflow import config as cfgmod
from convopt_mlflow.errors import ConfigError

# The reference design's defaults, except the components' switches: off by default, so the
# plain config is baseline PPO (curriculum off, no replay, no augmentation, one policy); presets turn them on.
REFERENCE_FIELDS = {
    "base_learning_rate": 3e-5, "min_learning_rate": 1e-7, "max_learning_rate": 1e-4,
    "lr_schedule_type": "cosine_with_restarts", "restart_period": 500000, "curriculum_enabled": False,
    "curriculum_stages": 5, "stage_progression_threshold": 0.1, "replay_buffer_size": 1000000,
    "replay_ratio": 0.0, "priority_alpha": 0.6, "intervention_threshold": 0.3, "noise_injection_prob": 0.0,
    "time_warp_prob": 0.0, "feature_dropout_prob": 0.0, "ensemble_size": 1, "diversity_penalty": 0.1,
    "meta_learning_rate": 1e-4, "adaptation_frequency": 10000,
}


def test_reference_fields_and_defaults_are_kept():
    cfg = cfgmod.OptimizedTrainingConfig()
    for name, value in REFERENCE_FIELDS.items():
        assert getattr(cfg, name) == value, name
    # fields whose unit the reference left open keep their names
    assert hasattr(cfg, "plateau_threshold") and hasattr(cfg, "monitoring_window")


def test_config_is_frozen():
    cfg = cfgmod.OptimizedTrainingConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.base_learning_rate = 1.0  # type: ignore[misc]


def test_overrides_coerce_types_and_nest():
    cfg = cfgmod.build_config("baseline", ["ppo.batch_size=128,ppo.net_arch=32+16", "env.long_only=yes",
                                           "base_learning_rate=1e-4", "run.total_timesteps=2e6"])
    assert cfg.ppo.batch_size == 128
    assert cfg.ppo.net_arch == (32, 16)
    assert cfg.env.long_only is True
    assert cfg.base_learning_rate == 1e-4
    assert cfg.run.total_timesteps == 2_000_000


def test_presets_differ_as_documented():
    baseline, lr, full = (cfgmod.build_config(p) for p in ("baseline", "lr", "everything"))
    assert not baseline.scheduler_enabled and not baseline.monitor.enabled
    assert baseline.base_learning_rate == 3e-4  # SB3's default LR: "baseline" always names its LR
    assert lr.scheduler_enabled and lr.monitor.enabled
    assert "early_stop" in full.monitor.interventions
    assert cfgmod.build_config("baseline-3e-5").base_learning_rate == 3e-5
    ensemble = cfgmod.build_config("ensemble")
    assert ensemble.ensemble_size == 3 and full.ensemble_size == 3 and baseline.ensemble_size == 1
    assert ensemble.base_learning_rate == baseline.base_learning_rate and not ensemble.monitor.enabled
    assert ensemble.ensemble.registry_name == "convopt-ensemble" and ensemble.ensemble.workers == 0


@pytest.mark.parametrize("preset,overrides,needle", [
    ("nope", [], "unknown preset 'nope'"),
    ("ful", [], "did you mean `full`?"),
    ("baseline", ["ppo.batchsize=3"], "unknown config key 'ppo.batchsize' (did you mean `ppo.batch_size`?)"),
    ("baseline", ["batch_size=3"], "did you mean `ppo.batch_size`?"),
    ("baseline", ["ppo.n_step=3"], "did you mean `ppo.n_steps`"),
    ("baseline", ["ppo.batch_size=abc"], "bad value 'abc' for ppo.batch_size"),
    ("baseline", ["ppo.batch_size=1.5"], "bad value '1.5' for ppo.batch_size"),
    ("baseline", ["ppo.batch_size=0"], "ppo.batch_size=0: must be >= 2"),
    ("baseline", ["lr_schedule_type=weird"], "lr_schedule_type='weird': 'weird' is not allowed; choose from"),
    ("baseline", ["lr_schedule_type=cosin"], "(did you mean `cosine`?)"),
    ("baseline", ["monitor.interventions=lr_restart+explode"], "'explode' is not allowed; choose from lr_restart,"),
    ("baseline", ["replay_ratio=-3"], "replay_ratio=-3.0: must be in [0, 1]"),
    ("baseline", ["ensemble_size=0"], "ensemble_size=0: must be >= 1"),
    ("baseline", ["ppo.gamma=1.5"], "ppo.gamma=1.5: must be in (0, 1]"),
    ("baseline", ["run.seed=-1"], "run.seed=-1: must be in [0, 4294967295]"),
    ("baseline", ["ppo.net_arch=0+4"], "ppo.net_arch=0+4: must be >= 1"),
    ("baseline", ["env.cost_bps=-1"], "env.cost_bps=-1.0: must be in [0, 10000]"),
    ("baseline", ["data.val_fraction=0.5"], "data.val_fraction=0.5: must be in (0, 0.5)"),
    ("baseline", ["ppo.activation=sigmoid"], "ppo.activation='sigmoid': 'sigmoid' is not allowed; choose from tanh, relu"),
    ("lr", ["base_learning_rate=1e-3"], "with scheduler_enabled it must be in [min_learning_rate, max_learning_rate]"),
    ("baseline", ["novalue"], "is not key=value"),
    ("baseline", ["ppo=3"], "is a section"),
    ("baseline", ["base_learning_rate=nan"], "bad value 'nan'"),
    ("ensemble", ["ensemble.min_members=4"], "ensemble.min_members=4: must be <= ensemble_size=3"),
    ("ensemble", ["ensemble.lr_factor=2+0.5"], "ensemble.lr_factor=2.0+0.5: needs two bounds low+high with low <= high"),
    ("ensemble", ["ensemble.net_archs=64-64"], "items are layer sizes joined by x"),
    ("ensemble", ["ensemble.data_subsets=random"], "choose from none, bootstrap, disjoint"),
    ("ensemble", ["ensemble.train_blocks=10"], "ensemble.train_blocks=10: must lie in [0, ensemble.n_blocks=10)"),
    ("ensemble", ["ensemble.workers=-1"], "ensemble.workers=-1: must be >= 0"),
])
def test_bad_config_names_the_problem(preset, overrides, needle):
    with pytest.raises(ConfigError) as err:
        cfgmod.build_config(preset, overrides)
    assert needle in str(err.value)


def test_flatten_json_roundtrip_and_hash():
    cfg = cfgmod.build_config("everything", ["ppo.net_arch=8+8"])
    flat = cfgmod.flatten(cfg)
    assert flat["ppo.net_arch"] == "8+8" and flat["data.source"] == "eurusd-1h"
    back = cfgmod.from_dict(json.loads(cfgmod.to_json(cfg)))
    assert back == cfg
    assert cfgmod.config_hash(back) == cfgmod.config_hash(cfg)
    assert cfgmod.config_hash(cfgmod.build_config("baseline")) != cfgmod.config_hash(cfg)


def test_every_field_is_documented_for_help():
    docs = cfgmod.field_docs()
    assert "ppo.batch_size" in docs and "Minibatch" in docs["ppo.batch_size"]
    assert "run.total_timesteps" in docs


def test_text_values_may_hold_commas():
    cfg = cfgmod.build_config("baseline", "data.source=synthetic:n_bars=5000,seed=3,ppo.batch_size=32")
    assert cfg.data.source == "synthetic:n_bars=5000,seed=3"
    assert cfg.ppo.batch_size == 32
    with pytest.raises(ConfigError, match="ppo.batchsiz"):
        cfgmod.build_config("baseline", "ppo.batch_size=64,ppo.batchsiz=3")


def test_wrong_python_types_are_refused():
    with pytest.raises(ConfigError, match=r"ensemble_size='3': expected an integer"):
        cfgmod.OptimizedTrainingConfig(ensemble_size="3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"scheduler_enabled=1: expected true or false"):
        cfgmod.OptimizedTrainingConfig(scheduler_enabled=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"ppo.batch_size=64.5: expected an integer"):
        cfgmod.from_dict({"ppo": {"batch_size": 64.5}})


def test_every_field_has_a_rule_or_is_free_text_or_a_switch():
    from convopt_mlflow.config.validation import RULES, fields_of

    free = {"data.source", "data.max_gap", "run.experiment", "ensemble.registry_name",
            "ensemble.net_archs", "ensemble.train_blocks"}  # the last three: cross-field checks
    for key, _value, kind, _default in fields_of(cfgmod.OptimizedTrainingConfig()):
        assert key in RULES or key in free or kind is bool, f"{key} has no validation rule"


def test_a_logged_config_loads_back_as_it_was_logged():
    """A run's config.json rebuilds the same config (resume depends on it), component fields included."""
    old = json.loads(cfgmod.to_json(cfgmod.build_config("everything")))
    old.update(replay_ratio=0.25, meta_learning_rate=1e-3)
    assert cfgmod.from_dict(old) == cfgmod.build_config("everything", ["replay_ratio=0.25", "meta_learning_rate=1e-3"])


def test_curriculum_and_augmentation_fields_are_live():
    cfg = cfgmod.build_config("curriculum", ["curriculum_stages=3", "stage_progression_threshold=1.5",
                                             "curriculum.triggers=steps+monitor", "monitor.enabled=true",
                                             "monitor.interventions=lr_restart+advance_curriculum"])
    assert cfg.curriculum_enabled and cfg.curriculum_stages == 3 and cfg.curriculum.triggers == ("steps", "monitor")
    aug = cfgmod.build_config("augment", ["augment.synthetic_prob=0.1"])
    assert (aug.noise_injection_prob, aug.time_warp_prob, aug.feature_dropout_prob) == (0.3, 0.2, 0.1)
    assert aug.base_learning_rate == 3e-4 and not aug.curriculum_enabled and aug.augment.synthetic_prob == 0.1


@pytest.mark.parametrize("override,needle", [
    ("monitor.interventions=lr_restart+advance_curriculum", "advance_curriculum needs curriculum_enabled=true"),
    ("noise_injection_prob=1.5", "noise_injection_prob=1.5: must be in [0, 1]"),
    ("augment.warp_factor=1", "augment.warp_factor=1.0: must be in [0, 1)"),
    ("curriculum.triggers=steps+weather", "'weather' is not allowed"),
    ("curriculum_stages=0", "curriculum_stages=0: must be >= 1"),
])
def test_bad_curriculum_and_augmentation_values_are_refused(override, needle):
    with pytest.raises(ConfigError) as err:
        cfgmod.build_config("baseline", [override])
    assert needle in str(err.value)


def test_transition_replay_with_augmentation_is_refused():
    with pytest.raises(ConfigError, match="replay_mode=scenario"):
        cfgmod.build_config("augment", ["replay_enabled=true", "replay_mode=transition", "replay_ratio=0.25"])
    cfgmod.build_config("augment", ["replay_enabled=true", "replay_mode=scenario"])  # scenario replay is fine


def test_context_momentum_without_the_context_features_is_refused():
    with pytest.raises(ConfigError, match=r"env.context_momentum=true needs env.context_features=true"):
        cfgmod.build_config("baseline", ["env.context_momentum=true"])
    assert cfgmod.build_config("regime").env.context_momentum  # the preset sets both
    assert cfgmod.build_config("regime").direct.objective == "batch_sharpe"
    with pytest.raises(ConfigError, match=r"env.context_ewm=true needs env.context_features=true"):
        cfgmod.build_config("baseline", ["env.context_ewm=true"])


def test_the_meta_controller_needs_validation_evals_but_any_cadence():
    with pytest.raises(ConfigError, match=r"run.eval_freq=0: meta_enabled needs validation evaluations"):
        cfgmod.build_config("meta", ["run.eval_freq=0"])
    cfg = cfgmod.build_config("everything", ["run.eval_freq=1024"])  # any eval cadence: adaptation uses the newest score
    assert cfg.meta_enabled and cfg.adaptation_frequency == 25_000
