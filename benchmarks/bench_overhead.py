"""Benchmark: what our training glue costs over hand-written plain SB3 PPO.

Five arms run in ONE process, interleaved (A B C D E, then B C D E A, ...: the order
rotates each round so no arm always runs first), on the bundled
eurusd-1h data with the config's default env/PPO settings (n_envs 8, n_steps 256,
batch 256, n_epochs 10, net 64x64, tanh, torch threads 1):

    plain     stable_baselines3.PPO("MlpPolicy", TradingVecEnv(core, 8, seed), <make_model's
              hyperparameters>).learn(T): no callbacks, SB3's default logger (no output).
              Timed around .learn() (which also holds SB3's tiny _setup_learn).
    baseline  coordinator.train(build_config("baseline")).
    lr        coordinator.train(build_config("lr")): monitor + LR scheduler + interventions
              + parameter watch + MLflow logging.
    lr_nowatch  the lr preset with monitor.param_watch=false (isolates the parameter watch).
    baseline_noeval  the baseline preset with run.eval_freq=1e9: no in-training validation
              evaluation (eval_freq=0 would be the way to say it, but it raises ZeroDivisionError
              in ValidationEvalCallback._init_callback), to separate evaluation from glue.

After the rounds, an attribution pass times the parts in isolation, outside training:
one MLflow log_batch of each arm's per-rollout size, one validation evaluation, one
parameter_health call, one PPO update with vs without the GradientProbe hooks, and one
checkpoint save; each is turned into an estimated share of the learn phase.

For the coordinator arms the *learn phase* is timed by an extra callback
(perf_counter at _on_training_start / _on_training_end); ``total`` is the whole
train() call (data loading, run creation, params/dataset logging, the step-0
checkpoint, learn, final backtests, dashboards and model logging). The same
callback keeps ``model.logger.output_formats[0]`` (our MLflowOutputFormat) at training
end and its ``batches_written`` is read once train() has returned (so batches still
queued in a background writer are counted); with the rollout count this gives MLflow
writes per rollout.

MLflow: one temp sqlite store per process (MLFLOW_TRACKING_URI), one experiment
whose artifacts live in the same temp dir. An untimed warm-up of every arm runs
first (imports, sqlite schema, lazy torch init).

Budgets (DESIGN.md "Performance budgets"):
    baseline steps/s >= 95% of plain's;
    monitor + scheduler + logging (lr) <= 3% learn-phase wall-time over baseline;
    parameter watch on vs off < 1%.

    python benchmarks/bench_overhead.py [--timesteps 100000] [--repeats 3] [--out results/overhead.json]

Prints a table and writes JSON. Numbers are medians over repeats; the paired
ratios are computed within each interleaved round, then the median (and min/max)
over rounds is reported, which is robust to slow drifts of machine load.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from convopt_mlflow.config import build_config
from convopt_mlflow.env import TradingVecEnv
from convopt_mlflow.training.setup import _ACTIVATIONS, load_market
from _common import machine_info, write_result  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

ARMS = ("plain", "baseline", "baseline_noeval", "lr", "lr_nowatch")
PRESET_OF = {"baseline": ("baseline", []), "baseline_noeval": ("baseline", ["run.eval_freq=1000000000"]),
             "lr": ("lr", []), "lr_nowatch": ("lr", ["monitor.param_watch=false"])}
BUDGET_BASELINE_VS_PLAIN = 0.95
BUDGET_LR_OVERHEAD = 0.03
BUDGET_WATCH_OVERHEAD = 0.01


class PhaseTimer(BaseCallback):
    """Times the learn phase (wall and process CPU) and reads the MLflow writer's counters at training end.

    ``per_step = False``: it acts only at boundaries, so it does not put SB3's per-step
    callback calls back into the arm it measures (see ``ConvoptPPO``).
    """

    per_step = False

    def __init__(self) -> None:
        super().__init__(0)
        self.t_start = self.t_end = self.c_start = self.c_end = float("nan")
        self.rollouts = 0
        self.batches_written = -1
        self.points_written = -1
        self.num_timesteps_end = 0
        self.writer: Any = None

    def _on_training_start(self) -> None:
        self.t_start = time.perf_counter()
        self.c_start = time.process_time()

    def _on_rollout_end(self) -> None:
        self.rollouts += 1

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self.t_end = time.perf_counter()
        self.c_end = time.process_time()
        self.num_timesteps_end = int(self.model.num_timesteps)
        formats = self.model.logger.output_formats
        self.writer = formats[0] if formats and hasattr(formats[0], "batches_written") else None

    def read_counters(self) -> None:
        """Call after train() returns: a background writer has flushed by then."""
        if self.writer is not None:
            self.batches_written = int(self.writer.batches_written)
            self.points_written = int(self.writer.points_written)


def plain_model(cfg: Any, core: Any) -> PPO:
    """Plain SB3 PPO with exactly the hyperparameters setup.make_model passes."""
    torch.set_num_threads(cfg.ppo.torch_threads)
    net = list(cfg.ppo.net_arch)
    policy_kwargs: dict[str, Any] = {"net_arch": {"pi": net, "vf": net},
                                     "activation_fn": _ACTIVATIONS[cfg.ppo.activation]}
    return PPO(
        "MlpPolicy", TradingVecEnv(core, cfg.env.n_envs, seed=cfg.run.seed), learning_rate=cfg.base_learning_rate,
        n_steps=cfg.ppo.n_steps, batch_size=cfg.ppo.batch_size, n_epochs=cfg.ppo.n_epochs, gamma=cfg.ppo.gamma,
        gae_lambda=cfg.ppo.gae_lambda, clip_range=cfg.ppo.clip_range, ent_coef=cfg.ppo.ent_coef,
        vf_coef=cfg.ppo.vf_coef, max_grad_norm=cfg.ppo.max_grad_norm, policy_kwargs=policy_kwargs,
        seed=cfg.run.seed, device="cpu", verbose=0,
    )


def run_plain(timesteps: int, core: Any) -> dict[str, Any]:
    cfg = build_config("baseline", [f"run.total_timesteps={timesteps}"])
    model = plain_model(cfg, core)
    t0, c0 = time.perf_counter(), time.process_time()
    model.learn(timesteps)
    learn_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    return {"learn_s": learn_s, "learn_cpu_s": cpu_s, "total_s": float("nan"), "steps": int(model.num_timesteps),
            "rollouts": int(model._n_updates // cfg.ppo.n_epochs), "batches_written": 0, "points_written": 0,
            "status": "FINISHED"}


def run_coordinator(arm: str, timesteps: int, ckpt_root: Path) -> dict[str, Any]:
    from convopt_mlflow.training.coordinator import train

    preset, extra = PRESET_OF[arm]
    cfg = build_config(preset, [f"run.total_timesteps={timesteps}", "run.progress_bar=false", *extra])
    timer = PhaseTimer()
    t0 = time.perf_counter()
    result = train(cfg, preset=preset, extra_callbacks=[timer], checkpoint_root=str(ckpt_root))
    total_s = time.perf_counter() - t0
    timer.read_counters()
    return {"learn_s": timer.t_end - timer.t_start, "learn_cpu_s": timer.c_end - timer.c_start, "total_s": total_s,
            "steps": timer.num_timesteps_end,
            "rollouts": timer.rollouts, "batches_written": timer.batches_written,
            "points_written": timer.points_written, "status": result.status, "run_id": result.run_id}


def run_arm(arm: str, timesteps: int, core: Any, ckpt_root: Path) -> dict[str, Any]:
    out = run_plain(timesteps, core) if arm == "plain" else run_coordinator(arm, timesteps, ckpt_root)
    out["steps_per_s"] = out["steps"] / out["learn_s"]
    out["loadavg_1min_after"] = os.getloadavg()[0]  # other processes on the machine add noise
    return out


def write_cost(summary: dict[str, Any], repeats: int = 20) -> dict[str, Any]:
    """Time one ``log_batch`` of as many points as each arm writes per rollout (fresh run each).

    Measured after the rounds, outside training, so the training loop is never wrapped.
    ``share_of_learn`` = write time x rollouts / learn-phase time (an estimate of what the
    once-per-rollout MLflow write costs that arm).
    """
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    out = {}
    for arm in ARMS[1:]:
        a = summary["arms"][arm]
        n = max(round(a["mlflow_points_written"] / max(a["mlflow_batches_written"], 1)), 1)
        run_id = client.create_run(os.environ["MLFLOW_EXPERIMENT_ID"]).info.run_id
        samples = []
        for i in range(repeats):
            batch = [Metric(f"bench/key_{j}", float(i + j), int(time.time() * 1000), 2048 * (i + 1)) for j in range(n)]
            t0 = time.perf_counter()
            client.log_batch(run_id, metrics=batch)
            samples.append(time.perf_counter() - t0)
        client.set_terminated(run_id)
        ms = statistics.median(samples) * 1e3
        out[arm] = {"points_per_write": n, "write_ms": _stats([x * 1e3 for x in samples]),
                    "share_of_learn": ms / 1e3 * a["rollouts"] / a["learn_s"]["median"]}
    return out


def attribution(market: Any, summary: dict[str, Any], repeats: int = 9) -> dict[str, Any]:
    """Time the glue's parts in isolation (outside training) and scale them to a learn phase."""
    from convopt_mlflow.training.checkpoints import CheckpointStore, capture_training_state
    from convopt_mlflow.training.evaluate import validation_scorer
    from convopt_mlflow.training.param_watch import parameter_health
    from convopt_mlflow.training.probe import GradientProbe

    cfg = build_config("baseline")
    model = plain_model(cfg, market.cores["train"])
    model.learn(2 * cfg.ppo.n_steps * cfg.env.n_envs)  # a full rollout buffer and Adam state
    arms = summary["arms"]
    rollouts = arms["baseline"]["rollouts"]
    steps = arms["baseline"]["steps"]

    def timed(fn, n=repeats) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    scorer = validation_scorer(market, cost_bps=cfg.env.cost_bps)
    eval_s = statistics.median(timed(lambda: scorer(model.policy), 5))
    n_evals = steps // cfg.run.eval_freq
    obs = model.rollout_buffer.observations.reshape(-1, model.rollout_buffer.observations.shape[-1])
    watch_s = statistics.median(timed(lambda: parameter_health(model.policy, obs), 50))
    plain_upd, probe_upd = [], []
    for _ in range(repeats):  # paired, interleaved
        plain_upd += timed(model.train, 1)
        probe = GradientProbe(model.policy, model.policy.optimizer)
        probe_upd += timed(model.train, 1)
        probe.remove()
    probe_ratio = statistics.median([b / a for a, b in zip(plain_upd, probe_upd)])
    with tempfile.TemporaryDirectory() as tmp:
        store = CheckpointStore(tmp, keep_last=3)
        counter = iter(range(1, 10_000))
        save_s = statistics.median(timed(lambda: store.save(next(counter) * 2048, capture_training_state(model)), 10))
    import numpy as np

    from convopt_mlflow.training.guards import FiniteGuard

    raw, guarded = (TradingVecEnv(market.cores["train"], cfg.env.n_envs, seed=0) for _ in range(2))
    guarded = FiniteGuard(guarded)
    actions = np.random.default_rng(0).integers(0, 3, (2000, cfg.env.n_envs))
    per_step = {}
    for name, env in (("raw", raw), ("guarded", guarded)):
        env.reset()
        per_step[name] = statistics.median(timed(lambda e=env: [e.step(a) for a in actions], 5)) / len(actions)
    guard_s = per_step["guarded"] - per_step["raw"]
    base_learn = arms["baseline"]["learn_s"]["median"]
    lr_learn = arms["lr"]["learn_s"]["median"]
    return {
        "validation_eval_ms": eval_s * 1e3, "evals_per_run": n_evals,
        "validation_eval_share_of_baseline_learn": eval_s * n_evals / base_learn,
        "parameter_health_ms": watch_s * 1e3,
        "parameter_health_share_of_lr_learn": watch_s * arms["lr"]["rollouts"] / lr_learn,
        "ppo_update_ms": statistics.median(plain_upd) * 1e3,
        "ppo_update_with_gradient_probe_ms": statistics.median(probe_upd) * 1e3,
        "gradient_probe_update_ratio": probe_ratio,
        # from the paired ratio: medians of the two lists are not paired and drift with machine speed
        "gradient_probe_share_of_baseline_learn": (probe_ratio - 1) * statistics.median(plain_upd) * rollouts
        / base_learn,
        "checkpoint_save_ms": save_s * 1e3,
        "finite_guard_us_per_step": guard_s * 1e6,
        "finite_guard_share_of_baseline_learn": guard_s * steps / cfg.env.n_envs / base_learn,
    }


