"""The run-length recursion of Bayesian online change-point detection, vectorized over blocks of bars.

This is the numerical kernel of :class:`~convopt_mlflow.components.changepoint.BayesianChangePointDetector`
(Adams & MacKay 2007, Normal-Gamma segments, constant hazard ``H``, run lengths ``0 .. R-1`` with
everything older merged into ``R-1``). Done bar by bar with numpy it costs ~200 µs per bar: a
few dozen small-array calls. Here the same recursion is rewritten so that almost all of the work
is done on ``(bars, R)`` matrices, a block of bars at a time (measured in benchmarks/bench_bocpd.py):

* A segment's sufficient statistics are sums over a window of bars, so the Student-t predictive
  ``log p(x_t | r)`` of every bar ``t`` of the block and every run length ``r`` comes from cumulative
  sums (one matrix expression).
* Normalized, ``P(r_t = 0) = H`` at every bar, and the mass of run length ``r`` at bar ``t`` is
  ``H * T[t - r] * G(t, r) / T[t]`` where ``T`` is the evidence and ``G`` a product of predictives
  along a diagonal (prefix sums in log space, by doubling). What stays sequential is the evidence
  ``T[t] = H / (1 - H) * sum_r T[t-1-r] G(t, r+1) + p(x_t | R-1) Q[t-1]`` and the merged tail ``Q``.
* The evidence recursion is linear, so the block's evidences solve one lower-triangular banded
  system (LAPACK ``dtbtrs``, bandwidth 2R) instead of a Python loop over bars.
* The detector winsorizes each input at ``clip`` times the current segment's volatility, which
  depends on the posterior one bar earlier. A bar whose standardized return is within ``clip`` is
  never clipped (the bound is at least ``clip``), nor is one while the segment's volatility is
  below 1 (the bound is then ``clip`` itself). With the exact kernel a bar that may be clipped
  above ``clip`` starts a block of its own, where its bound is known exactly; the pruned kernel
  guesses its bound instead. Every block is checked afterwards with the
  bounds it implies, and recomputed from the first bar whose clipped value was guessed wrong. The
  result is the sequential recursion's, not an approximation of it (tests/components/test_bocpd.py
  checks it against the bar-by-bar implementation to 1e-9).

Arithmetic is float64 throughout; the evidence is kept scaled (each bar's predictives relative to
their maximum) so nothing under- or overflows. Units: bars; values are standardized returns.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack
from scipy.special import gammaln

#: a bar whose |z| is above this share of its guessed bound starts a block of its own (see run_bocpd)
MARGIN = 0.9


@dataclass
class RunState:
    """Where the recursion stands after the bars fed so far.

    ``probs``: posterior over run lengths ``0 .. len(probs)-1`` (the last one is the merged tail once
    ``len(probs) == R``); ``history``: the last ``R - 1`` clipped inputs (chronological); ``vol``: the
    MAP segment's volatility after the last bar (1.0 before any bar).
    """

    probs: np.ndarray
    history: np.ndarray
    vol: float = 1.0


@dataclass(frozen=True)
class Prior:
    """Normal-Gamma prior of a standardized segment: mean, kappa, alpha, beta."""

    mu: float = 0.0
    kappa: float = 1.0
    alpha: float = 1.0
    beta: float = 1.0


def segment_vol(prior: "Prior", c1: np.ndarray, c2: np.ndarray, end, rl) -> np.ndarray:
    """sqrt(beta / alpha) of the Normal-Gamma posterior of the ``rl`` bars before ``end``.

    ``c1``/``c2`` are cumulative sums of the inputs and of their squares (``c[0] = 0``), so a
    segment's sums are differences; ``end`` and ``rl`` broadcast (one value per bar)."""
    s1 = c1[end] - c1[end - rl]
    s2 = c2[end] - c2[end - rl]
    beta = prior.beta + 0.5 * s2 - s1 * s1 / (2.0 * (prior.kappa + rl))
    return np.sqrt(beta / (prior.alpha + 0.5 * rl))


