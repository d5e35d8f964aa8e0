"""Benchmark: BOCPD labelling cost in µs per bar: the pruned detector (default), the exact kernel, the bar-by-bar one.

Series: per-bar log returns of ``data.synthetic.generate_market(n, seed, signal_regimes="1:-1:0")``
(trend / mean-reversion / high-vol regimes, jumps), the market the meta controller labels. Each
detector runs with the meta controller's settings (reference scale = robust std of all bars,
hazard 1/1000, confirm 10), once per size:

- ``fast``: ``BayesianChangePointDetector.process`` with its defaults (the pruned kernel,
  components/bocpd_fast.py: prune 1e-7, at most 64 run lengths kept, max_run 400), over the whole
  array; on the old sizes also its agreement with ``new`` (labels, MAP run lengths, declared
  changes) and the posterior mass it dropped;
- ``new``: the exact block kernel (``prune=None``), the default ``max_run`` (400) and, with
  ``--max-runs``, other R;
- ``old``: the bar-by-bar implementation it replaced (``tests/components/bocpd_reference.py``,
  max_run 400), only on ``--old-bars`` bars: at ~200 µs per bar the full sizes take minutes.

On the old sizes both run on the same bars, and the share of bars with the same regime label is
reported (``label_agreement``). Wall time is ``time.perf_counter`` around one call; on a shared
machine read it as an upper bound. ``cpu_us_per_bar`` is ``time.process_time`` (this process's CPU
time), less sensitive to other processes on the machine.

    python benchmarks/bench_bocpd.py --out benchmarks/results/bocpd.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests" / "components"))
from _common import machine_info, write_result  # noqa: E402

from convopt_mlflow.components.changepoint import REGIMES, BayesianChangePointDetector, robust_scale  # noqa: E402
from convopt_mlflow.data.synthetic import generate_market  # noqa: E402


def market_returns(n_bars: int, seed: int) -> np.ndarray:
    close = generate_market(n_bars + 1, seed=seed, signal_regimes="1:-1:0").frame["close"].to_numpy()
    return np.diff(np.log(close))


def time_new(returns: np.ndarray, max_run: int, prune: float | None = None):
    """(wall s, cpu s, trace, detector) of one ``process`` call; ``prune=None``: the exact kernel."""
    kwargs = {} if prune == "default" else {"prune": prune}
    det = BayesianChangePointDetector(robust_scale(returns), max_run=max_run, **kwargs)
    start, cpu = time.perf_counter(), time.process_time()
    trace = det.process(returns, first_bar=0)
    return time.perf_counter() - start, time.process_time() - cpu, trace, det


def time_old(returns: np.ndarray) -> tuple[float, np.ndarray]:
    from bocpd_reference import ReferenceBOCPD

    det = ReferenceBOCPD(robust_scale(returns))
    regimes = np.empty(returns.size, dtype=np.int8)
    start = time.perf_counter()
    for bar, value in enumerate(returns):
        det.update(value, bar)
        regimes[bar] = REGIMES.index(det.regime)
    return time.perf_counter() - start, regimes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1290000", help="bar counts for the new detector")
    parser.add_argument("--old-bars", type=int, default=20_000, help="bars for the old detector (and new, same bars)")
    parser.add_argument("--max-runs", default="400", help="R values for the new detector on --old-bars")
    parser.add_argument("--exact-max-bars", type=int, default=100_000, help="run the exact kernel up to this size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows = []
    small = market_returns(args.old_bars, args.seed)
    old_s, old_regimes = time_old(small)
    rows.append({"detector": "old", "max_run": 400, "bars": small.size, "seconds": old_s,
                 "us_per_bar": 1e6 * old_s / small.size})
    exact = None
    for max_run in (int(r) for r in args.max_runs.split(",")):
        secs, cpu, trace, _ = time_new(small, max_run)
        exact = trace if max_run == 400 else exact
        rows.append({"detector": "new", "max_run": max_run, "bars": small.size, "seconds": secs,
                     "us_per_bar": 1e6 * secs / small.size, "cpu_us_per_bar": 1e6 * cpu / small.size,
                     "speedup_vs_old": old_s / secs, "label_agreement": float(np.mean(trace.regimes == old_regimes))})
    secs, cpu, trace, det = time_new(small, 400, "default")
    row = {"detector": "fast", "max_run": 400, "bars": small.size, "seconds": secs,
           "us_per_bar": 1e6 * secs / small.size,
           "cpu_us_per_bar": 1e6 * cpu / small.size, "speedup_vs_old": old_s / secs,
           "label_agreement": float(np.mean(trace.regimes == old_regimes)), "dropped_mass": det.dropped_mass}
    if exact is not None:
        row.update(label_agreement_vs_new=float(np.mean(trace.regimes == exact.regimes)),
                   run_length_agreement_vs_new=float(np.mean(trace.run_length == exact.run_length)),
                   changes=len(trace.changes), changes_new=len(exact.changes),
                   same_change_bars=[c.bar for c in trace.changes] == [c.bar for c in exact.changes])
    rows.append(row)
    for n_bars in (int(n) for n in args.sizes.split(",")):
        returns = market_returns(n_bars, args.seed)
        for name, prune in (("fast", "default"), ("new", None)):
            if name == "new" and n_bars > args.exact_max_bars:
                continue
            secs, cpu, _, det = time_new(returns, 400, prune)
            rows.append({"detector": name, "max_run": 400, "bars": n_bars, "seconds": secs,
                         "us_per_bar": 1e6 * secs / n_bars, "cpu_us_per_bar": 1e6 * cpu / n_bars,
                         **({"dropped_mass": det.dropped_mass} if name == "fast" else {})})
    for row in rows:
        extra = "".join(f"  {k}={row[k]:.4g}" for k in ("cpu_us_per_bar", "speedup_vs_old", "label_agreement",
                                                      "label_agreement_vs_new", "dropped_mass") if k in row)
        print(f"{row['detector']:>4} R={row['max_run']:<4} {row['bars']:>9,} bars  {row['seconds']:8.2f} s  "
              f"{row['us_per_bar']:7.1f} µs/bar{extra}")
    doc = {"benchmark": "bocpd", "series": f"generate_market(n, seed={args.seed}, signal_regimes='1:-1:0') log returns",
           "rows": rows, "machine": machine_info()}
    write_result(doc, args.out)
    return doc


if __name__ == "__main__":
    main()
