"""Ensemble workers off the critical path: started before the members are known, and a worker
with nothing left to run exits while the others still train."""
from __future__ import annotations

import multiprocessing
import time
from functools import partial
from pathlib import Path

from convopt_mlflow.components.ensemble import EnsembleLearningFramework
from convopt_mlflow.training.member_pool import ParallelMembers


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
    from convopt_mlflow.training.ensemble_eval import ensemble_report, member_tables
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
                            computed=[member_tables(policies[0], market), None])  # one early, one at the end
    assert early.metrics == late.metrics and early.decision.method == late.decision.method