def glue_breakdown(timesteps: int, ckpt_root: Path, repeats: int = 2) -> dict[str, Any]:
    """``--breakdown`` mode: time the glue *inside* the learn phase of baseline and lr.

    Instruments (in this process only) the outer CallbackList's per-step and per-rollout
    hooks (which hold evaluation, monitor, checkpoints and the MLflow write),
    ``FiniteGuard._clean`` and the ``GradientProbe`` hooks, and sums them; the writer's
    own time is reported as ``info.*`` (nested in the callbacks, or after learn()). Unlike the end-to-end ratios this is a share
    *within* one run, so machine-speed drift cancels. Each wrapper adds ~0.5 us per call.
    """
    import collections

    from stable_baselines3.common.callbacks import CallbackList

    from convopt_mlflow.tracking.writer import MLflowOutputFormat
    from convopt_mlflow.training.coordinator import train
    from convopt_mlflow.training.guards import FiniteGuard
    from convopt_mlflow.training.probe import GradientProbe

    acc: collections.Counter = collections.Counter()

    def timed_method(cls: type, name: str, key: str, only_outer: bool = False) -> None:
        orig = getattr(cls, name)

        def wrapper(self, *a, **k):
            if only_outer and not getattr(self, "_bench_outer", False):
                return orig(self, *a, **k)
            t0 = time.perf_counter()
            try:
                return orig(self, *a, **k)
            finally:
                acc[key] += time.perf_counter() - t0

        setattr(cls, name, wrapper)

    for hook in ("on_step", "update_locals", "on_rollout_start", "on_rollout_end", "on_training_end"):
        timed_method(CallbackList, hook, f"callbacks.{hook}", only_outer=True)
    timed_method(FiniteGuard, "_clean", "finite_guard")
    timed_method(GradientProbe, "_accumulate", "gradient_probe")
    timed_method(GradientProbe, "_on_step", "gradient_probe")
    timed_method(MLflowOutputFormat, "write", "info.mlflow_write_in_callbacks")  # nested in callbacks.*
    timed_method(MLflowOutputFormat, "flush", "info.mlflow_flush_after_learn")  # coordinator, after learn()

    rows = []
    for _ in range(repeats):
        for preset in ("baseline", "lr"):
            acc.clear()
            timer = PhaseTimer()
            cfg = build_config(preset, [f"run.total_timesteps={timesteps}", "run.progress_bar=false"])
            original_init = CallbackList.init_callback

            def init_outer(self, model, _orig=original_init):
                if not getattr(model, "_bench_outer_set", False):  # the list handed to learn() is initialised first
                    self._bench_outer, model._bench_outer_set = True, True
                return _orig(self, model)

            CallbackList.init_callback = init_outer
            try:
                train(cfg, preset=preset, extra_callbacks=[timer], checkpoint_root=str(ckpt_root))
            finally:
                CallbackList.init_callback = original_init
            learn = timer.t_end - timer.t_start
            parts = dict(sorted(acc.items()))
            glue = sum(v for k, v in parts.items() if not k.startswith("info."))
            rows.append({"preset": preset, "learn_s": learn, "glue_s": glue, "glue_share": glue / learn,
                         "parts_s": parts, "parts_share": {k: v / learn for k, v in parts.items()}})
            print(f"breakdown {preset:<8} learn {learn:.2f}s glue {glue:.3f}s = {100 * glue / learn:.2f}%: "
                  + ", ".join(f"{k} {100 * v / learn:.2f}%" for k, v in parts.items()), flush=True)
    return {"timesteps": timesteps, "rows": rows,
            "median_glue_share": {p: statistics.median(r["glue_share"] for r in rows if r["preset"] == p)
                                  for p in ("baseline", "lr")}}


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    arms = {}
    for arm in ARMS:
        rows = [r[arm] for r in rounds]
        arms[arm] = {
            "learn_s": _stats([x["learn_s"] for x in rows]),
            "learn_cpu_s": _stats([x["learn_cpu_s"] for x in rows]),
            "steps_per_s": _stats([x["steps_per_s"] for x in rows]),
            "total_s": _stats([x["total_s"] for x in rows]) if arm != "plain" else None,
            "steps": rows[0]["steps"],
            "rollouts": rows[0]["rollouts"],
            "mlflow_batches_written": rows[0]["batches_written"],
            "mlflow_points_written": rows[0]["points_written"],
            "mlflow_batches_per_rollout": rows[0]["batches_written"] / max(rows[0]["rollouts"], 1),
            "statuses": sorted({x["status"] for x in rows}),
        }

    def paired(num: str, den: str, key: str) -> dict[str, float]:
        return _stats([r[num][key] / r[den][key] for r in rounds])

    ratios = {
        "baseline_vs_plain_steps_per_s": paired("baseline", "plain", "steps_per_s"),
        "baseline_vs_plain_learn_cpu_s": paired("baseline", "plain", "learn_cpu_s"),
        "lr_vs_baseline_learn_cpu_s": paired("lr", "baseline", "learn_cpu_s"),
        "watch_on_vs_off_learn_cpu_s": paired("lr", "lr_nowatch", "learn_cpu_s"),
        "lr_vs_baseline_learn_s": paired("lr", "baseline", "learn_s"),
        "lr_vs_plain_learn_s": paired("lr", "plain", "learn_s"),
        "watch_on_vs_off_learn_s": paired("lr", "lr_nowatch", "learn_s"),
        "lr_nowatch_vs_baseline_learn_s": paired("lr_nowatch", "baseline", "learn_s"),
        "baseline_noeval_vs_plain_steps_per_s": paired("baseline_noeval", "plain", "steps_per_s"),
        "baseline_vs_baseline_noeval_learn_s": paired("baseline", "baseline_noeval", "learn_s"),
        "baseline_total_vs_learn_s": _stats([r["baseline"]["total_s"] / r["baseline"]["learn_s"] for r in rounds]),
        "lr_total_vs_baseline_total_s": paired("lr", "baseline", "total_s"),
    }
    budgets = {
        "baseline_ge_95pct_of_plain": ratios["baseline_vs_plain_steps_per_s"]["median"] >= BUDGET_BASELINE_VS_PLAIN,
        "lr_le_3pct_over_baseline": ratios["lr_vs_baseline_learn_s"]["median"] - 1 <= BUDGET_LR_OVERHEAD,
        "param_watch_lt_1pct": ratios["watch_on_vs_off_learn_s"]["median"] - 1 < BUDGET_WATCH_OVERHEAD,
        "at_most_one_mlflow_write_per_rollout": all(
            arms[a]["mlflow_batches_per_rollout"] <= 1.0 + 1e-9 for a in ARMS[1:]),
    }
    return {"arms": arms, "ratios": ratios, "budgets_met": budgets}


