"""Workers that start runs on the same market at the same moment all record it as their input."""
from __future__ import annotations

import multiprocessing as mp
from types import SimpleNamespace

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from convopt_mlflow.tracking.datasets import log_dataset

WORKERS = 6
ROUNDS = 4


def _log_same_market(uri: str, experiment_id: str, barrier, results) -> None:
    client = MlflowClient(uri)
    run = client.create_run(experiment_id)
    frame = pd.DataFrame({"close": np.arange(50.0), "volume": np.ones(50)})
    barrier.wait()
    try:
        log_dataset(SimpleNamespace(client=client, run_id=run.info.run_id), frame,
                    name="market", source="synthetic:seed=1", digest="d2817b7e36ae8fb3")
        results.put((run.info.run_id, "ok"))
    except Exception as error:  # reported to the test, which names it
        results.put((run.info.run_id, f"{type(error).__name__}: {error}"[:300]))


def test_concurrent_workers_logging_one_market_all_link_to_a_single_dataset(tmp_path, mlflow_template):
    # MLflow looks the dataset up, then inserts it: unserialized, so simultaneous workers used to
    # break the (experiment, name, digest) key and lose their trial (CI saw it on a 2-worker tune).
    context = mp.get_context("fork")
    for round_ in range(ROUNDS):
        (tmp_path / f"round{round_}").mkdir()
        uri = mlflow_template.copy_to(tmp_path / f"round{round_}")
        experiment_id = MlflowClient(uri).create_experiment("race")
        barrier, results = context.Barrier(WORKERS), context.Queue()
        workers = [context.Process(target=_log_same_market, args=(uri, experiment_id, barrier, results))
                   for _ in range(WORKERS)]
        for worker in workers:
            worker.start()
        outcomes = dict(results.get(timeout=120) for _ in workers)
        for worker in workers:
            worker.join(timeout=60)
        assert [o for o in outcomes.values() if o != "ok"] == [], f"round {round_}"
        client = MlflowClient(uri)
        linked = {client.get_run(run_id).inputs.dataset_inputs[0].dataset.digest for run_id in outcomes}
        assert linked == {"d2817b7e36ae8fb3"}
        runs = client.search_runs([experiment_id])
        assert all(len(r.inputs.dataset_inputs) == 1 for r in runs) and len(runs) == WORKERS
