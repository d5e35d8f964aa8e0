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
from __future__ import annotations

from ..lazy import lazy_attributes

# Loaded on first use (PEP 562): a training run needs only the Sharpe tests (numpy and
# scipy.special), and the rest would import scipy.stats (0.5-0.8 s) at every run's start.
_HOME = {
    "_compare": ("PRIMARY_TESTS", "Comparison", "compare_all_pairs", "compare_arms", "compare_to_baseline"),
    "_effects": ("hedges_g", "probability_of_improvement"),
    "_multiple": ("holm_bonferroni",),
    "_power": ("minimum_detectable_effect", "t_test_power"),
    "_sequential": ("DECISIONS", "SequentialDecision", "obrien_fleming_boundaries", "sequential_test", "t_boundaries"),
    "_sharpe": ("SharpeDifference", "deflated_sharpe_ratio", "expected_max_sharpe", "probabilistic_sharpe_ratio",
                "sharpe_difference_test", "sharpe_ratio"),
    "_summary": ("ArmSummary", "iqm", "summarize_arm"),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}


__getattr__, __dir__ = lazy_attributes(globals(), _MODULE_OF)


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
