import numpy as np
import pytest

from convopt_mlflow.env import PositionPath, deterministic_positions
from convopt_mlflow.errors import ConfigError

# Position feedback: flat -> long, long -> short, short -> flat (actions 2, 0, 1).
NEXT_ACTION = {0.0: 2, 1.0: 0, -1.0: 1}


def cycling_policy(seen):
    def act(obs):
        seen.extend(row.copy() for row in obs)
        return np.array([NEXT_ACTION[float(p)] for p in obs[:, -1]])

    return act


def test_walk_feeds_positions_back_and_covers_every_decision_bar(hand_core):
    seen = []
    path = deterministic_positions(hand_core, cycling_policy(seen), (0, 6))
    assert isinstance(path, PositionPath)
    np.testing.assert_array_equal(path.bars, [1, 2, 3, 4])  # bar 0 has no full window, bar 5 no next return
    np.testing.assert_array_equal(path.positions, [1.0, -1.0, 0.0, 1.0])
    assert path.positions.dtype == np.float64
    # every observation on the walked path was evaluated (batched over all held positions)
    evaluated = {tuple(row.tolist()) for row in seen}
    for row in ([0, 1, 10, 11, 0], [10, 11, 20, 21, 1], [20, 21, 30, 31, -1], [30, 31, 40, 41, 0]):
        assert tuple(float(v) for v in row) in evaluated


def test_walk_pnl_matches_env_rewards(hand_core):
    path = deterministic_positions(hand_core, cycling_policy([]), (1, 6))
    prev = np.concatenate([[0.0], path.positions[:-1]])
    pnl = path.positions * hand_core.log_returns[path.bars + 1] - hand_core.cost_rate * np.abs(path.positions - prev)
    t, position, rewards = np.array([1]), np.zeros(1), []
    for p in path.positions:
        position, reward = hand_core.step(t, position, np.flatnonzero(hand_core.position_levels == p))
        rewards.append(reward[0])
        t = t + 1
    np.testing.assert_array_equal(pnl, rewards)


def test_walk_over_a_later_range_and_bad_ranges(hand_core):
    path = deterministic_positions(hand_core, lambda obs: np.array([2]), (3, 6))
    np.testing.assert_array_equal(path.bars, [3, 4])
    np.testing.assert_array_equal(path.positions, [1.0, 1.0])
    with pytest.raises(ConfigError, match="no decision bar"):
        deterministic_positions(hand_core, lambda obs: np.array([2]), (0, 2))
    with pytest.raises(ConfigError, match="n_bars=6"):
        deterministic_positions(hand_core, lambda obs: np.array([2]), (0, 7))
    with pytest.raises(ValueError, match="act returned action 3"):
        deterministic_positions(hand_core, lambda obs: np.array([3]), (0, 6))


def test_follow_choices_equals_the_step_by_step_walk_without_a_python_object_per_decision():
    """Composing the per-decision maps gives the sequential walk, for any length and start; and it
    builds no per-row lists (which set off full garbage collections in a loaded process)."""
    import gc

    from convopt_mlflow.env.rollout import follow_choices

    def walk(choices, start):
        held, out = start, []
        for row in choices:
            held = int(row[held])
            out.append(held)
        return out

    rng = np.random.default_rng(4)
    for n in (0, 1, 2, 3, 7, 64, 1001):
        for levels in (2, 3):
            choices = rng.integers(0, levels, (n, levels))
            for start in range(levels):
                assert follow_choices(choices, start).tolist() == walk(choices, start)
    big = rng.integers(0, 3, (50_000, 3))
    collections = []
    gc.callbacks.append(record := lambda phase, info: collections.append(phase) if phase == "start" else None)
    try:
        gc.collect()
        collections.clear()
        follow_choices(big, 1)
    finally:
        gc.callbacks.remove(record)
    assert len(collections) < 5  # 50k rows as Python lists set off ~70 collections
