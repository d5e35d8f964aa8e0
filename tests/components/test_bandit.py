import numpy as np
import pytest

from convopt_mlflow.components.bandit import ThompsonBandit


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_converges_to_the_best_arm(seed):
    rng = np.random.default_rng(seed)
    means = {"keep": 0.0, "lr_up": 0.3, "lr_down": -0.2, "explore": 0.1}
    bandit = ThompsonBandit(list(means), learning_rate=1e-4)
    pulls = [bandit.select(rng) for _ in range(0)]
    for _ in range(400):
        arm = bandit.select(rng)
        bandit.update(arm, means[arm] + rng.normal(0, 0.5))
        pulls.append(arm)
    assert bandit.best() == "lr_up"
    assert pulls[-100:].count("lr_up") >= 70  # it exploits the best arm late on


def test_learning_rate_floor_tracks_a_change():
    rng = np.random.default_rng(0)
    bandit = ThompsonBandit(["a", "b"], learning_rate=0.2)
    for t in range(300):
        arm = bandit.select(rng)
        good = "a" if t < 150 else "b"
        bandit.update(arm, (1.0 if arm == good else 0.0) + rng.normal(0, 0.2))
    assert bandit.best() == "b"
    assert bandit.effective_counts.max() <= (2 - 0.2) / 0.2


def test_sample_mean_and_state_round_trip():
    bandit = ThompsonBandit(["x", "y"])
    for r in (1.0, 2.0, 6.0):
        bandit.update("x", r)
    bandit.update("y", float("nan"))  # ignored
    assert bandit.q[0] == pytest.approx(3.0) and bandit.n.tolist() == [3, 0]
    assert bandit.reward_std == pytest.approx(np.std([1, 2, 6], ddof=1))
    other = ThompsonBandit(["x", "y"])
    other.load_state_dict(bandit.state_dict())
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    assert [bandit.select(rng_a) for _ in range(20)] == [other.select(rng_b) for _ in range(20)]
    with pytest.raises(ValueError):
        ThompsonBandit(["x", "z"]).load_state_dict(bandit.state_dict())
