"""Group-sequential test of paired differences with O'Brien-Fleming-type alpha spending.

Design (Lan & DeMets 1983; Jennison & Turnbull 2000, ch. 7 and 19): the
differences (arm minus baseline, one per shared seed or period) are examined
at planned looks ``n_1 < ... < n_K``, with information fractions
``t_k = n_k / n_K``. Each side spends ``alpha / 2`` through the O'Brien-Fleming-
type function ``a(t) = 2 - 2 Phi(z_{1 - alpha/4} / sqrt(t))`` (gsDesign's
``sfLDOF``, ldbounds' two-sided symmetric bounds), so the procedure's type I
error is ``alpha`` over all looks however early it stops. Boundaries come
from the exact recursive integration of the null density of the B-value
``B_k = Z_k sqrt(t_k)``, which has independent ``N(0, t_k - t_{k-1})`` increments.

The statistic at a look is the one-sample t statistic of the differences so
far, mapped to a z with the same tail probability. That z is exactly N(0, 1)
at each look under the null, but the looks' joint law is not the Brownian one
when the variance is estimated from a few differences: normal-theory boundaries
then spend too much (a measured 0.058 at looks (3, 4), 0.052 at (2, 4) and
(3, 5), for alpha = 0.05). So :func:`sequential_test` uses boundaries exact for
small degrees of freedom (:func:`t_boundaries`): the first is the normal one
(exact, as the marginal is exact), and each later one is the quantile that makes
the null probability of a first crossing by look ``k`` equal the spending
function, computed over 400,000 simulated null streams of normal differences
(a fixed seed, so a design always gets the same boundaries; the t statistic's
null law does not depend on the variance, so this is the exact boundary up to
Monte Carlo error, about 3e-4 in the total type I error). From 30 degrees of
freedom at the first look the normal-theory boundaries are used.

Futility is non-binding: an interim look stops with ``"accept"`` when the
conditional power under the current trend falls below ``futility_power``.
Ignoring it never raises the type I error, since boundaries are computed without it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats
from numpy.typing import ArrayLike

from convopt_mlflow.stats._validation import check_probability

DECISIONS = ("continue", "reject", "accept")
_GRID = 1201
_NO_STOP = 40.0
#: Null streams and seed of the small-sample calibration; its chunk size bounds memory.
_CALIBRATION_STREAMS, _CALIBRATION_SEED, _CHUNK = 400_000, 20_240_611, 50_000
#: From this many degrees of freedom at the first look, normal-theory boundaries are used.
_LARGE_DF = 30


def _spent(fractions: np.ndarray, alpha: float) -> np.ndarray:
    """Two-sided alpha spent by information fractions ``t`` (both sides together)."""
    per_side = 2.0 - 2.0 * scipy.stats.norm.cdf(scipy.stats.norm.isf(alpha / 4.0) / np.sqrt(fractions))
    return 2.0 * per_side


def _trapezoid_weights(grid: np.ndarray) -> np.ndarray:
    weights = np.full(grid.size, grid[1] - grid[0])
    weights[[0, -1]] /= 2.0
    return weights


@lru_cache(maxsize=64)
def _boundaries(fractions: tuple[float, ...], alpha: float) -> tuple[float, ...]:
    t = np.asarray(fractions)
    increments = np.diff(_spent(t, alpha), prepend=0.0)
    critical = [float(scipy.stats.norm.isf(increments[0] / 2.0))]
    half_width = critical[0] * np.sqrt(t[0])
    grid = np.linspace(-half_width, half_width, _GRID)
    density = scipy.stats.norm.pdf(grid, scale=np.sqrt(t[0]))
    for k in range(1, t.size):
        step = np.sqrt(t[k] - t[k - 1])
        mass = density * _trapezoid_weights(grid)

        def exit_probability(c: float) -> float:
            edge = c * np.sqrt(t[k])
            return float(mass @ (scipy.special.ndtr((-edge - grid) / step) + scipy.special.ndtr((grid - edge) / step)))

        if increments[k] <= 1e-15 or exit_probability(_NO_STOP) >= increments[k]:
            c = float("inf")
        else:
            c = float(scipy.optimize.brentq(lambda c: exit_probability(c) - increments[k], 0.0, _NO_STOP, xtol=1e-10))
        critical.append(c)
        half_width = min(c, _NO_STOP) * np.sqrt(t[k])
        new_grid = np.linspace(-half_width, half_width, _GRID)
        kernel = np.exp(-0.5 * ((new_grid[:, None] - grid[None, :]) / step) ** 2) / (step * np.sqrt(2.0 * np.pi))
        density = kernel @ mass
        grid = new_grid
    return tuple(critical)


def _null_z(looks: tuple[int, ...], rng: np.random.Generator, size: int) -> np.ndarray:
    """``(size, K)`` statistics (t mapped to z) of null streams of normal differences at each look."""
    data = rng.standard_normal((size, looks[-1]))
    n = np.asarray(looks)
    sums, squares = np.cumsum(data, axis=1)[:, n - 1], np.cumsum(data * data, axis=1)[:, n - 1]
    mean = sums / n
    sd = np.sqrt(np.maximum(squares - n * mean * mean, 0.0) / (n - 1))
    t = mean / (sd / np.sqrt(n))
    return -scipy.special.ndtri(scipy.special.stdtr(n - 1, -t))


@lru_cache(maxsize=64)
def _t_boundaries(looks: tuple[int, ...], alpha: float) -> tuple[float, ...]:
    normal = _boundaries(_fractions(looks), alpha)
    if len(looks) == 1 or looks[0] - 1 >= _LARGE_DF:
        return normal
    rng = np.random.default_rng(_CALIBRATION_SEED)
    z = np.abs(np.concatenate([_null_z(looks, rng, _CHUNK) for _ in range(_CALIBRATION_STREAMS // _CHUNK)]))
    spent = np.rint(_spent(np.asarray(_fractions(looks)), alpha) * z.shape[0]).astype(int)
    critical = [normal[0]]  # the first look's statistic is exactly N(0, 1): its normal boundary is exact
    alive = z[:, 0] < critical[0]
    crossed = z.shape[0] - int(alive.sum())
    for k in range(1, len(looks)):
        wanted = spent[k] - crossed
        candidates = np.sort(z[alive, k])[::-1]
        c = float("inf") if wanted <= 0 else float(candidates[min(wanted, candidates.size) - 1])
        critical.append(c)
        newly = alive & (z[:, k] >= c)
        crossed += int(newly.sum())
        alive &= ~newly
    return tuple(critical)


def t_boundaries(looks: Sequence[int], alpha: float = 0.05) -> np.ndarray:
    """Two-sided boundaries ``(K,)`` on the t-mapped z of :func:`sequential_test`, exact for small df.

    The O'Brien-Fleming-type spending of :func:`obrien_fleming_boundaries`, but each
    boundary after the first is set so that the null probability of crossing by look
    ``k`` (of the statistic :func:`sequential_test` uses, with the variance estimated
    from the differences seen so far) equals the alpha spent by then. Depends on the
    looks themselves, not only their ratios. Equal to the normal-theory boundaries for
    one look, or from 30 degrees of freedom at the first look.

    Example:
        >>> normal, exact = obrien_fleming_boundaries([3, 5]), t_boundaries([3, 5])
        >>> bool(normal[0] == exact[0]), bool(exact[1] > normal[1])
        (True, True)
    """
    check_probability(alpha, "alpha")
    _fractions(looks)
    return np.array(_t_boundaries(tuple(int(n) for n in looks), float(alpha)))


def _fractions(looks: Sequence[int]) -> tuple[float, ...]:
    n = np.asarray(looks)
    if n.ndim != 1 or n.size == 0 or n[0] < 2 or np.any(np.diff(n) <= 0):
        raise ValueError(f"looks must be increasing sample sizes, the first at least 2; got {list(looks)}")
    return tuple(float(f) for f in n / n[-1])


def obrien_fleming_boundaries(looks: Sequence[int], alpha: float = 0.05) -> np.ndarray:
    """Two-sided z boundaries ``(K,)`` of the Lan-DeMets O'Brien-Fleming design.

    Reject at look ``k`` when ``|Z_k| >= boundary[k]``. Only the ratios of
    ``looks`` matter (information fractions ``n_k / n_K``).

    Args:
        looks: ``(K,)`` planned cumulative sample sizes (differences) at each look.
        alpha: two-sided type I error over all looks.

    Examples:
        >>> obrien_fleming_boundaries([10, 20, 30, 40, 50]).round(3).tolist()
        [4.877, 3.357, 2.68, 2.29, 2.031]
    """
    check_probability(alpha, "alpha")
    return np.array(_boundaries(_fractions(looks), float(alpha)))


@dataclass(frozen=True)
class SequentialDecision:
    """What to do after the looks reached so far.

    ``decision`` is ``"continue"`` (collect more), ``"reject"`` (the mean
    difference is not 0; its sign is the sign of ``z``) or ``"accept"`` (stop:
    the last look was not significant, or interim conditional power fell below
    the futility threshold). ``look`` is the 1-based look that decided (the last
    one reached when continuing, 0 before the first), ``n`` the differences it
    used, ``z`` its statistic and ``boundary`` its rejection boundary;
    ``conditional_power`` is NaN at the final look and before the first.
    """

    decision: str
    look: int
    n: int
    z: float
    boundary: float
    conditional_power: float
    boundaries: tuple[float, ...]

    def to_dict(self) -> dict[str, object]:
        """Plain ``dict`` view."""
        return asdict(self)


def _z_statistic(differences: np.ndarray) -> float:
    """One-sample t of ``differences`` mapped to the z with the same upper tail probability."""
    mean, spread = differences.mean(), differences.std(ddof=1)
    if spread == 0.0:
        return 0.0 if mean == 0.0 else float(np.sign(mean) * np.inf)
    t = mean / (spread / np.sqrt(differences.size))
    return float(-scipy.special.ndtri(scipy.special.stdtr(differences.size - 1, -t)))


def _conditional_power(z: float, fraction: float, final_boundary: float) -> float:
    """P(|Z_K| >= c_K | Z_k = z) if the drift stays at its current estimate ``z / sqrt(t_k)``."""
    drift, spread = z / np.sqrt(fraction), np.sqrt(1.0 - fraction)
    return float(scipy.special.ndtr((-final_boundary - drift) / spread) + scipy.special.ndtr((drift - final_boundary) / spread))


def sequential_test(
    differences: ArrayLike,
    looks: Sequence[int],
    *,
    alpha: float = 0.05,
    futility_power: float = 0.1,
) -> SequentialDecision:
    """Decide continue / reject / accept from the paired differences seen so far.

    Looks are evaluated in order at each planned ``n_k`` that the data reach; the
    first stop wins, so passing all the data replays the monitoring.

    Args:
        differences: ``(n,)`` paired differences (arm minus baseline) in arrival order,
            e.g. per-seed score differences; ``n`` must not exceed ``looks[-1]``.
        looks: ``(K,)`` planned cumulative sample sizes, fixed before the data.
        alpha: two-sided type I error of the whole procedure; the boundaries are
            :func:`t_boundaries`, exact for the small looks of a seed-paired A/B study.
        futility_power: stop for futility at an interim look when the conditional
            power under the current trend is below it; 0 disables futility stops.

    Examples:
        >>> d = np.random.default_rng(0).normal(1.5, 1.0, 30)
        >>> result = sequential_test(d[:10], [10, 20, 30])
        >>> result.decision, result.look, round(result.boundary, 2)
        ('reject', 1, 3.71)
        >>> sequential_test(d[:5], [10, 20, 30]).decision
        'continue'
    """
    check_probability(alpha, "alpha")
    if not 0.0 <= futility_power < 1.0:
        raise ValueError(f"futility_power must lie in [0, 1); got {futility_power}")
    data = np.asarray(differences, dtype=float)
    if data.ndim != 1 or not np.all(np.isfinite(data)):
        raise ValueError("differences must be a finite 1-D array")
    fractions = _fractions(looks)
    if data.size > looks[-1]:
        raise ValueError(f"got {data.size} differences but the last planned look is at {looks[-1]}")
    boundaries = _t_boundaries(tuple(int(n) for n in looks), float(alpha))
    last = dict(decision="continue", look=0, n=0, z=float("nan"), boundary=float("nan"), conditional_power=float("nan"))
    for k, n in enumerate(looks):
        if n > data.size:
            break
        z = _z_statistic(data[:n])
        final = k == len(looks) - 1
        power = float("nan") if final else _conditional_power(z, fractions[k], boundaries[-1])
        last = dict(look=k + 1, n=int(n), z=z, boundary=boundaries[k], conditional_power=power)
        if abs(z) >= boundaries[k]:
            return SequentialDecision(decision="reject", boundaries=boundaries, **last)
        if final or power < futility_power:
            return SequentialDecision(decision="accept", boundaries=boundaries, **last)
        last["decision"] = "continue"
    return SequentialDecision(boundaries=boundaries, **last)
