"""`convopt ab-test` end to end with outcomes known in advance.

- **Planted winner.** On a synthetic market with a strong planted signal (IC 0.3, 12,000 bars so
  the test split, on which A/B verdicts are decided, is long enough for a stable Sharpe),
  ``baseline`` at SB3's learning rate learns the signal within 3,072 steps (test Sharpe 14.8-16.1
  on seeds 0-2, measured), while the baseline arm, ``baseline`` at a learning rate of 1e-7 and one
  epoch, stays at its initial policy (test Sharpe -3.7 to +0.8). Three paired seeds give a mean
  difference of 16.4 (p = 0.012 < 0.05): the winner is registered as ``challenger`` with its
  evidence. Re-running the finished study
  registers nothing again and leaves a newer ``challenger`` in place.
- **Underpowered.** The same arms with two seeds at alpha = 0.001: a paired t with one degree of
  freedom would need t > 636, so nothing is significant, nothing is registered, and the report
  states the minimum detectable effect.
- **Sequential.** Two arms with the same config (an A/A test) and four seeds: the paired
  differences are exactly 0, so the first look (three seeds, the smallest first look allowed)
  stops for futility and a quarter of the planned trials are never trained:
  ``ab/compute_saved`` is 0.25.
- **Identical arms.** ``baseline`` against ``baseline`` with a no-op override, four seeds:
  nothing is registered.
- **A failing arm.** The planted winner, with a divergence injected into its seed 3 (both
  tries): it still beats the baseline on the three seeds it completed, but under the default
  ``--on-failure refuse`` it is not registered, and the verdict names the failed cell.
"""
import json
from pathlib import Path

from mlflow.tracking import MlflowClient
from stable_baselines3.common.callbacks import BaseCallback

from convopt_mlflow import cli
from convopt_mlflow.components.combine import METHODS
from convopt_mlflow.training import coordinator
from convopt_mlflow.training.interventions import TrainingDiverged

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
    assert tags["convopt.no_edge"] == "false"

    # A newer challenger arrives; re-running the finished study registers nothing and leaves it there.
    newer = client.create_model_version("convopt-ensemble", version.source, version.run_id, tags=dict(tags))
    client.set_registered_model_alias("convopt-ensemble", "challenger", newer.version)
    assert _ab(tmp_path, "planted", ARMS, 3, "--total-timesteps", "3072", "--data", PLANTED, "--set", LEARN) == 0
    err = capsys.readouterr().err
    assert "study planted registered convopt-ensemble version 1 before; nothing registered again" in err
    assert sorted(int(v.version) for v in client.search_model_versions("name = 'convopt-ensemble'")) == [1, 2]
    assert str(client.get_model_version_by_alias("convopt-ensemble", "challenger").version) == "2"
    rerun, _ = _parent_and_children(client, "planted")
    assert rerun.info.run_id == parent.info.run_id and rerun.data.tags["convopt.registration_reused"] == "true"
    assert rerun.data.tags["convopt.registered_version"] == "1"


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
    assert seq["looks"] == [3, 4] and seq["trials_planned"] == 8 and seq["trials_run"] == 6
    assert [r["decisions"] for r in seq["rounds"]] == [{"baseline:ppo.ent_coef=0.0": "accept"}]
    assert seq["decisions"]["baseline:ppo.ent_coef=0.0"]["look"] == 1  # the verdict is the sequential decision
    assert seq["compute_saved"] == 0.25 and parent.data.metrics["ab/compute_saved"] == 0.25
    assert sorted(c.data.tags["convopt.seed"] for c in children) == ["0", "0", "1", "1", "2", "2"]
    assert report["cells"] == {"planned": 8, "complete": 6, "failed": 0} and report["winner"] is None
    assert "group-sequential" in report["verdict"]
    md = Path(client.download_artifacts(parent.info.run_id, "ab/report.md", str(tmp_path))).read_text()
    assert "## Sequential design" in md
    html = Path(client.download_artifacts(parent.info.run_id, "ab/report.html", str(tmp_path))).read_text()
    assert "Sequential design" in html
    # the report loads the parent run's one copy of plotly.js instead of embedding 4.8 MB
    assert len(html) < 500_000 and "assets/plotly-gzip.mjs" in html
    assert "assets/plotly-gzip.mjs" in {a.path for a in client.list_artifacts(parent.info.run_id, "assets")}
    assert not client.search_registered_models()


