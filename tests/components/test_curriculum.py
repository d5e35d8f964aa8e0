import json

import numpy as np
import pandas as pd
import pytest

from convopt_mlflow.components.curriculum import CurriculumLearningSystem, default_stages
from convopt_mlflow.components.difficulty import percentile_rank, score_windows
from convopt_mlflow.errors import ConfigError

SEG = 1000
EPISODE = 100


def constructed_market(seed=0):
    """Four 1000-bar blocks, easiest first: calm trend, moderate walk, choppy mean reversion,
    volatile regime switching. Returns (r, high, low, close, block id per bar)."""
    rng = np.random.default_rng(seed)
    calm = 5e-4 + 1e-4 * rng.standard_normal(SEG)
    walk = 5e-4 * rng.standard_normal(SEG)
    shocks = rng.standard_normal(SEG + 1)
    choppy = 8e-4 * (shocks[1:] - 0.8 * shocks[:-1])
    regime = np.repeat(rng.choice([-1.0, 1.0], SEG // 20), 20)
    vol = np.where(np.arange(SEG) // 20 % 2 == 0, 3e-3, 5e-4)
    volatile = regime * 1e-3 + vol * rng.standard_normal(SEG)
    r = np.concatenate([calm, walk, choppy, volatile])
    r[0] = 0.0
    close = 100 * np.exp(np.cumsum(r))
    width = np.concatenate([np.full(SEG, 2e-4), np.full(SEG, 8e-4), np.full(SEG, 3e-3), np.full(SEG, 5e-3)])
    return r, close * (1 + width / 2), close * (1 - width / 2), close, np.repeat(np.arange(4), SEG)


def fitted(**criteria):
    """A curriculum over the constructed market; the design's stages alone (final_share=0) unless given."""
    r, high, low, close, _ = constructed_market()
    cur = CurriculumLearningSystem(progression_criteria={"total_steps": 1000, "final_share": 0.0, **criteria})
    cur.score_windows(r, high, low, close, (30, r.size - EPISODE - 1), EPISODE)
    return cur


def test_percentile_rank_by_hand():
    np.testing.assert_allclose(percentile_rank(np.array([3.0, 1.0, 2.0, 2.0])), [1.0, 0.0, 0.5, 0.5])


def test_components_rank_the_constructed_blocks():
    r, high, low, close, block = constructed_market()
    scores = score_windows(r, high, low, close, np.arange(30, r.size - EPISODE - 1), EPISODE)
    inside = block[scores.starts] == block[scores.starts + EPISODE]  # windows within one block
    by_block = {k: {name: float(v[inside & (block[scores.starts] == k)].mean()) for name, v in scores.ranks.items()}
                for k in range(4)}
    assert by_block[0]["trend"] < 0.2  # the calm trend is the clearest
    assert by_block[0]["volatility"] < by_block[1]["volatility"] < by_block[3]["volatility"]
    assert by_block[2]["noise"] > by_block[1]["noise"]  # negative autocorrelation, wide bars
    assert by_block[3]["regime"] > by_block[1]["regime"]
    difficulty = [by_block[k]["difficulty"] for k in range(4)]
    assert difficulty == sorted(difficulty)


def test_stages_are_ordered_by_difficulty_and_start_in_the_calm_trend():
    cur = fitted()
    _, _, _, _, block = constructed_market()
    ranks = dict(zip(cur.windows.starts.tolist(), cur.windows.ranks["difficulty"].tolist()))
    means = [np.mean([ranks[s] for s in cur.stage_pool(k)]) for k in range(5)]
    assert means == sorted(means) and means[0] < 0.25 and means[-1] > 0.5
    assert np.mean(block[cur.stage_pool(0)] == 0) > 0.85
    sizes = [np.unique(cur.stage_pool(k)).size for k in range(5)]
    assert sizes == sorted(sizes) and sizes[-1] == len(cur.windows)
    last = cur.stage_pool(4)  # the hardest decile appears twice
    hard = cur.windows.starts[cur.windows.ranks["difficulty"] >= 0.9]
    assert last.size == len(cur.windows) + hard.size and np.isin(hard, last).all()


def test_generate_stage_data_lists_windows_without_copying_bars():
    cur = fitted()
    frame = pd.DataFrame(index=pd.date_range("2020", periods=4000, freq="h"))
    table = cur.generate_stage_data(cur.current_stage, frame)
    assert list(table.columns[:3]) == ["start", "timestamp", "weight"]
    assert table["start"].tolist() == sorted(set(cur.pool.tolist()))
    assert (table["timestamp"] == frame.index[table["start"]]).all()
    assert table["difficulty"].max() <= 0.35 + 1e-6


def test_progression_by_step_fraction():
    cur = fitted(triggers=("steps",))
    stages = [cur.get_current_stage(step)["index"] for step in (0, 249, 250, 499, 500, 750, 899, 900, 1000)]
    assert stages == [0, 0, 1, 1, 2, 3, 3, 4, 4]
    assert [c.reason for c in cur.changes][0] == "step 250 passed 25% of 1000"
    assert cur.pool.size > 0 and not cur.pool.flags.writeable


def test_steps_advance_one_stage_per_call():
    cur = fitted(triggers=("steps",))
    assert cur.get_current_stage(950)["index"] == 1
    assert cur.get_current_stage(951)["index"] == 2


def test_progression_by_performance_needs_threshold_and_dwell():
    cur = fitted(triggers=("performance",), threshold=0.5, min_stage_fraction=0.1)
    assert cur.get_current_stage(50, {"eval_score": 0.9})["index"] == 0  # dwell: 100 steps
    assert cur.get_current_stage(150, {"eval_score": 0.4})["index"] == 0  # below threshold
    assert cur.get_current_stage(160, {})["index"] == 0  # no new score: nothing
    assert cur.get_current_stage(170, {"eval_score": 0.6})["index"] == 1
    assert cur.get_current_stage(5000)["index"] == 1  # step schedule is not a trigger
    assert cur.should_advance_stage({"eval_score": 0.6, "step": 269}) is False
    assert cur.should_advance_stage({"eval_score": 0.6, "step": 270}) is True


def test_monitor_request_advances_after_dwell_and_stops_at_the_last_stage():
    cur = fitted(triggers=("monitor",), min_stage_fraction=0.01)
    assert isinstance(cur.request_advance(5), str)  # within the dwell
    for step in (20, 40, 60, 80):
        change = cur.request_advance(step, "plateau")
        assert change.target == change.source + 1 and change.reason == "plateau"
    assert cur.request_advance(200) == "already at the last stage"
    assert fitted(triggers=("steps",)).request_advance(500).startswith("monitor requests are not")


def test_collapse_steps_back_once_then_the_schedule_holds():
    cur = fitted(triggers=("steps", "performance"), threshold=10.0, collapse_margin=0.5, max_step_backs=1,
                 hold_fraction=0.2)
    cur.get_current_stage(100, {"eval_score": 2.0})
    assert cur.get_current_stage(250)["index"] == 1  # entered with 2.0
    assert cur.get_current_stage(300, {"eval_score": 1.8})["index"] == 1
    assert cur.get_current_stage(320, {"eval_score": 1.2})["index"] == 0  # collapsed
    assert cur.changes[-1].reason.startswith("score 1.2 collapsed")
    assert cur.get_current_stage(519)["index"] == 0  # held for 200 steps
    assert cur.get_current_stage(520)["index"] == 1
    cur.get_current_stage(530, {"eval_score": -5.0})
    assert cur.step_backs == 1 and cur.stage == 2  # no second step back; the schedule moves on


def test_state_roundtrip_through_json():
    cur = fitted(triggers=("steps", "performance"))
    cur.get_current_stage(100, {"eval_score": 0.05})
    cur.get_current_stage(600)
    state = json.loads(json.dumps(cur.state_dict()))
    other = fitted(triggers=("steps", "performance"))
    other.load_state_dict(state)
    assert other.state_dict() == cur.state_dict()
    np.testing.assert_array_equal(other.pool, cur.pool)
    assert other.get_current_stage(601)["index"] == cur.get_current_stage(601)["index"] == 2


def test_tiny_pool_falls_back_to_the_easiest_starts():
    r, high, low, close, _ = constructed_market()
    cur = CurriculumLearningSystem([{"name": "impossible", "max": {"trend": 0.0, "volatility": 0.0}}],
                                   {"min_pool": 50})
    cur.score_windows(r, high, low, close, (30, 3000), EPISODE)
    assert cur.pool.size == 50


@pytest.mark.parametrize("stages, criteria, message", [
    ([{"name": "x", "max": {"colour": 0.5}}], {}, "unknown component"),
    (None, {"step_fractions": (0.5, 0.25, 0.75, 0.9)}, "increasing"),
    (None, {"triggers": ("weather",)}, "unknown curriculum trigger"),
    (None, {"speed": 1}, "unknown curriculum progression"),
])
def test_bad_definitions_are_refused(stages, criteria, message):
    with pytest.raises(ConfigError, match=message):
        CurriculumLearningSystem(stages, criteria)


def test_default_stages_for_other_counts():
    stages = default_stages(3)
    assert [s["max"].get("difficulty") for s in stages[:2]] == [pytest.approx(1 / 3), pytest.approx(2 / 3)]
    assert stages[-1]["name"] == "full_adversarial"
    assert CurriculumLearningSystem(stages, {"total_steps": 90}).criteria["step_fractions"] == (1 / 3, 2 / 3)


# ------------------------------------------------------------------ final share on the full distribution
def test_the_final_share_starts_anywhere_and_the_stages_play_out_before_it():
    cur = fitted(final_share=0.5, threshold=100.0)  # every trigger; performance never reaches the threshold
    assert cur.full_from_step == 500
    stages = [cur.get_current_stage(step, {"eval_score": 5.0})["index"] for step in (0, 125, 250, 375, 450, 499)]
    assert stages == [0, 1, 2, 3, 4, 4]  # 25/50/75/90% of the first half
    assert not cur.on_full_distribution and cur.pool.size < 2 * len(cur.windows)
    cur.get_current_stage(500, {"eval_score": 5.0})
    assert cur.full_since == 500 and cur.pool_key == len(cur.stages)
    np.testing.assert_array_equal(cur.pool, cur.windows.starts)  # every start once: no hard weighting
    assert cur.changes[-1].source == cur.changes[-1].target == 4 and "last 50%" in cur.changes[-1].reason
    # nothing moves the stage any more: a collapse (entry score 5) would step back; nor does the monitor
    cur.get_current_stage(600, {"eval_score": -50.0})
    assert cur.stage == 4 and cur.full_since == 500
    assert cur.request_advance(700) == "on the full distribution since step 500"


def test_the_switch_comes_one_decision_interval_early_so_no_late_episode_starts_in_a_stage_pool():
    cur = fitted(triggers=("steps",), final_share=0.5, decision_interval=128)
    cur.get_current_stage(372)  # episodes of steps 372..499 start before 500
    assert not cur.on_full_distribution
    cur.get_current_stage(373)  # this interval reaches step 500
    assert cur.full_since == 500 and cur.changes[-1].step == 373


def test_the_full_distribution_survives_a_state_round_trip():
    cur = fitted(triggers=("steps",), final_share=0.25)
    for step in range(0, 800, 50):
        cur.get_current_stage(step)
    other = fitted(triggers=("steps",), final_share=0.25)
    other.load_state_dict(cur.state_dict())
    assert other.full_since == cur.full_since == 750
    np.testing.assert_array_equal(other.pool, cur.windows.starts)


@pytest.mark.parametrize("share", [1.0, -0.1, 1.5, float("nan"), "half"])
def test_a_final_share_outside_0_1_is_a_config_error(share):
    with pytest.raises(ConfigError, match="final_share must be in \\[0, 1\\)"):
        CurriculumLearningSystem(progression_criteria={"total_steps": 100, "final_share": share})
