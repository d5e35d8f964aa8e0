"""BOCPD with run-length pruning: the recursion of :mod:`~convopt_mlflow.components.bocpd` over the
run lengths that still carry mass, a block of bars at a time (~10 µs of CPU per bar, half the exact kernel's,
benchmarks/results/bocpd.json; ~7 µs since the per-call cuts of issue 19, benchmarks/results/regime_cost.json;
~6.5 µs (11-12% less) since its third pass, benchmarks/results/bocpd_pass3.json and regime_cost_bocpd_label_ab.json).

The exact kernel keeps every run length ``0 .. R-1`` and costs O(R) per bar. Almost all of that
mass is negligible: after a segment has lasted a while, only the run lengths of a few candidate
starts hold more than ``prune`` of the posterior. Here the posterior is kept *sparse*: a sorted
list of run lengths and their masses (:class:`SparseState`).

Within a block of ``n`` bars nothing is pruned: the columns are the ``K`` run lengths alive at the
block's start plus the ``n - 1`` segments that may start inside it (and one that never does, where that
makes the column count even: see below), so the block costs
O(n (K + n)), and the recursion over it is the exact one given the kept run lengths:

* ``lp[t, c]``: the Student-t predictive of bar ``t`` under column ``c``'s segment (statistics of
  at most the last ``R - 1`` bars, exactly as the exact kernel's merged tail), from cumulative sums;
* ``G[t, c]``: the product of ``(1 - H) p(x_j | c)`` from the segment's first bar in the block to ``t``;
* the evidences ``T_t`` solve ``(I - H/(1-H) L) T = b`` (lower triangular, ``L[t, j] = G[t, new j]``,
  ``b[t] = Σ_k p_k G[t, k]``); the posterior after bar ``t`` is ``H`` at run length 0,
  ``(1-H) p_k G[t, k] / T_t`` for a kept run length and ``H T_j G[t, j] / T_t`` for a start in the block.

**Pruning** happens after every ``PRUNE_EVERY`` (64) bars, counted from the first bar fed, so the
answers do not depend on how bars are split into calls or blocks (and stay causal: where it prunes
never depends on later bars). Run lengths whose posterior mass is below ``prune`` are dropped,
at most ``max_starts`` are kept (the largest masses; run length 0 always), and the rest are
renormalized. Renormalizing after dropping mass ``m`` moves the posterior by exactly ``m`` in
total variation; each pruning's ``m`` is added to :attr:`SparseState.dropped`, so the error put
in is known exactly. The bound is ``m <= prune * dropped columns`` while ``max_starts`` does not
bite; when it does (a diffuse posterior: long calm segments spread ~H of mass over every run
length), ``m`` is what the ``max_starts`` smallest columns held, measured, not bounded a priori
(on the regime market: ~0.005 per pruning at the defaults, see docs/guides/regimes.md). With
``prune=0`` and ``max_starts >= R`` nothing is dropped and the answers are the exact kernel's
(tests/components/test_bocpd_fast.py checks that, and the agreement at the defaults).

Arithmetic is float64; each bar's predictives are scaled by their maximum (as in the exact kernel).
The calls are arranged for speed (the running sums over bars on pairs of columns viewed as complex
numbers, both cumulative sums of the inputs in one such pass, the run-length tables padded instead of
indices clamped, ufunc methods instead of their wrappers), but every entry goes through the same float
operations in the same order as in the kernel before issue 19's third cost pass (d1ed280): run lengths,
volatilities, posteriors and states are the same bit for bit (tests/components/test_bocpd_fast.py, against
tests/components/bocpd_fast_reference_d1ed280.py, on regime, plain and switching series and EURUSD). One
call is not elementwise: the kept run lengths' evidence ``G @ probs`` (BLAS) now reads a matrix whose row
stride may be one column longer; its sums are the same on every series tested, which BLAS does not
promise in general. Units: bars; values are standardized returns.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.linalg.lapack import dtrtrs
from scipy.special import gammaln

from convopt_mlflow.components.bocpd import Prior

__all__ = ["SparseState", "sparse_block", "DEFAULT_PRUNE", "DEFAULT_MAX_STARTS"]

#: run lengths with less posterior mass than this are dropped where a block ends
DEFAULT_PRUNE = 1e-7
#: at most this many run lengths are kept where a block ends (the largest masses)
DEFAULT_MAX_STARTS = 64
#: prune after every this many bars, counted from the first bar fed (not where a call or block ends,
#: so the answers do not depend on how the bars are split into calls or blocks)
PRUNE_EVERY = 64


@dataclass
class SparseState:
    """The run-length posterior as the run lengths that carry mass.

    ``runs``: run lengths (bars, ascending, unique, at most ``R - 1``, which stands for every older
    one); ``probs``: their masses (sum 1); ``history``: the last ``R - 1`` clipped inputs
    (chronological); ``vol``: the MAP segment's volatility after the last bar (1.0 before any bar);
    ``dropped``: the total posterior mass pruned so far (summed over prunings); ``bars``: bars fed.
    """

    runs: np.ndarray
    probs: np.ndarray
    history: np.ndarray
    vol: float = 1.0
    dropped: float = 0.0
    bars: int = 0
    """Bars fed so far (pruning happens after every ``PRUNE_EVERY``-th bar, counted from the first)."""

    def dense(self, length: int) -> np.ndarray:
        """The posterior over run lengths ``0 .. length-1`` (zeros where pruned)."""
        out = np.zeros(length)
        out[self.runs] = self.probs
        return out


_FLOOR = -600.0


@lru_cache(maxsize=None)
def _layout(n: int, m: int) -> tuple:
    """A block of ``n`` bars with ``m`` new columns (two per block length: at most the block size): its bars
    ``t``, as a column, the shifts of its new columns (-1 - j), the mask of the entries (t, j), j >= t, of an
    (n, m) matrix, and the padding of the tables (a power of two >= n: few cached tables). Read only."""
    t = np.arange(n)
    out = (t, t[:, None], -1 - np.arange(m), np.triu(np.ones((n, m), dtype=bool)), 1 << max(n - 1, 1).bit_length())
    for array in out[:4]:
        array.flags.writeable = False
    return out


@lru_cache(maxsize=16)
def _padded_tables(R: int, prior: Prior, pad: int) -> np.ndarray:
    """:func:`_tables` with ``pad`` copies of run length 0's column before and of R-1's after, (4, R + 2 pad):
    column ``pad + r`` is run length ``r`` clamped to [0, R-1], for ``-pad <= r < R + pad``."""
    tables = _tables(R, prior)
    return np.concatenate((np.repeat(tables[:, :1], pad, axis=1), tables, np.repeat(tables[:, -1:], pad, axis=1)),
                          axis=1)


@lru_cache(maxsize=8)
def _log1m(H: float) -> float:
    """log(1 - H)."""
    return float(np.log1p(-H))


@lru_cache(maxsize=8)
def _tables(R: int, prior: Prior) -> np.ndarray:
    """kappa, kappa / (2 (kappa + 1)), alpha + 1/2 and the predictive's constant by run length 0 .. R-1, (4, R)."""
    kappa = prior.kappa + np.arange(R, dtype=np.float64)
    return np.stack((kappa, _ratio(R, prior), _power(R, prior), _const(R, prior)))