def run_bocpd(z: np.ndarray, state: RunState, *, hazard: float, max_run: int, clip: float,
              prior: Prior = Prior(), block: int = 256, kernel=None) -> tuple[np.ndarray, np.ndarray, RunState]:
    """Feed standardized returns ``z`` (1-D; non-finite values count as 0) after ``state``.

    Returns ``(run_length, vol, state)``: the MAP run length (bars) and that segment's volatility
    after each bar, and the state after the last bar. ``kernel(x, state, hazard, max_run, prior)``
    computes one block (default: this module's exact one; the pruned one is
    :func:`~convopt_mlflow.components.bocpd_fast.sparse_block`, whose state is a ``SparseState``).
    """
    z = np.asarray(z, dtype=np.float64)
    n = z.size
    run_length, vols = np.zeros(n, dtype=np.int64), np.zeros(n)
    finite = np.isfinite(z)
    all_finite = bool(finite.all())
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
        x = np.minimum(np.maximum(z[done:stop], -bounds), bounds)  # (np.clip, less its wrapper)
        if not all_finite:
            x = np.where(finite[done:stop], x, 0.0)
        res = _fit(kernel, x, state, hazard, max_run, prior)
        if res is None:
            size = (stop - done) // 2
            continue
        actual = clip * np.maximum(1.0, np.concatenate(((state.vol,), res.vol[:-1])))
        exact = np.minimum(np.maximum(z[done:stop], -actual), actual)
        if not all_finite:
            exact = np.where(finite[done:stop], exact, 0.0)
        wrong = (exact != x).nonzero()[0]
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
        return (kernel or _block)(x, state, hazard, max_run, prior)
    except FloatingPointError:
        if x.size == 1:
            raise
        return None


