"""The dashboard's first look at a 100k-point run, over real HTTP on uvicorn and a real sqlite store.

The first ``/api/run`` answer is a bounded sample that holds the first and the last step;
the next polls carry only the new points, appended exactly after the sample.
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest
import uvicorn
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from dashboards.app import create_app

TOKEN = "t0ken-for-tests-0123456789abcdef"
POINTS = 100_000
STEP = 64


def _log(client: MlflowClient, run_id: str, key: str, steps, t0: int = 0) -> None:
    batch = [Metric(key, 1.0 / (1 + s), t0 + s, s * STEP) for s in steps]
    for i in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[i:i + 1000])


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    """``(uri, run id)``: a RUNNING run with 100k points of ``train/loss`` and 100 of ``eval/score``."""
    root = tmp_path_factory.mktemp("first_look")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("convopt", artifact_location=f"{root}/artifacts")
    run_id = client.create_run(experiment, run_name="full-s0").info.run_id
    _log(client, run_id, "train/loss", range(POINTS))
    _log(client, run_id, "eval/score", range(0, POINTS, POINTS // 100))
    return uri, run_id


class _Served:
    def __init__(self, app):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def get(self, path: str) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        assert response.status == 200, body[:500]
        return json.loads(body)


def _trace(payload: dict, name: str) -> list[float]:
    """The x values of the figure's trace ``name`` (a history name: ``loss`` for ``train/loss``)."""
    (trace,) = [t for t in payload["figure"]["data"] if t.get("name") == name]
    return trace["x"]


def test_the_first_look_is_a_bounded_sample_and_polls_bring_only_new_points(big_run):
    uri, run_id = big_run
    last = (POINTS - 1) * STEP
    with _Served(create_app(uri, token=TOKEN, max_points=500)) as served:
        first = served.get(f"/api/run/{run_id}")
        loss = _trace(first, "loss")
        assert len(loss) <= 500 and first["points"]["train/loss"] <= 500  # not 100k
        assert loss[0] == 0 and loss[-1] == last  # the first and the last step are in the sample
        assert first["sampled"] == {"train/loss": last}  # and the payload says it is a sample
        assert _trace(first, "eval_score") == [s * STEP for s in range(0, POINTS, POINTS // 100)]  # small: whole
        fetched = served.get("/api/stats")["points"]
        assert fetched <= 500 + 100

        client = MlflowClient(tracking_uri=uri)
        _log(client, run_id, "train/loss", range(POINTS, POINTS + 3), t0=10**9)
        polled = served.get(f"/api/run/{run_id}")
        assert served.get("/api/stats")["points"] - fetched == 3 + 1  # the new points and the last one held
        assert polled["points"]["train/loss"] == first["points"]["train/loss"] + 3
        assert _trace(polled, "loss")[-4:] == [last, last + STEP, last + 2 * STEP, last + 3 * STEP]
        assert polled["sampled"] == {"train/loss": last}  # the sample ends where it ended; the rest is exact
