"""The pruned BOCPD kernel and its block loop as they were before the cuts of issue 19's cost goal
(commit d1ed280: components/bocpd_fast.py's ``_SparseBlock`` and ``sparse_block``, components/bocpd.py's
``run_bocpd``), kept as the reference the current kernel is tested against, bit for bit (tests only; not
part of the package): tests/components/test_bocpd_fast.py checks that the current kernel gives the same
run lengths, volatilities, labels, changes and states, float for float.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.linalg.lapack import dtrtrs

from convopt_mlflow.components.bocpd import MARGIN, Prior
from convopt_mlflow.components.bocpd_fast import PRUNE_EVERY, SparseState, _tables

__all__ = ["d1ed280_run_bocpd", "d1ed280_sparse_block"]

_FLOOR = -600.0


@lru_cache(maxsize=None)
def _upper(n: int) -> np.ndarray:
    """Mask of the entries (t, j), j >= t, of an (n, n-1) matrix (one per block length: at most the block size)."""
    return np.triu(np.ones((n, n - 1), dtype=bool))


@lru_cache(maxsize=8)
def _log1m(H: float) -> float:
    """log(1 - H)."""
    return float(np.log1p(-H))


class _SparseBlock:
    """One block's matrices over kept and new run lengths; :meth:`state_at` prunes after any bar."""

    def __init__(self, x, state: SparseState, H: float, R: int, prior: Prior, prune: float, max_starts: int):
        self.R, self.H, self.prior, self.prune, self.max_starts = R, H, prior, prune, max_starts
        self.dropped0, self.bars0 = state.dropped, state.bars
        n, K = x.size, state.runs.size
        h = state.history.size
        # cumulative sums of the inputs (less mu) and of their squares, from the history's first bar:
        # row 0 of ``sums`` is y, row 1 y^2, each after a leading 0, summed along the row in one call
        sums = np.empty((2, h + n + 1))
        y = sums[0, 1:]
        y[:h], y[h:] = state.history, x
        if prior.mu:
            y -= prior.mu
        np.multiply(y, y, out=sums[1, 1:])
        sums[:, 0] = 0.0
        self.y = y.copy()
        self.h, self.n, self.K = h, n, K
        self.c1, self.c2 = c1, c2 = np.cumsum(sums, axis=1, out=sums)
        t = np.arange(n)
        end = h + t
        # columns: the K kept run lengths, then a segment starting after each bar j < n-1 of the block.
        # Run length before bar t: runs[k] + t, or t-1-j (negative: not started yet); at most R-1.
        shift = np.concatenate((state.runs, -1 - t[:n - 1]))
        before = t[:, None] + shift[None, :]
        # the columns whose run reaches R-1 within the block. While the block is shorter than R only kept
        # run lengths can, a suffix of them (they ascend): a slice, so the columns below are views
        if n < R:
            lo = int(np.searchsorted(state.runs, R - 1 - n))
            cap = slice(lo, K) if lo < K else None
            np.maximum(before[:, K:], 0, out=before[:, K:])  # (only a new segment's can be negative)
            if cap is not None:
                np.minimum(before[:, cap], R - 1, out=before[:, cap])
        else:
            cap = np.flatnonzero(shift + n >= R - 1)
            cap = cap if cap.size else None
            np.maximum(before, 0, out=before)
            np.minimum(before, R - 1, out=before)
        # a segment's first bar (index into y) is fixed, h - runs[k] or h+1+j, except where its run is
        # capped at R-1 (then the last R-1 bars): only the columns that reach the cap are gathered
        c1_end, c2_end = c1[h:h + n, None], c2[h:h + n, None]
        segment = np.empty((2, n, K + n - 1))  # the segments' sums of y and of y^2
        s1, s2 = segment
        np.subtract(c1_end, c1.take(h - shift)[None, :], out=s1)
        np.subtract(c2_end, c2.take(h - shift)[None, :], out=s2)
        if cap is not None:
            first = np.maximum((h - shift[cap])[None, :], (end - (R - 1))[:, None])
            s1[:, cap] = c1_end - c1.take(first)
            s2[:, cap] = c2_end - c2.take(first)
        # (t, new j) with j >= t: segments not started yet. Their entries below are meaningless and are
        # overwritten before they are used; they are made empty segments (sums 0) so that they stay
        # finite: a negative-length segment's NaNs would send log and log1p down their slow paths
        # (about twice the time of the whole array), and the other entries are untouched
        upper = _upper(n)
        np.copyto(segment[:, :, K:], 0.0, where=upper)
        kappa, ratio, power, const = _tables(R, prior).take(before, axis=1)  # by run length before bar t
        with np.errstate(invalid="ignore", divide="ignore"):
            beta = s1 * s1
            beta /= kappa
            s2 -= beta
            s2 *= 0.5
            s2 += prior.beta
            beta = s2  # beta of the segment: prior.beta + (s2 - s1^2 / kappa) / 2
            s1 /= kappa
            np.subtract((x - prior.mu)[:, None], s1, out=s1)  # x_t - the segment's predictive mean
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
        top = lp.max(axis=1, keepdims=True)
        top[0] = lp[0, :K].max()
        lp -= top
        lp += _log1m(H)
        np.copyto(lp[:, K:], 0.0, where=upper)
        np.add.accumulate(lp, axis=0, out=lp)  # a new column's rows before its start add 0
        # below e^-600 of the bar's best a mass is nothing; the floor keeps exp and the products that
        # follow out of subnormal floats (a hundredfold slower)
        np.maximum(lp, _FLOOR, out=lp)
        G = np.exp(lp, out=lp)
        np.copyto(G[:, K:], 0.0, where=upper)
        b = G[:, :K] @ state.probs
        A = np.empty((n, n))  # (its diagonal, last column and upper triangle are never read)
        np.multiply(G[:, K:], -(H / (1.0 - H)), out=A[:, :n - 1])  # read below the diagonal only
        T, info = dtrtrs(A, b, lower=1, unitdiag=1)
        if info != 0 or not (T.min() > 0 and T.max() < np.inf):  # (NaN fails the first)
            raise FloatingPointError("sparse BOCPD evidence recursion failed")
        # posterior after bar t (normalized), by column: a kept run length's prior mass times (1 - H), a
        # start in the block's evidence times H (one row of factors: the same products, one call)
        P = G
        factor = np.empty(K + n - 1)
        np.multiply(state.probs, 1.0 - H, out=factor[:K])
        np.multiply(T[:n - 1], H, out=factor[K:])
        P *= factor
        P /= T[:, None]
        self.P, self.shift = P, shift
        # MAP run length; the columns capped at R-1 after bar t are one run length (their mass summed).
        # A column is capped after bar t where its run length before it is at least R-2 (clamped at R-1)
        best = None
        if cap is not None:
            kept = P[:, cap].copy()
            capped = before[:, cap] >= R - 2
            tail = np.where(capped, kept, 0.0).sum(axis=1)
            P[:, cap] = np.where(capped, 0.0, kept)
            best = np.argmax(P, axis=1)
            best_p = P[t, best]
            P[:, cap] = kept
        else:
            best = np.argmax(P, axis=1)
            best_p = P[t, best]
        rl = t + 1
        rl += shift[best]
        np.minimum(rl, R - 1, out=rl)
        rl[best_p <= H] = 0
        if cap is not None:
            rl[tail > np.maximum(best_p, H)] = R - 1
        self.run_length = rl
        # the MAP segment's volatility after bar t (as segment_vol, with slices where it gathered)
        end = h + 1 + t
        s1 = c1[h + 1:h + 1 + n] - c1[end - rl]
        s2 = c2[h + 1:h + 1 + n] - c2[end - rl]
        s2 *= 0.5
        s2 += prior.beta
        s1 *= s1
        s1 /= 2.0 * (prior.kappa + rl)
        s2 -= s1
        s2 /= prior.alpha + 0.5 * rl
        self.vol = np.sqrt(s2, out=s2)

    def state_at(self, i: int) -> SparseState:
        """The state after bar ``i`` of the block: merged at R-1, pruned, renormalized."""
        K, R = self.K, self.R
        # run lengths: 0, the kept ones grown by i + 1 (ascending), the block's starts (i .. 1)
        runs = np.minimum(np.concatenate(((0,), i + 1 + self.shift[:K + i])), R - 1)
        probs = np.concatenate(((self.H,), self.P[i, :K + i]))
        probs /= probs.sum()
        if i < R - 1:  # only kept run lengths can be capped, a suffix of them: merged into one
            lo = 1 + int(np.searchsorted(runs[1:K + 1], R - 1))
            if lo < K + 1:
                merged = probs[lo:K + 1].sum()
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
            if keep.sum() > self.max_starts:
                keep &= probs >= np.partition(probs, -self.max_starts)[-self.max_starts]
            keep[0] = True  # run length 0 (mass H) is always kept
            dropped = float(probs[~keep].sum())
            runs, probs = runs[keep], probs[keep]
        else:
            dropped = 0.0
        order = np.argsort(runs, kind="stable")
        runs, probs = runs[order], probs[order] / probs.sum()
        end = self.h + i + 1
        history = self.y[max(0, end - (R - 1)):end] + self.prior.mu
        return SparseState(runs.astype(np.int64), probs, history, float(self.vol[i]), self.dropped0 + dropped, bars)


