"""A whole training run, in process, against a real temporary sqlite MLflow store."""
import math

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from convopt_mlflow.config import build_config
from convopt_mlflow.data import generate_market, load_bars
from convopt_mlflow.training.coordinator import train

from .conftest import OptimizerLR

TINY = ["data.source=synthetic:n_bars=3000,seed=1,signal_ic=0.1", "env.n_envs=4", "ppo.n_steps=64",
        "ppo.batch_size=64", "ppo.n_epochs=2", "ppo.net_arch=16", "env.window=8", "env.episode_length=64",
        "run.total_timesteps=2048", "run.eval_freq=512", "run.checkpoint_freq=1024", "run.progress_bar=false",
        "monitoring_window=4"]
ROLLOUT = 4 * 64


@pytest.fixture()
def store(mlflow_uri):
    return MlflowClient(tracking_uri=mlflow_uri)


def test_run_is_fully_tracked_and_lr_is_what_the_optimizer_used(store):
    cfg = build_config("lr", TINY + ["lr_schedule_type=cosine_with_restarts", "restart_period=1000",
                                     "base_learning_rate=3e-4", "max_learning_rate=3e-4"])
    probe = OptimizerLR()
    result = train(cfg, preset="lr", extra_callbacks=[probe])
    assert result.status == "FINISHED" and result.exit_code == 0
    run = store.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["convopt.preset"] == "lr" and tags["convopt.role"] == "train" and tags["convopt.seed"] == "0"
    assert tags["convopt.version"] and tags["convopt.config_hash"] == run.data.params["config_hash"]
    assert run.data.params["ppo.batch_size"] == "64" and run.data.params["lr_schedule_type"] == "cosine_with_restarts"
    # dataset lineage
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == tags["convopt.data.digest"]
    _assert_split_boundaries_recorded(store, run, cfg)
    # learning curves at env-timestep steps, one point per rollout
    loss = store.get_metric_history(result.run_id, "train/loss")
    assert [m.step for m in loss] == list(range(ROLLOUT, 2048 + 1, ROLLOUT))
    for key in ("convergence/stability_score", "convergence/grad_norm", "eval/score", "rollout/ep_rew_mean"):
        assert store.get_metric_history(result.run_id, key), key
    # logged lr == optimizer's actual lr at every update, and it follows SGDR (restart at 1000)
    lr = {m.step: m.value for m in store.get_metric_history(result.run_id, "lr")}
    assert set(lr) == set(probe.seen)
    for step, used in probe.seen.items():
        assert lr[step] == pytest.approx(used, rel=1e-12)
    sb3_lr = {m.step: m.value for m in store.get_metric_history(result.run_id, "train/learning_rate")}
    assert sb3_lr == pytest.approx(lr, rel=1e-12)
    assert len(set(round(v, 12) for v in lr.values())) > 3  # it really moves
    # out-of-sample backtest and benchmarks
    metrics = run.data.metrics
    for split in ("val", "test"):
        for key in ("sharpe", "sortino", "max_drawdown", "calmar", "win_rate", "turnover", "total_return"):
            assert math.isfinite(metrics[f"backtest/{split}/{key}"])
            assert f"benchmark/{split}/buy_and_hold/{key}" in metrics and f"benchmark/{split}/flat/{key}" in metrics
    artifacts = {a.path for a in store.list_artifacts(result.run_id)}
    assert {"config.json", "interventions.json", "interventions.csv", "dashboards", "backtest"} <= artifacts
    # the model loads and predicts positions from bars
    bars = generate_market(400, 5, signal_ic=0.1).frame
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    out = model.predict(bars)
    assert len(out) == len(bars)
    ready = out[out["ready"]]
    assert len(ready) > 250 and set(ready["position"]) <= {-1.0, 0.0, 1.0}
    assert np.allclose(ready.filter(like="prob_").sum(axis=1), 1.0, atol=1e-5)


