"""The live dashboard's reader against a real sqlite store: incremental reads equal full histories."""
from __future__ import annotations

import numpy as np
from mlflow.entities import Metric

from convopt_mlflow.tracking import open_run
from convopt_mlflow.tracking.live import LiveReader


def _log(store, run_id, key, steps, value=lambda s: s * 0.5):
    store.client.log_batch(run_id, metrics=[Metric(key, float(value(s)), 1_000 + s, s) for s in steps])


def test_polls_fetch_only_points_newer_than_those_held(store):
    run = open_run(experiment="live", run_id=None, tags={"convopt.role": "train"}, client=store.client)
    _log(store, run.run_id, "train/loss", range(0, 30))
    _log(store, run.run_id, "eval/score", range(0, 30, 10))
    _log(store, run.run_id, "not/drawn", range(0, 30))
    reader = LiveReader(store.client, page_size=7)  # several pages on the first read
    first = reader.series(run.run_id)
    assert set(first) == {"train/loss", "eval/score"}
    np.testing.assert_array_equal(first["train/loss"][0], np.arange(30))
    assert reader.stats.points == 33

    before = (reader.stats.requests, reader.stats.points)
    reader.series(run.run_id)  # nothing new: one get_run, no history read
    assert (reader.stats.requests - before[0], reader.stats.points - before[1]) == (1, 0)

    _log(store, run.run_id, "train/loss", range(30, 35))
    before = (reader.stats.requests, reader.stats.points)
    after = reader.series(run.run_id)
    assert reader.stats.points - before[1] == 5  # only the new points travelled
    assert reader.stats.requests - before[0] == 2  # get_run + one page of train/loss
    full = sorted(store.client.get_metric_history(run.run_id, "train/loss"), key=lambda m: m.step)
    np.testing.assert_array_equal(after["train/loss"][0], [m.step for m in full])
    np.testing.assert_array_equal(after["train/loss"][1], [m.value for m in full])


def test_runs_list_active_first_without_ensemble_members(store):
    client = store.client
    done = open_run(experiment="listing", run_id=None, run_name="baseline-s0",
                    tags={"convopt.preset": "baseline", "convopt.seed": "0"}, client=client)
    done.end("FINISHED")
    live = open_run(experiment="listing", run_id=None, run_name="full-s1",
                    tags={"convopt.preset": "full", "convopt.seed": "1"}, client=client)
    open_run(experiment="listing", run_id=None, run_name="full-s1-member0",
             tags={"convopt.role": "ensemble-member"}, client=client)
    _log(store, live.run_id, "eval/score", [512, 1024], value=lambda s: s / 1024)
    rows = LiveReader(client).runs("listing")
    assert [r["name"] for r in rows] == ["full-s1", "baseline-s0"]
    assert rows[0]["status"] == "RUNNING" and rows[0]["eval"] == 1.0 and rows[0]["step"] == 1024
    assert rows[0]["preset"] == "full" and rows[0]["seed"] == "1"
    assert LiveReader(client).runs("no-such-experiment") == []
