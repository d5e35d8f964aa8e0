"""The actuator's rollback budget and lowered LR survive a checkpoint round trip (resume)."""
from convopt_mlflow.training.interventions import InterventionActuator
from convopt_mlflow.training.schedule import ScaledSchedule

from .conftest import make_tiny_ppo


def test_rollback_budget_and_lr_scale_are_restored():
    model = make_tiny_ppo()
    actuator = InterventionActuator(max_rollbacks=3)
    actuator.apply("lr_reduce", model, step=64)
    actuator.apply("lr_reduce", model, step=128)
    actuator.rollbacks, actuator.last_rollback_step = 2, 512
    state = actuator.state_dict(model)
    assert state == {"rollbacks": 2, "last_rollback_step": 512, "lr_scale": 0.25}

    fresh_model, fresh = make_tiny_ppo(), InterventionActuator(max_rollbacks=3)
    fresh.load_state_dict(state, fresh_model)
    assert (fresh.rollbacks, fresh.last_rollback_step) == (2, 512)
    assert isinstance(fresh_model.lr_schedule, ScaledSchedule)
    assert fresh_model.lr_schedule(1.0) == model.lr_schedule(1.0) == 0.25 * 3e-4
    untouched = make_tiny_ppo()
    InterventionActuator().load_state_dict({}, untouched)  # checkpoints from before this state existed
    assert not isinstance(untouched.lr_schedule, ScaledSchedule)
