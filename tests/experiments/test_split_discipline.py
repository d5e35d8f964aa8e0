"""Which split each decision uses: A/B on test, tuning on validation, the A/B after a tune on fresh seeds."""
import pytest

from convopt_mlflow import cli
from convopt_mlflow.errors import UserError
from convopt_mlflow.experiments.session import spec_from_args
from convopt_mlflow.experiments.spec import DEFAULT_METRIC, StudySpec
from convopt_mlflow.experiments.tune import METRIC as TUNE_METRIC
from convopt_mlflow.experiments.tune import TuneSpec, ab_command


def test_ab_verdicts_default_to_the_test_split_and_tuning_decides_on_validation():
    assert DEFAULT_METRIC == "backtest/test/sharpe"
    assert StudySpec(arms=("baseline", "lr"), seeds=(0, 1)).metric == "backtest/test/sharpe"
    assert spec_from_args("baseline,lr", 2).metric == "backtest/test/sharpe"
    assert spec_from_args("baseline,lr", 2, metric="backtest/val/sharpe").metric == "backtest/val/sharpe"
    assert TUNE_METRIC == "backtest/val/sharpe"


def test_ab_help_says_why_the_default_is_the_test_split(capsys):
    with pytest.raises(SystemExit):
        cli.main(["ab-test", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "default backtest/test/sharpe" in help_text
    assert "validation picked each trial's checkpoint" in help_text and "optimistic" in help_text


def test_first_seed_shifts_every_arms_seeds():
    assert spec_from_args("baseline,lr", 3, first_seed="4").seeds == (4, 5, 6)
    assert spec_from_args("baseline,lr", 3).seeds == (0, 1, 2)
    for bad in ("-1", "x", "1.5"):
        with pytest.raises(UserError, match="--first-seed"):
            spec_from_args("baseline,lr", 3, first_seed=bad)


def test_bad_first_seed_exits_2_without_a_traceback(capsys):
    assert cli.main(["ab-test", "--arms", "baseline,lr", "--first-seed", "-3"]) == 2
    err = capsys.readouterr().err
    assert "--first-seed must be a non-negative whole number" in err and "Traceback" not in err


def test_the_ab_command_after_a_tune_starts_after_the_tuners_seeds():
    spec = TuneSpec("baseline", 3, {"run.seed": "9", "ppo.n_steps": "64"}, seed=3)
    line = ab_command(spec, {"ppo.n_epochs": 4})
    assert "--seeds 5 --first-seed 4" in line and "run.seed" not in line
    assert "--first-seed 11" in ab_command(spec, {"ppo.n_epochs": 4}, first_seed=11)
