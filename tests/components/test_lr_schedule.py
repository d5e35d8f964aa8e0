"""AdvancedLRScheduler: hand-computed values for every schedule type, plus torch's SGDR."""
import json
import math
import pickle

import pytest
import torch

from convopt_mlflow.components import AdvancedLRScheduler
from convopt_mlflow.errors import ConfigError


def unit(schedule_type, **kw):
    """A scheduler with base 1.0 in [0, 1] so the values are easy to compute by hand."""
    kw = {"min_lr": 0.0, "max_lr": 1.0, "total_steps": 100, **kw}
    return AdvancedLRScheduler(1.0, schedule_type, **kw)


def test_constant():
    s = unit("constant")
    assert [s.get_lr(t) for t in (0, 50, 10**9)] == [1.0, 1.0, 1.0]


def test_linear_decays_to_min_over_total_steps():
    s = unit("linear", min_lr=0.2)
    assert s.get_lr(0) == 1.0
    assert s.get_lr(25) == pytest.approx(0.8)  # 1 + (0.2 - 1) * 0.25
    assert s.get_lr(100) == pytest.approx(0.2)
    assert s.get_lr(500) == pytest.approx(0.2)


def test_cosine():
    s = unit("cosine")
    assert s.get_lr(0) == 1.0
    assert s.get_lr(25) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)  # 0.8535533905932737
    assert s.get_lr(50) == pytest.approx(0.5)
    assert s.get_lr(100) == pytest.approx(0.0)


def test_cosine_with_restarts_by_hand():
    s = unit("cosine_with_restarts", min_lr=0.1, restart_period=10)
    assert [s.get_lr(t) for t in (0, 5, 10, 15, 20)] == pytest.approx([1.0, 0.55, 1.0, 0.55, 1.0])
    doubling = unit("cosine_with_restarts", min_lr=0.1, restart_period=10, period_mult=2)
    # cycles [0, 10), [10, 30), [30, 70)
    assert [doubling.get_lr(t) for t in (5, 10, 20, 30, 50)] == pytest.approx([0.55, 1.0, 0.55, 1.0, 0.55])


@pytest.mark.parametrize("t_mult", [1, 2])
def test_cosine_with_restarts_matches_torch(t_mult):
    base, eta_min, t0 = 3e-4, 1e-6, 7
    sched = AdvancedLRScheduler(base, "cosine_with_restarts", min_lr=eta_min, max_lr=1e-3,
                                restart_period=t0, period_mult=t_mult)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    sequential = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=t0, T_mult=t_mult, eta_min=eta_min)
    for step in range(300):
        assert sched.get_lr(step) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=0), step
        opt.step()
        sequential.step()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    closed = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt2, T_0=t0, T_mult=t_mult, eta_min=eta_min)
    for step in (0, 6, 7, 20, 21, 48, 49, 105, 299):
        closed.step(step)
        assert sched.get_lr(step) == pytest.approx(opt2.param_groups[0]["lr"], rel=1e-12, abs=0), step


def test_plateau_reduces_after_patience_and_resets_counter():
    s = unit("plateau", min_lr=0.01, plateau_patience=2, plateau_factor=0.5)
    assert s.get_lr(1, {"eval_score": 1.0}) == 1.0
    assert s.get_lr(2, {"eval_score": 0.9}) == 1.0  # 1 bad update
    assert s.get_lr(3, {"loss": 5.0}) == 1.0  # metric absent: not counted
    assert s.get_lr(4, {"eval_score": 0.8}) == 0.5  # 2 bad updates -> x0.5
    assert s.get_lr(5, {"eval_score": 2.0}) == 0.5  # improvement does not undo it
    assert s.get_lr(6, {"eval_score": 1.0}) == 0.5
    assert s.get_lr(7, {"eval_score": 1.0}) == 0.25


def test_plateau_on_a_loss_metric_minimises():
    s = unit("plateau", plateau_metric="value_loss", plateau_patience=1)
    for step, loss in enumerate([3.0, 2.0, 1.0], start=1):
        assert s.get_lr(step, {"value_loss": loss}) == 1.0
    assert s.get_lr(4, {"value_loss": 1.5}) == 0.5


def test_multi_phase():
    s = unit("multi_phase", warmup_steps=10, finetune_fraction=0.2, finetune_scale=0.1)
    assert [s.get_lr(t) for t in (0, 5, 10)] == pytest.approx([0.0, 0.5, 1.0])
    assert s.get_lr(45) == pytest.approx(0.5)  # cosine over [10, 80): halfway
    assert s.get_lr(79) == pytest.approx((1 + math.cos(math.pi * 69 / 70)) / 2)
    assert [s.get_lr(t) for t in (80, 99, 1000)] == pytest.approx([0.1, 0.1, 0.1])


def test_clamped_to_bounds():
    s = AdvancedLRScheduler(1e-4, "multi_phase", min_lr=5e-5, max_lr=1e-4, total_steps=100,
                            finetune_fraction=0.1, finetune_scale=0.1)
    assert s.get_lr(95) == 5e-5  # 1e-5 fine-tune rate clamped up to min_lr