def print_table(summary: dict[str, Any], repeats: int) -> None:
    arms = summary["arms"]
    print(f"\n{'arm':<16} {'steps/s med':>11} {'[min, max]':>17} {'learn s':>8} {'cpu s':>8} {'total s':>8} "
          f"{'rollouts':>8} {'mlflow batches':>14} {'per rollout':>11}")
    for arm in ARMS:
        a = arms[arm]
        sps = a["steps_per_s"]
        total = f"{a['total_s']['median']:.2f}" if a["total_s"] else "-"
        spread = f"[{sps['min']:.0f}, {sps['max']:.0f}]"
        print(f"{arm:<16} {sps['median']:>11.0f} {spread:>17} "
              f"{a['learn_s']['median']:>8.2f} {a['learn_cpu_s']['median']:>8.2f} {total:>8} {a['rollouts']:>8} "
              f"{a['mlflow_batches_written']:>14} "
              f"{a['mlflow_batches_per_rollout']:>11.3f}")
    print(f"\npaired ratios over {repeats} interleaved rounds: median [min, max]")
    for key, r in summary["ratios"].items():
        print(f"  {key:<38} {r['median']:.4f} [{r['min']:.4f}, {r['max']:.4f}]")
    print("one MLflow log_batch of an arm's per-rollout size (timed outside training, fresh run):")
    for arm, w in summary.get("mlflow_write_cost", {}).items():
        print(f"  {arm:<16} {w['points_per_write']:>4} points: {w['write_ms']['median']:.1f} ms "
              f"[{w['write_ms']['min']:.1f}, {w['write_ms']['max']:.1f}] = "
              f"~{100 * w['share_of_learn']:.1f}% of its learn phase")
    at = summary.get("attribution")
    if at:
        print(f"attribution (timed alone): validation eval {at['validation_eval_ms']:.0f} ms x {at['evals_per_run']} = "
              f"~{100 * at['validation_eval_share_of_baseline_learn']:.1f}% of baseline's learn phase; "
              f"parameter_health {at['parameter_health_ms']:.2f} ms/update = "
              f"~{100 * at['parameter_health_share_of_lr_learn']:.2f}% of lr's; PPO update "
              f"{at['ppo_update_ms']:.0f} ms, with GradientProbe {at['ppo_update_with_gradient_probe_ms']:.0f} ms "
              f"(paired ratio {at['gradient_probe_update_ratio']:.3f}, "
              f"~{100 * at['gradient_probe_share_of_baseline_learn']:.1f}% of baseline's learn phase); checkpoint save "
              f"{at['checkpoint_save_ms']:.1f} ms; FiniteGuard +{at['finite_guard_us_per_step']:.1f} us/vec-step = "
              f"~{100 * at['finite_guard_share_of_baseline_learn']:.1f}%")
    print("budgets met:", json.dumps(summary["budgets_met"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup-timesteps", type=int, default=4096, help="untimed warm-up per arm (0: none)")
    parser.add_argument("--breakdown", action="store_true",
                        help="instead of the rounds: time the glue inside baseline's and lr's learn phase")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = parser.parse_args(argv)

    load_start = list(os.getloadavg())
    tmp = Path(tempfile.mkdtemp(prefix="convopt-bench-overhead-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    os.environ["SB3_LOGDIR"] = str(tmp / "sb3")  # the plain arm's default logger makes a dir; keep it in tmp
    from mlflow.tracking import MlflowClient

    exp_id = MlflowClient().create_experiment("bench-overhead", artifact_location=(tmp / "artifacts").as_uri())
    os.environ["MLFLOW_EXPERIMENT_ID"] = exp_id
    ckpt_root = tmp / "checkpoints"
    market = load_market(build_config("baseline"))
    core = market.cores["train"]

    if args.breakdown:
        run_arm("baseline", args.warmup_timesteps or 2048, core, ckpt_root)
        doc = {"benchmark": "bench_overhead --breakdown", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
               "glue_breakdown": glue_breakdown(args.timesteps, ckpt_root, max(args.repeats, 1)),
               "machine": machine_info()}
        print("median glue share of the learn phase:", json.dumps(doc["glue_breakdown"]["median_glue_share"]))
        write_result(doc, args.out)
        shutil.rmtree(tmp, ignore_errors=True)
        return 0
    if args.warmup_timesteps > 0:
        for arm in ARMS:
            run_arm(arm, args.warmup_timesteps, core, ckpt_root)
    rounds: list[dict[str, dict[str, Any]]] = []
    for i in range(args.repeats):
        row = {}
        order = ARMS[i % len(ARMS):] + ARMS[:i % len(ARMS)]  # rotate so no arm always runs first
        for arm in order:
            r = row[arm] = run_arm(arm, args.timesteps, core, ckpt_root)
            r["position"] = order.index(arm)
            print(f"round {i + 1}/{args.repeats} {arm:<16} learn {r['learn_s']:.2f}s ({r['steps_per_s']:.0f} steps/s, "
                  f"cpu {r['learn_cpu_s']:.2f}s) total {r['total_s']:.2f}s "
                  f"writes {r['batches_written']}/{r['rollouts']} rollouts {r['status']}", flush=True)
        rounds.append(row)

    summary = summarize(rounds)
    summary["mlflow_write_cost"] = write_cost(summary)
    summary["attribution"] = attribution(market, summary)
    print_table(summary, args.repeats)
    doc = {
        "benchmark": "bench_overhead", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "timesteps": args.timesteps, "repeats": args.repeats, "warmup_timesteps": args.warmup_timesteps,
        "settings": {"data": "eurusd-1h", "n_envs": 8, "n_steps": 256, "batch_size": 256, "n_epochs": 10,
                     "net_arch": [64, 64], "torch_threads": 1},
        "machine": {**machine_info(), "loadavg_at_start": load_start, "loadavg_at_end": list(os.getloadavg())},
        "rounds": rounds, **summary,
    }
    write_result(doc, args.out)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
