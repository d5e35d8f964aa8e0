"""combine_probabilities: every method on small hand-made probabilities."""
import numpy as np
import pytest

from convopt_mlflow.components.combine import combine_probabilities, make_combination
from convopt_mlflow.errors import ConfigError

# 3 members x 2 bars x 3 actions (short, flat, long).
PROBS = np.array([
    [[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]],
    [[0.6, 0.3, 0.1], [0.2, 0.3, 0.5]],
    [[0.2, 0.1, 0.7], [0.1, 0.2, 0.7]],
])


def test_mean_prob_averages_equally_and_takes_the_argmax():
    actions, probs, agreement = combine_probabilities(PROBS, "mean_prob", None)
    np.testing.assert_allclose(probs, [[0.3, 0.2, 0.5], [0.8 / 3, 0.8 / 3, 1.4 / 3]])
    assert actions.tolist() == [2, 2]
    np.testing.assert_allclose(agreement, [2 / 3, 2 / 3])  # members 0 and 2; members 1 and 2


def test_weighted_uses_the_weights():
    actions, probs, agreement = combine_probabilities(PROBS, "weighted", [0.2, 0.7, 0.1])
    # bar 0: 0.2*[.1,.2,.7] + 0.7*[.6,.3,.1] + 0.1*[.2,.1,.7] = [.46, .26, .28]
    np.testing.assert_allclose(probs[0], [0.46, 0.26, 0.28])
    # bar 1: 0.2*[.5,.3,.2] + 0.7*[.2,.3,.5] + 0.1*[.1,.2,.7] = [.25, .29, .46]
    np.testing.assert_allclose(probs[1], [0.25, 0.29, 0.46])
    assert actions.tolist() == [0, 2]
    np.testing.assert_allclose(agreement, [0.7, 0.8])


def test_majority_vote_counts_weighted_votes_and_breaks_ties_to_flat():
    actions, probs, agreement = combine_probabilities(PROBS, "majority_vote", [0.25, 0.5, 0.25])
    # bar 0: long 0.25 + 0.25, short 0.5 -> tie -> flat, which nobody voted for
    # bar 1: short 0.25, long 0.5 + 0.25 -> long
    assert actions.tolist() == [1, 2]
    np.testing.assert_allclose(agreement, [0.0, 0.75])
    np.testing.assert_allclose(probs[0], [0.375, 0.225, 0.4])  # the weighted mean, as for the other methods

    # Equal weights: 2 of 3 members vote long on both bars.
    actions, _, agreement = combine_probabilities(PROBS, "majority_vote")
    assert actions.tolist() == [2, 2]
    np.testing.assert_allclose(agreement, [2 / 3, 2 / 3])


def test_majority_vote_can_overrule_the_mean():
    # Two members mildly prefer flat; one is sure of long: the mean says long, the vote flat.
    probs = np.array([[[0.0, 0.55, 0.45]], [[0.0, 0.55, 0.45]], [[0.0, 0.0, 1.0]]])
    assert combine_probabilities(probs, "mean_prob")[0].tolist() == [2]
    actions, _, agreement = combine_probabilities(probs, "majority_vote")
    assert actions.tolist() == [1]
    np.testing.assert_allclose(agreement, [2 / 3])


def test_long_only_flat_is_action_zero():
    probs = np.array([[[0.8, 0.2]], [[0.3, 0.7]]])  # (flat, long)
    actions, probs_out, agreement = combine_probabilities(probs, "majority_vote")
    assert actions.tolist() == [0] and agreement.tolist() == [0.5]
    np.testing.assert_allclose(probs_out, [[0.55, 0.45]])


def test_single_member_is_the_member():
    actions, probs, agreement = combine_probabilities(PROBS[:1], "mean_prob")
    np.testing.assert_array_equal(probs, PROBS[0])
    assert actions.tolist() == [2, 0] and agreement.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("method,weights,needle", [
    ("median", None, "unknown ensemble combination 'median'"),
    ("weighted", [0.5, 0.5], "one value per member (3)"),
    ("weighted", [0.5, 0.6, -0.1], "non-negative"),
    ("weighted", [0.5, 0.3, 0.1], "sum to 1"),
    ("mean_prob", [0.5, 0.3, 0.2], "use 'weighted'"),
])
def test_bad_combinations_are_refused(method, weights, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        combine_probabilities(PROBS, method, weights)


def test_make_combination_block():
    assert make_combination(4, "weighted", [0.1, 0.2, 0.3, 0.4]) == {"method": "weighted",
                                                                      "weights": [0.1, 0.2, 0.3, 0.4]}
    assert make_combination(3, "majority_vote")["weights"] == [1 / 3] * 3
    with pytest.raises(ConfigError, match="at least one member"):
        make_combination(0)
