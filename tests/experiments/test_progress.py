"""The live dashboard's A/B progress on a real Optuna storage: its analysis is reused until a trial finishes."""
from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution

from convopt_mlflow.experiments.abtest import open_study
from convopt_mlflow.experiments.progress import open_read_only, study_progress
from convopt_mlflow.experiments.session import spec_from_args
from convopt_mlflow.experiments.storage import get_storage


def _finish(study: optuna.Study, arm: str, seed: int, value: float) -> None:
    space = {"arm": CategoricalDistribution(["baseline", "lr"]), "seed": CategoricalDistribution([0, 1, 2])}
    study.add_trial(optuna.trial.create_trial(
        params={"arm": arm, "seed": seed}, distributions=space, value=value,
        user_attrs={"mlflow_run_id": f"run-{arm}-{seed}", "metrics": {"backtest/test/sharpe": value}}))


def test_the_comparison_is_recomputed_only_when_the_finished_trials_change(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    spec = spec_from_args("baseline,lr", 3, total_timesteps=1024, data="synthetic:n_bars=3000,seed=1")
    study = open_study(spec, get_storage(url), "cached")
    for seed, (base, lr) in enumerate([(0.1, 0.5), (0.2, 0.7)]):
        _finish(study, "baseline", seed, base)
        _finish(study, "lr", seed, lr)
    reader, cache = open_read_only(url), {}

    first = study_progress(reader, "cached", cache=cache)
    analysis = cache["cached"][1]
    again = study_progress(reader, "cached", cache=cache)
    assert cache["cached"][1] is analysis  # nothing finished: the same analysis, not a new bootstrap
    assert again == first == study_progress(reader, "cached")  # and the same answer as without a cache
    assert first["arms"]["lr"]["complete"] == 2

    _finish(study, "baseline", 2, 0.15)
    _finish(study, "lr", 2, 0.9)
    grown = study_progress(reader, "cached", cache=cache)
    assert cache["cached"][1] is not analysis  # a trial finished: analysed anew
    assert grown == study_progress(reader, "cached") and grown["arms"]["lr"]["complete"] == 3
    assert grown["comparisons"] != first["comparisons"]
