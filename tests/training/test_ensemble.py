"""Ensemble runs end to end: real SB3 members in long-lived spawned worker processes, a real sqlite MLflow store."""
import importlib
import json
from functools import partial
from pathlib import Path

import pytest

from convopt_mlflow.config import build_config
from convopt_mlflow.training.ensemble import FAULTS_ENV, member_config, train_ensemble_run
from convopt_mlflow.training.member_pool import KILLED_REASON, ParallelMembers
from convopt_mlflow.components.ensemble import EnsembleLearningFramework
from convopt_mlflow.training.setup import load_market, make_env

from .conftest import TINY_RUN


def _config(**overrides: str):
    values = {**TINY_RUN, "ensemble.workers": "2"}
    values.update({k.replace("__", "."): str(v) for k, v in overrides.items()})
    return build_config("ensemble", values)


def _children(tracked, parent_id: str) -> dict[str, object]:
    runs = tracked.client.search_runs([tracked.client.get_run(parent_id).info.experiment_id],
                                      f"tags.mlflow.parentRunId = '{parent_id}'")
    return {r.data.tags["convopt.member"]: r for r in runs}


def test_members_differ_by_their_plans():
    cfg = _config()
    plans = EnsembleLearningFramework(3, {"data_subsets": "disjoint"}, seed=5).initialize_models()
    member = member_config(cfg, plans[1])
    assert member.ensemble_size == 1 and member.run.seed == plans[1].seed and member.ppo.torch_threads == 1
    assert member.base_learning_rate == pytest.approx(cfg.base_learning_rate * plans[1].lr_factor)
    assert member.ensemble.train_blocks == (3, 4, 5)
    env = make_env(member, load_market(member)).unwrapped
    lo, hi = env.core.start_bounds
    starts = env._start_sampler(env._rng, 500)
    assert starts.min() >= lo + 3 * (hi - lo + 1) // 10 and starts.max() < lo + 6 * (hi - lo + 1) // 10


def test_a_direct_learner_ensemble_jitters_the_direct_lr():
    """The direct learner trains with direct.lr (not PPO's LR) and reads ppo.ent_coef as its entropy bonus:
    a member of a `regime` ensemble gets the plan's LR factor on direct.lr and the plan's entropy bonus."""
    cfg = build_config("regime", {**TINY_RUN, "ensemble_size": "3"})  # accepted: no longer refused
    plan = EnsembleLearningFramework(3, {}, seed=5).initialize_models()[2]
    member = member_config(cfg, plan)
    assert member.direct.enabled and member.ensemble_size == 1 and member.run.seed == plan.seed
    assert member.direct.lr == pytest.approx(cfg.direct.lr * plan.lr_factor)
    assert member.ppo.ent_coef == pytest.approx(plan.ent_coef)


def _plans(n: int):
    return EnsembleLearningFramework(n, {}, seed=1).initialize_models()


def _probe(monkeypatch, script: dict):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # spawned workers import the probe by name
    from _member_probe import probe_member

    return partial(probe_member, script)


def test_one_worker_runs_member_after_member_and_a_dead_one_is_replaced(monkeypatch):
    pool = ParallelMembers(1, initializer=None)
    outcomes = {o.index: o for o in pool(_probe(monkeypatch, {1: ("kill", 0), 3: ("raise", 0)}), _plans(5))}
    assert [outcomes[i].status for i in range(5)] == ["FINISHED", "KILLED", "FINISHED", "FAILED", "FINISHED"]
    assert outcomes[1].reason == KILLED_REASON and "probe fault" in outcomes[3].reason
    pid = {i: outcomes[i].payload["pid"] for i in (0, 2, 4)}
    assert pid[2] == pid[4] and str(pid[2]) in outcomes[3].reason  # a raise leaves its worker up for the next
    assert pid[0] != pid[2] and pool.processes_started == 2  # the killed worker (it ran 0 and 1) was replaced


def test_a_dead_worker_loses_only_its_own_member(monkeypatch):
    pool = ParallelMembers(2, initializer=None)
    script = {0: ("ok", 4.0), 1: ("kill", 0.5)}
    outcomes = {o.index: o for o in pool(_probe(monkeypatch, script), _plans(4))}
    assert outcomes[1].status == "KILLED"
    assert [outcomes[i].status for i in (0, 2, 3)] == ["FINISHED"] * 3  # 0 ran beside the dead worker
    assert pool.processes_started == 3
    assert len({outcomes[i].payload["pid"] for i in (0, 2, 3)}) == 2  # 2 and 3 shared the replacement


