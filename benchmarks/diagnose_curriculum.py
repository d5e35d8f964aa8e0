"""Why curriculum hurts on some panel mechanisms: what its difficulty score selects, and how much of
a run it spends on the full distribution.

For every synthetic panel market (at ``--n-bars``) it scores the train split's episode windows as the
``curriculum`` preset does, then reports, per market:

* Spearman correlations of the window's ``difficulty`` rank with its realized volatility and with the
  **oracle edge in the window** (the true oracle's net log PnL over the window's bars, per bar);
* the oracle edge available in the first stage's pool (``clear_trends``) and in the last stage's pool,
  as a share of the edge in the whole train split (1.0 = as rich in edge as the full distribution);
* the hidden state composition of the first stage's pool against the whole split (regime shares on
  the regime markets, spike share on ``spike``).

and, for budgets of ``--budgets`` env steps, the step from which episodes start in the last stage, and
(with ``curriculum.final_share``) the step from which they start anywhere in the train split, when the
steps trigger alone moves the stages. The performance trigger can move them earlier, at a validation
eval (every 4,096 steps at 20k, where eval_freq is lowered to give 4 evals; every 25k at 200k) whose
Sharpe reaches ``stage_progression_threshold`` (0.1) after the minimum dwell; a collapse can step back.

    python benchmarks/diagnose_curriculum.py --final-share 0.5 --out benchmarks/results/curriculum_diagnosis.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import stats as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

MARKETS = ("planted", "regime-signal", "trend", "garch", "spike", "noise")


def window_means(values: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Mean of ``values[s .. s+length-1]`` for every start ``s``."""
    c = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return (c[starts + length] - c[starts]) / length


def diagnose_market(name: str, n_bars: int) -> dict:
    from bench_panel import market_source

    from convopt_mlflow.config import build_config
    from convopt_mlflow.training.curriculum import build_curriculum
    from convopt_mlflow.training.setup import load_market

    cfg = build_config("curriculum", [f"data.source={market_source(name, n_bars)}"])
    market = load_market(cfg)
    curriculum = build_curriculum(cfg)
    core = market.cores["train"]
    frame = market.bars.frame
    r = market.features.log_returns
    curriculum.score_windows(r, frame["high"].to_numpy(), frame["low"].to_numpy(), frame["close"].to_numpy(),
                             core.start_bounds, core.episode_length, vol_window=cfg.data.vol_window)
    w = curriculum.windows
    length = core.episode_length
    lo, hi = core.start_bounds
    bars = np.arange(lo, hi + length + 1)
    positions = market.oracle_positions(bars).astype(np.float64)  # the oracle walked over the whole train split
    pnl = np.zeros(r.size)
    held = np.concatenate([[0.0], positions[:-1]])
    pnl[bars[:-1]] = positions[:-1] * r[bars[:-1] + 1] - core.cost_rate * np.abs(positions[:-1] - held[:-1])
    edge = window_means(pnl, w.starts, length)
    vol = np.sqrt(np.maximum(window_means(r[1:] ** 2, w.starts, length), 0))
    difficulty = w.ranks["difficulty"]
    first, last = curriculum.stage_pool(0), curriculum.stage_pool(len(curriculum.stages) - 1)
    index = lambda pool: np.searchsorted(w.starts, pool)  # noqa: E731
    whole_edge = float(edge.mean())
    out = {"market": name, "n_windows": int(len(w)), "oracle_edge_per_bar_whole": whole_edge,
           "spearman_difficulty_vs_volatility": float(st.spearmanr(difficulty, vol).statistic),
           "spearman_difficulty_vs_oracle_edge": float(st.spearmanr(difficulty, edge).statistic),
           "first_stage_pool_share": float(np.unique(first).size / len(w)),
           "first_stage_edge_vs_whole": float(edge[index(first)].mean() / whole_edge) if whole_edge > 0 else None,
           "last_stage_edge_vs_whole": float(edge[index(last)].mean() / whole_edge) if whole_edge > 0 else None,
           "last_stage_hard_share": float(1 - np.unique(last).size / last.size)}
    truth = market._generated
    if truth.regimes is not None:  # 0 trend, 1 mean reversion, 2 high volatility
        for k, label in enumerate(("trend", "mean_reversion", "high_vol")):
            share = window_means((truth.regimes == k).astype(float), w.starts + 1, length)
            out[f"regime_{label}_share_whole"] = float(share.mean())
            out[f"regime_{label}_share_first_stage"] = float(share[index(first)].mean())
    elif name == "spike":
        share = window_means((truth.states > 0).astype(float), w.starts, length)
        out["spike_share_whole"], out["spike_share_first_stage"] = float(share.mean()), float(share[index(first)].mean())
    return out


def schedule(budget: int, final_share: float, rollout: int = 2048) -> dict:
    """When the steps trigger alone moves the stages, over updates every ``rollout`` env steps
    (``final_share=0``: the design's schedule, as before the fix)."""
    from convopt_mlflow.components.curriculum import CurriculumLearningSystem

    criteria = {"total_steps": budget, "triggers": ("steps",), "final_share": final_share,
                "decision_interval": rollout}
    cur = CurriculumLearningSystem(progression_criteria=criteria)
    steps = np.arange(rollout, budget + rollout, rollout)
    last_stage, whole = None, None
    for step in steps[steps < budget]:
        cur.get_current_stage(int(step))
        if last_stage is None and cur.stage == len(cur.stages) - 1:
            last_stage = int(step)
        if whole is None and getattr(cur, "on_full_distribution", False):
            whole = int(step)
    total = int(steps[-1])  # SB3 runs whole rollouts: the last one ends at or after the budget
    return {"budget": budget, "final_share": final_share, "steps_run": total,
            "last_stage_from_step": last_stage,
            "last_stage_share": None if last_stage is None else (total - last_stage) / total,
            "whole_split_from_step": whole,
            "whole_split_share": 0.0 if whole is None else (total - whole) / total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-bars", type=int, default=50_000)
    parser.add_argument("--budgets", default="20000,15000,200000")
    parser.add_argument("--final-share", type=float, default=None, help="also show the schedule with this share")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    markets = [diagnose_market(m, args.n_bars) for m in MARKETS]
    budgets = [int(b) for b in args.budgets.split(",")]
    schedules = [schedule(b, 0.0) for b in budgets]
    if args.final_share is not None:
        schedules += [schedule(b, args.final_share) for b in budgets]
    for m in markets:
        print({k: (float(f"{v:.3g}") if isinstance(v, float) else v) for k, v in m.items()})
    for s in schedules:
        print(s)
    write_result({"n_bars": args.n_bars, "markets": markets, "schedules": schedules, "machine": machine_info()},
                 args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
