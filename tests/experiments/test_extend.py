"""More seeds on a finished fixed-sample study extend it: only the new cells train."""
from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from convopt_mlflow.errors import UserError
from convopt_mlflow.experiments.abtest import EXTENDED_ATTR, cell_counts, open_study
from convopt_mlflow.experiments.session import run_ab_test, spec_from_args
from convopt_mlflow.experiments.storage import get_storage

from .conftest import DATA, TINY


def _spec(seeds, arms="baseline,lr", sequential=False, total=1024):
    return spec_from_args(arms, seeds, total_timesteps=total, data=DATA, sequential=sequential,
                          overrides=dict(kv.split("=") for kv in TINY.split(",")))


def test_extends_only_adds_seeds_to_the_same_design():
    assert _spec(3).extends(_spec(2))
    assert not _spec(2).extends(_spec(3)) and not _spec(2).extends(_spec(2))
    assert not _spec(3, arms="baseline,full").extends(_spec(2))
    assert not _spec(3, total=2048).extends(_spec(2))


def test_more_seeds_train_only_the_new_cells(tmp_path, mlflow_uri, capsys):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    ckpt = str(tmp_path / "ckpt")
    first = run_ab_test(_spec(2), study_name="grow", storage=storage, registry_name=None, checkpoint_root=ckpt,
                        console=False)
    client = MlflowClient(tracking_uri=mlflow_uri)

    def children():
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        return {r.info.run_id for r in runs if r.data.tags.get("mlflow.parentRunId") == first.parent_run_id}

    before = children()
    assert len(before) == 4
    second = run_ab_test(_spec(3), study_name="grow", storage=storage, registry_name=None, checkpoint_root=ckpt)
    assert second.parent_run_id == first.parent_run_id  # the same study, the same parent run
    after = children()
    assert before < after and len(after) == 6  # two new cells (seed 2 of each arm), nothing retrained
    import optuna

    study = optuna.load_study(study_name="grow", storage=get_storage(storage))
    assert cell_counts(study) == {(arm, seed): {"COMPLETE": 1} for arm in ("baseline", "lr") for seed in (0, 1, 2)}
    assert study.user_attrs[EXTENDED_ATTR] == [2]
    assert second.report["seeds_compared"] == [0, 1, 2]
    assert {k: second.report["cells"][k] for k in ("planned", "complete")} == {"planned": 6, "complete": 6}
    assert not second.report["cells"].get("failed")
    tags = client.get_run(second.parent_run_id).data.tags
    assert tags["convopt.ab.seeds"] == "3" and tags["convopt.ab.extended_from_seeds"] == "2"
    assert "extended from 2 to 3 seeds per arm" in capsys.readouterr().err


def test_a_sequential_study_is_not_extended_and_other_designs_are_refused(tmp_path):
    storage = get_storage(f"sqlite:///{tmp_path}/optuna.db")
    open_study(_spec(4, sequential=True), storage, "seq")
    with pytest.raises(UserError, match="is sequential: its alpha spending was planned for looks at 3, 4 seeds"):
        open_study(_spec(6, sequential=True), storage, "seq")
    open_study(_spec(2), storage, "fixed")
    with pytest.raises(UserError, match="another design"):
        open_study(_spec(3, arms="baseline,full"), storage, "fixed")
