"""Ensemble learning: diverse member plans, member bookkeeping and the combination of their policies.

Pure numpy. The SB3/MLflow glue (``training/ensemble.py``) trains each plan as a full run
and hands back plain arrays: member action probabilities ``(members, n, actions)``, member
per-bar net returns ``(members, n)`` and validation Sharpes ``(members,)``.

Combination methods (:data:`METHODS`), all over action probabilities:

- ``mean_prob``: the mean of the members' probabilities; action = argmax.
- ``majority_vote``: each member votes its argmax; action = most votes (ties: flat);
  probabilities = the mean probabilities.
- ``weighted``: the weighted mean of the probabilities, with weights from validation::

      raw_i = max(sharpe_i, 0) * max(1 - diversity_penalty * mean_{j != i} corr_ij, 0)
      w_i   = raw_i / sum_j raw_j          (equal weights when every raw_i is 0)

  ``corr_ij`` is the Pearson correlation of members i and j's per-bar net returns on the
  validation split (0 when either is constant). A member whose returns move with the others'
  adds little, so it loses weight; one with no validation edge gets none.

Which method the ensemble uses is decided on validation (:meth:`EnsembleLearningFramework.decide`)
and returned as an :class:`EnsembleDecision`. The weights come from the same split, so the
validation scores of ``weighted`` are optimistic; the test split is the unbiased one.

Examples:
    >>> fw = EnsembleLearningFramework(3, {"lr_factor": (0.5, 2.0), "data_subsets": "disjoint"}, seed=7)
    >>> [p.blocks for p in fw.initialize_models()]
    [(0, 1, 2), (3, 4, 5), (6, 7, 8, 9)]
    >>> probs = np.array([[[0.2, 0.8]], [[0.6, 0.4]], [[0.7, 0.3]]])
    >>> fw.combine_predictions(probs, method="majority_vote")
    array([0])
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .combine import METHODS, combine_probabilities

__all__ = [
    "METHODS", "DATA_SUBSETS", "DiversityConfig", "MemberPlan", "MemberOutcome", "EnsembleTraining",
    "EnsembleDecision", "EnsembleLearningFramework", "combine_probabilities", "diversity_weights",
    "mean_pairwise_correlation", "disagreement_rate", "block_start_sampler", "block_starts", "member_seeds",
]

DATA_SUBSETS = ("none", "bootstrap", "disjoint")


@dataclass(frozen=True)
class DiversityConfig:
    """How members differ. Bounds are inclusive ``(low, high)``; equal bounds switch a jitter off."""

    lr_factor: tuple[float, float] = (0.5, 2.0)
    """Learning-rate multiplier, drawn log-uniformly."""
    ent_coef: tuple[float, float] = (0.0, 0.01)
    """Entropy coefficient, drawn uniformly."""
    clip_range: tuple[float, float] = (0.1, 0.3)
    """PPO clip range, drawn uniformly."""
    net_archs: tuple[tuple[int, ...], ...] = ()
    """Hidden layer sizes, member i takes ``net_archs[i % len]``; empty keeps the base network."""
    activations: tuple[str, ...] = ()
    """Activations, member i takes ``activations[i % len]``; empty keeps the base activation."""
    data_subsets: str = "bootstrap"
    """none: every member starts episodes anywhere in train; bootstrap: each member draws
    ``n_blocks`` of the train split's ``n_blocks`` contiguous blocks with replacement;
    disjoint: member i gets the i-th contiguous share of the blocks."""
    n_blocks: int = 10
    """Contiguous blocks the train split's episode starts are cut into."""
    diversity_penalty: float = 0.1
    """Weight lost per unit of mean return correlation with the other members (see module doc)."""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | "DiversityConfig" | None) -> "DiversityConfig":
        """Normalize a dict (the reference interface's ``diversity_config``) into a validated config."""
        if isinstance(values, DiversityConfig):
            return values
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values or {}) - names)
        if unknown:
            raise ValueError(f"unknown diversity_config key(s) {unknown}; known: {sorted(names)}")
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in (values or {}).items()}
        if "net_archs" in kwargs:
            kwargs["net_archs"] = tuple(tuple(int(n) for n in arch) for arch in kwargs["net_archs"])
        config = cls(**kwargs)
        config.check()
        return config

    def check(self) -> None:
        for name in ("lr_factor", "ent_coef", "clip_range"):
            low, high = getattr(self, name)
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"{name} bounds must be finite with low <= high, got {(low, high)}")
        if self.lr_factor[0] <= 0 or self.clip_range[0] <= 0 or self.ent_coef[0] < 0:
            raise ValueError("lr_factor and clip_range bounds must be > 0, ent_coef bounds >= 0")
        if self.data_subsets not in DATA_SUBSETS:
            raise ValueError(f"data_subsets must be one of {DATA_SUBSETS}, got {self.data_subsets!r}")
        if self.n_blocks < 1 or self.diversity_penalty < 0:
            raise ValueError("n_blocks must be >= 1 and diversity_penalty >= 0")
        if any(not arch or min(arch) <= 0 for arch in self.net_archs):
            raise ValueError(f"every net_archs entry needs positive layer sizes, got {self.net_archs}")


