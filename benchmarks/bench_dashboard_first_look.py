"""The live dashboard's first look at a run with many points (``bench_dashboard.py --first-look N``).

    python benchmarks/bench_dashboard.py --first-look 100000 --repeats 2 --before 59aaab7 \\
        --out benchmarks/results/dashboard_first_look.json

The store: one RUNNING run with ``N`` points for each of the 10 keys the convergence view
draws (``HISTORY_KEYS``), one point per key every 256 steps, written with ``log_batch``
(1,000 points per call) into a temporary sqlite store, plus 20 small finished runs.

Each repeat starts a fresh dashboard app (``dashboards.app.create_app``, empty caches) on
uvicorn in this process and times, over real HTTP with the token, the requests the page
makes before its chart is drawn:

- ``runs_s``: ``GET /api/runs`` (the runs table);
- ``run_s``: ``GET /api/run/<id>`` (the run's metric series, the figure, its JSON);
- ``first_look_s``: the two together, what the page waits for (the browser's own
  drawing is not included);
- ``poll_new_s``: the next ``GET /api/run/<id>`` after one more rollout (one point per key).

With ``--before REV`` the same requests also run against the app and reader of git
revision ``REV`` (read with ``git show``), on the same store, interleaved with the current
code. Times are per repeat and their median.
"""
from __future__ import annotations

import http.client
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from convopt_mlflow.evaluation.dashboards import HISTORY_KEYS

ROOT = Path(__file__).resolve().parents[1]
KEYS = tuple(HISTORY_KEYS)
NAMES = set(HISTORY_KEYS.values())  # the figure's trace names
STEP = 256
TOKEN = "bench-token-0123456789abcdef"


def _log(client: MlflowClient, run_id: str, steps: range, t0: int) -> None:
    batch = [Metric(k, 1.0 / (1 + s) + 0.001 * i, t0 + s, s * STEP) for s in steps for i, k in enumerate(KEYS)]
    for i in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[i:i + 1000])


def build_store(directory: Path, points_per_key: int) -> tuple[str, str, float]:
    """``(tracking uri, big run id, seconds to build)``; reuses a store this function built before."""
    uri = f"sqlite:///{directory}/mlflow.db"
    marker = directory / "big_run.json"
    if marker.exists() and json.loads(marker.read_text())["points_per_key"] == points_per_key:
        kept = json.loads(marker.read_text())
        return uri, kept["run_id"], kept["build_s"]
    start = time.perf_counter()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("convopt", artifact_location=f"{directory}/artifacts")
    for i in range(20):
        run = client.create_run(experiment, run_name=f"baseline-s{i}", tags={"convopt.preset": "baseline"})
        _log(client, run.info.run_id, range(100), 0)
        client.set_terminated(run.info.run_id, "FINISHED")
    big = client.create_run(experiment, run_name="full-s0", tags={"convopt.preset": "full"}).info.run_id
    _log(client, big, range(points_per_key), 0)
    build_s = time.perf_counter() - start
    marker.write_text(json.dumps({"run_id": big, "points_per_key": points_per_key, "build_s": build_s}))
    return uri, big, build_s


def _module_at(rev: str, path: str, name: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    module = types.ModuleType(name)
    module.__file__ = str(ROOT / path)
    sys.modules[name] = module
    exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)  # noqa: S102 - our own history
    return module


def app_factory(rev: str) -> Callable[[str], Any]:
    """``uri -> app``: today's ``create_app``, or revision ``rev``'s app with that revision's reader."""
    from dashboards.app import create_app

    if not rev:
        return lambda uri: create_app(uri, token=TOKEN)
    old_live = _module_at(rev, "convopt_mlflow/tracking/live.py", f"_live_at_{rev}")
    old_app = _module_at(rev, "dashboards/app.py", f"_app_at_{rev}")

    def make(uri: str):
        current = sys.modules["convopt_mlflow.tracking.live"]
        sys.modules["convopt_mlflow.tracking.live"] = old_live  # old create_app imports its reader inside
        try:
            return old_app.create_app(uri, token=TOKEN)
        finally:
            sys.modules["convopt_mlflow.tracking.live"] = current

    return make


@contextmanager
def served(app):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _get(port: int, path: str) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 200, (path, response.status, body[:300])
    return time.perf_counter() - start, json.loads(body)


def one_look(make, uri: str, run_id: str, client: MlflowClient, next_step: int) -> dict[str, float]:
    with served(make(uri)) as port:
        runs_s, listed = _get(port, "/api/runs?experiment=convopt")
        assert any(r["run_id"] == run_id for r in listed["runs"])
        run_s, first = _get(port, f"/api/run/{run_id}")
        _log(client, run_id, range(next_step, next_step + 1), 10**9)
        poll_s, polled = _get(port, f"/api/run/{run_id}")
    traces = [t for t in first["figure"]["data"] if t.get("name") in NAMES]
    return {"runs_s": runs_s, "run_s": run_s, "first_look_s": runs_s + run_s, "poll_new_s": poll_s,
            "points_sent_first": sum(len(t["x"]) for t in traces),
            "last_step_first": max(max(t["x"]) for t in traces),
            "last_step_after_poll": max(max(t["x"]) for t in polled["figure"]["data"] if t.get("name") in NAMES),
            "response_bytes_first": len(json.dumps(first))}


def first_look(args) -> None:
    from _common import machine_info, write_result

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(args.store or tmp)
        directory.mkdir(parents=True, exist_ok=True)
        uri, run_id, build_s = build_store(directory, args.first_look)
        client = MlflowClient(tracking_uri=uri)
        next_step = max(m.step for m in client.get_run(run_id).data.to_proto().metrics) // STEP + 1
        variants = {"after": app_factory("")}
        if args.before:
            variants["before"] = app_factory(args.before)
        per_repeat: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, make in variants.items():  # interleaved
                per_repeat[name].append(one_look(make, uri, run_id, client, next_step))
                next_step += 1
                print(name, json.dumps(per_repeat[name][-1]), flush=True)
        medians = {name: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
                   for name, rows in per_repeat.items()}
    doc = {"args": {"points_per_key": args.first_look, "keys": list(KEYS), "repeats": args.repeats,
                    "before": args.before, "store": args.store or "(temporary)"}, "store_points": args.first_look * len(KEYS) + 20 * 100 * len(KEYS),
           "build_store_s": build_s, "machine": machine_info(), "per_repeat": per_repeat, "median": medians}
    if "before" in medians:
        doc["speedup_first_look"] = medians["before"]["first_look_s"] / medians["after"]["first_look_s"]
    print(json.dumps(doc["median"], indent=1))
    write_result(doc, Path(args.out) if args.out else None)
