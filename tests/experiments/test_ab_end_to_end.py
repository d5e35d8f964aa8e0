"""`convopt ab-test` end to end with outcomes known in advance.

- **Planted winner.** On a synthetic market with a strong planted signal (IC 0.3, 12,000 bars so
  the test split, on which A/B verdicts are decided, is long enough for a stable Sharpe),
  ``baseline`` at SB3's learning rate learns the signal within 3,072 steps (test Sharpe 14.8-16.1
  on seeds 0-2, measured), while the baseline arm, ``baseline`` at a learning rate of 1e-7 and one
  epoch, stays at its initial policy (test Sharpe -3.7 to +0.8). Three paired seeds give a mean
  difference of 16.4 (p = 0.012 < 0.05): the winner is registered as ``challenger`` with its
  evidence.
- **Underpowered.** The same arms with two seeds at alpha = 0.001: a paired t with one degree of
  freedom would need t > 636, so nothing is significant, nothing is registered, and the report
  states the minimum detectable effect.
- **Sequential.** Two arms with the same config (an A/A test) and four seeds: the paired
  differences are exactly 0, so the first look (two seeds) stops for futility and half the
  planned trials are never trained: ``ab/compute_saved`` is 0.5.
"""
import json
from pathlib import Path

from mlflow.tracking import MlflowClient

from convopt_mlflow import cli
from convopt_mlflow.components.combine import METHODS

from .conftest import DATA, TINY

PLANTED = "synthetic:n_bars=12000,seed=1,signal_ic=0.3"
LEARN = ("env.n_envs=4,ppo.n_steps=64,ppo.batch_size=64,ppo.n_epochs=4,ppo.net_arch=16,env.window=8,"
         "env.episode_length=64,run.eval_freq=1024,run.checkpoint_freq=4096,run.progress_bar=false,monitoring_window=4")
FROZEN = "baseline:base_learning_rate=1e-7,max_learning_rate=1e-7,ppo.n_epochs=1"
ARMS = f"{FROZEN},baseline"


def _ab(tmp_path, study, arms, seeds, *extra):
    return cli.main(["ab-test", "--arms", arms, "--seeds", str(seeds), "--study", study,
                     "--storage", f"sqlite:///{tmp_path}/optuna.db", *extra])