@dataclass(frozen=True)
class MemberPlan:
    """What makes member ``index`` different. None means "keep the base config's value"."""

    index: int
    seed: int
    lr_factor: float
    ent_coef: float
    clip_range: float
    blocks: tuple[int, ...]
    """Train blocks (of ``n_blocks``) episodes start in, repeats weighting a block; () = all."""
    net_arch: tuple[int, ...] | None = None
    activation: str | None = None


@dataclass(frozen=True)
class MemberOutcome:
    """One member's training result. ``payload`` is whatever the trainer returns (weights, metrics)."""

    index: int
    status: str
    """FINISHED, FAILED or KILLED."""
    reason: str = ""
    payload: Any = None

    @property
    def ok(self) -> bool:
        return self.status == "FINISHED"


@dataclass(frozen=True)
class EnsembleTraining:
    outcomes: tuple[MemberOutcome, ...]
    min_members: int

    @property
    def finished(self) -> list[MemberOutcome]:
        return [o for o in self.outcomes if o.ok]

    @property
    def failed(self) -> list[MemberOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def enough(self) -> bool:
        return len(self.finished) >= self.min_members

    @property
    def reason(self) -> str:
        lost = "; ".join(f"member {o.index} {o.status}: {o.reason}" for o in self.failed)
        head = f"{len(self.finished)} of {len(self.outcomes)} members finished (min_members={self.min_members})"
        return head + (f"; {lost}" if lost else "")


@dataclass(frozen=True)
class EnsembleDecision:
    """The combination chosen on validation, as data (logged on the ensemble run)."""

    method: str
    weights: tuple[float, ...]
    """Member weights of ``weighted`` (used only when ``method == "weighted"``), sum 1."""
    val_scores: Mapping[str, float]
    """Validation Sharpe of the ensemble under each method."""
    reason: str
    correlations: tuple[float, ...] = field(default=())
    """Mean correlation of each member's validation returns with the other members'."""

    def combination(self) -> dict[str, Any]:
        """``{"method": ..., "weights": [...]}``: the model format's combination description."""
        return {"method": self.method, "weights": list(self.weights)}


# ------------------------------------------------------------------ pure functions
def mean_pairwise_correlation(returns: np.ndarray) -> np.ndarray:
    """Per member, the mean Pearson correlation of its returns with every other member's.

    Args:
        returns: float ``(members, n)`` per-bar returns.

    Returns:
        float ``(members,)``; a constant series correlates 0 with everything. One member: ``[0.0]``.
    """
    returns = np.asarray(returns, dtype=np.float64)
    members = returns.shape[0]
    if members < 2:
        return np.zeros(members)
    centred = returns - returns.mean(axis=1, keepdims=True)
    norms = np.sqrt((centred**2).sum(axis=1))
    safe = np.where(norms > 0, norms, 1.0)
    corr = (centred @ centred.T) / np.outer(safe, safe)
    corr[norms == 0, :] = 0.0
    corr[:, norms == 0] = 0.0
    np.fill_diagonal(corr, 0.0)
    return np.clip(corr.sum(axis=1) / (members - 1), -1.0, 1.0)


def diversity_weights(sharpes: Sequence[float], returns: np.ndarray, penalty: float) -> tuple[np.ndarray, np.ndarray]:
    """Member weights from validation Sharpe and return correlation (formula in the module doc).

    Returns:
        ``(weights, mean_correlations)``, both ``(members,)``; weights sum to 1.
    """
    sharpes = np.nan_to_num(np.asarray(sharpes, dtype=np.float64), nan=0.0)
    corr = mean_pairwise_correlation(returns)
    raw = np.maximum(sharpes, 0.0) * np.maximum(1.0 - penalty * corr, 0.0)
    if not raw.sum() > 0:
        return np.full(len(sharpes), 1.0 / len(sharpes)), corr
    return raw / raw.sum(), corr


def disagreement_rate(agreement: np.ndarray) -> float:
    """Share of decisions where not every member's argmax is the ensemble's action."""
    agreement = np.asarray(agreement, dtype=np.float64)
    return float(np.mean(agreement < 1.0 - 1e-12)) if agreement.size else 0.0


def member_seeds(seed: int, n: int) -> tuple[int, ...]:
    """The run seeds of an ensemble's ``n`` members, each in ``[0, 2**32)``.

    Member ``i`` gets the first 32-bit word of child ``i`` of ``np.random.SeedSequence(seed)``.
    The children are independent streams, so ensembles at neighbouring seeds share no member
    seed (``seed + i`` would give the seed-0 ensemble's member 1 the seed of the seed-1
    ensemble's member 0, and pair A/B cells that are not independent); the same ``seed``
    always gives the same members.

    Example:
        >>> member_seeds(0, 3) == member_seeds(0, 3), len(set(member_seeds(0, 3) + member_seeds(1, 3)))
        (True, 6)
    """
    children = np.random.SeedSequence(int(seed)).spawn(int(n))
    return tuple(int(child.generate_state(1, dtype=np.uint32)[0]) for child in children)


def block_start_sampler(bounds: tuple[int, int], blocks: Sequence[int],
                        n_blocks: int) -> Callable[[np.random.Generator, int], np.ndarray]:
    """``(rng, k) -> k`` episode starts inside the given blocks of the inclusive ``bounds``.

    The start range ``[lo, hi]`` is cut into ``n_blocks`` contiguous blocks; a start picks a
    block from ``blocks`` uniformly (a repeated block is picked more often), then a bar in it
    uniformly. An episode that starts near a block's end runs into the next block.
    """
    hi = int(bounds[1])
    chosen, starts, stops = _block_ranges(bounds, blocks, n_blocks)

    def sample(rng: np.random.Generator, k: int) -> np.ndarray:
        pick = rng.integers(0, chosen.size, size=k)
        return np.minimum(rng.integers(starts[pick], stops[pick]), hi).astype(np.int64)

    return sample


def block_starts(bounds: tuple[int, int], blocks: Sequence[int], n_blocks: int) -> np.ndarray:
    """Every start bar (sorted, unique) inside ``blocks`` of the inclusive ``bounds``, cut as
    :func:`block_start_sampler` cuts them: the pool an ensemble member's episodes start from."""
    _, starts, stops = _block_ranges(bounds, blocks, n_blocks)
    return np.unique(np.concatenate([np.arange(a, b) for a, b in zip(starts.tolist(), stops.tolist())]))


def _block_ranges(bounds: tuple[int, int], blocks: Sequence[int], n_blocks: int):
    """``(chosen, starts, stops)``: the block indices and each one's half-open bar range."""
    lo, hi = int(bounds[0]), int(bounds[1])
    edges = lo + (np.arange(n_blocks + 1) * (hi - lo + 1)) // n_blocks
    chosen = np.asarray(blocks, dtype=np.intp)
    if chosen.size == 0 or chosen.min() < 0 or chosen.max() >= n_blocks:
        raise ValueError(f"blocks must be non-empty indices in [0, {n_blocks}), got {list(blocks)}")
    return chosen, edges[chosen], np.maximum(edges[chosen + 1], edges[chosen] + 1)


# ------------------------------------------------------------------ the framework
class EnsembleLearningFramework:
    """Plans diverse members, keeps their outcomes and combines their predictions.

    Args:
        ensemble_size: members to plan (>= 1).
        diversity_config: a :class:`DiversityConfig` or a dict of its fields.
        seed: seeds every random draw of the plans; members get :func:`member_seeds` ``(seed, n)``.
        min_members: members that must finish for the ensemble to be built.
    """

    def __init__(self, ensemble_size: int, diversity_config: Mapping[str, Any] | DiversityConfig | None = None,
                 *, seed: int = 0, min_members: int = 1):
        if ensemble_size < 1 or not 1 <= min_members <= ensemble_size:
            raise ValueError(f"need ensemble_size >= 1 and 1 <= min_members <= ensemble_size, got "
                             f"{ensemble_size}, {min_members}")
        self.ensemble_size = int(ensemble_size)
        self.diversity = DiversityConfig.from_mapping(diversity_config)
        self.seed = int(seed)
        self.min_members = int(min_members)
        self.plans: list[MemberPlan] = []
        self.training: EnsembleTraining | None = None
        self.decision: EnsembleDecision | None = None

    def initialize_models(self) -> list[MemberPlan]:
        """One :class:`MemberPlan` per member, reproducible from ``seed``."""
        d, rng = self.diversity, np.random.default_rng(self.seed)
        seeds = member_seeds(self.seed, self.ensemble_size)
        plans = []
        for i in range(self.ensemble_size):
            log_lr = rng.uniform(np.log(d.lr_factor[0]), np.log(d.lr_factor[1]))
            plans.append(MemberPlan(
                index=i, seed=seeds[i], lr_factor=float(np.exp(log_lr)),
                ent_coef=float(rng.uniform(*d.ent_coef)), clip_range=float(rng.uniform(*d.clip_range)),
                blocks=self._blocks(i, rng),
                net_arch=d.net_archs[i % len(d.net_archs)] if d.net_archs else None,
                activation=d.activations[i % len(d.activations)] if d.activations else None,
            ))
        self.plans = plans
        return plans

    def _blocks(self, i: int, rng: np.random.Generator) -> tuple[int, ...]:
        n = self.diversity.n_blocks
        if self.diversity.data_subsets == "bootstrap":
            return tuple(sorted(int(b) for b in rng.integers(0, n, size=n)))
        if self.diversity.data_subsets == "disjoint":
            if n < self.ensemble_size:
                raise ValueError(f"disjoint subsets need n_blocks >= ensemble_size ({n} < {self.ensemble_size})")
            return tuple(range(i * n // self.ensemble_size, (i + 1) * n // self.ensemble_size))
        return ()

    def train_ensemble(self, train_member: Callable[[MemberPlan], MemberOutcome], *,
                       map_fn: Callable[[Callable, Iterable[MemberPlan]], Iterable[MemberOutcome]] = map
                       ) -> EnsembleTraining:
        """Train every plan with ``train_member`` through ``map_fn`` (the glue passes a parallel map)."""
        if not self.plans:
            self.initialize_models()
        outcomes = sorted(map_fn(train_member, self.plans), key=lambda o: o.index)
        self.training = EnsembleTraining(tuple(outcomes), self.min_members)
        return self.training

    def decide(self, val_sharpes: Sequence[float], val_returns: np.ndarray,
               score: Callable[[str, np.ndarray], float]) -> EnsembleDecision:
        """Choose the combination method on validation.

        Args:
            val_sharpes: ``(members,)`` each member's validation Sharpe.
            val_returns: ``(members, n)`` each member's per-bar net validation returns.
            score: ``score(method, weights) -> validation Sharpe`` of the ensemble combined so.
        """
        weights, corr = diversity_weights(val_sharpes, val_returns, self.diversity.diversity_penalty)
        equal = np.full(len(weights), 1.0 / len(weights))
        candidates = {"mean_prob": equal, "majority_vote": equal, "weighted": np.asarray(weights)}
        scores = {m: float(score(m, candidates[m])) for m in METHODS}
        finite = {m: (s if math.isfinite(s) else -math.inf) for m, s in scores.items()}
        best = max(METHODS, key=lambda m: (finite[m], -METHODS.index(m)))
        others = ", ".join(f"{m} {scores[m]:.4g}" for m in METHODS if m != best)
        reason = f"{best} has the best validation Sharpe {scores[best]:.4g} ({others}); ties prefer {METHODS}"
        self.decision = EnsembleDecision(best, tuple(float(w) for w in candidates[best]), scores, reason,
                                         tuple(float(c) for c in corr))
        return self.decision

    def combine_predictions(self, predictions: Sequence[np.ndarray] | np.ndarray, *, method: str | None = None,
                            weights: Sequence[float] | None = None, levels: np.ndarray | None = None) -> np.ndarray:
        """Member probabilities ``(members, n, actions)`` -> actions ``(n,)`` (or positions with ``levels``).

        Uses the decided method and weights unless given (``mean_prob`` before any decision).
        """
        decision = self.decision
        method = method or (decision.method if decision else "mean_prob")
        if weights is None and decision is not None:
            weights = decision.weights
        actions, _, _ = combine_probabilities(np.asarray(predictions), method, weights)
        return actions if levels is None else np.asarray(levels)[actions]
