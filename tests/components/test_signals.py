"""Pure series helpers used by the monitor."""
import math

import pytest

from convopt_mlflow.components import signals


def test_slope_least_squares_and_non_finite_pairs_dropped():
    assert signals.slope([1.0, 3.0, 2.0]) == pytest.approx(0.5)
    assert signals.slope([0.0, float("nan"), 4.0]) == pytest.approx(2.0)
    assert signals.slope([5.0, 7.0], x=[10.0, 20.0]) == pytest.approx(0.2)
    assert signals.slope([1.0]) == 0.0 and signals.slope([]) == 0.0
    assert signals.slope([1.0, 2.0], x=[3.0, 3.0]) == 0.0


def test_coefficient_of_variation_uses_mean_absolute_value():
    assert signals.coefficient_of_variation([0.9, 1.1]) == pytest.approx(0.1)
    assert signals.coefficient_of_variation([-1.0, 1.0]) == pytest.approx(1.0)
    assert signals.coefficient_of_variation([2.0, 2.0, float("inf")]) == 0.0
    assert math.isnan(signals.coefficient_of_variation([1.0]))


def test_small_helpers():
    assert math.isnan(signals.as_float(None)) and math.isnan(signals.as_float("x"))
    assert signals.as_float("2.5") == 2.5
    assert signals.median([3.0, float("nan"), 1.0, 2.0]) == 2.0 and math.isnan(signals.median([]))
    assert signals.clip01(1.5) == 1.0 and signals.clip01(float("nan")) == 0.0
    assert signals.ratio(2.0, 4.0) == 0.5 and signals.ratio(2.0, float("nan")) == 0.0