class _Block:
    """One block's matrices; :meth:`state_at` rebuilds the state after any of its bars."""

    def __init__(self, x, state, hazard, R, prior):
        self.x, self.R, self.H, self.prior = x, R, hazard, prior
        n, L0 = x.size, state.probs.size
        y = np.r_[state.history, x] - prior.mu
        self.y, self.h, self.L0, self.n = y, state.history.size, L0, n
        self.c1 = np.r_[0.0, np.cumsum(y)]
        self.c2 = np.r_[0.0, np.cumsum(y * y)]
        r = np.arange(R)
        t = np.arange(n)
        # ---- log predictive of bar t under run length r: stats of y[h+t-r : h+t] (in place: few temporaries)
        end = self.h + t
        step1, step2 = np.r_[np.zeros(R), self.c1], np.r_[np.zeros(R), self.c2]  # [R + i] = c[i]; zeros before
        back1 = _view(step1, R + self.h, (n, R), (1, -1))
        back2 = _view(step2, R + self.h, (n, R), (1, -1))
        s1 = self.c1[end][:, None] - back1
        s2 = self.c2[end][:, None] - back2
        kappa, alpha = prior.kappa + r, prior.alpha + 0.5 * r
        const = gammaln(alpha + 0.5) - gammaln(alpha) - 0.5 * np.log(2 * np.pi * (kappa + 1) / kappa)
        beta = s1 * s1
        beta *= -1.0 / (2.0 * kappa)
        s2 *= 0.5
        beta += s2
        beta += prior.beta
        s1 *= -1.0 / kappa
        s1 += (x - prior.mu)[:, None]  # x_t - mean of the segment
        s1 *= s1
        s1 *= kappa / (2 * (kappa + 1))
        s1 /= beta
        with np.errstate(divide="ignore", invalid="ignore"):  # run lengths not yet possible: masked below
            lp = np.log1p(s1, out=s1)
            lp *= -(alpha + 0.5)
            lp += const
            beta = np.log(beta, out=beta)
        beta *= 0.5
        lp -= beta
        if L0 < R:  # run lengths longer than the bars seen so far do not exist yet
            lp[r[None, :] > (L0 - 1 + t)[:, None]] = -np.inf
        lp -= lp.max(axis=1, keepdims=True)  # scaled: <= 0, so no product below overflows
        # ---- diagonal products. cumK[t, r]: log of the product of (1 - H) p(x_j | k) along the diagonal
        # that ends at (bar t, run length r) and starts at the block's first bar: a running sum, row by row
        cumK = np.log1p(-hazard) + lp
        for i in range(1, n):
            np.add(cumK[i, 1:], cumK[i - 1, :-1], out=cumK[i, 1:])
        W = np.exp(cumK[:, :R - 1])  # W[t, r]: the segment started at s = t-1-r, extended through bar t
        # ---- the evidence recursion: a lower-triangular banded linear system in (T_0, Q_0, T_1, Q_1, ...)
        #   T_t = H/(1-H) sum_s W[t, s] T_s + p(x_t | R-1) Q_{t-1},  Q_t = H W[t, t-R+1] T_{t-R+1} + (1-H) p(x_t | R-1) Q_{t-1}
        # where T_s of the starts before the block (s < 0) stand for the state's run-length masses.
        Th = np.zeros(R + n)  # Th[s + R]: scaled evidence at start s
        m = min(L0, R - 1)  # run length k started at s = -1 - k; its mass so far stands in for H * T[s]
        Th[R - 1 - np.arange(m)] = state.probs[:m] / hazard
        Q0 = float(state.probs[R - 1]) if L0 == R else 0.0
        e_tail = np.exp(lp[:, R - 1])
        c = hazard / (1.0 - hazard)
        past = _view(Th, R - 1, (n, R - 1), (1, -1))  # Th[t-1-r+R]
        rhs = np.zeros(2 * n)
        rhs[0::2] = c * np.einsum("tr,tr->t", W, past)
        rhs[1::2] = hazard * W[:, R - 2] * past[:, R - 2]
        rhs[0] += e_tail[0] * Q0
        rhs[1] += (1.0 - hazard) * e_tail[0] * Q0
        # LAPACK lower band storage ab[i - j, j] = A[i, j] (bandwidth 2 min(R, n) - 1), Fortran order so
        # LAPACK reads it without a copy, with a margin of columns on the left where the coefficients
        # of starts before the block (already in rhs) land and are dropped
        short = min(R, n)
        rows, margin, rmax = 2 * short, 2 * short, min(R - 1, n - 1)
        ab_full = np.zeros((rows, margin + 2 * n), order="F")
        flat = ab_full.reshape(-1, order="F")
        # -c W[t, r] at row 2(r+1), column margin + 2(t-1-r): flat index column * rows + row
        coef = _view(flat, (margin - 2) * rows + 2, (n, rmax), (2 * rows, 2 - 2 * rows))
        np.multiply(W[:, :rmax], -c, out=coef)
        if R <= n:  # Q_t <- T_{t-R+1}
            ab_full[2 * R - 1, margin - 2 * R + 2:margin - 2 * R + 2 + 2 * n:2] = -hazard * W[:, R - 2]
        ab = ab_full[:, margin:]
        ab[0] = 1.0
        if n > 1:
            ab[1, 1:-1:2] = -e_tail[1:]  # T_t <- Q_{t-1}
            ab[2, 1:-1:2] = -(1.0 - hazard) * e_tail[1:]  # Q_t <- Q_{t-1}
        sol, info = lapack.dtbtrs(ab, rhs[:, None], uplo="L")
        sol = sol[:, 0]
        if info != 0 or not np.all(np.isfinite(sol)) or not np.all(sol[0::2] > 0):
            raise FloatingPointError(f"BOCPD evidence recursion failed (info={info})")
        Th[R:] = sol[0::2]
        Qs = sol[1::2]
        self.Th, self.Qs, self.pad = Th, Qs, R
        # ---- log posterior after every bar, by run length 0 .. R-1, unnormalized and less log(H); its argmax
        with np.errstate(divide="ignore"):
            logTh = np.log(Th)
            logU = np.empty((n, R))
            logU[:, 0] = logTh[R + t]
            ths = _view(logTh, R - 1, (n, R - 2), (1, -1))
            np.add(ths, cumK[:, :R - 2], out=logU[:, 1:R - 1])  # run r started at s = t - r
            logU[:, R - 1] = np.log(Qs) - np.log(hazard)
        self.logU = logU
        self.run_length = np.argmax(self.logU, axis=1)
        self.vol = self._vol(t, self.run_length)

    def _vol(self, t, rl):
        """sqrt(beta / alpha) of the segment of ``rl`` bars ending at bar ``t`` (its posterior, x_t included)."""
        return segment_vol(self.prior, self.c1, self.c2, self.h + t + 1, rl)

    def state_at(self, i: int) -> RunState:
        """The state after bar ``i`` of the block."""
        length = min(self.L0 + i + 1, self.R)
        probs = np.exp(self.logU[i, :length] + np.log(self.H) - np.log(self.Th[self.pad + i]))
        probs /= probs.sum()
        y = self.y[:self.h + i + 1] + self.prior.mu
        return RunState(probs, y[max(0, y.size - (self.R - 1)):].copy(), float(self.vol[i]))


def _view(base: np.ndarray, start: int, shape: tuple[int, int], steps: tuple[int, int]) -> np.ndarray:
    """A strided view of the 1-D float64 array ``base``: element ``(i, j)`` is ``base[start + i*steps[0] + j*steps[1]]``
    (the caller keeps every index inside ``base``)."""
    item = base.itemsize
    return np.ndarray(shape, np.float64, buffer=base, offset=start * item, strides=(steps[0] * item, steps[1] * item))


def _block(x, state, hazard, R, prior) -> _Block:
    return _Block(np.asarray(x, dtype=np.float64), state, float(hazard), int(R), prior)