@lru_cache(maxsize=8)
def _vol_tables(R: int, prior: Prior) -> np.ndarray:
    """2 (kappa + r) and alpha + r / 2 by run length r = 0 .. R-1 (the segment volatility's), (2, R)."""
    r = np.arange(R, dtype=np.float64)
    return np.stack((2.0 * (prior.kappa + r), prior.alpha + 0.5 * r))


@lru_cache(maxsize=8)
def _ratio(R: int, prior: Prior) -> np.ndarray:
    """kappa / (2 (kappa + 1)) by run length 0 .. R-1."""
    kappa = prior.kappa + np.arange(R, dtype=np.float64)
    return kappa / (2.0 * (kappa + 1.0))


@lru_cache(maxsize=8)
def _power(R: int, prior: Prior) -> np.ndarray:
    """alpha + 1/2 by run length 0 .. R-1."""
    return prior.alpha + 0.5 * np.arange(R, dtype=np.float64) + 0.5


@lru_cache(maxsize=8)
def _const(R: int, prior: Prior) -> np.ndarray:
    """The Student-t predictive's constant, by run length 0 .. R-1."""
    a = np.arange(R, dtype=np.float64)
    kappa, alpha = prior.kappa + a, prior.alpha + 0.5 * a
    return gammaln(alpha + 0.5) - gammaln(alpha) - 0.5 * np.log(2 * np.pi * (kappa + 1) / kappa)


