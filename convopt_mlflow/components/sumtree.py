"""A vectorized numpy sum-tree: proportional sampling and priority updates in O(B log N).

The tree has ``K`` children per node (``branching``, 16 by default) and is kept as one float64
array per level: level ``d`` holds ``K**d`` nodes, node ``i`` of level ``d`` has children
``K*i .. K*i + K - 1`` on level ``d + 1``, and the last level holds the leaves (item ``j`` is
leaf ``j``; leaves past the capacity stay 0). A batch of ``B`` draws descends the
``log_K(capacity)`` levels together, one ``(B, K)`` gather + cumulative sum per level, and an
update of ``B`` leaves recomputes their ancestors level by level from their children, so
neither loops over items in Python and no rounding error accumulates. At 1M items a 16-ary
tree has 5 levels against a binary tree's 20, and numpy's per-call overhead, not arithmetic,
is what a batch of 256 pays for.

The smallest non-zero priority, which the importance-sampling weights are normalised by
(Schaul et al. 2016), is kept beside the tree: an update that lowers it sets it at once, and
only an update that raises the leaf holding it makes it stale, to be recomputed over all
leaves at the next read (rare: the smallest priority is the least likely to be drawn). A
second tree of minima would cost as much as the sums on every update.

Examples:
    >>> import numpy as np
    >>> tree = SumTree(4, branching=2)
    >>> tree.update(np.array([0, 1, 2]), np.array([1.0, 2.0, 1.0]))
    >>> tree.total, tree.min_priority
    (4.0, 1.0)
    >>> tree.find(np.array([0.5, 1.5, 3.5]))
    array([0, 1, 2])
"""
from __future__ import annotations

import numpy as np

__all__ = ["SumTree"]


