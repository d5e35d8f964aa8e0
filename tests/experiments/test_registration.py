"""Registration decisions that need no model: nothing significant, no edge, the evidence tags."""
from convopt_mlflow.experiments.registration import evidence_tags, register_winner
from convopt_mlflow.experiments.report import Winner

EVIDENCE = {"test": "paired_t (Holm over 2)", "baseline": "baseline", "metric": "backtest/val/sharpe",
            "p_value": 0.0123456789, "p_adjusted": 0.0246913578, "hedges_g": 1.5, "mean_difference": 0.4,
            "ci_low": 0.1, "ci_high": 0.7, "n": 5, "dsr": None, "no_edge_runs": ["r2"]}


def test_nothing_significant_registers_nothing_and_states_the_mde():
    verdict = "no arm differs significantly ... detects, with 80% power, a standardized effect of d_z = 1.4"
    registration = register_winner(None, parent_run_id="p", study="s", verdict=verdict)
    assert registration.version is None and "d_z = 1.4" in registration.skipped
    assert registration.run_tags()["convopt.registration_skipped"].startswith("no significant winner")


def test_a_winner_with_a_no_edge_seed_model_is_not_registered():
    winner = Winner("lr", ("r1", "r2"), (0, 1), EVIDENCE, registrable=False)
    registration = register_winner(winner, parent_run_id="p", study="s", verdict="lr beats baseline")
    assert registration.version is None and "r2" in registration.skipped and "never registered" in registration.skipped


def test_evidence_tags_hold_the_test_numbers_data_and_code():
    winner = Winner("lr", ("r1", "r2"), (0, 1), EVIDENCE, registrable=True)
    tags = evidence_tags(winner, study="s", parent_run_id="p", data_source="eurusd-1h",
                         run_tags={"convopt.data.digest": "abc", "convopt.git_commit": "deadbeef", "other": "x"})
    assert tags["convopt.evidence.p_value"] == "0.0123457" and tags["convopt.evidence.dsr"] == ""
    assert tags["convopt.evidence.test"] == "paired_t (Holm over 2)" and tags["convopt.evidence.n"] == "5"
    assert tags["convopt.data.digest"] == "abc" and tags["convopt.git_commit"] == "deadbeef" and "other" not in tags
    assert tags["convopt.seeds"] == "0,1" and tags["convopt.data.source"] == "eurusd-1h"
