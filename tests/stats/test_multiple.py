import numpy as np
import pytest

from convopt_mlflow.stats import holm_bonferroni


def test_known_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> running max 0.06
    adjusted, reject = holm_bonferroni([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert reject.tolist() == [True, False, False, True]


def test_step_down_stops_at_first_failure():
    # 0.01*3 = 0.03 rejects; 0.02*2 = 0.04 rejects; 0.045*1 = 0.045 rejects at 0.05
    adjusted, reject = holm_bonferroni([0.045, 0.01, 0.02])
    assert adjusted == pytest.approx([0.045, 0.03, 0.04])
    assert reject.all()
    # with 0.03 second the step-down halts at 0.06 and the rest cannot be rejected
    adjusted, reject = holm_bonferroni([0.01, 0.03, 0.04])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06])
    assert reject.tolist() == [True, False, False]


def test_capped_at_one_and_nan_counts_as_one():
    adjusted, reject = holm_bonferroni([0.6, np.nan, 0.5])
    assert adjusted.tolist() == [1.0, 1.0, 1.0] and not reject.any()


def test_single_hypothesis_is_unchanged():
    adjusted, reject = holm_bonferroni([0.04])
    assert adjusted.tolist() == [0.04] and reject.tolist() == [True]


def test_bad_input():
    with pytest.raises(ValueError):
        holm_bonferroni([1.5])
    with pytest.raises(ValueError):
        holm_bonferroni([0.1], alpha=0.0)
