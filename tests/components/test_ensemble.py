"""The ensemble component on hand-made inputs."""
import numpy as np
import pytest

from convopt_mlflow.components.ensemble import (
    EnsembleLearningFramework, MemberOutcome, block_start_sampler, disagreement_rate,
    diversity_weights, mean_pairwise_correlation, member_seeds,
)

# combine_probabilities itself is tested in test_combine.py (the shipped model applies the same function)


def test_mean_pairwise_correlation_by_hand():
    a = np.array([1.0, -1.0, 1.0, -1.0])
    returns = np.stack([a, a, -a, np.zeros(4)])
    # member 0: corr with 1 = 1, with 2 = -1, with the constant 3 = 0 -> 0
    np.testing.assert_allclose(mean_pairwise_correlation(returns), [0.0, 0.0, -2 / 3, 0.0])


def test_the_diversity_penalty_lowers_the_weight_of_correlated_members():
    rng = np.random.default_rng(0)
    common, own = rng.normal(size=500), rng.normal(size=500)
    returns = np.stack([common, common + 0.01 * rng.normal(size=500), own])  # 0 and 1 move together
    sharpes = [1.0, 1.0, 1.0]
    plain, _ = diversity_weights(sharpes, returns, penalty=0.0)
    np.testing.assert_allclose(plain, [1 / 3] * 3)
    penalized, corr = diversity_weights(sharpes, returns, penalty=0.5)
    assert corr[0] > 0.45 and abs(corr[2]) < 0.1
    assert penalized[2] > plain[2] and penalized[0] < plain[0]
    raw = np.array([1 - 0.5 * c for c in corr])
    np.testing.assert_allclose(penalized, raw / raw.sum())


def test_members_without_edge_get_no_weight_and_all_flat_means_equal_weights():
    returns = np.random.default_rng(1).normal(size=(3, 50))
    w, _ = diversity_weights([2.0, -1.0, 0.0], returns, penalty=0.1)
    assert w.tolist() == [1.0, 0.0, 0.0]
    w, _ = diversity_weights([-2.0, -1.0, np.nan], returns, penalty=0.1)
    np.testing.assert_allclose(w, [1 / 3] * 3)


def test_decide_picks_the_best_validation_score_and_records_why():
    fw = EnsembleLearningFramework(3, {}, seed=0)
    scores = {"mean_prob": 0.5, "majority_vote": 0.9, "weighted": 0.7}
    decision = fw.decide([1.0, 0.5, 0.2], np.eye(3), lambda m, w: scores[m])
    assert decision.method == "majority_vote"
    assert decision.val_scores == scores
    assert "majority_vote" in decision.reason and np.isclose(sum(decision.weights), 1.0)
    probs = np.array([[[0.1, 0.2, 0.7]], [[0.1, 0.5, 0.4]], [[0.0, 0.6, 0.4]]])  # votes 2, 1, 1
    assert decision.weights == (1 / 3, 1 / 3, 1 / 3)  # a vote weighs the same for every member
    assert fw.combine_predictions(probs).tolist() == [1]  # the decision's method: majority, not mean (2)
    weighted = fw.decide([1.0, 0.5, 0.2], np.eye(3), lambda m, w: 2.0 if m == "weighted" else 0.0)
    assert weighted.weights[0] > weighted.weights[1] > weighted.weights[2]  # Sharpe weights
    tied = fw.decide([1.0, 1.0, 1.0], np.eye(3), lambda m, w: 1.0)
    assert tied.method == "mean_prob"  # ties prefer the simplest
    nan = fw.decide([1.0, 1.0, 1.0], np.eye(3), lambda m, w: float("nan") if m == "mean_prob" else 0.1)
    assert nan.method == "majority_vote"


def test_member_seeds_come_from_disjoint_streams():
    """Ensembles at seeds 0..9 (neighbouring A/B cells) share no member seed, none is a small shifted
    seed (seed + i gave the seed-0 ensemble's member 1 the seed-1 ensemble's member 0), and the
    seeds are a deterministic function of the ensemble's seed."""
    ensembles = {s: EnsembleLearningFramework(5, {}, seed=s).initialize_models() for s in range(10)}
    seeds = [p.seed for plans in ensembles.values() for p in plans]
    assert len(set(seeds)) == len(seeds) == 50
    assert not set(seeds) & set(range(10 + 5))
    assert all(0 <= s < 2**32 for s in seeds)
    assert all([p.seed for p in plans] == list(member_seeds(s, 5)) for s, plans in ensembles.items())
    assert member_seeds(7, 5) == member_seeds(7, 5) and member_seeds(7, 3) == member_seeds(7, 5)[:3]
    assert [p.seed for p in EnsembleLearningFramework(5, {}, seed=0).initialize_models()] == [p.seed for p in ensembles[0]]


def test_plans_are_reproducible_and_inside_the_bounds():
    config = {"lr_factor": (0.5, 2.0), "ent_coef": (0.0, 0.02), "clip_range": (0.1, 0.3),
              "net_archs": [[64, 64], [32]], "activations": ["tanh", "relu"], "data_subsets": "bootstrap"}
    plans = EnsembleLearningFramework(5, config, seed=3).initialize_models()
    assert plans == EnsembleLearningFramework(5, config, seed=3).initialize_models()
    assert plans != EnsembleLearningFramework(5, config, seed=4).initialize_models()
    assert [p.seed for p in plans] == list(member_seeds(3, 5))
    assert all(0.5 <= p.lr_factor <= 2.0 and 0 <= p.ent_coef <= 0.02 and 0.1 <= p.clip_range <= 0.3 for p in plans)
    assert [p.net_arch for p in plans[:3]] == [(64, 64), (32,), (64, 64)]
    assert [p.activation for p in plans[:2]] == ["tanh", "relu"]
    assert all(len(p.blocks) == 10 and max(p.blocks) < 10 for p in plans)
    disjoint = EnsembleLearningFramework(3, {"data_subsets": "disjoint", "n_blocks": 6}).initialize_models()
    assert [p.blocks for p in disjoint] == [(0, 1), (2, 3), (4, 5)]
    assert EnsembleLearningFramework(2, {"data_subsets": "none"}).initialize_models()[0].blocks == ()
    with pytest.raises(ValueError, match="unknown diversity_config"):
        EnsembleLearningFramework(2, {"lr": 1})


def test_train_ensemble_needs_min_members():
    fw = EnsembleLearningFramework(3, {}, min_members=2)

    def train(plan):
        return MemberOutcome(plan.index, "KILLED" if plan.index else "FINISHED", "signal 9" * bool(plan.index))

    training = fw.train_ensemble(train)
    assert [o.index for o in training.finished] == [0] and not training.enough
    assert "1 of 3 members finished" in training.reason and "member 2 KILLED: signal 9" in training.reason


def test_block_start_sampler_stays_in_its_blocks():
    sample = block_start_sampler((100, 199), blocks=(1, 3, 3), n_blocks=10)
    starts = sample(np.random.default_rng(0), 3000)
    assert set(np.unique(starts // 10)) == {11, 13}
    assert np.mean(starts // 10 == 13) == pytest.approx(2 / 3, abs=0.03)
    with pytest.raises(ValueError):
        block_start_sampler((0, 9), blocks=(10,), n_blocks=10)


def test_disagreement_rate():
    assert disagreement_rate(np.array([1.0, 2 / 3, 1.0, 1 / 3])) == 0.5