def _parent_and_children(client, study):
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], f"tags.`convopt.study` = '{study}'")
    (parent,) = [r for r in runs if r.data.tags.get("convopt.role") == "ab-parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


def _report(client, parent, tmp_path):
    path = client.download_artifacts(parent.info.run_id, "ab/report.json", str(tmp_path))
    return json.loads(Path(path).read_text())


def test_a_planted_winner_is_registered_as_challenger_with_its_evidence(tmp_path, mlflow_uri, capsys):
    code = _ab(tmp_path, "planted", ARMS, 3, "--total-timesteps", "3072", "--data", PLANTED, "--set", LEARN)
    err = capsys.readouterr().err
    assert code == 0, err
    client = MlflowClient()
    parent, children = _parent_and_children(client, "planted")
    report = _report(client, parent, tmp_path)
    assert parent.info.status == "FINISHED" and {c.info.status for c in children} == {"FINISHED"}
    assert report["winner"] == "baseline" and "beats" in report["verdict"], report["verdict"]
    (comparison,) = report["comparisons"]
    assert comparison["significant"] and comparison["p_adjusted"] < 0.05 and comparison["mean_difference"] > 5
    assert parent.data.metrics["ab/significant"] == 1.0 and parent.data.tags["convopt.ab.winner"] == "baseline"

    version = client.get_model_version_by_alias("convopt-ensemble", "challenger")
    assert str(version.version) == "1" == parent.data.tags["convopt.registered_version"]
    assert version.run_id == parent.info.run_id
    tags = version.tags
    winners = {c.data.tags["convopt.seed"]: c.info.run_id for c in children if c.data.tags["convopt.arm"] == "baseline"}
    assert tags["convopt.source_runs"] == ",".join(winners[s] for s in ("0", "1", "2"))
    assert tags["convopt.arm"] == "baseline" and tags["convopt.study"] == "planted"
    assert tags["convopt.evidence.baseline"] == FROZEN and tags["convopt.evidence.n"] == "3"
    assert tags["convopt.evidence.test"].startswith("paired_t")
    assert float(tags["convopt.evidence.p_adjusted"]) == comparison["p_adjusted"] or \
        abs(float(tags["convopt.evidence.p_adjusted"]) - comparison["p_adjusted"]) < 1e-6
    assert float(tags["convopt.evidence.ci_low"]) > 0 and float(tags["convopt.evidence.hedges_g"]) > 0
    assert tags["convopt.evidence.dsr"] != ""  # deflated for the 2 arms tried
    assert tags["convopt.data.source"] == PLANTED and tags["convopt.ab_parent_run"] == parent.info.run_id
    assert tags["convopt.ensemble.combination"] in METHODS and tags["convopt.ensemble.size"] == "3"
    chosen = json.loads(Path(client.download_artifacts(parent.info.run_id, "ab/winner_ensemble.json",
                                                       str(tmp_path))).read_text())
    assert chosen["method"] == tags["convopt.ensemble.combination"]
    assert parent.data.metrics["winner/backtest/val/sharpe"] > 0
    assert "registered convopt-ensemble version 1 as 'challenger'" in err


def test_an_underpowered_study_registers_nothing_and_states_the_mde(tmp_path, mlflow_uri, capsys):
    code = _ab(tmp_path, "weak", ARMS, 2, "--alpha", "0.001", "--total-timesteps", "3072", "--data", PLANTED,
               "--set", LEARN)
    err = capsys.readouterr().err
    assert code == 0, err
    client = MlflowClient()
    parent, children = _parent_and_children(client, "weak")
    report = _report(client, parent, tmp_path)
    assert len(children) == 4 and report["winner"] is None
    assert report["comparisons"][0]["mean_difference"] > 0  # a real difference, too few seeds to call it
    assert "detects, with 80% power, a standardized effect of d_z" in report["verdict"]
    assert report["mde"]["n_pairs"] == 2 and parent.data.metrics["ab/mde"] == report["mde"]["standardized"]
    assert parent.data.metrics["ab/significant"] == 0.0
    skipped = parent.data.tags["convopt.registration_skipped"]
    assert skipped.startswith("no significant winner") and "d_z" in skipped
    assert "convopt.registered_version" not in parent.data.tags
    assert not client.search_registered_models()
    assert "nothing registered" in err


def test_a_sequential_a_a_study_stops_at_the_first_look_and_reports_the_compute_saved(tmp_path, mlflow_uri, capsys):
    code = _ab(tmp_path, "seq", "baseline,baseline:ppo.ent_coef=0.0", 4, "--sequential", "--total-timesteps", "1024",
               "--data", DATA, "--set", TINY)
    err = capsys.readouterr().err
    assert code == 0, err
    client = MlflowClient()
    parent, children = _parent_and_children(client, "seq")
    report = _report(client, parent, tmp_path)
    seq = report["sequential"]
    assert seq["looks"] == [2, 4] and seq["trials_planned"] == 8 and seq["trials_run"] == 4
    assert [r["decisions"] for r in seq["rounds"]] == [{"baseline:ppo.ent_coef=0.0": "accept"}]
    assert seq["compute_saved"] == 0.5 and parent.data.metrics["ab/compute_saved"] == 0.5
    assert sorted(c.data.tags["convopt.seed"] for c in children) == ["0", "0", "1", "1"]
    assert report["cells"] == {"planned": 8, "complete": 4} and report["winner"] is None
    md = Path(client.download_artifacts(parent.info.run_id, "ab/report.md", str(tmp_path))).read_text()
    assert "## Sequential design" in md
    html = Path(client.download_artifacts(parent.info.run_id, "ab/report.html", str(tmp_path))).read_text()
    assert "Sequential design" in html
    assert not client.search_registered_models()
