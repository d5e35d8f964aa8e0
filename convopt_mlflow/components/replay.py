"""Prioritized experience replay for trading, stored as bar indices and scalars.

:class:`TradingExperienceReplay` keeps one row per transition: the decision bar (int32),
the position held coming into it and the action taken (int8 each), the scaled reward, the
behaviour policy's log-probability of the action (float32 each) and the strategy's static
score of the bar (float32): 18 bytes a transition, so 1M transitions take 18 MB plus the
17 MB of the :class:`~convopt_mlflow.components.sumtree.SumTree`. The observation is never
stored: ``(bar, position)`` rebuilds it from the market's feature matrix.

Priorities are proportional (Schaul et al. 2016): item ``i`` is drawn with probability
``P(i) = p_i**alpha / sum_k p_k**alpha`` and carries the importance-sampling weight
``w_i = (N * P(i))**-beta / max_k (N * P(k))**-beta`` (``N`` the items stored; the max is over
the whole buffer, reached at the smallest priority), with ``beta`` annealed linearly from
``beta0`` to 1 over ``beta_steps`` calls of :meth:`sample_batch`.

A priority is ``score(bar) * (|td_error| + eps)``: the strategy's static score of the bar
(:func:`bar_scores`, mean 1 over the bars scored) times how badly the critic predicts the
transition. Strategies:

- ``pnl_impact``: ``|log_return[t+1]|``, what a position decided at bar ``t`` wins or loses;
- ``rare_events``: ``1 / tail frequency`` of ``|log_return[t+1]|`` (capped at 100), so a move
  seen once in a thousand bars scores about 1000 times a median one (before the cap);
- ``learning_difficulty``: 1 for every bar; the priority is the TD error alone;
- ``regime_transitions``: ``|log(vol after t) - log(vol before t)|`` over ``vol_window`` bars.

Examples:
    >>> import numpy as np
    >>> replay = TradingExperienceReplay(8, "learning_difficulty", seed=0)
    >>> replay.store_experience({"bar": 5, "position": 0, "action": 2, "reward": 0.1, "log_prob": -1.1}, 1.0)
    >>> len(replay), replay.sample_batch(4, 0.5).bars.tolist()
    (1, [5, 5])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .sumtree import SumTree

__all__ = ["PRIORITY_STRATEGIES", "REPLAY_MODES", "ReplayBatch", "TradingExperienceReplay", "bar_scores"]

PRIORITY_STRATEGIES = ("pnl_impact", "rare_events", "learning_difficulty", "regime_transitions")
#: How PPO uses replay (see training/replay.py): prioritized episode starts, or replayed transitions.
REPLAY_MODES = ("scenario", "transition")
_FIELDS = {"bar": np.int32, "position": np.int8, "action": np.int8, "reward": np.float32,
           "log_prob": np.float32, "score": np.float32}
_RARE_CAP = 100.0


def bar_scores(log_returns: np.ndarray, strategy: str, *, vol_window: int = 20) -> np.ndarray:
    """The strategy's static score of each decision bar, float32 ``(n_bars,)``, mean 1, > 0.

    ``log_returns[t] = log(close[t] / close[t-1])``; the score of bar ``t`` looks at the return
    its decision earns, ``log_returns[t + 1]`` (the last bar reuses its own). Non-finite
    returns (feature warm-up) score the median.
    """
    if strategy not in PRIORITY_STRATEGIES:
        raise ValueError(f"unknown priority strategy {strategy!r}; choose from {', '.join(PRIORITY_STRATEGIES)}")
    r = np.asarray(log_returns, dtype=np.float64)
    nxt = np.append(r[1:], r[-1:]) if r.size else r
    finite = np.isfinite(nxt)
    move = np.abs(np.where(finite, nxt, 0.0))
    if strategy == "learning_difficulty" or not finite.any():
        raw = np.ones(r.size)
    elif strategy == "pnl_impact":
        raw = move
    elif strategy == "rare_events":
        order = np.argsort(-move[finite], kind="stable")
        tail = np.empty(order.size)
        tail[order] = np.arange(1, order.size + 1) / order.size  # share of bars moving at least as much
        raw = np.ones(r.size)
        raw[finite] = np.minimum(1.0 / tail, _RARE_CAP)
    else:  # regime_transitions
        sq = np.concatenate([[0.0], np.cumsum(np.where(np.isfinite(r), r, 0.0) ** 2)])
        w = max(int(vol_window), 2)
        t = np.arange(r.size)
        before = (sq[t + 1] - sq[np.maximum(t + 1 - w, 0)]) / np.maximum(np.minimum(t + 1, w), 1)
        after = (sq[np.minimum(t + 1 + w, r.size)] - sq[t + 1]) / np.maximum(np.minimum(w, r.size - t - 1), 1)
        floor = max(float(np.median(before[before > 0])) if (before > 0).any() else 1e-12, 1e-24) * 1e-3
        raw = np.abs(0.5 * (np.log(after + floor) - np.log(before + floor)))
        raw[t + 1 >= r.size] = np.nan  # the last bar has no "after": it scores the median
    raw = np.where(finite, raw, np.nan)
    fill = float(np.nanmedian(raw)) if np.isfinite(raw).any() else 1.0
    raw = np.where(np.isfinite(raw), raw, fill)
    raw = np.maximum(raw, 1e-3 * max(float(raw.mean()), 1e-12))  # every bar stays reachable
    return (raw / raw.mean()).astype(np.float32)


@dataclass(frozen=True)
class ReplayBatch:
    """Transitions drawn by :meth:`TradingExperienceReplay.sample_batch` (all arrays ``(B,)``).

    Attributes:
        indices: buffer slots (pass the batch back to ``update_priorities``).
        bars, positions, actions, rewards, log_probs: the stored fields (see the module doc).
        probabilities: ``P(i)`` each was drawn with.
        weights: importance-sampling weights in ``(0, 1]``.
    """

    indices: np.ndarray
    bars: np.ndarray
    positions: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    log_probs: np.ndarray
    probabilities: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return int(self.indices.size)

    def to_dicts(self) -> list[dict[str, float]]:
        """The reference design's ``List[Dict]`` view (slow; for inspection, not training)."""
        keys = ("indices", "bars", "positions", "actions", "rewards", "log_probs", "weights")
        return [dict(zip(keys, row)) for row in zip(*(getattr(self, k).tolist() for k in keys))]


