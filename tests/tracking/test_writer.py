"""MLflowOutputFormat against a real sqlite store and a real SB3 PPO run."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from convopt_mlflow.tracking.writer import MLflowOutputFormat, metrics_batch


@pytest.fixture(scope="module")
def experiment_id(store) -> str:
    return store.client.create_experiment("writer")


@pytest.fixture
def run_id(store, experiment_id) -> str:
    return store.client.create_run(experiment_id).info.run_id


def history(store, run_id, key):
    return [(m.step, m.value) for m in store.client.get_metric_history(run_id, key)]


def test_one_batch_per_write_keeps_finite_numbers_only(store, run_id):
    writer = MLflowOutputFormat(run_id, store.client)
    values = {
        "train/loss": 0.25,
        "train/n_updates": 3,
        "train/clip": np.float32(0.5),
        "train/kl": torch.tensor(0.125),
        "train/grad": np.array(2.0),
        "train/nan": float("nan"),
        "train/inf": np.float64(np.inf),
        "train/neg_inf": torch.tensor(-float("inf")),
        "train/text": "not a number",
        "train/vector": np.array([1.0, 2.0]),
        "train/hidden": 7.0,
        "train/tb_only": 9.0,
    }
    excluded = {"train/hidden": ("stdout", "mlflow"), "train/tb_only": ("tensorboard",)}

    writer.write(values, excluded, step=64)

    assert writer.batches_written == 1
    assert writer.points_written == 6
    assert writer.dropped_nonfinite == 3
    metrics = store.client.get_run(run_id).data.metrics
    assert metrics == {
        "train/loss": 0.25,
        "train/n_updates": 3.0,
        "train/clip": 0.5,
        "train/kl": 0.125,
        "train/grad": 2.0,
        "train/tb_only": 9.0,
    }
    points = [p for key in metrics for p in store.client.get_metric_history(run_id, key)]
    assert {p.step for p in points} == {64}
    assert len({p.timestamp for p in points}) == 1  # one timestamp: one write


def test_min_step_drops_whole_dumps_at_or_below_it(store, run_id):
    writer = MLflowOutputFormat(run_id, store.client, min_step=128)
    writer.write({"x": 1.0}, {}, step=64)
    writer.write({"x": 2.0}, {}, step=128)
    writer.write({"x": 3.0}, {}, step=192)
    writer.close()

    assert history(store, run_id, "x") == [(192, 3.0)]
    assert (writer.dumps_skipped, writer.batches_written, writer.points_written) == (2, 1, 1)


def test_a_write_of_only_non_finite_values_sends_nothing(store, run_id):
    writer = MLflowOutputFormat(run_id, store.client)
    writer.write({"x": float("nan"), "label": "a"}, {}, step=1)
    assert (writer.batches_written, writer.points_written, writer.dropped_nonfinite) == (0, 0, 1)
    assert store.client.get_run(run_id).data.metrics == {}


def test_large_writes_are_chunked_at_mlflows_batch_limit(store, run_id):
    writer = MLflowOutputFormat(run_id, store.client)
    writer.write({f"k/{i:04d}": float(i) for i in range(2001)}, {}, step=5)
    assert (writer.batches_written, writer.points_written) == (3, 2001)
    metrics = store.client.get_run(run_id).data.metrics
    assert len(metrics) == 2001
    assert metrics["k/2000"] == 2000.0


def test_metrics_batch_helper(store, run_id):
    written = metrics_batch(run_id, {"backtest/test/sharpe": 1.5, "bad": float("inf")}, 10, store.client)
    assert written == 1
    assert history(store, run_id, "backtest/test/sharpe") == [(10, 1.5)]


def test_ppo_logs_train_metrics_at_num_timesteps(store, run_id):
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    model = PPO(
        "MlpPolicy",
        "CartPole-v1",
        n_steps=64,
        batch_size=64,
        n_epochs=1,
        policy_kwargs={"net_arch": [8]},
        seed=0,
        device="cpu",
    )
    writer = MLflowOutputFormat(run_id, store.client)
    model.set_logger(Logger(folder=None, output_formats=[writer]))
    model.learn(total_timesteps=128)

    assert model.num_timesteps == 128
    # SB3 dumps once per rollout, at num_timesteps; time/total_timesteps equals it.
    assert history(store, run_id, "time/total_timesteps") == [(64, 64.0), (128, 128.0)]
    # train/* of the first update is dumped with the second rollout.
    loss = store.client.get_metric_history(run_id, "train/loss")
    assert [m.step for m in loss] == [128]
    assert np.isfinite(loss[0].value)
    assert history(store, run_id, "train/n_updates") == [(128, 1.0)]
    assert writer.batches_written == 2


def test_background_writer_keeps_order_and_flushes_on_close(tmp_path):
    from mlflow.tracking import MlflowClient

    from convopt_mlflow.tracking.writer import MLflowOutputFormat

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/bg.db")
    run_id = client.create_run(client.create_experiment("bg")).info.run_id
    writer = MLflowOutputFormat(run_id, client, background=True)
    for step in range(1, 21):
        writer.write({"train/loss": 1.0 / step, "bad": float("nan")}, {}, step=step)
    writer.close()
    history = client.get_metric_history(run_id, "train/loss")
    assert [m.step for m in history] == list(range(1, 21))
    assert writer.points_written == 20 and writer.dropped_nonfinite == 20 and writer.batches_written == 20


def test_background_write_failure_is_raised_in_the_training_thread(tmp_path):
    import pytest
    from mlflow.tracking import MlflowClient

    from convopt_mlflow.tracking.writer import MLflowOutputFormat

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/bgfail.db")
    client.create_experiment("bgfail")
    writer = MLflowOutputFormat("no-such-run", client, background=True)
    writer.write({"x": 1.0}, {}, step=1)
    with pytest.raises(RuntimeError, match="no-such-run"):
        writer.flush()
    writer.close()
