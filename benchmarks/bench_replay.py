"""Prioritized replay at 1M capacity: sample(256) + update ops/s and memory, beside naive np.random.choice.

One op = ``sample_batch(256, 1.0)`` (sum-tree descent, gather of every stored field an update
needs, probabilities and importance weights) + ``update_priorities`` of the same 256 slots.
The naive op does the same with ``np.random.choice(N, 256, p=p / p.sum())`` over a plain
priority array. Memory is what tracemalloc sees numpy allocate while the buffer is built.

    python benchmarks/bench_replay.py --out benchmarks/results/replay.json

The DESIGN budget: >= 5,000 ops/s and <= 64 MB at 1M.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

from convopt_mlflow.components.replay import TradingExperienceReplay  # noqa: E402


def _filled(capacity: int, rng: np.random.Generator) -> TradingExperienceReplay:
    replay = TradingExperienceReplay(capacity, "learning_difficulty", seed=0)
    chunk = 100_000
    for start in range(0, capacity, chunk):
        n = min(chunk, capacity - start)
        replay.store_batch(bar=rng.integers(0, 1_290_000, n), position=rng.integers(0, 3, n),
                           action=rng.integers(0, 3, n), reward=rng.normal(size=n), log_prob=-rng.random(n),
                           scores=np.ones(n), priorities=rng.exponential(size=n))
    return replay


def _rate(op, seconds: float) -> tuple[float, int]:
    op()  # warm
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        op()
        n += 1
    return n / elapsed, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    tracemalloc.start()
    replay = _filled(args.capacity, rng)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    def tree_op():
        batch = replay.sample_batch(args.batch, 1.0)
        replay.update_priorities(batch, rng.normal(size=len(batch)))

    priorities = replay.tree.priorities.copy()
    fields = {k: v.copy() for k, v in replay.data.items()}

    def naive_op():
        p = priorities / priorities.sum()
        idx = rng.choice(priorities.size, args.batch, p=p)
        _ = {k: v[idx] for k, v in fields.items()}
        _ = (priorities.size * p[idx]) ** -0.4 / (priorities.size * p.min()) ** -0.4
        priorities[idx] = (np.abs(rng.normal(size=args.batch)) + 1e-3) ** 0.6

    tree = [_rate(tree_op, args.seconds) for _ in range(args.repeats)]
    naive = [_rate(naive_op, min(args.seconds, 2.0)) for _ in range(args.repeats)]
    tree_rates, naive_rates = [r for r, _ in tree], [r for r, _ in naive]
    doc = {
        "benchmark": "replay", "capacity": args.capacity, "batch": args.batch,
        "sumtree_ops_per_s": {"median": float(np.median(tree_rates)), "runs": tree_rates},
        "naive_choice_ops_per_s": {"median": float(np.median(naive_rates)), "runs": naive_rates},
        "speedup": float(np.median(tree_rates) / np.median(naive_rates)),
        "memory_mb": {"buffer_nbytes": replay.nbytes / 2 ** 20, "tracemalloc_current": current / 2 ** 20,
                      "tracemalloc_peak": peak / 2 ** 20},
        "budget": {"ops_per_s": 5000, "memory_mb": 64},
        # the machine is shared: its load says how far these rates are from a quiet machine's
        "load_average_1_5_15": list(os.getloadavg()),
        "machine": machine_info(),
    }
    doc["within_budget"] = bool(doc["sumtree_ops_per_s"]["median"] >= 5000 and current / 2 ** 20 <= 64)
    print(f"sum-tree: {doc['sumtree_ops_per_s']['median']:.0f} ops/s  naive np.random.choice: "
          f"{doc['naive_choice_ops_per_s']['median']:.0f} ops/s  ({doc['speedup']:.0f}x)  memory "
          f"{current / 2 ** 20:.1f} MB (peak while filling {peak / 2 ** 20:.1f} MB)")
    write_result(doc, args.out)


if __name__ == "__main__":
    main()