def test_same_seed_gives_identical_metrics(store):
    cfg = build_config("baseline", TINY + ["run.total_timesteps=1024"])
    first, second = train(cfg, preset="baseline"), train(cfg, preset="baseline")
    for key in ("train/loss", "train/value_loss", "eval/score", "rollout/ep_rew_mean"):
        a = [(m.step, m.value) for m in store.get_metric_history(first.run_id, key)]
        b = [(m.step, m.value) for m in store.get_metric_history(second.run_id, key)]
        assert a == b and a, key
    assert first.metrics == second.metrics
    other = train(build_config("baseline", TINY + ["run.total_timesteps=1024", "run.seed=1"]), preset="baseline")
    assert other.metrics["backtest/val/sharpe"] != first.metrics["backtest/val/sharpe"] or \
        store.get_metric_history(other.run_id, "train/loss")[0].value != \
        store.get_metric_history(first.run_id, "train/loss")[0].value


def test_real_bundled_data_trains(store):
    bars = load_bars("googl-1d")
    assert bars.n_bars == 2335
    cfg = build_config("baseline", TINY[1:] + ["data.source=googl-1d", "run.total_timesteps=512"])
    result = train(cfg, preset="baseline")
    run = store.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.inputs.dataset_inputs[0].dataset.name == "googl-1d"


def test_eval_freq_zero_disables_evaluation(store):
    result = train(build_config("baseline", TINY + ["run.total_timesteps=512", "run.eval_freq=0"]), preset="baseline")
    assert result.status == "FINISHED"
    assert not store.get_metric_history(result.run_id, "eval/score")


def test_progress_bar_run_finishes(store, capsys):
    result = train(build_config("baseline", TINY + ["run.total_timesteps=512", "run.progress_bar=true"]),
                   preset="baseline")
    assert result.status == "FINISHED"
    assert "512/512" in capsys.readouterr().out.replace(",", "")


def _assert_split_boundaries_recorded(store, run, cfg):
    """Bar indices and timestamps of every split, as params and as splits.json, read back through MlflowClient."""
    import json

    from convopt_mlflow.training.setup import load_market

    market = load_market(cfg)
    times = market.bars.frame.index
    params = run.data.params
    for name in ("train", "val", "test", "holdout"):
        start, stop = getattr(market.splits, name)
        assert params[f"split.{name}.bars"] == f"{start}:{stop}"
        assert params[f"split.{name}.time"] == f"{times[start].isoformat()}/{times[stop - 1].isoformat()}"
    holdout = market.splits.holdout
    assert holdout[1] == 3000 and holdout[1] - holdout[0] >= 0.1 * (3000 - market.features.warmup) - 1
    assert run.data.tags["convopt.splits.holdout"] == f"{holdout[0]}:{holdout[1]}"
    local = store.download_artifacts(run.info.run_id, "splits.json")
    with open(local, encoding="utf-8") as stream:
        record = json.load(stream)
    assert record["digest"] == run.data.tags["convopt.data.digest"] and record["n_bars"] == 3000
    assert record["splits"]["val"]["first"] == times[market.splits.val[0]].isoformat()
    assert record["splits"]["holdout"]["start"] == holdout[0]


def test_short_run_scales_the_default_eval_cadence(store, capsys):
    # run.eval_freq=25,000 (the default) would never evaluate in 2,048 steps: no eval/* at all
    cfg = build_config("baseline", [o for o in TINY if not o.startswith("run.eval_freq")])
    assert cfg.run.eval_freq == 25_000
    result = train(cfg, preset="baseline")
    run = store.get_run(result.run_id)
    assert run.data.params["run.eval_freq"] == "25000"
    assert run.data.params["run.eval_freq_effective"] == "512"  # a quarter of the budget, in whole rollouts
    assert [m.step for m in store.get_metric_history(result.run_id, "eval/score")] == [512, 1024, 1536, 2048]
    assert "evaluating on validation every 512 steps" in capsys.readouterr().out


def test_effective_eval_freq_keeps_long_runs_and_disabled_eval():
    from convopt_mlflow.training.evaluate import effective_eval_freq

    assert effective_eval_freq(25_000, 100_000, 2048) == 25_000  # the default run is unchanged
    assert effective_eval_freq(25_000, 60_000, 2048) == 14_336  # 15,000 in whole rollouts
    assert effective_eval_freq(25_000, 20_000, 2048) == 4_096
    assert effective_eval_freq(25_000, 1_000, 2048) == 2048  # never below one rollout
    assert effective_eval_freq(0, 1_000, 2048) == 0  # 0 still disables evaluation
    assert effective_eval_freq(1024, 2048, 256) == 1024  # a cadence the user chose is kept as given
