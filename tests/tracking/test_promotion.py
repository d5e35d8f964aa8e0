"""The A/B winner registered as `challenger`, and `convopt promote` on a real sqlite registry.

Three real tiny PPO runs on a synthetic market with a strong planted signal: two that
learn it (far above buy-and-hold on test) and one that cannot learn (learning rate 1e-7).
"""
import os
import socket
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from convopt_mlflow import cli
from convopt_mlflow.config import build_config
from convopt_mlflow.experiments.registration import register_winner
from convopt_mlflow.experiments.report import Winner
from convopt_mlflow.tracking import load_model, open_run
from convopt_mlflow.tracking import promotion, registration
from convopt_mlflow.tracking.locks import HOLDER_TAG, this_holder
from convopt_mlflow.tracking.registration import register_ensemble
from convopt_mlflow.tracking.registry import register_verified_model
from convopt_mlflow.training.coordinator import train

# seed 2: on seed 1's 286-bar holdout these tiny models beat buy-and-hold by z = 0.48 only (3.7 on its test)
DATA = "synthetic:n_bars=3000,seed=2,signal_ic=0.3"
TINY = {"env.n_envs": "4", "ppo.n_steps": "64", "ppo.batch_size": "64", "ppo.n_epochs": "4", "ppo.net_arch": "16",
        "env.window": "8", "env.episode_length": "64", "run.eval_freq": "1024", "run.checkpoint_freq": "4096",
        "run.progress_bar": "false", "monitoring_window": "4", "run.total_timesteps": "3072", "data.source": DATA}
NAME = "convopt-ensemble"


@pytest.fixture(scope="module")
def models(module_mlflow):
    """``{"good0", "good1", "weak"}`` -> FINISHED training run id."""
    _, root = module_mlflow
    runs = {}
    for key, seed, extra in (("good0", 0, {}), ("good1", 1, {}),
                             ("weak", 0, {"base_learning_rate": "1e-7", "max_learning_rate": "1e-7",
                                          "ppo.n_epochs": "1"})):
        cfg = build_config("baseline", {**TINY, **extra, "run.seed": str(seed)})
        result = train(cfg, preset="baseline", checkpoint_root=str(root / "ckpt"))
        assert result.status == "FINISHED"
        runs[key] = result.run_id
    return runs


def _promotion_runs(client, name=NAME):
    return client.search_runs([e.experiment_id for e in client.search_experiments()], f"tags.`convopt.role` = 'promotion' and tags.`convopt.registered_model` = '{name}'",
                              order_by=["attributes.start_time ASC"])


def _winner(run_ids, registrable=True):
    evidence = {"test": "paired_t (Holm over 1)", "baseline": "baseline", "metric": "backtest/val/sharpe",
                "p_value": 0.004, "p_adjusted": 0.004, "hedges_g": 3.1, "mean_difference": 5.0, "ci_low": 2.0,
                "ci_high": 8.0, "n": len(run_ids), "dsr": 0.97, "no_edge_runs": [] if registrable else [run_ids[0]]}
    return Winner("lr:ppo.n_epochs=4", tuple(run_ids), tuple(range(len(run_ids))), evidence, registrable)


