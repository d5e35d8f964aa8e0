"""Sum-tree, prioritized transition replay and scenario replay: hand-made inputs, exact answers."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from convopt_mlflow.components.replay import PRIORITY_STRATEGIES, TradingExperienceReplay, bar_scores
from convopt_mlflow.components.replay_scenario import ScenarioReplay
from convopt_mlflow.components.sumtree import SumTree


def _store(replay: TradingExperienceReplay, n: int, priorities=None, first_bar: int = 100) -> np.ndarray:
    bars = np.arange(first_bar, first_bar + n)
    return replay.store_batch(bar=bars, position=np.ones(n), action=np.full(n, 2), reward=np.linspace(-1, 1, n),
                              log_prob=np.full(n, -1.1), scores=np.ones(n),
                              priorities=np.ones(n) if priorities is None else priorities)


# ------------------------------------------------------------------------ sum-tree
@pytest.mark.parametrize("capacity,branching", [(1, 16), (7, 2), (64, 16), (1000, 16), (1000, 3)])
def test_sumtree_sampling_frequencies_match_the_priorities(capacity, branching):
    rng = np.random.default_rng(capacity)
    tree = SumTree(capacity, branching)
    priorities = rng.uniform(0.1, 5.0, capacity)
    priorities[rng.random(capacity) < 0.2] = 0.0  # some items can never be drawn
    priorities[0] = max(priorities[0], 0.5)
    tree.update(np.arange(capacity), priorities)
    assert tree.total == pytest.approx(priorities.sum())
    assert tree.min_priority == pytest.approx(priorities[priorities > 0].min())
    draws = tree.sample(rng, 200_000)
    counts = np.bincount(draws, minlength=capacity)
    assert counts[priorities == 0].sum() == 0
    live = priorities > 0
    expected = priorities[live] / priorities.sum() * draws.size
    if live.sum() > 1:
        assert stats.chisquare(counts[live], expected).pvalue > 1e-3


@pytest.mark.parametrize("branching", [2, 3, 16])
def test_sumtree_update_with_repeats_and_rebuild_agree(branching):
    a, b = SumTree(10, branching), SumTree(10, branching)
    a.update(np.array([3, 3, 9, 0]), np.array([1.0, 4.0, 2.0, 0.5]))  # the last value for 3 wins
    leaves = np.zeros(10)
    leaves[[3, 9, 0]] = [4.0, 2.0, 0.5]
    b.rebuild(leaves)
    assert all(np.array_equal(x, y) for x, y in zip(a._sums, b._sums))
    assert a.total == 6.5 and a.min_priority == 0.5
    assert a.find(np.array([0.0, 0.49, 0.5, 4.49, 4.5, 6.49])).tolist() == [0, 0, 3, 3, 9, 9]


def test_sumtree_find_and_min_match_brute_force_under_random_updates():
    rng = np.random.default_rng(7)
    tree, leaves = SumTree(300), np.zeros(300)
    for _ in range(200):  # repeated items, zeros, raising and lowering the smallest leaf
        items = rng.integers(0, 300, 20)
        values = np.where(rng.random(20) < 0.1, 0.0, rng.exponential(size=20))
        tree.update(items, values)
        leaves[items] = values  # numpy's rule for repeats, like the tree's
        assert tree.min_priority == leaves[leaves > 0].min()
        assert tree.total == pytest.approx(leaves.sum(), rel=1e-12)
    draws = rng.random(5000) * leaves.sum()
    assert np.array_equal(tree.find(draws), np.searchsorted(np.cumsum(leaves), draws, side="right"))


def test_sumtree_rejects_bad_priorities():
    tree = SumTree(4)
    with pytest.raises(ValueError):
        tree.update(np.array([0]), np.array([np.nan]))
    with pytest.raises(IndexError):
        tree.update(np.array([4]), np.array([1.0]))
    with pytest.raises(ValueError):
        tree.sample(np.random.default_rng(0), 1)


# ------------------------------------------------------------------------ transition replay
def test_replay_draws_in_proportion_to_priority_to_the_alpha():
    replay = TradingExperienceReplay(16, priority_alpha=0.6, eps=0.0, seed=1)
    raw = np.arange(1.0, 9.0)
    _store(replay, 8, raw)
    counts = np.bincount(replay.sample_batch(100_000, 1.0).indices, minlength=8)
    expected = raw ** 0.6 / (raw ** 0.6).sum() * 100_000
    assert stats.chisquare(counts, expected).pvalue > 1e-3


def test_importance_weights_match_hand_computed_values():
    replay = TradingExperienceReplay(8, priority_alpha=1.0, beta0=0.4, beta_steps=10, eps=0.0)
    _store(replay, 4, np.array([1.0, 2.0, 3.0, 4.0]))
    batch = replay.gather(np.array([0, 1, 2, 3, 3]))
    # P = p / 10; w = (N P)^-beta / max_k (N P_k)^-beta = (p / p_min)^-0.4
    assert np.allclose(batch.probabilities, [0.1, 0.2, 0.3, 0.4, 0.4])
    assert np.allclose(batch.weights, [1.0, 2 ** -0.4, 3 ** -0.4, 4 ** -0.4, 4 ** -0.4])
    for _ in range(5):
        replay.sample_batch(4, 1.0)
    assert replay.beta == pytest.approx(0.4 + 0.6 * 5 / 10)  # annealed linearly towards 1
    assert np.allclose(replay.gather(np.array([3])).weights, 4 ** -0.7)
    for _ in range(10):
        replay.sample_batch(4, 1.0)
    assert replay.beta == 1.0


def test_sample_batch_draws_the_replayed_share_and_update_priorities_uses_score_times_td():
    replay = TradingExperienceReplay(8, priority_alpha=0.5, eps=0.01)
    _store(replay, 4)
    replay.data["score"][:4] = [1.0, 2.0, 0.5, 1.0]
    assert len(replay.sample_batch(10, 0.3)) == 3 and len(replay.sample_batch(10, 0.0)) == 0
    replay.update_priorities(np.array([0, 1, 2]), np.array([-3.0, 1.0, 4.0]))
    assert np.allclose(replay.tree.get(np.arange(4)), [(3.01) ** 0.5, (2.01) ** 0.5, (2.01) ** 0.5, 1.01 ** 0.5])
    rows = replay.gather(np.array([1])).to_dicts()
    assert rows[0]["bars"] == 101 and rows[0]["actions"] == 2


def test_ring_buffer_overwrites_the_oldest():
    replay = TradingExperienceReplay(4)
    _store(replay, 3, first_bar=0)
    slots = _store(replay, 3, first_bar=10)
    assert slots.tolist() == [3, 0, 1] and len(replay) == 4 and replay.cursor == 2
    assert replay.data["bar"].tolist() == [11, 12, 2, 10]
    assert replay.stats()["fill"] == 1.0


def test_state_dict_round_trip_continues_identically():
    a = TradingExperienceReplay(32, "pnl_impact", seed=3)
    _store(a, 20, np.random.default_rng(0).uniform(0, 2, 20))
    a.sample_batch(8, 0.5)
    state = a.state_dict()
    b = TradingExperienceReplay(32, "pnl_impact", seed=99)
    b.load_state_dict(state)
    assert np.array_equal(a.tree.priorities, b.tree.priorities) and a.tree.total == b.tree.total
    x, y = a.sample_batch(16, 1.0), b.sample_batch(16, 1.0)
    assert np.array_equal(x.indices, y.indices) and np.array_equal(x.weights, y.weights)
    with pytest.raises(ValueError):
        TradingExperienceReplay(16).load_state_dict(state)


def test_a_million_transitions_fit_in_64_mb():
    assert TradingExperienceReplay(1_000_000).nbytes <= 64 * 2 ** 20


# ------------------------------------------------------------------------ bar scores
def test_bar_scores_rank_bars_as_each_strategy_says():
    r = np.full(400, 1e-3) * np.where(np.arange(400) % 2, 1, -1)
    r[101] = 0.05  # the decision at bar 100 earns this big move
    r[300:] *= 10  # volatility jumps at bar 300
    for strategy in PRIORITY_STRATEGIES:
        scores = bar_scores(r, strategy, vol_window=20)
        assert scores.dtype == np.float32 and scores.mean() == pytest.approx(1.0, rel=1e-5) and scores.min() > 0
    assert bar_scores(r, "pnl_impact").argmax() == 100
    assert bar_scores(r, "rare_events").argmax() == 100
    assert np.all(bar_scores(r, "learning_difficulty") == 1.0)
    transition = bar_scores(r, "regime_transitions", vol_window=20)
    assert abs(int(transition[150:].argmax()) + 150 - 299) <= 1
    with pytest.raises(ValueError):
        bar_scores(r, "vibes")


# ------------------------------------------------------------------------ scenario replay
def _scenario(ratio: float = 1.0) -> ScenarioReplay:
    replay = ScenarioReplay(priority_alpha=1.0, replay_ratio=ratio, eps=0.0)
    replay.bind((10, 109), episode_length=10, scores=np.ones(200, np.float32))
    return replay


def test_scenario_ratio_zero_draws_exactly_what_the_uniform_sampler_draws():
    replay = _scenario(0.0)
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    assert np.array_equal(replay.sample(a, 50), b.integers(10, 110, size=50))
    assert a.bit_generator.state == b.bit_generator.state


def test_scenario_ratio_zero_inside_a_pool_consumes_exactly_the_stream_of_no_replay():
    """Inside a pool (a curriculum stage, an ensemble member's blocks) ratio 0 draws what the pool's
    own sampler draws and nothing more; before the fix it drew one extra coin per start."""
    from convopt_mlflow.components.ensemble import block_start_sampler
    replay = _scenario(0.0)
    replay.update_priorities(np.arange(10, 119), np.linspace(0.1, 5, 109))  # priorities are ignored at ratio 0
    pool = np.array([12, 30, 30, 55, 108])  # repeats weigh more, as in the curriculum's pool_sampler
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    for k in (1, 7, 64):
        assert np.array_equal(replay.sample(a, k, pool=pool), pool[b.integers(0, pool.size, size=k)])
    assert a.bit_generator.state == b.bit_generator.state
    blocks = block_start_sampler((10, 109), (1, 3), 4)
    a, b = np.random.default_rng(4), np.random.default_rng(4)
    for k in (3, 50):
        assert np.array_equal(replay.sample(a, k, uniform=blocks), blocks(b, k))
    assert a.bit_generator.state == b.bit_generator.state
    # with a share > 0 the non-prioritized starts are still the pool sampler's first draws
    half = _scenario(0.5)
    a, b = np.random.default_rng(2), np.random.default_rng(2)
    drawn, plain = half.sample(a, 400, pool=pool), pool[b.integers(0, pool.size, size=400)]
    assert 0.3 < np.mean(drawn == plain) < 1.0 and set(drawn.tolist()) <= set(pool.tolist())


def test_scenario_priorities_follow_the_td_errors_of_each_window():
    replay = _scenario()
    bars = np.arange(10, 119)
    replay.update_priorities(bars, np.where(bars == 60, 10.0, 0.1))  # one hard bar at 60
    p = replay.priorities
    # windows [s, s+10) that hold bar 60: s in 51..60 -> mean TD (9*0.1 + 10)/10
    assert np.allclose(p[51 - 10:61 - 10], 1.09) and np.allclose(p[:41], 0.1) and np.allclose(p[51:], 0.1)
    draws = replay.sample(np.random.default_rng(0), 50_000)
    counts = np.bincount(draws - 10, minlength=100)
    assert stats.chisquare(counts, p / p.sum() * draws.size).pvalue > 1e-3
    assert replay.stats()["fill"] == 1.0


def test_scenario_pool_restricts_starts_and_stays_prioritized_inside_it():
    replay = _scenario()
    bars = np.arange(10, 119)
    replay.update_priorities(bars, np.where(bars >= 100, 5.0, 0.5))
    pool = np.array([20, 30, 95, 100])
    draws = replay.sample(np.random.default_rng(1), 40_000, pool=pool)
    assert set(np.unique(draws)) <= set(pool.tolist())
    weights = replay.priorities[pool - 10]
    counts = np.array([(draws == b).sum() for b in pool])
    assert stats.chisquare(counts, weights / weights.sum() * draws.size).pvalue > 1e-3
    with pytest.raises(ValueError):
        replay.sample(np.random.default_rng(1), 3, pool=np.array([5]))


def test_scenario_state_round_trip():
    a = _scenario(0.5)
    a.update_priorities(np.arange(10, 60), np.linspace(0, 3, 50))
    b = _scenario(0.5)
    b.load_state_dict(a.state_dict())
    assert np.array_equal(a.priorities, b.priorities) and b.stats()["fill"] == a.stats()["fill"]