class SumTree:
    """Sums (and minima) of non-negative priorities over ``capacity`` leaves.

    Args:
        capacity: number of leaves (items), >= 1.
        branching: children per node, >= 2.

    Memory: about ``8 * K/(K-1) * K**depth`` bytes; 8.5 MiB at a capacity of 2**20 with ``K = 16``.
    """

    def __init__(self, capacity: int, branching: int = 16):
        capacity, branching = int(capacity), int(branching)
        if capacity < 1 or branching < 2:
            raise ValueError(f"capacity must be >= 1 and branching >= 2, got {capacity}, {branching}")
        self.capacity, self.k = capacity, branching
        self.depth = 1
        while branching ** self.depth < capacity:
            self.depth += 1
        self._sums = [np.zeros(branching ** d) for d in range(self.depth + 1)]
        # (n / K, K) views: row i holds the children of node i of the level above
        self._rows = [a.reshape(-1, branching) if d else a for d, a in enumerate(self._sums)]
        self._min, self._min_stale = np.inf, False
        self._upper = np.triu(np.ones((branching, branching)))  # x @ _upper = cumsum(x, axis=1)
        self._ones = np.ones(branching)

    # ----------------------------------------------------------------- reads
    @property
    def total(self) -> float:
        """Sum of all priorities."""
        return float(self._sums[0][0])

    @property
    def min_priority(self) -> float:
        """Smallest priority among leaves that were set to a value > 0 (inf when none)."""
        if self._min_stale:
            leaves = self._sums[-1]
            positive = leaves[leaves > 0]
            self._min, self._min_stale = (float(positive.min()) if positive.size else np.inf), False
        return float(self._min)

    @property
    def priorities(self) -> np.ndarray:
        """float64 ``(capacity,)`` view of the leaves (read-only)."""
        view = self._sums[-1][:self.capacity]
        view.flags.writeable = False
        return view

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._sums)

    def get(self, items: np.ndarray) -> np.ndarray:
        """Priorities of ``items`` (int ``(B,)``), float64 ``(B,)``."""
        return self._sums[-1].take(np.asarray(items, dtype=np.intp))

    # ---------------------------------------------------------------- writes
    def update(self, items: np.ndarray, priorities: np.ndarray) -> None:
        """Set leaf ``items[b]`` to ``priorities[b]`` (>= 0, finite) and refresh their ancestors.

        With repeated items the last priority wins, as in a numpy fancy assignment.
        """
        items = np.asarray(items, dtype=np.intp).reshape(-1)
        priorities = np.asarray(priorities, dtype=np.float64).reshape(-1)
        if items.shape != priorities.shape:
            raise ValueError(f"{items.size} items but {priorities.size} priorities")
        if items.size == 0:
            return
        if items.min() < 0 or items.max() >= self.capacity:
            raise IndexError(f"items must lie in [0, {self.capacity}), got [{items.min()}, {items.max()}]")
        if not np.isfinite(priorities.sum()) or priorities.min() < 0:
            raise ValueError("priorities must be finite and >= 0")
        leaves = self._sums[-1]
        if not self._min_stale and (leaves[items] == self._min).any():
            self._min_stale = True  # the smallest leaf may be raised: recompute when next read
        leaves[items] = priorities
        written = leaves[items]  # with repeated items, what was kept
        positive = written[written > 0]
        if positive.size and positive.min() <= self._min:  # a new minimum, present in the leaves
            self._min, self._min_stale = float(positive.min()), False
        nodes = items
        for d in range(self.depth - 1, -1, -1):  # duplicates are harmless: parents are recomputed
            nodes = nodes // self.k
            self._sums[d][nodes] = self._rows[d + 1].take(nodes, axis=0) @ self._ones

    def rebuild(self, priorities: np.ndarray) -> None:
        """Replace every leaf at once (``(capacity,)``), one numpy pass per level."""
        priorities = np.asarray(priorities, dtype=np.float64).reshape(-1)
        if priorities.size != self.capacity:
            raise ValueError(f"expected {self.capacity} priorities, got {priorities.size}")
        if not np.all(np.isfinite(priorities)) or priorities.min() < 0:
            raise ValueError("priorities must be finite and >= 0")
        self._sums[-1][:] = 0.0
        self._sums[-1][:self.capacity] = priorities
        for d in range(self.depth - 1, -1, -1):
            self._sums[d][:] = self._rows[d + 1].sum(axis=1)
        self._min_stale = True

    # -------------------------------------------------------------- sampling
    def find(self, values: np.ndarray) -> np.ndarray:
        """Item whose cumulative-priority interval holds each of ``values`` (in ``[0, total)``).

        Item ``j`` owns ``[sum(p[:j]), sum(p[:j+1]))``; returns int ``(B,)``.
        """
        values = np.array(values, dtype=np.float64)
        nodes = np.zeros(values.size, dtype=np.intp)
        rows = np.arange(values.size)
        for d in range(1, self.depth + 1):
            children = self._rows[d].take(nodes, axis=0)  # (B, K); take beats fancy indexing
            cumulative = children @ self._upper  # a (K, K) matmul is several times faster than cumsum(axis=1)
            left = cumulative - children  # the mass left of each child
            cumulative[:, -1] = np.inf  # rounding at a node's right edge still picks its last child
            child = (cumulative > values[:, None]).argmax(axis=1)
            values -= left[rows, child]
            nodes *= self.k
            nodes += child
        items = nodes
        # float rounding can land on a zero-priority leaf (an empty right edge): step back to the
        # last item before it with a priority (rare; only the affected draws pay for it)
        empty = self._sums[-1][items] <= 0
        if empty.any():
            filled = np.flatnonzero(self._sums[-1][:self.capacity] > 0)
            if filled.size:
                pos = np.searchsorted(filled, items[empty], side="right") - 1
                items[empty] = filled[np.maximum(pos, 0)]
        return items

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` items drawn independently with probability ``p_j / total`` (int ``(n,)``)."""
        total = self.total
        if not total > 0:
            raise ValueError("cannot sample from a tree whose priorities are all zero")
        return self.find(rng.random(int(n)) * total)
