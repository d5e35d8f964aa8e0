"""Walking a choice table: numpy only, shared by the env's backtests and the true oracle.

The true oracle (``evaluation/true_oracle.py``) is pure and imports no env (which pulls in SB3 and
torch); the env's deterministic walk (``env/rollout.py``) and the pyfunc use the same function.
"""
from __future__ import annotations

import numpy as np

__all__ = ["follow_choices"]


def follow_choices(choices: np.ndarray, start: int) -> np.ndarray:
    """Walk a choice table: ``choices[i, h]`` is the action taken at decision ``i`` while
    holding level ``h`` (an action index is the index of the level it moves to).

    Returns the action index taken at each decision, int ``(n,)``, starting from level ``start``.
    """
    # composed[i, h]: the level held after decision i when holding h before decision 0. Composing
    # the per-decision maps by doubling (a prefix scan) takes log2(n) array steps and makes no
    # Python object per decision (a list of every row set off full garbage collections).
    composed = np.asarray(choices, dtype=np.intp).copy()
    shift = 1
    while shift < len(composed):
        composed[shift:] = np.take_along_axis(composed[shift:], composed[:-shift], axis=1)
        shift *= 2
    return composed[:, start].copy() if len(composed) else np.empty(0, dtype=np.intp)
