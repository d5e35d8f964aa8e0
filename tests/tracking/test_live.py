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
    reader = LiveReader(store.client, tail_cap=7)  # polls of more than 7 points are read in parts
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
    assert reader.stats.points - before[1] == 5 + 1  # the new points, and the last one held (the join)
    assert reader.stats.requests - before[0] == 2  # get_run + one read of train/loss
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


def test_first_read_is_a_bounded_sample_and_every_later_point_joins_it_exactly(store):
    """Sampled head (first and last point included), then an exact tail: no gap, no duplicate at the join."""
    run = open_run(experiment="live", run_id=None, tags={"convopt.role": "train"}, client=store.client)
    _log(store, run.run_id, "train/loss", range(0, 5_000))
    reader = LiveReader(store.client, sample_size=50, tail_cap=7)
    steps, values = reader.series(run.run_id)["train/loss"]
    assert 2 <= len(steps) <= 50 and steps[0] == 0 and steps[-1] == 4_999
    np.testing.assert_array_equal(values, steps * 0.5)  # real points, not interpolated ones
    assert np.all(np.diff(steps) > 0)
    assert reader.sampled(run.run_id) == {"train/loss": 4_999}
    head = steps.copy()

    # one more point at the last step held (a later timestamp), then 20 new steps: more than tail_cap
    store.client.log_batch(run.run_id, metrics=[Metric("train/loss", -1.0, 999_999, 4_999)])
    _log(store, run.run_id, "train/loss", range(5_000, 5_020))
    steps, values = reader.series(run.run_id)["train/loss"]
    np.testing.assert_array_equal(steps[:len(head)], head)  # the sample is kept as it was
    tail = [(m.step, m.value) for m in sorted(store.client.get_metric_history(run.run_id, "train/loss"),
                                               key=lambda m: (m.step, m.timestamp)) if m.step >= 4_999]
    assert list(zip(steps[len(head) - 1:], values[len(head) - 1:])) == tail  # every point after the sample, once

    before = reader.stats.points
    assert len(reader.series(run.run_id)["train/loss"][0]) == len(steps)  # an idle poll adds nothing
    assert reader.stats.points == before
    _log(store, run.run_id, "train/loss", range(5_020, 5_023))
    steps, _ = reader.series(run.run_id)["train/loss"]
    assert list(steps[-4:]) == [5_019, 5_020, 5_021, 5_022] and len(set(steps)) == len(steps) - 1  # one step twice
    assert reader.stats.points - before == 3 + 1  # the new points and the joined one
