"""The pruned BOCPD kernel and its block loop as they were before the per-call cuts (commit c5539ec:
components/bocpd_fast.py's ``_SparseBlock``, components/bocpd.py's ``run_bocpd`` with a block split
before every bar that might be clipped), kept as the reference the current kernel is tested against
(tests only; not part of the package). The current kernel is faster and must give the same run
lengths, labels and changes (tests/components/test_bocpd_fast.py).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.linalg.lapack import dtrtrs

from convopt_mlflow.components.bocpd import Prior, segment_vol
from convopt_mlflow.components.bocpd_fast import (
    PRUNE_EVERY,
    SparseState,
    _const,
    _power,
    _ratio,
)

__all__ = ["reference_run_bocpd", "reference_sparse_block"]

#: a bar whose |z| is above this share of its guessed bound starts a block of its own (see run_bocpd)
MARGIN = 0.9
_FLOOR = -600.0


@lru_cache(maxsize=8)
def _upper(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index of the entries (t, j), j >= t, of an (n, n-1) matrix."""
    return np.triu_indices(n, 0, n - 1)


class _SparseBlock:
    """One block's matrices over kept and new run lengths; :meth:`state_at` prunes after any bar."""

    def __init__(self, x, state: SparseState, H: float, R: int, prior: Prior, prune: float, max_starts: int):
        self.R, self.H, self.prior, self.prune, self.max_starts = R, H, prior, prune, max_starts
        self.dropped0, self.bars0 = state.dropped, state.bars
        n, K = x.size, state.runs.size
        y = np.concatenate((state.history, x)) - prior.mu
        h = state.history.size
        self.y, self.h, self.n, self.K = y, h, n, K
        self.c1 = c1 = np.concatenate(((0.0,), np.cumsum(y)))
        self.c2 = c2 = np.concatenate(((0.0,), np.cumsum(y * y)))
        t = np.arange(n)
        end = h + t
        # columns: the K kept run lengths, then a segment starting after each bar j < n-1 of the block.
        # Run length before bar t: runs[k] + t, or t-1-j (negative: not started yet); at most R-1.
        shift = np.concatenate((state.runs, -1 - t[:n - 1]))
        before = t[:, None] + shift[None, :]
        np.maximum(before, 0, out=before)
        np.minimum(before, R - 1, out=before)
        # a segment's first bar (index into y) is fixed, h - runs[k] or h+1+j, except where its run is
        # capped at R-1 (then the last R-1 bars): only the columns that reach the cap are gathered
        s1 = c1[end][:, None] - c1[h - shift][None, :]
        s2 = c2[end][:, None] - c2[h - shift][None, :]
        cap = np.flatnonzero(shift + n >= R - 1)
        if cap.size:
            first = np.maximum((h - shift[cap])[None, :], (end - (R - 1))[:, None])
            s1[:, cap] = c1[end][:, None] - c1[first]
            s2[:, cap] = c2[end][:, None] - c2[first]
        upper = _upper(n)  # flat indices of (t, new j) with j >= t: segments not started yet
        s1[:, K:][upper] = 0.0  # the prior's predictive there (finite; masked below)
        s2[:, K:][upper] = 0.0
        kappa = before + prior.kappa
        beta = s1 * s1
        beta /= kappa
        s2 -= beta
        s2 *= 0.5
        s2 += prior.beta
        beta = s2  # beta of the segment: prior.beta + (s2 - s1^2 / kappa) / 2
        s1 /= kappa
        np.subtract((x - prior.mu)[:, None], s1, out=s1)  # x_t - the segment's predictive mean
        s1 *= s1
        s1 *= _ratio(R, prior)[before]
        s1 /= beta
        lp = np.log1p(s1, out=s1)
        lp *= _power(R, prior)[before]
        np.log(beta, out=beta)
        beta *= 0.5
        lp += beta
        np.subtract(_const(R, prior)[before], lp, out=lp)
        new = lp[:, K:]
        new[upper] = -np.inf
        lp -= lp.max(axis=1, keepdims=True)  # scaled: <= 0
        lp += np.log1p(-H)
        new[upper] = 0.0
        np.cumsum(lp, axis=0, out=lp)  # a new column's rows before its start add 0
        # below e^-600 of the bar's best a mass is nothing; the floor keeps exp and the products that
        # follow out of subnormal floats (a hundredfold slower)
        np.maximum(lp, _FLOOR, out=lp)
        G = np.exp(lp, out=lp)
        G[:, K:][upper] = 0.0
        c = H / (1.0 - H)
        b = G[:, :K] @ state.probs
        A = np.zeros((n, n))
        np.multiply(G[:, K:], -c, out=A[:, :n - 1])  # read below the diagonal only
        T, info = dtrtrs(A, b, lower=1, unitdiag=1)
        if info != 0 or not (np.all(np.isfinite(T)) and np.all(T > 0)):
            raise FloatingPointError("sparse BOCPD evidence recursion failed")
        # posterior after bar t (normalized), by column
        P = G
        P[:, :K] *= ((1.0 - H) * state.probs)[None, :]
        P[:, K:] *= H * T[None, :n - 1]
        P /= T[:, None]
        self.P, self.shift = P, shift
        # MAP run length; the columns capped at R-1 after bar t are one run length (their mass summed)
        tail = np.zeros(n)
        if cap.size:
            kept = P[:, cap].copy()
            capped = (t[:, None] + 1 + shift[cap][None, :]) >= R - 1
            tail = np.where(capped, kept, 0.0).sum(axis=1)
            P[:, cap] = np.where(capped, 0.0, kept)
        best = np.argmax(P, axis=1)
        best_p = P[t, best]
        if cap.size:
            P[:, cap] = kept
        rl = np.where(best_p > H, np.minimum(t + 1 + shift[best], R - 1), 0)
        self.run_length = np.where(tail > np.maximum(best_p, H), R - 1, rl)
        self.vol = self._vol(t, self.run_length)

    def _vol(self, t, rl):
        """sqrt(beta / alpha) of the segment of ``rl`` bars ending at bar ``t`` (its posterior, x_t included)."""
        return segment_vol(self.prior, self.c1, self.c2, self.h + t + 1, rl)

    def state_at(self, i: int) -> SparseState:
        """The state after bar ``i`` of the block: merged at R-1, pruned, renormalized."""
        K = self.K
        runs = np.minimum(np.concatenate(((0,), i + 1 + self.shift[:K + i])), self.R - 1)
        probs = np.concatenate(((self.H,), self.P[i, :K], self.P[i, K:K + i]))
        probs /= probs.sum()
        if runs.size and runs.max() == self.R - 1:  # merge every capped column into one
            top = runs == self.R - 1
            merged = probs[top].sum()
            runs, probs = np.append(runs[~top], self.R - 1), np.append(probs[~top], merged)
        bars = self.bars0 + i + 1
        keep = probs >= (self.prune if bars % PRUNE_EVERY == 0 else 0.0)
        if bars % PRUNE_EVERY == 0 and keep.sum() > self.max_starts:
            keep &= probs >= np.partition(probs, -self.max_starts)[-self.max_starts]
        keep[0] = True  # run length 0 (mass H) is always kept
        dropped = float(probs[~keep].sum())
        runs, probs = runs[keep], probs[keep]
        order = np.argsort(runs, kind="stable")
        runs, probs = runs[order], probs[order] / probs.sum()
        y = self.y[:self.h + i + 1] + self.prior.mu
        history = y[max(0, y.size - (self.R - 1)):].copy()
        return SparseState(runs.astype(np.int64), probs, history, float(self.vol[i]), self.dropped0 + dropped, bars)