def test_reduce_multiplies_a_persistent_scale():
    s = unit("cosine", min_lr=0.01)
    s.reduce(0.5)
    assert s.get_lr(0) == 0.5
    assert s.get_lr(50) == pytest.approx((0.01 + 0.99 * 0.5) * 0.5)
    s.restart(50)  # a restart keeps the reduction
    assert s.get_lr(50) == 0.5
    for _ in range(20):
        s.reduce(0.5)
    assert s.get_lr(0) == 0.01
    with pytest.raises(ValueError):
        s.reduce(0.0)
    with pytest.raises(ValueError):
        s.reduce(1.5)


def test_restart_begins_a_new_cycle():
    cos = unit("cosine")
    assert cos.restart(60) is True
    assert [cos.get_lr(t) for t in (60, 80, 100)] == pytest.approx([1.0, 0.5, 0.0])
    lin = unit("linear")
    lin.restart(60)
    assert lin.get_lr(80) == pytest.approx(0.5)
    sgdr = unit("cosine_with_restarts", min_lr=0.1, restart_period=10)
    sgdr.restart(13)
    assert [sgdr.get_lr(t) for t in (13, 18, 23)] == pytest.approx([1.0, 0.55, 1.0])
    multi = unit("multi_phase", warmup_steps=10, finetune_fraction=0.2)
    assert multi.restart(85) is False  # fine-tune phase has no decay
    assert multi.restart(50) is True
    assert [multi.get_lr(t) for t in (50, 65, 80)] == pytest.approx([1.0, 0.5, 0.1])
    assert unit("constant").restart(10) is False
    plateau = unit("plateau", plateau_patience=1)
    plateau.get_lr(1, {"eval_score": 1.0})
    plateau.get_lr(2, {"eval_score": 0.0})
    assert plateau.get_lr(2) == 0.5
    plateau.restart(3)
    assert plateau.get_lr(3) == 1.0


def test_restart_blocker_gates_on_cycle_progress():
    s = unit("cosine_with_restarts", restart_period=100, min_cycle_fraction=0.25)
    assert s.restart_blocker(10) == "only 10% of the current LR cycle has run (min_cycle_fraction 0.25)"
    assert s.restart_blocker(25) is None and s.restart_blocker(140) is None  # 40 into the second cycle
    assert s.restart_blocker(110) is not None
    s.restart(140)
    assert s.restart_blocker(150) is not None and s.restart_blocker(165) is None  # measured from the restart
    assert unit("constant").restart_blocker(50) == "a constant schedule has no cycle to restart"
    multi = unit("multi_phase", warmup_steps=10, finetune_fraction=0.2)
    assert multi.restart_blocker(85) == "the multi_phase fine-tune phase does not restart"
    assert multi.restart_blocker(20) is not None and multi.restart_blocker(40) is None  # cosine phase [10, 80)
    assert unit("plateau").restart_blocker(1) is None
    cos = unit("cosine", min_cycle_fraction=0.5)
    assert cos.restart_blocker(40) is not None and cos.restart_blocker(50) is None


def test_get_lr_is_idempotent_per_step():
    s = unit("plateau", plateau_patience=1)
    s.get_lr(1, {"eval_score": 1.0})
    first = s.get_lr(2, {"eval_score": 0.5})
    assert [s.get_lr(2, {"eval_score": 0.5}) for _ in range(3)] == [first] * 3 == [0.5] * 3


@pytest.mark.parametrize("kwargs, field", [
    ({"schedule_type": "exponential"}, "schedule_type"),
    ({"base_lr": 1e-3}, "base_lr"),  # above max_lr 1e-4
    ({"min_lr": 1e-4, "base_lr": 3e-5}, "min_lr"),
    ({"restart_period": 0}, "restart_period"),
    ({"period_mult": 0.5}, "period_mult"),
    ({"plateau_factor": 1.5}, "plateau_factor"),
    ({"schedule_type": "multi_phase", "total_steps": 100, "warmup_steps": 95}, "warmup_steps"),
])
def test_bad_config_names_the_field(kwargs, field):
    kwargs = {"base_lr": 3e-5, **kwargs}
    with pytest.raises(ConfigError, match=field):
        AdvancedLRScheduler(**kwargs)


def test_state_dict_round_trip_and_pickle():
    s = unit("plateau", plateau_patience=1)
    s.get_lr(1, {"eval_score": 1.0})
    s.get_lr(2, {"eval_score": 0.5})
    s.reduce(0.8)
    s.restart(5)
    state = json.loads(json.dumps(s.state_dict()))
    fresh = unit("plateau", plateau_patience=1)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == s.state_dict()
    assert fresh.get_lr(9) == s.get_lr(9) == 0.8
    clone = pickle.loads(pickle.dumps(s))
    assert clone.get_lr(9, {"eval_score": 0.1}) == s.get_lr(9, {"eval_score": 0.1})
    with pytest.raises(ValueError):
        fresh.load_state_dict({"bogus": 1})
