import json

import numpy as np
import pytest

from convopt_mlflow.components.meta import ADJUSTMENTS, MetaLearningController
from convopt_mlflow.errors import ConfigError


def _market(seed=0):
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(0, 1e-3, 800), rng.normal(0, 4e-3, 800), rng.normal(0, 1e-3, 800)]


def test_labels_bars_online_and_reads_the_regime_of_current_bars():
    meta = MetaLearningController({"lookback": 32})
    returns = _market()
    assert meta.detect_regime_change(returns[:500], first_bar=100) is False  # calm: no change yet
    assert meta.detect_regime_change(returns[500:]) is True
    assert meta.labels.size == returns.size
    changes = np.array(meta.change_bars)
    for switch in (100 + 800, 100 + 1600):
        assert ((changes >= switch) & (changes <= switch + 60)).sum() == 1
    assert len(changes) <= 3
    assert meta.regime_of(np.array([100 + 1500, 100 + 1400])) == "high_vol"
    assert meta.regime_of(np.array([100 + 700])) != "high_vol"
    # online: a label never depends on later bars
    prefix = MetaLearningController({"lookback": 32})
    prefix.detect_regime_change(returns[:500], first_bar=100)  # the scale comes from the first batch
    prefix.detect_regime_change(returns[500:1000])
    assert np.array_equal(prefix.labels, meta.labels[:1000])


def test_bandit_per_regime_learns_the_adjustment_that_raises_the_score():
    meta = MetaLearningController({"seed": 3, "meta_learning_rate": 1e-4})
    rng = np.random.default_rng(0)
    best = {"high_vol": "cautious", "normal": "lr_up"}
    score = 0.0
    for k in range(300):
        regime = "high_vol" if (k // 20) % 2 else "normal"
        chosen = meta.adapt(step=(k + 1) * 1000, regime=regime, score=score)
        assert chosen.multipliers() == dict(zip(("lr", "ent_coef", "clip_range"), ADJUSTMENTS[chosen.arm]))
        score += (0.2 if chosen.arm == best[regime] else 0.0) + rng.normal(0, 0.1)
    assert meta.bandits["high_vol"].best() == "cautious"
    assert meta.bandits["normal"].best() == "lr_up"
    assert "earned" in meta.current.reason


def test_no_new_score_means_no_reward_and_state_round_trips_through_json():
    meta = MetaLearningController({"seed": 1})
    meta.adapt(step=1000, regime="normal", score=0.5)
    meta.adapt(step=2000, regime="high_vol", score=None)  # no eval since: nothing learned
    assert meta.bandits["normal"].n.sum() == 0
    assert "regime change normal -> high_vol" in meta.current.reason
    meta.adapt(step=3000, regime="high_vol", score=0.7)
    assert meta.bandits["high_vol"].n.sum() == 1 and meta.bandits["high_vol"].q.max() == pytest.approx(0.2)
    state = json.loads(json.dumps(meta.state_dict()))
    other = MetaLearningController({"seed": 99})
    other.load_state_dict(state)
    assert other.current == meta.current and other.pending == meta.pending
    assert [meta.adapt(step=s, regime="normal", score=0.1 * s).arm for s in range(4, 30)] == \
           [other.adapt(step=s, regime="normal", score=0.1 * s).arm for s in range(4, 30)]


@pytest.mark.parametrize("config", [{"meta_learning_rate": 2.0}, {"adaptation_frequency": 0}, {"lookbak": 3},
                                    {"adjustments": {"x": (1.0, 0.0, 1.0)}}])
def test_bad_config_is_a_config_error(config):
    with pytest.raises(ConfigError):
        MetaLearningController(config)


def test_stratified_controller_rewards_each_bandit_with_its_own_strata_score():
    from convopt_mlflow.components.strata import STRATA

    meta = MetaLearningController({"seed": 1, "stratified": True})
    assert tuple(meta.bandits) == STRATA
    shares = {"trend": 0.4, "mean_reversion": 0.4, "neutral": 0.15, "high_vol": 0.05}
    first = meta.adapt_stratum(0, {"trend": 1.0, "mean_reversion": -1.0, "neutral": 0.0, "high_vol": 0.5}, shares)
    assert first.regime == "trend" and meta.pending["score_before"] == 1.0
    # only the trend score moved by +0.25: the trend bandit gets +0.25, nobody else anything
    second = meta.adapt_stratum(100, {"trend": 1.25, "mean_reversion": 5.0, "neutral": 9.0, "high_vol": 9.0}, shares)
    assert meta.last_reward == {"regime": "trend", "arm": first.arm, "reward": 0.25}
    assert [int(b.n.sum()) for b in meta.bandits.values()] == [1, 0, 0, 0]
    assert second.regime == "mean_reversion" and meta.pending["score_before"] == 5.0
    # no evaluation since: unrewarded; the next stratum's score_before is its newest known score
    third = meta.adapt_stratum(200, None, shares)
    assert meta.last_reward is None and sum(int(b.n.sum()) for b in meta.bandits.values()) == 1
    assert meta.pending["score_before"] == {"trend": 1.25, "mean_reversion": 5.0, "neutral": 9.0}.get(third.regime, 9.0)
    # the raised floor gives rare strata blocks too; the state round-trips
    for step in range(300, 4000, 100):
        meta.adapt_stratum(step, None, shares)
    counts = meta.schedule.counts
    assert counts["high_vol"] >= 3 and counts["trend"] > counts["neutral"] > counts["high_vol"]
    again = MetaLearningController({"seed": 1, "stratified": True})
    again.load_state_dict(meta.state_dict())
    assert again.schedule.counts == counts and again.pending == meta.pending and again._known == meta._known


def test_a_controller_in_the_old_mode_refuses_stratified_blocks():
    with pytest.raises(ValueError, match="stratified=True"):
        MetaLearningController({}).adapt_stratum(0, None, {"trend": 1.0})
