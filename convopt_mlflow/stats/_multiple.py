"""Holm-Bonferroni step-down correction for a family of comparisons."""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from convopt_mlflow.stats._validation import check_probability


def holm_bonferroni(p_values: ArrayLike, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm-adjusted p-values and rejections, in the input order.

    With the ``m`` p-values sorted ascending, ``p_(1) <= ... <= p_(m)``, the
    adjusted value is ``max_{j <= i} min(1, (m - j + 1) p_(j))`` (the definition
    of statsmodels' ``multipletests(method="holm")``); a hypothesis is rejected
    when its adjusted p-value is ``<= alpha``. This controls the family-wise
    error rate at ``alpha``. NaN p-values (an undefined test) count as 1.

    Args:
        p_values: ``(m,)`` raw p-values.
        alpha: family-wise error rate.

    Returns:
        ``(adjusted, reject)``, both ``(m,)``.

    Examples:
        >>> adjusted, reject = holm_bonferroni([0.01, 0.04, 0.03, 0.005])
        >>> adjusted.round(3).tolist(), reject.tolist()
        ([0.03, 0.06, 0.06, 0.02], [True, False, False, True])
    """
    check_probability(alpha, "alpha")
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p_values must be 1-D; got shape {p.shape}")
    p = np.where(np.isnan(p), 1.0, p)
    if np.any((p < 0.0) | (p > 1.0)):
        raise ValueError("p_values must lie in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted, adjusted <= alpha
