"""Benchmark: the one-off regime labelling of bench_regime_cost.py's market, this checkout against another.

What it times, in a fresh process per run (CPU seconds, ``time.process_time``):

- ``label``: ``label_train_split`` (BOCPD over the 180k-bar train split), empty cache;
- ``strata``: ``build_strata`` (BOCPD continued over the 45k validation bars, the trend detector, the start pools);
- ``trend_full``: the trend detector over the whole 300k-bar market (the regime features' call).

Runs alternate between ``--base`` (another checkout of the package, e.g. a ``git worktree`` at an
older commit) and this one, ``--pairs`` times, starting with the base one. The machine is shared:
read the medians, and the spread, as loaded-machine numbers.

    git worktree add /tmp/base 37b670e
    nice -n 10 python benchmarks/bench_label_ab.py --base /tmp/base \
        --out benchmarks/results/regime_cost_labelcost_ab.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
_CHILD = r"""
import json, sys, tempfile, time
from convopt_mlflow.components.meta import MetaLearningController
from convopt_mlflow.components.trend_detector import TrendDetector
from convopt_mlflow.config import build_config
from convopt_mlflow.training import setup
from convopt_mlflow.training.meta import build_strata, label_train_split
cfg = build_config("baseline", {"data.source": sys.argv[1], "meta_enabled": "true", "meta_stratified": "true",
                                "env.regime_features": "true", "adaptation_frequency": "20000"})
market = setup.load_market(cfg)
meta = MetaLearningController({"adaptation_frequency": 20000, "seed": 0, "stratified": True})
out = {}
start = time.process_time()
label_train_split(meta, market.features.log_returns, market.splits.train, market.features.warmup,
                  cache_dir=tempfile.mkdtemp())
out["label"] = time.process_time() - start
start = time.process_time()
build_strata(meta, market)
out["strata"] = time.process_time() - start
start = time.process_time()
TrendDetector().probabilities(market.features.log_returns)
out["trend_full"] = time.process_time() - start
print(json.dumps(out))
"""


def run(checkout: Path, data: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(checkout), "CONVOPT_CACHE_DIR": f"{tmp}/cache"}
        out = subprocess.run([sys.executable, "-c", _CHILD, data], cwd=tmp, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True,
                        help="the other checkout (its root, holding convopt_mlflow/)")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--data", default="synthetic:n_bars=300000,seed=11,signal_ic=0.05,signal_regimes=1:-1:0")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not (args.base / "convopt_mlflow").is_dir():
        print(f"--base {args.base}: no convopt_mlflow/ package there", file=sys.stderr)
        sys.exit(2)
    runs = {"base": [], "this": []}
    for _ in range(args.pairs):
        for name, checkout in (("base", args.base), ("this", ROOT)):
            runs[name].append(run(checkout, args.data))
            print(name, runs[name][-1], flush=True)
    summary = {name: {part: statistics.median(r[part] for r in rows) for part in rows[0]}
               for name, rows in runs.items()}
    print(json.dumps(summary, indent=1))
    write_result({"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info(), "runs": runs,
                  "median_cpu_s": summary}, args.out)


if __name__ == "__main__":
    main()
