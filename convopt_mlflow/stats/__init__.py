"""Statistics for comparing training arms: pure numpy/scipy functions, no MLflow, Optuna or SB3.

Conventions (as in rliable):

- ``scores`` are final scores shaped ``(runs, tasks)``: one row per run (seed),
  one column per task or walk-forward fold. A 1-D array is one task.
- Randomness is injected: every resampling function takes
  ``rng: np.random.Generator | int`` and never touches global state.
- Sharpe ratios are per period (not annualized); ``returns`` are ``(periods,)``.

Examples:
    >>> from convopt_mlflow import stats
    >>> arms = {"ppo": [1.0, 1.2, 0.9, 1.1, 1.0], "replay": [1.4, 1.6, 1.3, 1.5, 1.7]}
    >>> stats.summarize_arm(arms["replay"], rng=0).iqm
    1.5
    >>> [c.significant for c in stats.compare_to_baseline(arms, "ppo", rng=0, paired=True)]
    [True]
"""
from convopt_mlflow.stats._compare import PRIMARY_TESTS, Comparison, compare_all_pairs, compare_arms, compare_to_baseline
from convopt_mlflow.stats._effects import hedges_g, probability_of_improvement
from convopt_mlflow.stats._multiple import holm_bonferroni
from convopt_mlflow.stats._power import minimum_detectable_effect, t_test_power
from convopt_mlflow.stats._sequential import (
    DECISIONS,
    SequentialDecision,
    obrien_fleming_boundaries,
    sequential_test,
    t_boundaries,
)
from convopt_mlflow.stats._sharpe import (
    SharpeDifference,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    sharpe_difference_test,
    sharpe_ratio,
)
from convopt_mlflow.stats._summary import ArmSummary, iqm, summarize_arm

__all__ = [
    "DECISIONS",
    "PRIMARY_TESTS",
    "ArmSummary",
    "Comparison",
    "SequentialDecision",
    "SharpeDifference",
    "compare_all_pairs",
    "compare_arms",
    "compare_to_baseline",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "hedges_g",
    "holm_bonferroni",
    "iqm",
    "minimum_detectable_effect",
    "obrien_fleming_boundaries",
    "probabilistic_sharpe_ratio",
    "probability_of_improvement",
    "sequential_test",
    "sharpe_difference_test",
    "sharpe_ratio",
    "summarize_arm",
    "t_boundaries",
    "t_test_power",
]
