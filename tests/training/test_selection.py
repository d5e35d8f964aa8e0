"""Which weights a run ships, the oracle next to the backtest, and the no-edge verdict."""
from __future__ import annotations

import itertools
from pathlib import Path

import mlflow
import pytest
import torch

from convopt_mlflow.training import coordinator
from convopt_mlflow.training.coordinator import train
from convopt_mlflow.training.checkpoints import CheckpointStore


def _scripted_scorer(scores):
    """A validation scorer that ignores the policy and replays ``scores`` (then repeats the last)."""
    sequence = itertools.chain(scores, itertools.repeat(scores[-1]))

    def factory(market, *, cost_bps):
        def evaluate(policy):
            return {"score": float(next(sequence))}
        return evaluate

    return factory


@pytest.mark.parametrize("final_model", ["best", "last"])
def test_logged_model_is_the_best_by_validation_checkpoint(tracked, monkeypatch, final_model):
    # evaluations at 512, 1024, 1536, 2048 steps score 0.5, 3.0, 1.0, 0.2; the final check scores 0.1
    monkeypatch.setattr(coordinator, "validation_scorer", _scripted_scorer([0.5, 3.0, 1.0, 0.2, 0.1]))
    cfg = tracked.config(run__eval_freq=512, run__final_model=final_model)
    result = train(cfg, preset="everything", checkpoint_root=tracked.checkpoint_root(f"select-{final_model}"))
    assert result.status == "FINISHED"
    tags = tracked.tags(result.run_id)
    metrics = tracked.client.get_run(result.run_id).data.metrics
    store = CheckpointStore(tags["convopt.checkpoint_dir"])
    if final_model == "best":
        assert tags["convopt.model_source"] == "best" and tags["convopt.model_step"] == "1024"
        assert metrics["model/val_score"] == 3.0 and metrics["model/last_val_score"] == 0.1
        expected = store.load(store.best())["policy"]
    else:
        assert tags["convopt.model_source"] == "last" and tags["convopt.model_step"] == "2048"
        expected = None
    # the verdict is on the shipped weights' real validation PnL (the scripted scores are not theirs), deflated
    # for the scores that chose them: the 4 evaluations (the last one, at 2048, scored the last weights) or,
    # with final_model=last, the one score of the last weights
    assert metrics["model/edge/n_trials"] == (4 if final_model == "best" else 1)
    assert tags["convopt.no_edge"] == str(not metrics.get("model/edge/dsr", 0.0) > 0.95).lower()
    # the shipped weights are the chosen checkpoint's, bit for bit
    local = mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/model")
    (weights,) = Path(local).rglob("member_0.pt")
    shipped = torch.load(weights, weights_only=True)
    if expected is not None:
        assert set(shipped) == set(expected)
        assert all(torch.equal(shipped[k], expected[k]) for k in expected)
    else:
        last = store.load(max(store.entries(), key=lambda e: e.step))["policy"]
        assert all(torch.equal(shipped[k], last[k]) for k in last)


def test_no_edge_market_is_tagged_and_finishes(tracked, capsys):
    from convopt_mlflow.cli import main

    code = main(["train", "--preset", "baseline", "--quiet", "--data", "synthetic:n_bars=3000,seed=2",
                 "--set", "env.cost_bps=200,env.n_envs=4,ppo.n_steps=64,ppo.batch_size=64,ppo.n_epochs=2,"
                          "ppo.net_arch=16,env.window=8,env.episode_length=64,run.total_timesteps=1024,"
                          "run.eval_freq=512"])
    assert code == 0
    (run,) = tracked.client.search_runs([tracked.client.get_experiment_by_name("convopt").experiment_id],
                                        "tags.`convopt.no_edge` = 'true'", max_results=1)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["model/val_score"] <= 0.0
    assert "no edge over staying flat" in capsys.readouterr().err


def test_planted_signal_run_logs_the_oracle(tracked):
    result = train(tracked.config(), preset="everything", checkpoint_root=tracked.checkpoint_root("oracle"))
    metrics = tracked.client.get_run(result.run_id).data.metrics
    for split in ("val", "test"):
        assert metrics[f"benchmark/{split}/oracle/sharpe"] > 0  # IC 0.1 at 1 bp: the oracle has an edge
        fraction = metrics[f"backtest/{split}/oracle_fraction"]
        assert fraction == pytest.approx(metrics[f"backtest/{split}/sharpe"] / metrics[f"benchmark/{split}/oracle/sharpe"])
        # a synthetic market knows its regimes: the backtest is also reported per regime, for agent and oracle
        shares = [v for k, v in metrics.items() if k.startswith(f"backtest/{split}/regime/") and k.endswith("/share")]
        assert shares and sum(shares) == pytest.approx(1.0)
        assert any(k.startswith(f"benchmark/{split}/oracle/regime/") for k in metrics)
        # the true oracle (DP on the true expected returns) next to the threshold rule on the signal
        assert metrics[f"benchmark/{split}/signal_rule/sharpe"] > 0
    assert metrics["benchmark/signal_rule/theta"] >= 0
    assert "benchmark/oracle/theta" not in metrics
    html = open(mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/backtest/equity_test.html")).read()
    assert '"name":"oracle"' in html and '"name":"signal_rule"' in html
