"""Peak memory of `counterfactual` and `direct` against `baseline`: one fresh process per arm.

Each process loads the planted market (``synthetic:n_bars=300000,seed=11,signal_ic=0.05``),
builds the env and the model as the coordinator does (``make_env``, ``make_model``,
``attach_counterfactual``), records its resident set size, learns ``--timesteps`` steps and
records its peak resident set size (``ru_maxrss``). The ratio is each arm's peak over
``baseline``'s peak, and the increment during learning over ``baseline``'s.

    python benchmarks/bench_exact_memory.py --timesteps 20000 --out benchmarks/results/exact_memory.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

DATA = "synthetic:n_bars=300000,seed=11,signal_ic=0.05"
CHILD = """
import json, resource, sys
from convopt_mlflow.config import build_config
from convopt_mlflow.training.control import ComponentGuard
from convopt_mlflow.training.counterfactual import attach_counterfactual
from convopt_mlflow.training.setup import load_market, make_env, make_model
def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
cfg = build_config(sys.argv[1], [f"data.source={sys.argv[2]}", "run.seed=0"])
model = make_model(cfg, make_env(cfg, load_market(cfg)))
attach_counterfactual(model, cfg, ComponentGuard())
before = rss_mib()
model.learn(int(sys.argv[3]))
print(json.dumps({"rss_before_learn_mib": before, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    from _common import machine_info, write_result

    parser = argparse.ArgumentParser()
    parser.add_argument("--arms", default="baseline,counterfactual,direct")
    parser.add_argument("--timesteps", type=int, default=20_000)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = {}
    for arm in args.arms.split(","):
        out = subprocess.run([sys.executable, "-c", CHILD, arm, args.data, str(args.timesteps)],
                             capture_output=True, text=True, check=True).stdout
        rows[arm] = json.loads(out.strip().splitlines()[-1])
        print(arm, rows[arm], flush=True)
    base = rows["baseline"]
    ratios = {arm: {"peak_rss": r["peak_rss_mib"] / base["peak_rss_mib"],
                    "learn_increment_mib": r["peak_rss_mib"] - r["rss_before_learn_mib"],
                    "baseline_learn_increment_mib": base["peak_rss_mib"] - base["rss_before_learn_mib"]}
              for arm, r in rows.items()}
    write_result({"data": args.data, "timesteps": args.timesteps, "arms": rows, "ratio_to_baseline": ratios,
                  "machine": machine_info()}, args.out)
    print(json.dumps(ratios, indent=1))


if __name__ == "__main__":
    main()