def d1ed280_sparse_block(prune: float, max_starts: int):
    """A block function for :func:`~convopt_mlflow.components.bocpd.run_bocpd` that keeps sparse state."""
    def block(x, state, hazard, R, prior):
        return _SparseBlock(np.asarray(x, dtype=np.float64), state, float(hazard), int(R), prior,
                            float(prune), int(max_starts))
    block.every = PRUNE_EVERY
    return block


def d1ed280_run_bocpd(z: np.ndarray, state: SparseState, *, hazard: float, max_run: int, clip: float,
                      prior: Prior = Prior(), block: int = 256, kernel=None):
    """components/bocpd.py's ``run_bocpd`` as it was (with the pruned kernel only: ``kernel`` is required)."""
    z = np.asarray(z, dtype=np.float64)
    n = z.size
    run_length, vols = np.zeros(n, dtype=np.int64), np.zeros(n)
    finite = np.isfinite(z)
    z = np.where(finite, z, 0.0)
    done, ahead, guess_vol = 0, 0, np.zeros(n)  # guess_vol[:ahead]: vols of an earlier (speculative) pass
    # bars whose |z| exceeds ``clip``, counted: a block with none has nothing clipped (every bound is at least clip)
    over = np.concatenate(((0,), np.cumsum(np.abs(z) > clip))) if clip > 0 else np.arange(n + 1)
    size = int(block)
    every = getattr(kernel, "every", None)
    while done < n:
        stop = min(n, done + size)
        if every:  # the pruned kernel's blocks end where it prunes (every ``every`` bars fed)
            stop = min(stop, done + every - state.bars % every)
        size = int(block)
        guess_vol[max(ahead, done):stop] = state.vol  # not computed yet: the latest volatility
        if over[stop] == over[done]:  # nothing to clip, whatever the bounds
            res = _fit(kernel, z[done:stop].copy(), state, hazard, max_run, prior)
            if res is None:
                size = (stop - done) // 2
                continue
            run_length[done:stop], vols[done:stop] = res.run_length, res.vol
            guess_vol[done:stop] = res.vol
            ahead = max(ahead, stop)
            state = res.state_at(stop - done - 1)
            done = stop
            continue
        bounds = clip * np.maximum(1.0, np.concatenate(((state.vol,), guess_vol[done:stop - 1])))
        # A bar that may be clipped at a bound above ``clip`` starts the next block, where its bound is
        # known exactly; where the segment's volatility is below 1 the bound is ``clip`` itself. Not for
        # the pruned kernel: its blocks are short and cost mostly per call, so a block computed on a
        # guess that turns out wrong (kept up to that bar, below) is cheaper than a split before every
        # bar that might be clipped (a third of those are not).
        if not every:
            guess = guess_vol[done:stop - 1]
            risky = np.flatnonzero((np.abs(z[done + 1:stop]) > np.maximum(clip, MARGIN * clip * guess))
                                   & (guess > MARGIN))
            if risky.size:
                stop = done + 1 + int(risky[0])
                bounds = bounds[:stop - done]
        x = np.where(finite[done:stop], np.clip(z[done:stop], -bounds, bounds), 0.0)
        res = _fit(kernel, x, state, hazard, max_run, prior)
        if res is None:
            size = (stop - done) // 2
            continue
        actual = clip * np.maximum(1.0, np.concatenate(((state.vol,), res.vol[:-1])))
        exact = np.where(finite[done:stop], np.clip(z[done:stop], -actual, actual), 0.0)
        wrong = np.flatnonzero(exact != x)
        keep = stop - done if wrong.size == 0 else int(wrong[0])
        if keep == 0:  # the first bar's bound is never a guess (it is state.vol); cannot happen
            raise AssertionError("BOCPD: first bar of a block clipped with a wrong bound")
        run_length[done:done + keep], vols[done:done + keep] = res.run_length[:keep], res.vol[:keep]
        guess_vol[done:stop] = res.vol
        ahead = max(ahead, stop)
        state = res.state_at(keep - 1)
        done += keep
    return run_length, vols, state


def _fit(kernel, x, state, hazard, max_run, prior):
    """One block, or None where its scaled evidence left float64's range (then a shorter block is tried)."""
    try:
        return kernel(x, state, hazard, max_run, prior)
    except FloatingPointError:
        if x.size == 1:
            raise
        return None
