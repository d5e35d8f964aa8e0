"""RegularizationSchedule: bounded multiplicative raises of ent_coef and weight decay."""
import json

import pytest

from convopt_mlflow.components import RegularizationSchedule
from convopt_mlflow.errors import ConfigError


def test_increase_entropy_from_zero_starts_at_the_floor_and_stops_at_the_bound():
    reg = RegularizationSchedule(0.0, max_ent_coef=0.005)
    assert [(reg.increase_entropy(), reg.ent_coef) for _ in range(5)] == [
        (True, 1e-3), (True, 2e-3), (True, 4e-3), (True, 5e-3), (False, 5e-3)]


def test_increase_regularization_raises_decay_and_entropy():
    reg = RegularizationSchedule(0.01, max_ent_coef=0.02, max_weight_decay=3e-5, factor=2.0)
    assert reg.increase_regularization() and (reg.weight_decay, reg.ent_coef) == (1e-5, 0.02)
    assert reg.increase_regularization() and (reg.weight_decay, reg.ent_coef) == (2e-5, 0.02)
    assert reg.increase_regularization() and reg.weight_decay == 3e-5
    assert reg.increase_regularization() is False


def test_state_dict_round_trip():
    reg = RegularizationSchedule(0.01, max_ent_coef=0.1, weight_decay=1e-4)
    reg.increase_regularization()
    other = RegularizationSchedule(0.01, max_ent_coef=0.1, weight_decay=1e-4)
    other.load_state_dict(json.loads(json.dumps(reg.state_dict())))
    assert (other.ent_coef, other.weight_decay) == (0.02, 2e-4)


@pytest.mark.parametrize("kwargs, field", [
    ({"ent_coef": 0.1, "max_ent_coef": 0.05}, "max_ent_coef"),
    ({"ent_coef": -0.1, "max_ent_coef": 0.05}, "ent_coef"),
    ({"ent_coef": 0.0, "max_ent_coef": 0.05, "factor": 1.0}, "factor"),
    ({"ent_coef": 0.0, "max_ent_coef": 0.05, "weight_decay": 1e-2}, "max_weight_decay"),
])
def test_bad_values_are_config_errors(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        RegularizationSchedule(**kwargs)
