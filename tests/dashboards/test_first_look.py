"""The dashboard's first look at a 20k-point run, over real HTTP on uvicorn and a real sqlite store.

The first ``/api/run`` answer is a bounded sample that holds the first and the last step;
the next polls carry only the new points, appended exactly after the sample.
"""
from __future__ import annotations

import json

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from dashboards.app import create_app

from .conftest import Served

TOKEN = "t0ken-for-tests-0123456789abcdef"
#: two of LiveReader's 10k-point pages, ten times its 2k-point first read and 40 times the 500 points
#: the app is asked for (100k proved the same and took five times longer to log)
POINTS = 20_000
STEP = 64


def _log(client: MlflowClient, run_id: str, key: str, steps, t0: int = 0) -> None:
    batch = [Metric(key, 1.0 / (1 + s), t0 + s, s * STEP) for s in steps]
    for i in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[i:i + 1000])


@pytest.fixture(scope="module")
def big_run(tmp_path_factory, mlflow_template):
    """``(uri, run id)``: a RUNNING run with 20k points of ``train/loss`` and 100 of ``eval/score``."""
    root = tmp_path_factory.mktemp("first_look")
    uri = mlflow_template.copy_to(root)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("convopt", artifact_location=f"{root}/artifacts")
    run_id = client.create_run(experiment, run_name="full-s0").info.run_id
    _log(client, run_id, "train/loss", range(POINTS))
    _log(client, run_id, "eval/score", range(0, POINTS, POINTS // 100))
    return uri, run_id


def _get(served: Served, path: str) -> dict:
    """The JSON answer to an authorised GET (the first look at 20k points may take long under load)."""
    response, body = served.get(path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
    assert response.status == 200, body[:500]
    return json.loads(body)


def _trace(payload: dict, name: str) -> list[float]:
    """The x values of the figure's trace ``name`` (a history name: ``loss`` for ``train/loss``)."""
    (trace,) = [t for t in payload["figure"]["data"] if t.get("name") == name]
    return trace["x"]


def test_the_first_look_is_a_bounded_sample_and_polls_bring_only_new_points(big_run):
    uri, run_id = big_run
    last = (POINTS - 1) * STEP
    with Served(create_app(uri, token=TOKEN, max_points=500)) as served:
        first = _get(served, f"/api/run/{run_id}")
        loss = _trace(first, "loss")
        assert len(loss) <= 500 and first["points"]["train/loss"] <= 500  # not 20k
        assert loss[0] == 0 and loss[-1] == last  # the first and the last step are in the sample
        assert first["sampled"] == {"train/loss": last}  # and the payload says it is a sample
        assert _trace(first, "eval_score") == [s * STEP for s in range(0, POINTS, POINTS // 100)]  # small: whole
        fetched = _get(served, "/api/stats")["points"]
        assert fetched <= 500 + 100

        client = MlflowClient(tracking_uri=uri)
        _log(client, run_id, "train/loss", range(POINTS, POINTS + 3), t0=10**9)
        polled = _get(served, f"/api/run/{run_id}")
        assert _get(served, "/api/stats")["points"] - fetched == 3 + 1  # the new points and the last one held
        assert polled["points"]["train/loss"] == first["points"]["train/loss"] + 3
        assert _trace(polled, "loss")[-4:] == [last, last + STEP, last + 2 * STEP, last + 3 * STEP]
        assert polled["sampled"] == {"train/loss": last}  # the sample ends where it ended; the rest is exact
