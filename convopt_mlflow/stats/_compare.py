"""Arm-against-baseline and all-pairs comparisons with Holm-Bonferroni correction.

Hypothesis tests treat the run (seed) as the unit of replication: each run is
reduced to its mean over tasks, so ``(runs, tasks)`` scores become ``(runs,)``.
P(improvement) keeps rliable's per-task definition, and the interval of the
difference comes from the stratified bootstrap over all scores.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, replace
from typing import Mapping

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike

from convopt_mlflow.stats._bootstrap import percentile_interval, resample, run_indices
from convopt_mlflow.stats._effects import hedges_g, probability_of_improvement, run_means
from convopt_mlflow.stats._multiple import holm_bonferroni
from convopt_mlflow.stats._power import minimum_detectable_effect
from convopt_mlflow.stats._validation import as_generator, as_scores, check_probability

PRIMARY_TESTS = ("welch", "mannwhitney", "permutation", "paired_t", "wilcoxon")
_NAN = float("nan")


@dataclass(frozen=True)
class Comparison:
    """Every number of one arm-vs-baseline comparison; differences are arm minus baseline.

    ``p_value`` is the raw p-value of the ``primary`` test, ``p_adjusted`` its
    Holm-adjusted value within the family compared together, and ``significant``
    is ``p_adjusted <= alpha``. ``paired_*`` and ``wilcoxon_*`` are NaN unless the
    arms share seeds (``paired``). ``mde`` is the standardized effect (Cohen's d,
    or d_z when paired) that the t test would detect with 80% power at the level
    the decision uses: ``alpha`` alone, ``alpha / m`` in a Holm family of ``m``
    (Holm's first step, so the power under Holm is at least 80%); ``mde_difference``
    is the same in score units.
    """

    arm: str
    baseline: str
    runs_arm: int
    runs_baseline: int
    paired: bool
    mean_difference: float
    difference_ci: tuple[float, float]
    hedges_g: float
    probability_of_improvement: float
    welch_t: float
    welch_p: float
    mannwhitney_u: float
    mannwhitney_p: float
    permutation_p: float
    paired_t: float
    paired_t_p: float
    wilcoxon_w: float
    wilcoxon_p: float
    primary: str
    p_value: float
    p_adjusted: float
    significant: bool
    alpha: float
    mde: float
    mde_difference: float
    confidence: float

    def to_dict(self) -> dict[str, float | str | bool]:
        """Flat view with ``difference_ci_low``/``difference_ci_high``; fit for logging."""
        flat = asdict(self)
        flat["difference_ci_low"], flat["difference_ci_high"] = flat.pop("difference_ci")
        return flat


def _difference_ci(
    x: np.ndarray, y: np.ndarray, paired: bool, n_boot: int, confidence: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Stratified bootstrap interval of ``mean(x) - mean(y)``; paired arms share the draws."""
    x_indices = run_indices(x.shape[0], x.shape[1], n_boot, rng)
    y_indices = x_indices if paired else run_indices(y.shape[0], y.shape[1], n_boot, rng)
    replicates = resample(x, x_indices).mean(axis=(1, 2)) - resample(y, y_indices).mean(axis=(1, 2))
    return percentile_interval(replicates, confidence)


def _paired_tests(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Paired t and Wilcoxon signed-rank on per-seed differences; NaN when all differences are 0."""
    differences = x - y
    if np.all(differences == 0.0):
        return _NAN, _NAN, _NAN, _NAN
    paired_t = scipy.stats.ttest_rel(x, y)
    wilcoxon = scipy.stats.wilcoxon(x, y)
    return float(paired_t.statistic), float(paired_t.pvalue), float(wilcoxon.statistic), float(wilcoxon.pvalue)


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def compare_arms(
    scores: ArrayLike,
    baseline_scores: ArrayLike,
    *,
    rng: np.random.Generator | int,
    arm: str = "arm",
    baseline: str = "baseline",
    paired: bool = False,
    primary: str = "welch",
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_boot: int = 2000,
    n_permutations: int = 9999,
) -> Comparison:
    """Compare one arm with a baseline: tests, effect sizes, interval and power.

    Computes Welch's t (``ttest_ind(equal_var=False)``), Mann-Whitney U
    (two-sided), a permutation test of the mean difference (exact when the
    permutations number at most ``n_permutations``), and - when ``paired`` - the
    paired t and Wilcoxon signed-rank tests, all on per-run task means; Hedges'
    g, P(improvement) and a stratified bootstrap CI of the mean difference.
    Alone, a comparison is a family of one: ``p_adjusted == p_value``.

    Args:
        scores: ``(runs, tasks)`` or ``(runs,)`` scores, same tasks as ``baseline_scores``,
            at least 2 runs.
        baseline_scores: the baseline's scores, shaped like ``scores``, at least 2 runs.
        rng: generator or int seed for the bootstrap and permutations.
        arm: name of the arm, carried into the result.
        baseline: name of the baseline, carried into the result.
        paired: row ``i`` of both arrays is the same seed (and data split); needs equal runs.
        primary: which test's p-value decides significance, one of ``PRIMARY_TESTS``.
        alpha: significance level.
        confidence: coverage of ``difference_ci``.
        n_boot: bootstrap replicates.
        n_permutations: random permutations when not exact.

    Examples:
        >>> c = compare_arms([3.1, 2.9, 3.4, 3.0, 3.2], [2.0, 2.2, 1.9, 2.1, 2.3], rng=0)
        >>> c.significant, round(c.mean_difference, 2), c.probability_of_improvement
        (True, 1.02, 1.0)
    """
    if primary not in PRIMARY_TESTS:
        raise ValueError(f"primary must be one of {PRIMARY_TESTS}; got {primary!r}")
    if primary in ("paired_t", "wilcoxon") and not paired:
        raise ValueError(f"primary={primary!r} needs paired=True (arms sharing seeds)")
    check_probability(alpha, "alpha")
    check_probability(confidence, "confidence")
    x_scores = as_scores(scores, name=arm, min_runs=2)
    y_scores = as_scores(baseline_scores, name=baseline, min_runs=2)
    if x_scores.shape[1] != y_scores.shape[1]:
        raise ValueError(f"{arm} has {x_scores.shape[1]} tasks but {baseline} has {y_scores.shape[1]}")
    if paired and x_scores.shape != y_scores.shape:
        raise ValueError(f"paired arms need the same (runs, tasks); got {x_scores.shape} and {y_scores.shape}")
    generator = as_generator(rng)
    x, y = run_means(x_scores), run_means(y_scores)

    welch = scipy.stats.ttest_ind(x, y, equal_var=False)
    mannwhitney = scipy.stats.mannwhitneyu(x, y, alternative="two-sided")
    permutation = scipy.stats.permutation_test(
        (x, y), _mean_difference, permutation_type="samples" if paired else "independent",
        vectorized=True, n_resamples=n_permutations, rng=generator,
    )
    paired_t, paired_t_p, wilcoxon_w, wilcoxon_p = _paired_tests(x, y) if paired else (_NAN,) * 4
    p_values = {
        "welch": float(welch.pvalue), "mannwhitney": float(mannwhitney.pvalue),
        "permutation": float(permutation.pvalue), "paired_t": paired_t_p, "wilcoxon": wilcoxon_p,
    }
    mde = minimum_detectable_effect(x.size, n_other=None if paired else y.size, paired=paired, alpha=alpha)
    if paired:
        spread = float((x - y).std(ddof=1))
    else:
        spread = float(np.sqrt(((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / (x.size + y.size - 2)))
    p_value = p_values[primary]
    return Comparison(
        arm=arm, baseline=baseline, runs_arm=x.size, runs_baseline=y.size, paired=paired,
        mean_difference=float(x_scores.mean() - y_scores.mean()),
        difference_ci=_difference_ci(x_scores, y_scores, paired, n_boot, confidence, generator),
        hedges_g=hedges_g(x_scores, y_scores),
        probability_of_improvement=probability_of_improvement(x_scores, y_scores),
        welch_t=float(welch.statistic), welch_p=p_values["welch"],
        mannwhitney_u=float(mannwhitney.statistic), mannwhitney_p=p_values["mannwhitney"],
        permutation_p=p_values["permutation"],
        paired_t=paired_t, paired_t_p=paired_t_p, wilcoxon_w=wilcoxon_w, wilcoxon_p=wilcoxon_p,
        primary=primary, p_value=p_value, p_adjusted=p_value,
        significant=bool(p_value <= alpha), alpha=alpha,
        mde=mde, mde_difference=mde * spread, confidence=confidence,
    )


def _holm_mde(c: Comparison, family: int) -> dict[str, float]:
    """The comparison's MDE at the level of a Holm family of ``family`` (alpha / family)."""
    mde = minimum_detectable_effect(c.runs_arm, n_other=None if c.paired else c.runs_baseline, paired=c.paired,
                                    alpha=c.alpha, comparisons=family)
    spread = c.mde_difference / c.mde if c.mde > 0 else _NAN
    return {"mde": mde, "mde_difference": mde * spread}


def _holm_family(comparisons: list[Comparison], alpha: float) -> tuple[Comparison, ...]:
    adjusted, reject = holm_bonferroni([c.p_value for c in comparisons], alpha)
    family = len(comparisons)
    return tuple(
        replace(c, p_adjusted=float(p), significant=bool(r), **_holm_mde(c, family))
        for c, p, r in zip(comparisons, adjusted, reject)
    )


def compare_to_baseline(
    arms: Mapping[str, ArrayLike], baseline: str, *, rng: np.random.Generator | int, alpha: float = 0.05, **options
) -> tuple[Comparison, ...]:
    """Compare every arm with ``arms[baseline]``, Holm-corrected across the family.

    Args:
        arms: ``{name: (runs, tasks) scores}``, including the baseline.
        baseline: the key of the baseline arm.
        rng: generator or int seed, shared in turn by all comparisons.
        alpha: family-wise error rate.
        **options (Any): passed to :func:`compare_arms` (``paired``, ``primary``, ...).

    Returns:
        One :class:`Comparison` per non-baseline arm, in ``arms`` order.

    Examples:
        >>> arms = {"ppo": [1.0, 1.2, 0.9, 1.1], "lr": [1.9, 2.1, 2.0, 2.2], "clip": [1.0, 1.3, 0.8, 1.1]}
        >>> [(c.arm, c.significant) for c in compare_to_baseline(arms, "ppo", rng=0)]
        [('lr', True), ('clip', False)]
    """
    if baseline not in arms:
        raise ValueError(f"unknown baseline arm {baseline!r}; arms are {sorted(arms)}")
    generator = as_generator(rng)
    comparisons = [
        compare_arms(scores, arms[baseline], arm=name, baseline=baseline, rng=generator, alpha=alpha, **options)
        for name, scores in arms.items() if name != baseline
    ]
    return _holm_family(comparisons, alpha)


def compare_all_pairs(
    arms: Mapping[str, ArrayLike], *, rng: np.random.Generator | int, alpha: float = 0.05, **options
) -> tuple[Comparison, ...]:
    """Compare every pair of arms, Holm-corrected across all ``k (k - 1) / 2`` pairs.

    For names ``a`` before ``b`` in ``arms`` order, ``a`` is the arm and ``b`` the
    baseline. Arguments as for :func:`compare_to_baseline`.

    Examples:
        >>> arms = {"a": [1.0, 1.2, 0.9, 1.1], "b": [1.9, 2.1, 2.0, 2.2], "c": [1.0, 1.3, 0.8, 1.1]}
        >>> [(c.arm, c.baseline) for c in compare_all_pairs(arms, rng=0)]
        [('a', 'b'), ('a', 'c'), ('b', 'c')]
    """
    generator = as_generator(rng)
    comparisons = [
        compare_arms(arms[a], arms[b], arm=a, baseline=b, rng=generator, alpha=alpha, **options)
        for a, b in itertools.combinations(arms, 2)
    ]
    return _holm_family(comparisons, alpha)
