"""Benchmark: online regime detection, detection delay and false alarms per 10k bars, against a baseline.

Detectors (components/changepoint.py), each run bar by bar, online, over per-bar log returns:

- ``bocpd``: ``BayesianChangePointDetector`` with its defaults (hazard 1/1000, confirm 10 bars,
  winsorize at 3 x segment vol, a declared change needs a volatility change of x1.3); its reference
  scale is the robust std of the first ``--warmup`` bars.
- ``rollvol-1.6`` / ``rollvol-2.0``: the baseline ``RollingVolatilityDetector``: std of the last 20
  bars over the std of the last 200 outside [1/t, t], at most once per 50 bars.

Series (``--seeds`` each):

- ``planted-x1.5`` / ``-x2`` / ``-x3``: Gaussian returns (1e-3 per bar) whose std alternates between
  1 and the ratio every ``--segment`` bars.
- ``market``: ``data.synthetic.generate_market`` (trend / mean-reversion / high-vol regimes with vol
  multipliers 1.0 / 0.8 / 2.5, jumps). The switches scored are those into or out of the high-vol
  regime; switches between trend and mean reversion (vol 1.0 vs 0.8) are reported separately
  (``calm_switches_detected``). A declaration near *any* switch is not a false alarm.
- ``stationary-gauss`` / ``stationary-t4``: no switch at all (Student-t with 4 dof: fat tails).

A switch counts as detected by the first declaration in ``[s, s + --max-delay]`` bars; every other
declaration is a false alarm. The first ``--warmup`` bars are not scored.

    python benchmarks/bench_regime.py --out benchmarks/results/regime.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

from convopt_mlflow.components.changepoint import (  # noqa: E402
    BayesianChangePointDetector, RollingVolatilityDetector, detect_all, robust_scale, score_detections,
)
from convopt_mlflow.data.synthetic import generate_market  # noqa: E402


def detectors(returns: np.ndarray, warmup: int) -> dict:
    return {"bocpd": BayesianChangePointDetector(scale=robust_scale(returns[:warmup])),
            "rollvol-1.6": RollingVolatilityDetector(threshold=1.6),
            "rollvol-2.0": RollingVolatilityDetector(threshold=2.0)}


def planted(seed: int, ratio: float, segment: int, n_segments: int):
    rng = np.random.default_rng(seed)
    vols = [1e-3 * (ratio if i % 2 else 1.0) for i in range(n_segments)]
    return np.concatenate([rng.normal(0, v, segment) for v in vols]), [i * segment for i in range(1, n_segments)], []


def market(seed: int, n_bars: int):
    m = generate_market(n_bars + 1, seed=seed)
    returns = np.diff(np.log(m.frame["close"].to_numpy()))
    regimes = m.regimes[1:]
    switches = np.flatnonzero(regimes[1:] != regimes[:-1]) + 1
    volatile = [int(s) for s in switches if (regimes[s] == 2) != (regimes[s - 1] == 2)]
    calm = [int(s) for s in switches if (regimes[s] == 2) == (regimes[s - 1] == 2)]
    return returns, volatile, calm


def stationary(seed: int, n_bars: int, heavy: bool):
    rng = np.random.default_rng(seed)
    returns = rng.standard_t(4, n_bars) * 1e-3 / np.sqrt(2) if heavy else rng.normal(0, 1e-3, n_bars)
    return returns, [], []


def run_series(name: str, returns, switches, calm, args) -> list[dict]:
    rows = []
    scored = [s for s in switches if s >= args.warmup]
    calm = [s for s in calm if s >= args.warmup]
    for det_name, det in detectors(returns, args.warmup).items():
        start = time.perf_counter()
        found = [c.bar for c in detect_all(det, returns) if c.bar >= args.warmup]
        seconds = time.perf_counter() - start
        score = score_detections(found, scored, returns.size - args.warmup, max_delay=args.max_delay)
        # declarations near a trend <-> mean-reversion switch are not false alarms
        calm_score = score_detections([d for d in found if not _near(d, scored, args.max_delay)], calm,
                                      returns.size - args.warmup, max_delay=args.max_delay)
        rows.append({"series": name, "detector": det_name, "switches": len(scored), "detected": score.detected,
                     "delays": list(score.delays), "false_alarms": calm_score.false_alarms,
                     "calm_switches": len(calm), "calm_switches_detected": calm_score.detected,
                     "scored_bars": returns.size - args.warmup, "us_per_bar": 1e6 * seconds / returns.size})
    return rows


def _near(bar: int, switches, max_delay: int) -> bool:
    return any(s <= bar <= s + max_delay for s in switches)


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    for key in sorted({(r["series"], r["detector"]) for r in rows}):
        group = [r for r in rows if (r["series"], r["detector"]) == key]
        delays = [d for r in group for d in r["delays"]]
        switches, bars = sum(r["switches"] for r in group), sum(r["scored_bars"] for r in group)
        calm = sum(r["calm_switches"] for r in group)
        out.append({
            "series": key[0], "detector": key[1], "runs": len(group), "switches": switches,
            "detection_rate": sum(r["detected"] for r in group) / switches if switches else None,
            "median_delay": float(np.median(delays)) if delays else None,
            "p90_delay": float(np.percentile(delays, 90)) if delays else None,
            "false_alarms_per_10k": 1e4 * sum(r["false_alarms"] for r in group) / bars,
            "calm_detection_rate": sum(r["calm_switches_detected"] for r in group) / calm if calm else None,
            "us_per_bar": float(np.median([r["us_per_bar"] for r in group])),
        })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--segment", type=int, default=500)
    parser.add_argument("--n-segments", type=int, default=12)
    parser.add_argument("--market-bars", type=int, default=20_000)
    parser.add_argument("--stationary-bars", type=int, default=20_000)
    parser.add_argument("--max-delay", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for seed in seeds:
        for ratio in (1.5, 2.0, 3.0):
            rows += run_series(f"planted-x{ratio:g}", *planted(seed, ratio, args.segment, args.n_segments), args)
        rows += run_series("market", *market(seed, args.market_bars), args)
        rows += run_series("stationary-gauss", *stationary(seed, args.stationary_bars, heavy=False), args)
        rows += run_series("stationary-t4", *stationary(seed, args.stationary_bars, heavy=True), args)
        print(f"seed {seed} done", flush=True)
    summary = summarize(rows)
    print(f"{'series':18s} {'detector':12s} {'switches':>8s} {'det.rate':>8s} {'med.delay':>9s} {'p90':>6s} "
          f"{'FA/10k':>7s} {'calm det':>8s} {'us/bar':>7s}")
    for s in summary:
        def fmt(v, spec):
            return format(v, spec) if v is not None else "-"
        print(f"{s['series']:18s} {s['detector']:12s} {s['switches']:8d} {fmt(s['detection_rate'], '8.2f')} "
              f"{fmt(s['median_delay'], '9.1f')} {fmt(s['p90_delay'], '6.1f')} {s['false_alarms_per_10k']:7.2f} "
              f"{fmt(s['calm_detection_rate'], '8.2f')} {s['us_per_bar']:7.1f}")
    write_result({"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info(),
                  "summary": summary, "runs": rows}, args.out)


if __name__ == "__main__":
    main()
