"""The selection-aware no-edge verdict on real runs: pure noise ends ``convopt.no_edge=true`` even when
the best of the run's validation scores beats flat, and a resumed run counts every evaluation."""
from __future__ import annotations

import pytest

from convopt_mlflow.config import build_config
from convopt_mlflow.evaluation.summary import RunSummary, run_note
from convopt_mlflow.training.coordinator import train

from .conftest import SigtermAt

# pure Gaussian noise, no costs (so the agent trades), 8 evaluations (every 256 of 2048 steps)
NOISE_RUN = {
    "data.source": "synthetic:mechanism=noise,n_bars=4000,seed=1", "env.cost_bps": "0", "run.seed": "0",
    "env.n_envs": "4", "ppo.n_steps": "64", "ppo.batch_size": "64", "ppo.n_epochs": "2", "ppo.net_arch": "16",
    "env.window": "8", "env.episode_length": "64", "run.total_timesteps": "2048", "run.eval_freq": "256",
    "run.progress_bar": "false",
}
EDGE_METRICS = ("model/edge/n_trials", "model/edge/sr0", "model/edge/dsr", "model/edge/psr", "model/edge/threshold",
                "model/edge/n_bars")


def _run(tracked, run_id):
    return tracked.client.get_run(run_id)


@pytest.fixture(scope="module")
def noise_run(tracked):
    return train(build_config("baseline", NOISE_RUN), preset="baseline", checkpoint_root=tracked.checkpoint_root("noise"))


def test_a_lucky_best_checkpoint_on_pure_noise_ends_no_edge(tracked, noise_run):
    result = noise_run
    run = _run(tracked, result.run_id)
    metrics, tags = run.data.metrics, run.data.tags
    assert run.info.status == "FINISHED"
    # the shipped weights are the best of 8 validation scores and beat flat by chance: the old rule
    # (validation Sharpe > 0) called that an edge
    assert tags["convopt.model_source"] == "best" and metrics["model/val_score"] > 0
    assert result.no_edge and tags["convopt.no_edge"] == "true"
    assert set(EDGE_METRICS) <= set(metrics)
    assert metrics["model/edge/n_trials"] == 8  # evaluations at 256..2048; the last weights are the 2048 one's
    assert metrics["model/edge/threshold"] == 0.95 and metrics["model/edge/dsr"] <= 0.95
    assert metrics["model/edge/sr0"] > metrics["model/val_score"]  # luck alone expects more than it scored
    assert metrics["model/edge/dsr"] < metrics["model/edge/psr"]
    assert "DSR" in tags["convopt.edge_reason"] and "selected over 8 validation scores" in tags["convopt.edge_reason"]
    summary = RunSummary(result.run_id, run.info.run_name, "baseline", "noise", "FINISHED", metrics, tags)
    line = summary.edge_line()
    assert "selected over 8 validation scores" in line and "deflated Sharpe ratio" in line and "not above 0.95" in line
    assert "no edge over staying flat" in run_note(summary)


def test_an_a_b_winner_on_pure_noise_is_not_registered(tracked, noise_run):
    from convopt_mlflow.experiments.registration import register_winner
    from convopt_mlflow.experiments.report import winner_of

    # the A/B module's records and report as a study on noise would leave them, had the lucky run's arm won
    records = [{"arm": "lucky", "seed": 0, "run_id": noise_run.run_id, "value": 1.0, "no_edge": noise_run.no_edge,
                "metrics": noise_run.metrics}]
    comparison = {"arm": "lucky", "p_value": 0.01, "p_adjusted": 0.01, "hedges_g": 2.0, "mean_difference": 1.0,
                  "difference_ci_low": 0.5, "difference_ci_high": 1.5, "probability_of_improvement": 0.9,
                  "primary": "paired_t"}
    report = {"winner": "lucky", "comparisons": [comparison], "baseline": "baseline",
              "metric": "backtest/val/sharpe", "seeds_compared": [0]}
    winner = winner_of(report, records)
    assert winner.evidence["edge_trials"] == [8.0] and not winner.registrable
    registration = register_winner(winner, parent_run_id="unused", study="noise", verdict="lucky beats baseline",
                                   registry_name="convopt-noise")
    assert registration.version is None and noise_run.run_id in registration.skipped
    assert "never registered" in registration.skipped
    assert tracked.client.search_registered_models("name = 'convopt-noise'") == []


def test_a_resumed_run_counts_the_evaluations_before_the_kill(tracked):
    cfg = build_config("baseline", NOISE_RUN)
    first = train(cfg, preset="baseline", extra_callbacks=[SigtermAt(1024)],
                  checkpoint_root=tracked.checkpoint_root("noise-resume"))
    assert first.status == "KILLED"
    resumed = train(cfg, resume=first.run_id)
    assert resumed.status == "FINISHED"
    metrics = _run(tracked, first.run_id).data.metrics
    # 4 evaluations before the kill (256..1024) and 4 after it: the verdict counts all 8
    assert metrics["model/edge/n_trials"] == 8
    assert _run(tracked, first.run_id).data.tags["convopt.no_edge"] == "true"


def test_an_ensemble_counts_its_members_selections_and_its_combination_methods():
    import numpy as np

    from convopt_mlflow.components.ensemble import METHODS, EnsembleDecision
    from convopt_mlflow.training.ensemble_eval import EnsembleReport, ensemble_edge

    rng = np.random.default_rng(0)
    decision = EnsembleDecision("mean_prob", (1 / 3,) * 3, {m: 0.5 for m in METHODS}, "best on validation")
    lucky = EnsembleReport(decision=decision, val_pnl=rng.normal(0.04, 1.0, 2000), periods_per_year=100.0)
    one_try = ensemble_edge(lucky, [])
    assert one_try.n_trials == len(METHODS) == 3
    verdict = ensemble_edge(lucky, [8.0, 8.0, 8.0])
    assert verdict.n_trials == 27 and verdict.benchmark > one_try.benchmark and verdict.dsr < one_try.dsr
    assert verdict.no_edge
    strong = EnsembleReport(decision=decision, val_pnl=rng.normal(0.2, 1.0, 2000), periods_per_year=100.0)
    assert not ensemble_edge(strong, [8.0, 8.0, 8.0]).no_edge