def test_a_market_kept_by_a_worker_trains_exactly_like_a_fresh_one(tracked, monkeypatch):
    from convopt_mlflow.config import apply_values
    from convopt_mlflow.training import ensemble, setup
    from convopt_mlflow.training.coordinator import train

    monkeypatch.setattr(importlib.import_module("convopt_mlflow.training.market"), "_SHARED", {})
    member = member_config(_config(run__total_timesteps=1024), _plans(3)[0])
    market, hit = ensemble.member_market(member, "")
    assert not hit
    again, hit = ensemble.member_market(member, market.bars.digest)
    assert hit and again is market
    # an unknown digest: the bars are read, and they are the kept market's (the key is what was read)
    assert ensemble.member_market(member, "another-digest")[0] is market
    assert not ensemble.member_market(apply_values(member, {"env.cost_bps": 3.0}), market.bars.digest)[1]
    first = train(member, preset="ensemble", market=market)
    second = train(member, preset="ensemble", market=market)  # the same arrays, a second run in one process
    fresh = train(member, preset="ensemble")
    assert first.status == second.status == fresh.status == "FINISHED"
    assert first.metrics == second.metrics == fresh.metrics


def test_ensemble_run_trains_members_as_child_runs_and_registers_the_ensemble(tracked):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # torch's default on a 2-core machine
    try:
        result = train_ensemble_run(_config(), preset="ensemble", checkpoint_root=tracked.checkpoint_root("ens"))
        # the parent evaluated the members with the configured threads (1), not torch's default
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert result.status == "FINISHED" and result.exit_code == 0, result.reason
    parent = tracked.client.get_run(result.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["convopt.role"] == "ensemble"
    children = _children(tracked, result.run_id)
    assert sorted(children) == ["0", "1", "2"]
    for child in children.values():
        assert child.info.status == "FINISHED" and child.data.tags["convopt.role"] == "ensemble-member"
        assert "backtest/test/sharpe" in child.data.metrics and child.data.tags["convopt.model_uri"]
    assert len({c.data.params["base_learning_rate"] for c in children.values()}) == 3  # jittered
    # the parent (the registered version's run) and every member record the same split boundaries
    bounds = {k: v for k, v in parent.data.params.items() if k.startswith("split.")}
    assert set(bounds) >= {f"split.{n}.{f}" for n in ("train", "val", "test", "holdout") for f in ("bars", "time")}
    assert all({k: c.data.params[k] for k in bounds} == bounds for c in children.values())
    metrics = parent.data.metrics
    for key in ("ensemble/val/disagreement_rate", "ensemble/val/mean_return_correlation", "ensemble/weight/member_2",
                "ensemble/val_score/weighted", "backtest/test/sharpe", "member/1/backtest/val/sharpe",
                "benchmark/test/buy_and_hold/sharpe", "benchmark/test/oracle/sharpe"):
        assert key in metrics, key
    decision = json.loads(Path(tracked.client.download_artifacts(result.run_id, "ensemble/decision.json",
                                                                 str(tracked.root))).read_text())
    assert decision["method"] == parent.data.tags["convopt.ensemble.method"]
    assert set(decision["val_scores"]) == {"mean_prob", "majority_vote", "weighted"}
    artifacts = {a.path for a in tracked.client.list_artifacts(result.run_id, "backtest")}
    assert artifacts == {"backtest/equity_val.html", "backtest/equity_test.html"}
    if result.no_edge:  # this seed and budget do find an edge; keep the other branch honest anyway
        assert parent.data.tags["convopt.no_edge"] == "true" and "convopt.registered_version" not in parent.data.tags
        return
    version = tracked.client.get_model_version("convopt-ensemble", parent.data.tags["convopt.registered_version"])
    assert version.run_id == result.run_id
    tags = version.tags
    assert tags["convopt.preset"] == "ensemble" and tags["convopt.data.digest"] == parent.data.tags["convopt.data.digest"]
    assert tags["convopt.config_hash"] == parent.data.tags["convopt.config_hash"] and tags["convopt.version"]
    assert float(tags["convopt.backtest.val.sharpe"]) > 0 and "backtest.test.sharpe" in json.loads(tags["convopt.backtest"])


def test_a_killed_member_is_reported_and_the_ensemble_is_built_from_the_rest(tracked, monkeypatch):
    monkeypatch.setenv(FAULTS_ENV, "1:kill")
    cfg = _config(run__total_timesteps=1024, ensemble__register="false")
    result = train_ensemble_run(cfg, preset="ensemble", checkpoint_root=tracked.checkpoint_root("kill"))
    assert result.status == "FINISHED", result.reason
    children = _children(tracked, result.run_id)
    assert children["1"].info.status == "KILLED"
    assert "worker process died" in children["1"].data.tags["convopt.failure_reason"]
    assert children["0"].info.status == children["2"].info.status == "FINISHED"
    parent = tracked.client.get_run(result.run_id)
    assert parent.data.tags["convopt.ensemble.members"] == "0,2"
    assert "member 1 KILLED" in parent.data.tags["convopt.ensemble.lost_members"]
    assert parent.data.metrics["ensemble/members_failed"] == 1 and "ensemble/weight/member_1" not in parent.data.metrics


def test_a_member_killed_in_a_reused_worker_ends_killed_and_the_others_finish(tracked, monkeypatch):
    monkeypatch.setenv(FAULTS_ENV, "2:kill")  # member 2 runs on whichever worker frees first
    cfg = _config(run__total_timesteps=1024, ensemble__register="false")
    result = train_ensemble_run(cfg, preset="ensemble", checkpoint_root=tracked.checkpoint_root("reuse"))
    assert result.status == "FINISHED", result.reason
    children = _children(tracked, result.run_id)
    assert children["2"].info.status == "KILLED"
    assert "worker process died" in children["2"].data.tags["convopt.failure_reason"]
    assert children["0"].info.status == children["1"].info.status == "FINISHED"
    pids = {k: c.data.tags["convopt.worker.pid"] for k, c in children.items()}
    assert pids["2"] in (pids["0"], pids["1"]) and pids["0"] != pids["1"]  # 3 members, 2 long-lived workers
    cache = {k: c.data.tags["convopt.worker.market_cache"] for k, c in children.items()}
    assert cache == {"0": "miss", "1": "miss", "2": "hit"}  # the worker kept the market by digest
    assert tracked.client.get_run(result.run_id).data.tags["convopt.ensemble.members"] == "0,1"


def test_too_few_members_end_the_ensemble_failed_with_the_reason(tracked, monkeypatch):
    monkeypatch.setenv(FAULTS_ENV, "0:raise,1:kill")
    cfg = _config(ensemble_size=2, ensemble__min_members=1)
    result = train_ensemble_run(cfg, preset="ensemble", checkpoint_root=tracked.checkpoint_root("fail"))
    assert result.status == "FAILED" and result.exit_code == 1
    assert "0 of 2 members finished (min_members=1)" in result.reason
    parent = tracked.client.get_run(result.run_id)
    assert parent.info.status == "FAILED"
    assert "member 0 FAILED: RuntimeError: injected member fault" in parent.data.tags["convopt.failure_reason"]
    children = _children(tracked, result.run_id)
    assert children["0"].info.status == "FAILED" and children["1"].info.status == "KILLED"


def test_convopt_train_dispatches_ensembles_and_bad_data_creates_no_run(mlflow_uri, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from convopt_mlflow.cli import main

    bad = tmp_path / "bars.csv"
    bad.write_text("timestamp,open,high,low,close\n2020-01-01,1,1,1,1\n")
    assert main(["train", "--preset", "ensemble", "--data", str(bad), "--quiet"]) == 2
    assert "convopt: error:" in capsys.readouterr().err
    client = MlflowClient(tracking_uri=mlflow_uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_the_parent_hands_its_members_over_before_it_imports_torch_or_sb3(tmp_path):
    """`convopt train --preset ensemble`: the parent reads the bars, starts the workers, builds the market
    and creates its runs without torch and SB3 (the workers import them meanwhile); it imports them at its
    first use, a member's outcome. The run still finishes with every member."""
    import os
    import subprocess
    import sys

    script = f"""
import sys
from convopt_mlflow.training import member_pool
seen = {{}}
call = member_pool.ParallelMembers.__call__
def spy(self, fn, plans):
    seen['heavy'] = [m for m in ('torch', 'stable_baselines3', 'gymnasium') if m in sys.modules]
    return call(self, fn, plans)
member_pool.ParallelMembers.__call__ = spy
from convopt_mlflow.cli import main
code = main(['train', '--preset', 'ensemble', '--quiet', '--set', {",".join(f"{k}={v}" for k, v in TINY_RUN.items())!r},
             '--set', 'ensemble.workers=2,ensemble.register=false'])
print('SEEN', seen.get('heavy'), code)
"""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
           "CONVOPT_CHECKPOINT_ROOT": str(tmp_path / "ckpt"), "CONVOPT_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("SEEN")[-1].split() == ["[]", "0"], (proc.stdout[-2000:], proc.stderr[-2000:])