def reference_sparse_block(prune: float, max_starts: int):
    """A block function for :func:`reference_run_bocpd` (the pruned kernel as it was)."""
    def block(x, state, hazard, R, prior):
        return _SparseBlock(np.asarray(x, dtype=np.float64), state, float(hazard), int(R), prior,
                            float(prune), int(max_starts))
    block.every = PRUNE_EVERY
    return block


def reference_run_bocpd(z: np.ndarray, state: SparseState, *, hazard: float, max_run: int, clip: float,
                        prior: Prior, block: int = 256, kernel=None) -> tuple[np.ndarray, np.ndarray, SparseState]:
    """(as it was) Feed standardized returns ``z`` (1-D; non-finite values count as 0) after ``state``.

    Returns ``(run_length, vol, state)``: the MAP run length (bars) and that segment's volatility
    after each bar, and the state after the last bar. ``kernel(x, state, hazard, max_run, prior)``
    computes one block (default: this module's exact one; the pruned one is
    :func:`~convopt_mlflow.components.bocpd_fast.sparse_block`, whose state is a ``SparseState``).
    """
    z = np.asarray(z, dtype=np.float64)
    n = z.size
    run_length, vols = np.zeros(n, dtype=np.int64), np.zeros(n)
    finite = np.isfinite(z)
    z = np.where(finite, z, 0.0)
    done, ahead, guess_vol = 0, 0, np.zeros(n)  # guess_vol[:ahead]: vols of an earlier (speculative) pass
    size = int(block)
    while done < n:
        stop = min(n, done + size)
        every = getattr(kernel, "every", None)
        if every:  # the pruned kernel's blocks end where it prunes (every ``every`` bars fed)
            stop = min(stop, done + every - state.bars % every)
        size = int(block)
        guess_vol[max(ahead, done):stop] = state.vol  # not computed yet: the latest volatility
        bounds = clip * np.maximum(1.0, np.concatenate(((state.vol,), guess_vol[done:stop - 1])))
        # A bar that may be clipped at a bound above ``clip`` starts the next block, where its bound is
        # known exactly; where the segment's volatility is below 1 the bound is ``clip`` itself.
        guess = guess_vol[done:stop - 1]
        risky = np.flatnonzero((np.abs(z[done + 1:stop]) > np.maximum(clip, MARGIN * clip * guess)) & (guess > MARGIN))
        if risky.size:
            stop = done + 1 + int(risky[0])
            bounds = bounds[:stop - done]
        x = np.where(finite[done:stop], np.clip(z[done:stop], -bounds, bounds), 0.0)
        try:
            res = kernel(x, state, hazard, max_run, prior)
        except FloatingPointError:  # the scaled evidence left float64's range: a shorter block
            if stop - done == 1:
                raise
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