def test_two_identical_arms_register_nothing(tmp_path, mlflow_uri, capsys):
    code = _ab(tmp_path, "aa", "baseline,baseline:ppo.ent_coef=0.0", 4, "--total-timesteps", "1024",
               "--data", DATA, "--set", TINY)
    err = capsys.readouterr().err
    assert code == 0, err
    client = MlflowClient()
    parent, children = _parent_and_children(client, "aa")
    report = _report(client, parent, tmp_path)
    assert len(children) == 8 and {c.info.status for c in children} == {"FINISHED"}
    assert report["seeds_compared"] == [0, 1, 2, 3] and report["winner"] is None
    assert report["comparisons"][0]["mean_difference"] == 0.0  # the same config on the same seeds
    assert parent.data.metrics["ab/significant"] == 0.0 and parent.data.tags["convopt.ab.on_failure"] == "refuse"
    assert parent.data.tags["convopt.registration_skipped"].startswith("no significant winner")
    assert not client.search_registered_models() and not client.search_model_versions()
    assert "nothing registered" in err


class _Diverge(BaseCallback):
    """Training diverges at its first step, as when every rollback is spent."""

    def _on_step(self) -> bool:
        raise TrainingDiverged("injected: training diverged again after 0 rollback(s)")


def test_a_winner_with_a_failed_seed_is_named_and_not_registered(tmp_path, mlflow_uri, capsys, monkeypatch):
    real_train = coordinator.train

    def train(cfg, **kwargs):  # the planted winner (arm `baseline`) diverges on seed 3, every try
        tags = kwargs.get("tags") or {}
        if (tags.get("convopt.arm"), tags.get("convopt.seed")) == ("baseline", "3"):
            kwargs["extra_callbacks"] = [*kwargs.get("extra_callbacks", ()), _Diverge()]
        return real_train(cfg, **kwargs)

    monkeypatch.setattr(coordinator, "train", train)
    args = ("--total-timesteps", "3072", "--data", PLANTED, "--set", LEARN)
    code = _ab(tmp_path, "failing", ARMS, 4, *args)
    err = capsys.readouterr().err
    assert code == 0, err
    client = MlflowClient()
    parent, children = _parent_and_children(client, "failing")
    report = _report(client, parent, tmp_path)
    failed = [c for c in children if c.info.status == "FAILED"]
    assert len(failed) == 2 and {c.data.tags["convopt.seed"] for c in failed} == {"3"}  # tried twice, given up
    # the arm still wins on the seeds it completed; before, it was registered on that evidence
    assert report["winner"] == "baseline" and report["seeds_compared"] == [0, 1, 2]
    assert "baseline seed 3 (run ended FAILED: injected: training diverged" in report["verdict"]
    assert report["failures"]["cells"] == [{"arm": "baseline", "seed": 3,
                                            "reason": report["failures"]["cells"][0]["reason"]}]
    assert parent.data.metrics["ab/baseline/failure_rate"] == 0.25 and parent.data.metrics["ab/cells_failed"] == 1
    skipped = parent.data.tags["convopt.registration_skipped"]
    assert skipped.startswith("winner baseline is not registered") and "baseline seed 3" in skipped
    assert not client.search_registered_models() and "convopt.registered_version" not in parent.data.tags
    md = Path(client.download_artifacts(parent.info.run_id, "ab/report.md", str(tmp_path))).read_text()
    assert "**Failed cells** (rule `refuse`): baseline seed 3" in md
    # the failure rule is part of the study's design: it cannot be switched after the failures are seen
    code = _ab(tmp_path, "failing", ARMS, 4, "--on-failure", "worst", *args)
    assert code == 2 and "on_failure: refuse != worst" in capsys.readouterr().err