def test_winner_is_registered_as_challenger_with_its_evidence(models):
    client = MlflowClient()
    parent = open_run(experiment=None, run_id=None, tags={"convopt.role": "ab-parent"})
    registration = register_winner(_winner([models["good0"], models["good1"]]), parent_run_id=parent.run_id,
                                   study="planted", verdict="lr beats baseline", registry_name=NAME)
    parent.set_tags(registration.run_tags())
    parent.end("FINISHED")
    assert registration.version == "1"
    version = client.get_model_version_by_alias(NAME, "challenger")
    assert str(version.version) == "1" and version.run_id == parent.run_id
    tags = version.tags
    assert tags["convopt.arm"] == "lr:ppo.n_epochs=4" and tags["convopt.study"] == "planted"
    assert tags["convopt.evidence.p_adjusted"] == "0.004" and tags["convopt.evidence.hedges_g"] == "3.1"
    assert tags["convopt.evidence.ci_low"] == "2" and tags["convopt.evidence.n"] == "2"
    assert tags["convopt.evidence.dsr"] == "0.97" and tags["convopt.evidence.test"].startswith("paired_t")
    assert tags["convopt.data.source"] == DATA
    assert tags["convopt.data.digest"] == client.get_run(models["good0"]).data.tags["convopt.data.digest"]
    assert "convopt.version" in tags and "convopt.model_files_sha256" in tags
    assert tags["convopt.no_edge"] == "false"  # from the source runs, for `promote` to read
    assert tags["convopt.source_runs"] == f"{models['good0']},{models['good1']}"
    assert client.get_run(parent.run_id).data.tags["convopt.registered_version"] == "1"
    model = load_model(f"models:/{NAME}@challenger")  # verified against the version's hashes
    assert len(model.unwrap_python_model().policies) == 2
    # the combination is chosen on validation, as `convopt train` ensembles choose it
    chosen = registration.decision
    assert model.unwrap_python_model().combination == {"method": chosen["method"], "weights": chosen["weights"]}
    assert tags["convopt.ensemble.combination"] == chosen["method"] and tags["convopt.ensemble.size"] == "2"
    assert set(chosen["val_scores"]) == {"mean_prob", "majority_vote", "weighted"}
    assert chosen["val_scores"][chosen["method"]] == max(chosen["val_scores"].values())
    assert registration.metrics["winner/backtest/val/sharpe"] == pytest.approx(chosen["val_scores"][chosen["method"]])
    assert float(tags["convopt.backtest.val.sharpe"]) > 0 and "convopt.backtest.test.sharpe" in tags
    assert {"winner/member/0/backtest/test/sharpe", "winner/member/1/backtest/test/sharpe",
            "winner/benchmark/test/buy_and_hold/sharpe"} <= set(registration.metrics)


def test_a_no_edge_winner_is_never_registered(models):
    registration = register_winner(_winner([models["weak"]], registrable=False), parent_run_id="unused",
                                   study="planted", verdict="", registry_name="never")
    assert registration.version is None and "convopt.no_edge" in registration.skipped
    assert registration.run_tags() == {"convopt.registration_skipped": registration.skipped}
    assert not MlflowClient().search_registered_models("name = 'never'")


def test_first_champion_then_a_refused_weaker_challenger(models, capsys):
    client = MlflowClient()
    assert cli.main(["promote", "--registry-name", NAME]) == 0
    err = capsys.readouterr().err
    assert "convopt: promoted" in err and "no champion" in err
    # one Sharpe unit, named: annualized, as in training and A/B output; never per bar
    assert "Sharpe (annualized) difference" in err and "per bar" not in err
    assert "first champion: Sharpe (annualized) " in err
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    tags = client.get_model_version(NAME, "1").tags
    assert tags["convopt.promotion.decision"] == "promoted" and tags["convopt.promotion.compared_to"] == "buy_and_hold"
    assert float(tags["convopt.promotion.p_value"]) < 0.05 and float(tags["convopt.promotion.sharpe_difference"]) > 0
    assert tags["convopt.promotion.previous_champion"] == "none" and "convopt.promotion.z" in tags
    assert tags["convopt.promotion.sharpe_unit"] == "annualized" and float(tags["convopt.promotion.periods_per_year"]) > 1
    (first,) = _promotion_runs(client)  # the attempt is a run too, with the same evidence
    assert first.info.status == "FINISHED" and first.data.tags["convopt.promotion.decision"] == "promoted"
    assert tags["convopt.promotion.run_id"] == first.info.run_id and first.info.run_id in err
    assert first.data.tags["convopt.promotion.p_value"] == tags["convopt.promotion.p_value"]
    assert first.data.params["challenger"] == "1" and first.data.params["champion"] == "none"
    assert first.data.metrics["promotion/promote"] == 1.0
    assert first.data.metrics["promotion/p_value"] == pytest.approx(float(tags["convopt.promotion.p_value"]), rel=1e-5)
    # judged on the holdout by default: the reserved tail recorded on the source runs, never used by an A/B
    holdout = client.get_run(models["good0"]).data.params["split.holdout.bars"]
    assert tags["convopt.promotion.split"] == "holdout" and tags["convopt.promotion.bars"] == holdout
    assert int(holdout.split(":")[1]) == 3000 and tags["convopt.promotion.bars_reused"] == "false"
    assert int(tags["convopt.promotion.n_bars"]) == int(holdout.split(":")[1]) - int(holdout.split(":")[0]) - 1
    assert first.data.params["split"] == "holdout" and first.data.tags["convopt.promotion.bars_reused"] == "false"
    assert "on the holdout split of" in err

    parent = open_run(experiment=None, run_id=None, tags={"convopt.role": "ab-parent"})
    register_ensemble(parent.run_id, [f"runs:/{models['good1']}/model"], name=NAME, combination=None,
                      tags={"convopt.source_runs": models["good1"]}, alias="challenger")
    parent.end("FINISHED")
    assert cli.main(["promote", "--registry-name", NAME]) == 0
    err = capsys.readouterr().err
    assert "not promoted, champion unchanged (version 1)" in err
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    tags = client.get_model_version(NAME, "2").tags
    assert tags["convopt.promotion.decision"] == "refuse" and tags["convopt.promotion.compared_to"] == "version 1"
    assert "not a significant improvement" in tags["convopt.promotion.reason"]
    refused = [r for r in _promotion_runs(client) if r.info.run_id != first.info.run_id]
    assert [(r.info.status, r.data.tags["convopt.promotion.decision"]) for r in refused] == [("FINISHED", "refuse")]
    assert refused[0].data.tags["convopt.promotion.reason"] == tags["convopt.promotion.reason"]
    assert refused[0].data.metrics["promotion/promote"] == 0.0 and refused[0].data.params["champion"] == "1"


