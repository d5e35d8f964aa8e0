"""The promotion rule on hand-made per-bar returns."""
import numpy as np
import pytest
import scipy.stats

from convopt_mlflow import stats
from convopt_mlflow.evaluation.promotion import decide_promotion, one_sided_sharpe_test

RNG = np.random.default_rng(0)
MARKET = RNG.normal(0.0, 1e-3, 3000)
SKILLED = np.abs(MARKET) * 0.5 - 1e-5           # right side of every bar, minus a cost
NOISY = MARKET * RNG.choice([-1.0, 1.0], MARKET.size)  # a coin flip on each bar


def test_one_sided_p_is_half_the_two_sided_p_in_the_claimed_direction():
    mine, theirs, z, p = one_sided_sharpe_test(SKILLED, NOISY)
    two_sided = stats.sharpe_difference_test(SKILLED, NOISY)
    assert z == pytest.approx(two_sided.z) and z > 0
    assert p == pytest.approx(two_sided.p_value / 2) and p == pytest.approx(scipy.stats.norm.sf(z))
    assert one_sided_sharpe_test(NOISY, SKILLED)[3] > 0.5  # the other direction is not evidence


def test_a_never_trading_side_counts_as_flat():
    flat = np.zeros_like(MARKET)
    mine, theirs, z, p = one_sided_sharpe_test(SKILLED, flat)
    assert theirs == 0.0 and p == pytest.approx(1.0 - stats.probabilistic_sharpe_ratio(SKILLED))
    assert one_sided_sharpe_test(flat, SKILLED)[3] == 1.0


def test_first_champion_must_beat_flat_and_buy_and_hold_significantly():
    assert decide_promotion(SKILLED, buy_and_hold=MARKET, champion=None, alpha=0.05).promote
    refused = decide_promotion(MARKET, buy_and_hold=MARKET, champion=None, alpha=0.05)
    assert not refused.promote and "not significant" in refused.reason
    losing = decide_promotion(-SKILLED, buy_and_hold=MARKET, champion=None, alpha=0.05)
    assert "does not beat flat" in losing.reason and losing.compared_to == "buy_and_hold"


def test_a_challenger_moves_the_champion_only_on_a_significant_improvement():
    better = decide_promotion(SKILLED, buy_and_hold=MARKET, champion=NOISY, alpha=0.05, champion_label="version 1")
    assert better.promote and better.compared_to == "version 1" and better.sharpe_difference > 0
    same = decide_promotion(SKILLED, buy_and_hold=MARKET, champion=SKILLED, alpha=0.05, champion_label="version 1")
    assert not same.promote and "not a significant improvement" in same.reason
    tags = better.tags()
    assert tags["convopt.promotion.decision"] == "promote" and tags["convopt.promotion.compared_to"] == "version 1"
    assert float(tags["convopt.promotion.p_value"]) == pytest.approx(better.p_value, rel=1e-5)
    assert {"convopt.promotion.z", "convopt.promotion.sharpe_difference", "convopt.promotion.alpha"} <= set(tags)


def test_sharpes_the_user_reads_are_annualized_when_the_bar_rate_is_known():
    per_bar = decide_promotion(SKILLED, buy_and_hold=MARKET, champion=None, alpha=0.05)
    yearly = decide_promotion(SKILLED, buy_and_hold=MARKET, champion=None, alpha=0.05, periods_per_year=8760)
    assert yearly.sharpe_challenger == per_bar.sharpe_challenger  # the test itself runs per bar
    assert f"Sharpe (annualized) {per_bar.sharpe_challenger * np.sqrt(8760):.4g} beats flat" in yearly.reason
    tags = yearly.tags()
    assert tags["convopt.promotion.sharpe_unit"] == "annualized"
    assert float(tags["convopt.promotion.sharpe_challenger"]) == pytest.approx(per_bar.sharpe_challenger * np.sqrt(8760),
                                                                               rel=1e-5)
    assert "Sharpe per bar" in per_bar.reason and per_bar.tags()["convopt.promotion.sharpe_unit"] == "per bar"