class TradingExperienceReplay:
    """A ring buffer of transitions with proportional priorities (reference interface).

    Args:
        buffer_size: capacity in transitions; the oldest is overwritten when full.
        priority_strategy: one of :data:`PRIORITY_STRATEGIES` (how :func:`bar_scores` scores bars).
        priority_alpha: prioritization exponent (0: uniform, 1: fully proportional).
        beta0: initial importance-sampling exponent, annealed linearly to 1.
        beta_steps: :meth:`sample_batch` calls over which beta reaches 1.
        eps: added to ``|td_error|`` so no transition's priority is 0.
        seed: seeds the sampling generator.
    """

    def __init__(self, buffer_size: int, priority_strategy: str = "learning_difficulty", *,
                 priority_alpha: float = 0.6, beta0: float = 0.4, beta_steps: int = 1000,
                 eps: float = 1e-3, seed: int | None = 0):
        if priority_strategy not in PRIORITY_STRATEGIES:
            raise ValueError(f"unknown priority strategy {priority_strategy!r}; "
                             f"choose from {', '.join(PRIORITY_STRATEGIES)}")
        if not 0.0 <= priority_alpha <= 1.0 or not 0.0 <= beta0 <= 1.0:
            raise ValueError(f"priority_alpha and beta0 must lie in [0, 1], got {priority_alpha}, {beta0}")
        self.buffer_size = int(buffer_size)
        self.priority_strategy = priority_strategy
        self.alpha, self.beta0, self.beta_steps = float(priority_alpha), float(beta0), max(int(beta_steps), 1)
        self.eps = float(eps)
        self.tree = SumTree(self.buffer_size)
        self.data = {k: np.zeros(self.buffer_size, dtype=t) for k, t in _FIELDS.items()}
        self.rng = np.random.default_rng(seed)
        self.n_stored = 0  # items filled (<= buffer_size)
        self.cursor = 0  # next slot written
        self.sample_calls = 0

    def __len__(self) -> int:
        return self.n_stored

    @property
    def beta(self) -> float:
        """Current importance-sampling exponent."""
        return min(1.0, self.beta0 + (1.0 - self.beta0) * self.sample_calls / self.beta_steps)

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored fields and the trees."""
        return sum(a.nbytes for a in self.data.values()) + self.tree.nbytes

    # ---------------------------------------------------------------- store
    def store_experience(self, experience: Mapping[str, Any], priority: float) -> None:
        """Store one transition (keys ``bar, position, action, reward, log_prob``, optional ``score``).

        ``priority`` is the raw priority ``p`` (the buffer raises it to ``alpha``).
        """
        self.store_batch(**{k: np.array([experience[k]]) for k in ("bar", "position", "action", "reward", "log_prob")},
                         scores=np.array([experience.get("score", 1.0)]), priorities=np.array([priority]))

    def store_batch(self, *, bar: np.ndarray, position: np.ndarray, action: np.ndarray, reward: np.ndarray,
                    log_prob: np.ndarray, scores: np.ndarray, priorities: np.ndarray) -> np.ndarray:
        """Store ``B`` transitions at once (arrays ``(B,)``); returns the slots they took.

        ``position`` is the position *level* index (0..n_actions-1), ``scores`` the static
        bar scores, ``priorities`` the raw priorities (before ``alpha``).
        """
        n = int(np.asarray(bar).size)
        if n == 0:
            return np.zeros(0, dtype=np.intp)
        if n > self.buffer_size:  # only the newest fit
            keep = slice(n - self.buffer_size, n)
            bar, position, action, reward, log_prob, scores, priorities = (
                np.asarray(a).reshape(-1)[keep] for a in (bar, position, action, reward, log_prob, scores, priorities))
            n = self.buffer_size
        slots = (self.cursor + np.arange(n)) % self.buffer_size
        for key, values in (("bar", bar), ("position", position), ("action", action), ("reward", reward),
                            ("log_prob", log_prob), ("score", scores)):
            self.data[key][slots] = np.asarray(values).reshape(-1)
        self.tree.update(slots, self._leaf(priorities))
        self.cursor = int((self.cursor + n) % self.buffer_size)
        self.n_stored = min(self.n_stored + n, self.buffer_size)
        return slots

    def _leaf(self, priorities: np.ndarray) -> np.ndarray:
        p = np.asarray(priorities, dtype=np.float64).reshape(-1)
        p = np.where(np.isfinite(p), np.maximum(p, 0.0), 0.0) + self.eps
        return p ** self.alpha

    # --------------------------------------------------------------- sample
    def sample_batch(self, batch_size: int, replay_ratio: float) -> ReplayBatch:
        """Draw the replayed share of a batch: ``round(batch_size * replay_ratio)`` transitions.

        Draws are independent with probability ``P(i)``; each call advances beta's annealing.
        An empty buffer or a share of 0 gives an empty batch.
        """
        n = int(round(int(batch_size) * float(replay_ratio)))
        if n <= 0 or self.n_stored == 0:
            empty = np.zeros(0)
            return ReplayBatch(np.zeros(0, dtype=np.intp), *(np.zeros(0, dtype=_FIELDS[k]) for k in
                               ("bar", "position", "action", "reward", "log_prob")), empty, empty)
        beta = self.beta
        self.sample_calls += 1
        slots = self.tree.sample(self.rng, n)
        return self.gather(slots, beta)

    def gather(self, slots: np.ndarray, beta: float | None = None) -> ReplayBatch:
        """The stored fields, probabilities and IS weights of ``slots`` (int ``(B,)``)."""
        beta = self.beta if beta is None else float(beta)
        total = self.tree.total
        probabilities = self.tree.get(slots) / total
        # w_i / max_k w_k with w = (N P)^-beta; the max is at the smallest leaf
        weights = (probabilities * total / self.tree.min_priority) ** -beta
        d = self.data
        return ReplayBatch(slots, d["bar"].take(slots), d["position"].take(slots), d["action"].take(slots),
                           d["reward"].take(slots), d["log_prob"].take(slots), probabilities, weights)

    def update_priorities(self, experiences: ReplayBatch | np.ndarray | Sequence[int],
                          td_errors: np.ndarray | Sequence[float]) -> None:
        """Refresh priorities: ``p = score(bar) * (|td_error| + eps)`` for each sampled slot.

        ``experiences``: a :class:`ReplayBatch` or its slot indices. Slots overwritten since
        they were drawn take the priority meant for the old transition (the update follows
        the sample within one PPO update, before anything new is stored).
        """
        slots = experiences.indices if isinstance(experiences, ReplayBatch) else np.asarray(experiences, np.intp)
        td = np.abs(np.asarray(td_errors, dtype=np.float64).reshape(-1))
        self.tree.update(slots, self._leaf(self.data["score"][slots] * td))

    # ---------------------------------------------------------------- stats
    def stats(self) -> dict[str, float]:
        """``fill`` (share of capacity used) and ``mean_priority`` (mean leaf ``p**alpha``)."""
        fill = self.n_stored / self.buffer_size
        mean = self.tree.total / self.n_stored if self.n_stored else 0.0
        return {"fill": float(fill), "mean_priority": float(mean), "beta": self.beta}

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: the stored fields, the leaf priorities (numpy arrays,
        only the filled slots), the cursor, beta's progress and the RNG state."""
        n = self.n_stored
        return {"buffer_size": self.buffer_size, "priority_strategy": self.priority_strategy, "n_stored": n,
                "cursor": self.cursor, "sample_calls": self.sample_calls, "rng": self.rng.bit_generator.state,
                "priorities": self.tree.priorities[:n].copy(), **{k: v[:n].copy() for k, v in self.data.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state["buffer_size"]) != self.buffer_size:
            raise ValueError(f"state holds a buffer of {state['buffer_size']}, this one holds {self.buffer_size}")
        n = int(state["n_stored"])
        for key, kind in _FIELDS.items():
            self.data[key][:] = 0
            self.data[key][:n] = np.asarray(state[key], dtype=kind)
        leaves = np.zeros(self.buffer_size)
        leaves[:n] = np.asarray(state["priorities"], dtype=np.float64)
        self.tree.rebuild(leaves)
        self.n_stored, self.cursor = n, int(state["cursor"])
        self.sample_calls = int(state["sample_calls"])
        self.rng.bit_generator.state = dict(state["rng"])