@pytest.mark.parametrize("argv, needle", [
    (["--registry-name", "no-such-model"], "no registered model 'no-such-model'"),
    (["--registry-name", NAME, "--challenger", "staging"], "has no alias 'staging'"),
    (["--registry-name", NAME, "--challenger", "99"], "has no version 99"),
])
def test_missing_model_or_alias_exits_2(models, capsys, argv, needle):
    before = len(_promotion_runs(MlflowClient()))
    assert cli.main(["promote", *argv]) == 2
    assert needle in capsys.readouterr().err
    assert len(_promotion_runs(MlflowClient())) == before  # bad input: no run


def test_of_two_concurrent_promotions_exactly_one_moves_the_champion(models, module_mlflow, tmp_path):
    uri, root = module_mlflow
    for key in ("good0", "good1"):
        register_ensemble(models[key], [f"runs:/{models[key]}/model"], name="race", combination=None,
                          tags={"convopt.source_runs": models[key]}, alias=None)
    barrier = tmp_path / "go"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "CONVOPT_PROMOTE_BARRIER": str(barrier)}
    procs = {v: subprocess.Popen([sys.executable, "-m", "convopt_mlflow.cli", "promote", "--registry-name", "race",
                                  "--challenger", v], env=env, cwd=root, stderr=subprocess.PIPE, text=True)
             for v in ("1", "2")}
    deadline = time.monotonic() + 240
    while len(list(tmp_path.glob("go.ready.*"))) < 2:  # both compared and wait before the final re-read
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs.values()), \
            {v: p.stderr.read() if p.poll() is not None else "" for v, p in procs.items()}
        time.sleep(0.1)
    barrier.touch()
    results = {v: (p.wait(timeout=120), p.stderr.read()) for v, p in procs.items()}
    codes = sorted(code for code, _ in results.values())
    assert codes == [0, 1], results
    (winner,) = [v for v, (code, _) in results.items() if code == 0]
    (loser,) = [v for v, (code, _) in results.items() if code == 1]
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("race", "champion").version) == winner
    message = results[loser][1]
    assert f"race@champion changed while this promotion compared: version none -> version {winner}" in message
    assert "Traceback" not in message
    assert client.get_model_version("race", loser).tags["convopt.promotion.decision"] == "refused"
    runs = {r.data.tags["convopt.promotion.challenger"]: r for r in _promotion_runs(client, "race")}
    assert runs[winner].info.status == "FINISHED" and runs[winner].data.tags["convopt.promotion.decision"] == "promoted"
    assert runs[loser].info.status == "FAILED" and runs[loser].data.tags["convopt.promotion.decision"] == "refused"
    assert "changed while this promotion compared" in runs[loser].data.tags["convopt.promotion.refusal"]
    assert not client.search_registered_models("name = 'race.promotion-lock'")


