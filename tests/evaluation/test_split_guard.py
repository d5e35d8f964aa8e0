"""The promotion bar guard on hand-made split records."""
from convopt_mlflow.evaluation.split_guard import EvaluationBars, check_evaluation_bars


def _record(digest="d", **splits):
    base = {"train": (0, 570, "2024-01-01T00:00:00", "2024-01-24T17:00:00"),
            "val": (580, 730, "2024-01-25T04:00:00", "2024-01-31T09:00:00"),
            "test": (740, 890, "2024-01-31T20:00:00", "2024-02-07T01:00:00"),
            "holdout": (900, 1000, "2024-02-07T12:00:00", "2024-02-11T15:00:00")}
    base.update(splits)
    return {"digest": digest, "splits": {k: None if v is None else dict(zip(("start", "stop", "first", "last"), v))
                                         for k, v in base.items()}}


HOLDOUT = EvaluationBars("holdout", "d", 900, 1000, "2024-02-07T12:00:00", "2024-02-11T15:00:00")
TEST = EvaluationBars("test", "d", 740, 890, "2024-01-31T20:00:00", "2024-02-07T01:00:00")


def test_the_holdout_of_the_same_data_is_clean_and_the_test_split_is_reused():
    assert check_evaluation_bars(HOLDOUT, {"challenger": _record(), "champion": _record()}).conflicts == ()
    check = check_evaluation_bars(TEST, {"challenger": _record(), "champion": _record()})
    assert check.conflicts == () and check.bars_reused and check.reused_by == ("challenger", "champion")


def test_bars_inside_either_models_train_or_validation_are_refused():
    # a champion trained with a later validation block: it selected on bars 880:950
    champion = _record(val=(880, 950, "", ""), test=(950, 1000, "", ""), holdout=None)
    check = check_evaluation_bars(HOLDOUT, {"challenger": _record(), "champion": champion})
    assert check.conflicts == ("bars 900:1000 overlap champion's val split (bars 900:950)",)
    trained = _record(train=(0, 905, "", ""))
    assert "challenger's train split (bars 900:905)" in check_evaluation_bars(HOLDOUT, {"challenger": trained}).conflicts[0]


def test_other_data_is_compared_by_time_and_a_run_without_records_is_refused():
    later = EvaluationBars("holdout", "other", 2000, 2100, "2024-03-01T00:00:00", "2024-03-05T03:00:00")
    assert check_evaluation_bars(later, {"challenger": _record()}).conflicts == ()
    inside = EvaluationBars("holdout", "other", 300, 400, "2024-01-20T00:00:00", "2024-01-26T00:00:00")
    conflicts = check_evaluation_bars(inside, {"challenger": _record()}).conflicts
    assert len(conflicts) == 2 and "train split (2024-01-20T00:00:00 to 2024-01-24T17:00:00" in conflicts[0]
    assert "val split (2024-01-25T04:00:00 to 2024-01-26T00:00:00" in conflicts[1]
    assert "recorded no split boundaries" in check_evaluation_bars(HOLDOUT, {"old": None}).conflicts[0]
