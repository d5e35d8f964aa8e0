"""The strata of a market (components/strata.py) against its true regimes: shares of train starts and a
confusion table of per-bar strata versus the synthetic market's regimes over train + validation.

    CONVOPT_CACHE_DIR=... python benchmarks/regime_strata_table.py --out benchmarks/results/regime_strata.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

from convopt_mlflow.components.meta import MetaLearningController  # noqa: E402
from convopt_mlflow.components.strata import STRATA, BlockSchedule  # noqa: E402
from convopt_mlflow.config import build_config  # noqa: E402
from convopt_mlflow.evaluation.metrics import REGIME_NAMES  # noqa: E402
from convopt_mlflow.training.meta import build_strata, label_train_split  # noqa: E402
from convopt_mlflow.training.setup import load_market  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="synthetic:n_bars=300000,seed=11,signal_ic=0.05,signal_regimes=1:-1:0")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cfg = build_config("regime", {"data.source": args.data})
    market = load_market(cfg)
    controller = MetaLearningController({"stratified": True})
    start = time.perf_counter()
    label_train_split(controller, market.features.log_returns, market.splits.train, market.features.warmup)
    plan = build_strata(controller, market)
    seconds = time.perf_counter() - start
    stop = market.splits.val[1]
    truth, codes = market.regimes[:stop], plan.codes[:stop]
    confusion = {REGIME_NAMES[g]: {s: int((codes[truth == g] == k).sum()) for k, s in enumerate(STRATA)}
                 for g in range(len(REGIME_NAMES))}
    result = {"data": args.data, "machine": machine_info(), "label_and_strata_s": seconds,
              "start_shares": plan.shares, "block_targets": BlockSchedule().targets(plan.shares),
              "confusion_true_regime_x_stratum": confusion}
    write_result(result, args.out)
    print(result)


if __name__ == "__main__":
    main()