def _dead_holder() -> str:
    """``host:pid`` of a process of this host that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}"


def _plant_lock(client, name: str, holder: str) -> None:
    client.create_registered_model(f"{name}.promotion-lock", tags={HOLDER_TAG: holder})


def test_a_no_edge_challenger_is_refused_from_its_tag_or_its_source_runs(models, capsys):
    client = MlflowClient()
    assert client.get_run(models["weak"]).data.tags["convopt.no_edge"] == "true"
    version = register_ensemble(models["weak"], [f"runs:/{models['weak']}/model"], name="noedge", combination=None,
                                tags={}, alias="challenger")
    assert version.tags["convopt.no_edge"] == "true"  # copied from the source run onto the version
    plain = register_verified_model(f"runs:/{models['weak']}/model", "noedge-plain")
    assert plain.tags["convopt.no_edge"] == "true"  # any registration writes it
    # a version registered without the tag (older code): promote reads the source runs
    client.delete_model_version_tag("noedge-plain", plain.version, "convopt.no_edge")
    assert "convopt.no_edge" not in client.get_model_version("noedge-plain", plain.version).tags
    for argv in (["--registry-name", "noedge"], ["--registry-name", "noedge-plain", "--challenger", "1"]):
        assert cli.main(["promote", *argv]) == 2
        err = capsys.readouterr().err
        assert "found no edge over flat (convopt.no_edge); it is never promoted" in err and "Traceback" not in err
    assert not _promotion_runs(client, "noedge") and not _promotion_runs(client, "noedge-plain")
    assert not client.get_registered_model("noedge").aliases.get("champion")


def test_a_rerun_study_reuses_its_version_and_leaves_a_newer_challenger(models):
    client = MlflowClient()
    parent = open_run(experiment=None, run_id=None, tags={"convopt.role": "ab-parent"})
    winner = _winner([models["good0"]])
    first = register_winner(winner, parent_run_id=parent.run_id, study="again", verdict="", registry_name="rerun")
    assert (first.version, first.reused) == ("1", False)
    register_ensemble(models["good1"], [f"runs:/{models['good1']}/model"], name="rerun", combination=None,
                      tags={}, alias="challenger")  # a newer study's winner
    again = register_winner(winner, parent_run_id=parent.run_id, study="again", verdict="", registry_name="rerun")
    parent.end("FINISHED")
    assert (again.version, again.reused) == ("1", True)
    assert again.run_tags() == {"convopt.registered_version": "1", "convopt.registration_reused": "true"}
    assert sorted(int(v.version) for v in client.search_model_versions("name = 'rerun'")) == [1, 2]
    assert str(client.get_model_version_by_alias("rerun", "challenger").version) == "2"


def test_challenger_moves_only_under_the_lock_and_takes_over_a_dead_holders(models, monkeypatch):
    client = MlflowClient()
    monkeypatch.setattr(registration, "LOCK_WAIT_S", 0.5)
    source = [f"runs:/{models['good0']}/model"]
    _plant_lock(client, "held", this_holder())  # a live holder (this process) is mid-move
    first = register_ensemble(models["good0"], source, name="held", combination=None, tags={}, alias="challenger")
    assert "challenger" not in client.get_registered_model("held").aliases
    refusal = first.tags["convopt.registration.alias_refused"]
    assert "'held.promotion-lock' is held by" in refusal and this_holder() in refusal
    client.delete_registered_model("held.promotion-lock")

    dead = _dead_holder()
    _plant_lock(client, "held", dead)
    second = register_ensemble(models["good0"], source, name="held", combination=None, tags={}, alias="challenger")
    assert str(client.get_model_version_by_alias("held", "challenger").version) == str(second.version) == "2"
    assert second.tags["convopt.registration.lock_takeover"] == dead
    assert not client.search_registered_models("name = 'held.promotion-lock'")


def test_a_dead_holders_promotion_lock_is_taken_over_and_recorded(models, capsys):
    client = MlflowClient()
    register_ensemble(models["good0"], [f"runs:/{models['good0']}/model"], name="stale", combination=None,
                      tags={}, alias=None)
    dead = _dead_holder()
    _plant_lock(client, "stale", dead)
    assert cli.main(["promote", "--registry-name", "stale", "--challenger", "1"]) == 0
    assert "promoted" in capsys.readouterr().err
    assert str(client.get_model_version_by_alias("stale", "champion").version) == "1"
    record = client.get_model_version("stale", "1").tags["convopt.promotion.lock_takeover"]
    assert record == f"took over 'stale.promotion-lock' from {dead}, a dead process on this host"
    (run,) = _promotion_runs(client, "stale")
    assert run.data.tags["convopt.promotion.lock_takeover"] == record
    assert not client.search_registered_models("name = 'stale.promotion-lock'")


def test_a_lock_held_on_another_host_is_not_taken_over(models, capsys, monkeypatch):
    client = MlflowClient()
    monkeypatch.setattr(promotion, "_CONFLICT_WAIT_S", 0.5)
    register_ensemble(models["good0"], [f"runs:/{models['good0']}/model"], name="remote", combination=None,
                      tags={}, alias=None)
    _plant_lock(client, "remote", "elsewhere.example:4242")
    assert cli.main(["promote", "--registry-name", "remote", "--challenger", "1"]) == 1
    err = capsys.readouterr().err
    assert "held by elsewhere.example:4242 on another host" in err and "never taken over automatically" in err
    assert "champion" not in client.get_registered_model("remote").aliases
    assert client.get_registered_model("remote.promotion-lock").tags[HOLDER_TAG] == "elsewhere.example:4242"


def _register(models, name, key, *, alias="challenger", source_runs=None):
    """Register ``models[key]`` under ``name`` on a fresh parent run (as an A/B does); its version number."""
    parent = open_run(experiment=None, run_id=None, tags={"convopt.role": "ab-parent"})
    version = register_ensemble(parent.run_id, [f"runs:/{models[key]}/model"], name=name, combination=None,
                                tags={"convopt.source_runs": source_runs or models[key]}, alias=alias)
    parent.end("FINISHED")
    return str(version.version)


def test_promotion_on_the_test_split_records_that_an_ab_verdict_used_those_bars(models, capsys):
    client = MlflowClient()
    _register(models, "reuse", "good1")
    assert cli.main(["promote", "--registry-name", "reuse", "--split", "test"]) == 0
    err = capsys.readouterr().err
    assert "already used by an A/B verdict" in err and "on the test split of" in err
    tags = client.get_model_version("reuse", "1").tags
    assert tags["convopt.promotion.split"] == "test" and tags["convopt.promotion.bars_reused"] == "true"
    assert tags["convopt.promotion.bars"] == client.get_run(models["good1"]).data.params["split.test.bars"]
    assert models["good1"] in tags["convopt.promotion.bars_reused_by"]
    (run,) = _promotion_runs(client, "reuse")
    assert run.data.tags["convopt.promotion.bars_reused"] == "true" and run.data.params["split"] == "test"


def test_promotion_refuses_bars_either_model_trained_or_was_selected_on(models, capsys):
    client = MlflowClient()
    _register(models, "guarded", "good0")
    # the same market's first 1500 bars: its holdout lies inside the bars good0 trained on (compared by time,
    # because the digest differs)
    assert cli.main(["promote", "--registry-name", "guarded", "--data",
                     "synthetic:n_bars=1500,seed=2,signal_ic=0.3"]) == 2
    err = capsys.readouterr().err
    assert "refusing to promote on the holdout split" in err and "train split" in err and models["good0"] in err
    assert "Traceback" not in err
    # a champion whose source run recorded no boundaries: its training bars are unknown, so refused too
    bare = open_run(experiment=None, run_id=None, tags={"convopt.role": "train"})
    bare.end("FINISHED")
    old = _register(models, "guarded", "good1", alias="champion", source_runs=bare.run_id)
    assert cli.main(["promote", "--registry-name", "guarded", "--challenger", "1"]) == 2
    err = capsys.readouterr().err
    assert f"champion version {old}" in err and "recorded no split boundaries" in err
    assert cli.main(["promote", "--registry-name", "guarded", "--split", "val"]) == 2
    assert "--split must be one of holdout, test" in capsys.readouterr().err
    assert not _promotion_runs(client, "guarded")  # refused before any run, champion untouched
    assert str(client.get_model_version_by_alias("guarded", "champion").version) == old
    assert "convopt.promotion.decision" not in client.get_model_version("guarded", "1").tags