class _SparseBlock:
    """One block's matrices over kept and new run lengths; :meth:`state_at` prunes after any bar."""

    def __init__(self, x, state: SparseState, H: float, R: int, prior: Prior, prune: float, max_starts: int):
        self.R, self.H, self.prior, self.prune, self.max_starts = R, H, prior, prune, max_starts
        self.dropped0, self.bars0 = state.dropped, state.bars
        n, K = x.size, state.runs.size
        h = state.history.size
        # cumulative sums of the inputs (less mu) and of their squares, from the history's first bar:
        # column 0 of ``sums`` is y, column 1 y^2, each after a leading 0, summed down the columns in one
        # call (a complex view: the same additions, both sums in one pass); ``c`` holds them as rows
        sums = np.empty((h + n + 1, 2))
        y = sums[1:, 0]
        y[:h], y[h:] = state.history, x
        if prior.mu:
            y -= prior.mu
        np.multiply(y, y, out=sums[1:, 1])
        sums[0] = 0.0
        self.y = y.copy()
        self.h, self.n, self.K = h, n, K
        pairs = sums.view(np.complex128)[:, 0]
        np.add.accumulate(pairs, out=pairs)  # (ufunc methods, not their numpy wrappers, throughout: less per call)
        self.c = c = sums.T.copy()  # c[0]: sums of y, c[1]: of y^2
        # columns: the K kept run lengths, then a segment starting after each bar j < m of the block, m = n - 1,
        # or n where that makes the column count even (the last one never starts within the block: all its
        # entries are those of segments not started yet, below): the accumulation over bars runs on pairs of
        # columns (a complex view), twice as fast. Run length before bar t: runs[k] + t, or t-1-j (negative:
        # not started yet); at most R-1
        m = n - 1 + ((K + n - 1) & 1)
        t, t_col, starts, upper, pad = _layout(n, m)
        shift = np.concatenate((state.runs, starts))
        # the columns whose run reaches R-1 within the block. While the block is shorter than R only kept
        # run lengths can, a suffix of them (they ascend): a slice, so the columns below are views
        if n < R:
            lo = int(state.runs.searchsorted(R - 1 - n))
            cap = slice(lo, K) if lo < K else None
        else:
            cap = np.flatnonzero(shift + n >= R - 1)
            cap = cap if cap.size else None
        # a segment's first bar (index into y) is fixed, h - runs[k] or h+1+j, except where its run is
        # capped at R-1 (then the last R-1 bars): only the columns that reach the cap are gathered
        c_end = c[:, h:h + n, None]
        segment = np.empty((2, n, K + m))  # the segments' sums of y and of y^2
        np.subtract(c_end, c.take(h - shift, axis=1)[:, None, :], out=segment)
        if cap is not None:
            first = np.maximum((h - shift[cap])[None, :], (h - (R - 1)) + t_col)
            segment[:, :, cap] = c_end - c.take(first, axis=1)
        s1, s2 = segment
        # (t, new j) with j >= t: segments not started yet. Their entries below are meaningless and are
        # overwritten before they are used; they are made empty segments (sums 0) so that they stay
        # finite: a negative-length segment's NaNs would send log and log1p down their slow paths
        # (about twice the time of the whole array), and the other entries are untouched
        np.copyto(segment[:, :, K:], 0.0, where=upper)
        # the tables by run length before bar t, t + shift clamped to [0, R-1]: gathered from tables padded
        # with their first and last values (one gather, no clamping)
        before = t_col + (shift + pad)  # (offset by pad)
        kappa, ratio, power, const = _padded_tables(R, prior, pad).take(before, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            beta = s1 * s1
            beta /= kappa
            s2 -= beta
            s2 *= 0.5
            s2 += prior.beta
            beta = s2  # beta of the segment: prior.beta + (s2 - s1^2 / kappa) / 2
            s1 /= kappa
            np.subtract((x - prior.mu if prior.mu else x)[:, None], s1, out=s1)  # x_t - the segment's predictive mean
            s1 *= s1
            s1 *= ratio
            s1 /= beta
            lp = np.log1p(s1, out=s1)
            lp *= power
            np.log(beta, out=beta)
            beta *= 0.5
            lp += beta
            np.subtract(const, lp, out=lp)
        # scaled by each bar's maximum: <= 0. The entries of segments not started yet are, bit for bit, the
        # empty segment's of the bar (run length 0 before it, column K + t - 1), except on bar 0, which has
        # none: its maximum is over the kept run lengths only
        top = np.maximum.reduce(lp, axis=1, keepdims=True)
        top[0] = np.maximum.reduce(lp[0, :K])
        lp -= top
        lp += _log1m(H)
        np.copyto(lp[:, K:], 0.0, where=upper)
        pairs = lp.view(np.complex128)  # (the same additions, two columns at a time)
        np.add.accumulate(pairs, axis=0, out=pairs)  # a new column's rows before its start add 0
        # below e^-600 of the bar's best a mass is nothing; the floor keeps exp and the products that
        # follow out of subnormal floats (a hundredfold slower)
        np.maximum(lp, _FLOOR, out=lp)
        G = np.exp(lp, out=lp)
        np.copyto(G[:, K:], 0.0, where=upper)
        b = G[:, :K] @ state.probs
        # (LAPACK's order: dtrtrs copies nothing; its diagonal, last column and upper triangle are never read)
        A = np.empty((n, n), order="F")
        np.multiply(G[:, K:K + n - 1], -(H / (1.0 - H)), out=A[:, :n - 1])  # read below the diagonal only
        T, info = dtrtrs(A, b, lower=1, unitdiag=1)
        if info != 0 or not (np.minimum.reduce(T) > 0 and np.maximum.reduce(T) < np.inf):  # (NaN fails the first)
            raise FloatingPointError("sparse BOCPD evidence recursion failed")
        # posterior after bar t (normalized), by column: a kept run length's prior mass times (1 - H), a
        # start in the block's evidence times H (one row of factors: the same products, one call)
        P = G
        factor = np.empty(K + m)
        np.multiply(state.probs, 1.0 - H, out=factor[:K])
        np.multiply(T[:m], H, out=factor[K:])
        P *= factor
        P /= T[:, None]
        self.P, self.shift = P, shift
        # MAP run length; the columns capped at R-1 after bar t are one run length (their mass summed).
        # A column is capped after bar t where its run length before it is at least R-2 (clamped at R-1)
        best = None
        if cap is not None:
            capped = np.where(before[:, cap] >= R - 2 + pad, P[:, cap], 0.0)
            tail = np.add.reduce(capped, axis=1)
            P[:, cap] -= capped  # (exactly 0 where capped, unchanged elsewhere; restored exactly below)
            best = P.argmax(axis=1)
            best_p = P[t, best]
            P[:, cap] += capped
        else:
            best = P.argmax(axis=1)
            best_p = P[t, best]
        rl = shift[best]
        rl += t + 1
        np.minimum(rl, R - 1, out=rl)
        rl[best_p <= H] = 0
        if cap is not None:
            rl[tail > np.maximum(best_p, H)] = R - 1
        self.run_length = rl
        # the MAP segment's volatility after bar t (as segment_vol, with slices where it gathered)
        s1, s2 = c[:, h + 1:h + 1 + n] - c.take((h + 1) + t - rl, axis=1)
        s2 *= 0.5
        s2 += prior.beta
        s1 *= s1
        twice_kappa, alpha = _vol_tables(R, prior).take(rl, axis=1)
        s1 /= twice_kappa
        s2 -= s1
        s2 /= alpha
        self.vol = np.sqrt(s2, out=s2)

    def state_at(self, i: int) -> SparseState:
        """The state after bar ``i`` of the block: merged at R-1, pruned, renormalized."""
        K, R = self.K, self.R
        # run lengths: 0, the kept ones grown by i + 1 (ascending), the block's starts (i .. 1)
        runs = np.minimum(np.concatenate(((0,), i + 1 + self.shift[:K + i])), R - 1)
        probs = np.concatenate(((self.H,), self.P[i, :K + i]))
        probs /= np.add.reduce(probs)
        if i < R - 1:  # only kept run lengths can be capped, a suffix of them: merged into one
            lo = 1 + int(runs[1:K + 1].searchsorted(R - 1))
            if lo < K + 1:
                merged = np.add.reduce(probs[lo:K + 1])
                runs = np.concatenate((runs[:lo], runs[K + 1:], (R - 1,)))
                probs = np.concatenate((probs[:lo], probs[K + 1:], (merged,)))
        elif runs.max() == R - 1:  # merge every capped column into one
            top = runs == R - 1
            merged = probs[top].sum()
            runs = np.concatenate((runs[~top], (R - 1,)))
            probs = np.concatenate((probs[~top], (merged,)))
        bars = self.bars0 + i + 1
        if bars % PRUNE_EVERY == 0:
            keep = probs >= self.prune
            if np.count_nonzero(keep) > self.max_starts:
                keep = probs >= max(self.prune, np.partition(probs, -self.max_starts)[-self.max_starts])
            keep[0] = True  # run length 0 (mass H) is always kept
            dropped = float(np.add.reduce(probs[~keep]))
            runs, probs = runs[keep], probs[keep]
        else:
            dropped = 0.0
        order = runs.argsort(kind="stable")
        runs, probs = runs[order], probs[order] / np.add.reduce(probs)
        end = self.h + i + 1
        history = self.y[max(0, end - (R - 1)):end] + self.prior.mu
        return SparseState(runs.astype(np.int64, copy=False), probs, history, float(self.vol[i]),
                           self.dropped0 + dropped, bars)


def sparse_block(prune: float, max_starts: int):
    """A block function for :func:`~convopt_mlflow.components.bocpd.run_bocpd` that keeps sparse state."""
    def block(x, state, hazard, R, prior):
        return _SparseBlock(np.asarray(x, dtype=np.float64), state, float(hazard), int(R), prior,
                            float(prune), int(max_starts))
    block.every = PRUNE_EVERY
    return block
