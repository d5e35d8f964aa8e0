"""Benchmark: how many trend <-> mean-reversion switches the trend detector catches, and its false alarms.

Series: ``data.synthetic.generate_market(--bars + 1, seed)`` for each of ``--seeds`` (the markets of
``bench_regime.py``: trend / mean-reversion / high-vol regimes; ``signal_regimes`` does not change
the regime path). Detector: ``TrendDetector()`` defaults (64-bar window, variance ratio at 8 bars,
effect 3), a switch declared when another state is the most probable one for 20 bars
(``declared_switches`` defaults). Scoring as ``bench_regime.py`` scores BOCPD: a trend <->
mean-reversion switch is detected by the first declaration in ``[s, s + --max-delay]`` bars; a
declaration within ``--max-delay`` bars after no switch of any kind is a false alarm; the first
``--warmup`` bars are not scored. ``chance_detection_rate``: what declarations at the same rate, at
random bars, would catch (1 - exp(-rate * max_delay)).

    python benchmarks/bench_trend_detector.py --out benchmarks/results/trend_detector.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

from convopt_mlflow.components.changepoint import score_detections  # noqa: E402
from convopt_mlflow.components.trend_detector import TrendDetector, declared_switches  # noqa: E402
from convopt_mlflow.data.synthetic import generate_market  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--bars", type=int, default=20_000)
    parser.add_argument("--max-delay", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        market = generate_market(args.bars + 1, seed=seed)
        returns = np.diff(np.log(market.frame["close"].to_numpy()))
        regimes = market.regimes[1:]
        switches = np.flatnonzero(regimes[1:] != regimes[:-1]) + 1
        calm = [int(s) for s in switches if s >= args.warmup and {int(regimes[s]), int(regimes[s - 1])} == {0, 1}]
        start = time.perf_counter()
        declared = [d for d in declared_switches(TrendDetector().probabilities(returns)) if d >= args.warmup]
        seconds = time.perf_counter() - start
        score = score_detections(declared, calm, returns.size - args.warmup, max_delay=args.max_delay)
        false_alarms = sum(not any(s <= d <= s + args.max_delay for s in switches) for d in declared)
        rows.append({"seed": seed, "calm_switches": len(calm), "detected": score.detected, "delays": list(score.delays),
                     "declared": len(declared), "false_alarms": false_alarms,
                     "scored_bars": returns.size - args.warmup, "us_per_bar": 1e6 * seconds / returns.size})
    switches, detected = sum(r["calm_switches"] for r in rows), sum(r["detected"] for r in rows)
    bars, declared = sum(r["scored_bars"] for r in rows), sum(r["declared"] for r in rows)
    delays = [d for r in rows for d in r["delays"]]
    summary = {"calm_switches": switches, "detection_rate": detected / switches,
               "false_alarms_per_10k": 1e4 * sum(r["false_alarms"] for r in rows) / bars,
               "median_delay": float(np.median(delays)) if delays else None,
               "chance_detection_rate": float(1 - np.exp(-declared / bars * args.max_delay)),
               "us_per_bar": float(np.median([r["us_per_bar"] for r in rows]))}
    print(f"trend <-> mean-reversion switches: {detected}/{switches} detected ({summary['detection_rate']:.0%}), "
          f"median delay {summary['median_delay']} bars, {summary['false_alarms_per_10k']:.1f} false alarms per 10k bars, "
          f"chance {summary['chance_detection_rate']:.0%}, {summary['us_per_bar']:.2f} µs/bar")
    doc = {"benchmark": "trend_detector", "args": vars(args), "summary": summary, "rows": rows, "machine": machine_info()}
    write_result(doc, args.out)
    return doc


if __name__ == "__main__":
    main()
