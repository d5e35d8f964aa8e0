"""A vectorized numpy sum-tree: proportional sampling and priority updates in O(B log N).

The tree is one flat float64 array of ``2 * size`` nodes, ``size`` the capacity rounded up
to a power of two: node ``i`` has children ``2i`` and ``2i + 1``, the root is node 1 and
leaf ``j`` (item ``j``) is node ``size + j``. A batch of ``B`` draws descends all ``log2(size)``
levels at once (one numpy operation per level), and an update of ``B`` leaves recomputes
their ancestors level by level, so neither loops over items in Python.

A second tree of minima over the same leaves gives the smallest non-zero priority at the
root, which the importance-sampling weights are normalised by (Schaul et al. 2016).

Example:
    >>> import numpy as np
    >>> tree = SumTree(4)
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

    Memory: ``2 * 2 * next_pow2(capacity) * 8`` bytes (32 MiB at a capacity of 2**20).
    """

    def __init__(self, capacity: int):
        capacity = int(capacity)
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.size = 1 << max(capacity - 1, 0).bit_length()
        self.depth = self.size.bit_length() - 1
        self._sum = np.zeros(2 * self.size)
        self._min = np.full(2 * self.size, np.inf)

    # ----------------------------------------------------------------- reads
    @property
    def total(self) -> float:
        """Sum of all priorities."""
        return float(self._sum[1])

    @property
    def min_priority(self) -> float:
        """Smallest priority among leaves that were set to a value > 0 (inf when none)."""
        return float(self._min[1])

    @property
    def priorities(self) -> np.ndarray:
        """float64 ``(capacity,)`` view of the leaves (read-only)."""
        view = self._sum[self.size:self.size + self.capacity]
        view.flags.writeable = False
        return view

    def get(self, items: np.ndarray) -> np.ndarray:
        """Priorities of ``items`` (int ``(B,)``), float64 ``(B,)``."""
        return self._sum[self.size + np.asarray(items, dtype=np.intp)]

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
        if not np.all(np.isfinite(priorities)) or priorities.min() < 0:
            raise ValueError("priorities must be finite and >= 0")
        nodes = items + self.size
        self._sum[nodes] = priorities
        self._min[nodes] = np.where(priorities > 0, priorities, np.inf)
        self._refresh(nodes)

    def rebuild(self, priorities: np.ndarray) -> None:
        """Replace every leaf at once (``(capacity,)``), O(size) with one numpy pass per level."""
        priorities = np.asarray(priorities, dtype=np.float64).reshape(-1)
        if priorities.size != self.capacity:
            raise ValueError(f"expected {self.capacity} priorities, got {priorities.size}")
        if not np.all(np.isfinite(priorities)) or (priorities.size and priorities.min() < 0):
            raise ValueError("priorities must be finite and >= 0")
        leaves = slice(self.size, self.size + self.capacity)
        self._sum[self.size:] = 0.0
        self._min[self.size:] = np.inf
        self._sum[leaves] = priorities
        self._min[leaves] = np.where(priorities > 0, priorities, np.inf)
        width = self.size
        while width > 1:
            parents = np.arange(width // 2, width)
            self._sum[parents] = self._sum[2 * parents] + self._sum[2 * parents + 1]
            self._min[parents] = np.minimum(self._min[2 * parents], self._min[2 * parents + 1])
            width //= 2

    def _refresh(self, nodes: np.ndarray) -> None:
        for _ in range(self.depth):
            nodes = nodes >> 1  # duplicates are harmless: each parent is recomputed from its children
            left = nodes << 1
            self._sum[nodes] = self._sum[left] + self._sum[left + 1]
            self._min[nodes] = np.minimum(self._min[left], self._min[left + 1])

    # -------------------------------------------------------------- sampling
    def find(self, values: np.ndarray) -> np.ndarray:
        """Item whose cumulative-priority interval holds each of ``values`` (in ``[0, total)``).

        Item ``j`` owns ``[sum(p[:j]), sum(p[:j+1]))``; returns int ``(B,)``.
        """
        values = np.array(values, dtype=np.float64).reshape(-1)
        nodes = np.ones(values.size, dtype=np.intp)
        for _ in range(self.depth):
            left = nodes << 1
            left_sum = self._sum[left]
            right = values >= left_sum
            values -= np.where(right, left_sum, 0.0)
            nodes = left + right
        items = nodes - self.size
        # float rounding can land on a zero-priority leaf at the right edge: step back to the last
        # item with a priority (rare; only the affected draws pay for it)
        empty = self._sum[nodes] <= 0
        if empty.any():
            filled = np.flatnonzero(self._sum[self.size:self.size + self.capacity] > 0)
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
