"""Ensemble workers off the critical path: started before the members are known, a worker
with nothing left to run exits while the others still train, and the parent's own work waits on
no member that it does not need."""
from __future__ import annotations

import multiprocessing
import time
from functools import partial
from pathlib import Path

import numpy as np

from convopt_mlflow.components.ensemble import EnsembleLearningFramework
from convopt_mlflow.training.member_pool import ParallelMembers, lead_slots


def _plans(n: int):
    return EnsembleLearningFramework(n, {}, seed=1).initialize_models()


def _probe(monkeypatch, script: dict):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # spawned workers import the probe by name
    from _member_probe import probe_member

    return partial(probe_member, script)


def _children(besides: set[int] = frozenset()) -> set[int]:
    """Pids of this process's live children, less ``besides`` (workers of an earlier test that
    were still exiting when this one began)."""
    return {p.pid for p in multiprocessing.active_children()} - set(besides)


def _children_gone(besides: set[int], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while _children(besides) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _children(besides)


def test_started_workers_run_the_members_and_none_is_spawned_twice(monkeypatch):
    member = _probe(monkeypatch, {})  # before the spawn: the workers import the probe by name
    earlier = _children()
    pool = ParallelMembers(2, initializer=None).start()
    started = _children(earlier)
    assert pool.processes_started == 2 and len(started) == 2  # before any member
    outcomes = pool(member, _plans(3))
    assert sorted(o.status for o in outcomes) == ["FINISHED"] * 3
    assert {o.payload["pid"] for o in outcomes} == started and pool.processes_started == 2
    assert _children_gone(earlier)


def test_started_workers_are_closed_when_the_members_never_run():
    earlier = _children()
    pool = ParallelMembers(2, initializer=None).start()
    assert len(_children(earlier)) == 2
    pool.close()
    assert _children_gone(earlier)


def test_started_workers_that_never_ran_a_member_are_not_waited_for_when_closed(monkeypatch):
    # bad input after the workers were started (convopt train starts them before it reads the data):
    # the command returns at once, not after the workers' imports
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from _member_probe import slow_start

    earlier = _children()
    pool = ParallelMembers(2, initializer=slow_start).start()
    assert len(_children(earlier)) == 2
    closed = time.monotonic()
    pool.close()
    assert _children_gone(earlier, timeout_s=10.0) and time.monotonic() - closed < 10.0


def test_a_worker_pays_the_first_members_imports_but_leaves_a_fresh_store_to_the_parent(monkeypatch, tmp_path):
    # a fresh sqlite store initialized by the parent and two workers at once would race: the
    # workers only import what its first contact needs
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from _member_probe import loaded_modules

    store = tmp_path / "fresh.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    names = ("mlflow.store.tracking.sqlalchemy_store", "mlflow.pyfunc", "convopt_mlflow.evaluation.dashboards")
    outcomes = ParallelMembers(2, lead_slots=1).start()(partial(loaded_modules, names), _plans(2))
    lead, other = sorted(outcomes, key=lambda o: o.index)  # the first slot takes the first member
    assert lead.payload["loaded"] == dict.fromkeys(names, True)
    assert other.payload["loaded"]["mlflow.store.tracking.sqlalchemy_store"] is False  # imports only
    assert not store.exists()


def test_only_the_slots_that_run_one_member_more_are_leads():
    assert [lead_slots(m, 2) for m in (1, 2, 3, 4, 5)] == [1, 0, 1, 0, 1]
    assert lead_slots(5, 3) == 2 and lead_slots(3, 3) == 0


def test_a_warm_up_that_fails_is_left_to_the_member_and_the_others_still_run(monkeypatch):
    from convopt_mlflow.tracking import warm
    from convopt_mlflow.training import member_pool, reporting

    ran = []

    def broken():
        raise RuntimeError("no plotly here")

    monkeypatch.setattr(warm, "warm_tracking_store", lambda: ran.append("store"))
    monkeypatch.setattr(warm, "warm_model_logging", broken)
    monkeypatch.setattr(reporting, "warm_figures", lambda: ran.append("figures"))
    member_pool.warm_first_member()  # does not raise: a raising initializer would kill every member
    assert ran == ["store", "figures"]


def test_the_parents_idle_work_runs_once_when_a_worker_is_free_for_good(monkeypatch):
    # 3 members on 2 workers: not while 0's worker took member 2 and 1 still ran, but once 1 arrived
    # and only 2 runs (a core free), after 1's own on_outcome; never again
    seen: list[tuple[str, int | None, float]] = []
    earlier = _children()
    pool = ParallelMembers(2, initializer=None, on_outcome=lambda o: seen.append(("outcome", o.index, time.monotonic())),
                           while_idle=lambda: seen.append(("idle", None, time.monotonic())))
    outcomes = pool(_probe(monkeypatch, {0: ("ok", 0.0), 1: ("ok", 1.0), 2: ("ok", 5.0)}), _plans(3))
    returned = time.monotonic()
    assert len(outcomes) == 3 and [(what, index) for what, index, _ in seen] == [
        ("outcome", 0), ("outcome", 1), ("idle", None), ("outcome", 2)]
    assert returned - seen[2][2] > 2.0  # while member 2 still ran
    assert _children_gone(earlier)


def test_a_worker_with_nothing_left_exits_while_the_last_member_trains(monkeypatch, tmp_path):
    # 3 members on 2 workers: 0 and 1 start together; 2 follows 0 on its worker (0 is quicker),
    # and 1's worker, with nothing left to run, exits while 2 still runs
    script = {"pids": str(tmp_path), 0: ("ok", 0.0), 1: ("ok", 1.0), 2: ("alive", 6.0)}
    earlier = _children()
    outcomes = {o.index: o for o in ParallelMembers(2, initializer=None)(_probe(monkeypatch, script), _plans(3))}
    assert all(o.status == "FINISHED" for o in outcomes.values())
    assert outcomes[2].payload["pid"] == outcomes[0].payload["pid"] != outcomes[1].payload["pid"]
    assert outcomes[2].payload["alive"] == []  # member 1's worker had exited before 2 ended
    assert _children_gone(earlier)


def test_each_outcome_is_handed_to_the_parent_while_the_others_still_train(monkeypatch):
    handed: dict[int, float] = {}
    earlier = _children()
    pool = ParallelMembers(2, initializer=None, on_outcome=lambda o: handed.setdefault(o.index, time.monotonic()))
    outcomes = pool(_probe(monkeypatch, {0: ("ok", 0.0), 1: ("ok", 0.3), 2: ("ok", 5.0)}), _plans(3))
    returned = time.monotonic()
    assert sorted(handed) == [0, 1, 2] and len(outcomes) == 3
    assert returned - handed[0] > 3.0 and returned - handed[1] > 3.0  # while member 2 still ran
    assert _children_gone(earlier)


def test_an_ensemble_report_from_tables_made_early_equals_one_made_at_the_end():
    from convopt_mlflow.config import build_config
    from convopt_mlflow.training.ensemble_eval import ensemble_report, member_tables, split_benchmarks
    from convopt_mlflow.training.setup import load_market, make_env, make_model

    from .conftest import TINY_RUN

    cfg = build_config("ensemble", dict(TINY_RUN))
    market = load_market(cfg)
    policies = []
    for seed in (1, 2):
        torch_seed = __import__("torch").manual_seed(seed)  # noqa: F841 - two different random policies
        policies.append(make_model(cfg, make_env(cfg, market)).policy)
    framework = EnsembleLearningFramework(2, {}, seed=1)
    late = ensemble_report(framework, policies, [0, 1], market, cost_bps=cfg.env.cost_bps, long_only=False)
    early = ensemble_report(framework, policies, [0, 1], market, cost_bps=cfg.env.cost_bps, long_only=False,
                            computed=[member_tables(policies[0], market), None],  # one early, one at the end
                            benchmarks=split_benchmarks(market, cost_bps=cfg.env.cost_bps, long_only=False))
    assert early.metrics == late.metrics and early.decision.method == late.decision.method
    for split in late.curves:  # the equity figures: same curves, same order
        assert list(early.curves[split]) == list(late.curves[split])
        assert all(np.array_equal(early.curves[split][k], late.curves[split][k]) for k in late.curves[split])
