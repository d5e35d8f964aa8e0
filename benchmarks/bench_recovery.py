"""Benchmark + end-to-end check: rollback cost, exact state restore, resume after SIGKILL.

(a) rollback cost: ``CheckpointStore.load_latest_good()`` + ``interventions.load_weights``
    for the default 64x64 PPO model (median of ``--rollback-repeats``), for a bare
    checkpoint and for one whose extras hold a monitor history as long as a 1M-step
    run's (489 updates x 40 floats, what the coordinator stores). Reported also as a
    fraction of one PPO update (``model.train()`` on a full 2,048-step rollout,
    median of ``--update-repeats``).
(b) resume correctness: ``setup.make_model`` -> learn N steps -> ``capture_training_state``
    + ``CheckpointStore.save`` -> a FRESH model (other seed) -> ``restore_training_state``
    from ``load_latest_good()``; checks num_timesteps, n_updates, every policy tensor,
    every optimizer state tensor and hyperparameter, and the torch/numpy RNG states
    with ``torch.equal`` against the checkpoint and the original model. PASS/FAIL per item.
(c) end-to-end resume after SIGKILL: ``convopt train --preset lr --total-timesteps 60000
    --set run.checkpoint_freq=10000,run.progress_bar=false`` in a temp dir against a temp
    sqlite store; once the run's manifest (tag ``convopt.checkpoint_dir``) lists a
    checkpoint with step >= 20000 the process is SIGKILLed (if none has appeared by logged
    step 32000 it is killed anyway, the check FAILs, and the resume is still exercised
    from whatever the manifest holds); then ``convopt train --resume
    RUN_ID``. Checks: status RUNNING after the kill and FINISHED after the resume, the
    ``convopt.resumed_from_step`` tag, every metric key's history has unique steps that
    increase in write order, final ``time/total_timesteps`` >= 60000; and times the
    resume start-up (process start -> resumed_from_step tag, -> first metric past the
    steps already logged).

    python benchmarks/bench_recovery.py [--out results/recovery.json] [--skip-e2e]

Exits 1 when a correctness check fails.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convopt_mlflow.config import build_config
from convopt_mlflow.training.checkpoints import CheckpointStore, capture_training_state, restore_training_state
from convopt_mlflow.training.interventions import load_weights
from convopt_mlflow.training.setup import load_market, make_env, make_model
from _common import machine_info, write_result  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

E2E_TOTAL, E2E_CKPT_FREQ, E2E_KILL_AT, E2E_FALLBACK_AT = 60_000, 10_000, 20_000, 32_000


def _median_ms(samples: list[float]) -> dict[str, float]:
    ms = [s * 1e3 for s in samples]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "n": len(ms)}


def _history_extras(updates: int, keys: int = 40) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    history = [{"step": float(2048 * (i + 1)), **{f"k{j}": float(rng.standard_normal()) for j in range(keys)}}
               for i in range(updates)]
    return {"history": history, "interventions": [], "counts": {}, "batch_size": 256}


# ---------------------------------------------------------------------------- (a)
def rollback_cost(market: Any, tmp: Path, repeats: int, update_repeats: int) -> dict[str, Any]:
    cfg = build_config("baseline", ["run.total_timesteps=4096"])
    model = make_model(cfg, make_env(cfg, market))
    model.learn(4096)  # Adam state exists, rollout buffer is full
    t_updates = []
    for _ in range(update_repeats):
        t0 = time.perf_counter()
        model.train()
        t_updates.append(time.perf_counter() - t0)
    update = _median_ms(t_updates)
    out: dict[str, Any] = {"ppo_update": update, "variants": {}}
    for name, extras in (("bare", {}), ("history_1M_steps", _history_extras(489))):
        store = CheckpointStore(tmp / f"rollback-{name}", keep_last=3)
        for step in (2048, 4096, 6144):
            store.save(step, capture_training_state(model, extras=extras))
        size = store.path(store.entries()[-1]).stat().st_size
        samples, load_only, weights_only = [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            _, state, _ = store.load_latest_good()
            t1 = time.perf_counter()
            load_weights(model, state)
            t2 = time.perf_counter()
            samples.append(t2 - t0)
            load_only.append(t1 - t0)
            weights_only.append(t2 - t1)
        total = _median_ms(samples)
        out["variants"][name] = {"file_bytes": size, "rollback": total, "load_latest_good": _median_ms(load_only),
                                 "load_weights": _median_ms(weights_only),
                                 "fraction_of_update": total["median_ms"] / update["median_ms"]}
    return out


# ---------------------------------------------------------------------------- (b)
def resume_correctness(market: Any, tmp: Path, steps: int) -> dict[str, Any]:
    cfg = build_config("baseline", [f"run.total_timesteps={steps}"])
    original = make_model(cfg, make_env(cfg, market))
    original.learn(steps)
    store = CheckpointStore(tmp / "resume", keep_last=3)
    store.save(original.num_timesteps, capture_training_state(original, extras={"note": "bench"}))
    saved_rng_torch, saved_rng_np = torch.get_rng_state(), np.random.get_state(legacy=True)

    cfg_other = build_config("baseline", [f"run.total_timesteps={steps}", "run.seed=1"])
    fresh = make_model(cfg_other, make_env(cfg_other, market))  # another seed: other init, no optimizer state
    differs_before = any(not torch.equal(a, b) for a, b in
                         zip(fresh.policy.state_dict().values(), original.policy.state_dict().values()))
    torch.manual_seed(12345)
    np.random.seed(12345)  # scramble global RNGs so the restore has to bring them back
    entry, state, skipped = store.load_latest_good()
    extras = restore_training_state(fresh, state)

    items: list[tuple[str, bool]] = [("fresh model differed before restore (sanity)", differs_before),
                                     ("no checkpoint skipped", not skipped),
                                     ("extras round-trip", extras == {"note": "bench"})]
    items.append((f"num_timesteps == {state['num_timesteps']} (checkpoint) == original",
                  fresh.num_timesteps == state["num_timesteps"] == original.num_timesteps == entry.step))
    items.append(("n_updates", fresh._n_updates == state["n_updates"] == original._n_updates))
    live, orig = fresh.policy.state_dict(), original.policy.state_dict()
    for key, saved in state["policy"].items():
        ok = torch.equal(live[key], saved) and torch.equal(orig[key], saved)
        items.append((f"policy {key} {tuple(saved.shape)}", ok))
    items.append(("policy has no extra/missing keys", set(live) == set(state["policy"])))
    o_live, o_orig = fresh.policy.optimizer.state_dict(), original.policy.optimizer.state_dict()
    o_saved = state["optimizer"]
    for idx, slots in o_saved["state"].items():
        for name, saved in slots.items():
            ok = torch.equal(o_live["state"][idx][name], saved) and torch.equal(o_orig["state"][idx][name], saved)
            items.append((f"optimizer state[{idx}].{name} {tuple(saved.shape)}", ok))
    items.append(("optimizer state has the same params", set(o_live["state"]) == set(o_saved["state"]) != set()))
    items.append(("optimizer param_groups (lr, betas, eps, weight_decay, ...)",
                  o_live["param_groups"] == o_saved["param_groups"] == o_orig["param_groups"]))
    items.append(("torch RNG state", torch.equal(torch.get_rng_state(), saved_rng_torch)))
    np_now = np.random.get_state(legacy=True)
    items.append(("numpy RNG state", np.array_equal(np_now[1], saved_rng_np[1]) and np_now[2:] == saved_rng_np[2:]))
    return {"learned_steps": int(original.num_timesteps), "items": [{"item": n, "pass": bool(p)} for n, p in items],
            "all_pass": all(p for _, p in items)}


# ---------------------------------------------------------------------------- (c)
def _convopt() -> str:
    here = Path(sys.executable).parent / "convopt"
    return str(here) if here.exists() else (shutil.which("convopt") or "convopt")


def _max_logged_step(client: Any, run_id: str) -> int:
    return max((int(m.step) for m in client.get_run(run_id).data.to_proto().metrics), default=-1)


def end_to_end(tmp: Path, timeout_s: float, extra_steps: int = 0) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    work = tmp / "e2e"
    work.mkdir()
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("bench-recovery", artifact_location=(work / "artifacts").as_uri())
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_ID=exp_id, MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    first_cmd = [_convopt(), "train", "--preset", "lr", "--total-timesteps", str(E2E_TOTAL),
                 "--set", f"run.checkpoint_freq={E2E_CKPT_FREQ},run.progress_bar=false"]
    out: dict[str, Any] = {"command_first": " ".join(first_cmd[1:])}

    t0 = time.perf_counter()
    with open(work / "first.log", "wb") as log:
        proc = subprocess.Popen(first_cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    run_id, ckpt_dir, newest, logged, trigger = None, None, -1, -1, None
    steps_seen: set[int] = set()
    while time.perf_counter() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"first training exited before the kill (rc {proc.returncode}); manifest steps seen "
                               f"{sorted(steps_seen)}; see {work / 'first.log'}")
        if run_id is None:
            runs = client.search_runs([exp_id])
            run_id = runs[0].info.run_id if runs else None
        if run_id is not None and ckpt_dir is None:
            ckpt_dir = client.get_run(run_id).data.tags.get("convopt.checkpoint_dir")
        if ckpt_dir is not None and (Path(ckpt_dir) / "manifest.json").exists():
            try:
                entries = json.loads((Path(ckpt_dir) / "manifest.json").read_text())["entries"]
                steps_seen.update(e["step"] for e in entries)
                newest = max((e["step"] for e in entries), default=-1)
            except (ValueError, KeyError, OSError):  # a manifest being replaced: read it next time
                pass
            logged = _max_logged_step(client, run_id)
            if newest >= E2E_KILL_AT and logged >= newest + extra_steps:
                trigger = f"checkpoint step {newest} >= {E2E_KILL_AT} in the manifest, logged step {logged}"
            elif newest < E2E_KILL_AT and logged >= E2E_FALLBACK_AT:  # the checkpoint never came: kill anyway, resume what there is
                trigger = (f"FALLBACK: logged step {logged} >= {E2E_FALLBACK_AT} but no checkpoint with step >= "
                           f"{E2E_KILL_AT} (manifest steps seen {sorted(steps_seen)})")
            if trigger:
                os.kill(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError(f"no checkpoint with step >= {E2E_KILL_AT} within {timeout_s}s")
    proc.wait()
    out.update(run_id=run_id, kill_after_s=time.perf_counter() - t0, first_rc=proc.returncode, kill_trigger=trigger,
               manifest_steps_seen=sorted(steps_seen), newest_checkpoint_at_kill=newest,
               max_logged_step_at_kill_poll=logged, status_after_kill=client.get_run(run_id).info.status,
               max_logged_step_before_resume=_max_logged_step(client, run_id))

    resume_cmd = [_convopt(), "train", "--resume", run_id]
    out["command_resume"] = " ".join(resume_cmd[1:])
    before = out["max_logged_step_before_resume"]
    t_tag = t_metric = None
    t0 = time.perf_counter()
    with open(work / "resume.log", "wb") as log:
        proc = subprocess.Popen(resume_cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    while proc.poll() is None and time.perf_counter() - t0 < timeout_s:
        if t_tag is None and "convopt.resumed_from_step" in client.get_run(run_id).data.tags:
            t_tag = time.perf_counter() - t0
        if t_metric is None and _max_logged_step(client, run_id) > before:
            t_metric = time.perf_counter() - t0
        time.sleep(0.05 if t_metric is None else 0.5)
    if proc.poll() is None:
        proc.kill()
        raise RuntimeError(f"resume did not finish within {timeout_s}s")
    out.update(resume_rc=proc.returncode, resume_wall_s=time.perf_counter() - t0,
               resume_startup_to_tag_s=t_tag, resume_startup_to_first_new_metric_s=t_metric)

    run = client.get_run(run_id)
    out["status_after_resume"] = run.info.status
    out["resumed_from_step"] = run.data.tags.get("convopt.resumed_from_step")
    bad_keys = []
    for key in sorted(run.data.metrics):
        hist = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.timestamp, m.step))
        steps = [m.step for m in hist]
        if len(set(steps)) != len(steps) or any(b <= a for a, b in itertools.pairwise(steps)):
            bad_keys.append(key)
    out["metric_keys_checked"] = len(run.data.metrics)
    out["metric_keys_with_repeated_or_unordered_steps"] = bad_keys
    tt = client.get_metric_history(run_id, "time/total_timesteps")
    out["final_total_timesteps"] = max((m.value for m in tt), default=float("nan"))
    resumed_from = out["resumed_from_step"]
    out["checks"] = {
        f"a checkpoint with step >= {E2E_KILL_AT} was written (before logged step {E2E_FALLBACK_AT})":
            newest >= E2E_KILL_AT,
        "status RUNNING after SIGKILL": out["status_after_kill"] == "RUNNING",
        "status FINISHED after resume": out["status_after_resume"] == "FINISHED" and out["resume_rc"] == 0,
        f"resumed_from_step >= {E2E_KILL_AT}": resumed_from is not None and int(resumed_from) >= E2E_KILL_AT,
        "every metric key: unique, increasing steps": not bad_keys and out["metric_keys_checked"] > 0,
        f"final time/total_timesteps >= {E2E_TOTAL}": out["final_total_timesteps"] >= E2E_TOTAL,
    }
    out["all_pass"] = all(out["checks"].values())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rollback-repeats", type=int, default=50)
    parser.add_argument("--update-repeats", type=int, default=10)
    parser.add_argument("--resume-steps", type=int, default=4096, help="steps learned before the checkpoint in (b)")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--e2e-timeout", type=float, default=600.0)
    parser.add_argument("--kill-extra-steps", type=int, default=0,
                        help="(c): kill only once metrics this many steps past the checkpoint are logged, so the "
                             "resume must skip steps already logged (0: kill as soon as the checkpoint exists)")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (stores, logs) for inspection")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="convopt-bench-recovery-"))
    market = load_market(build_config("baseline"))
    doc: dict[str, Any] = {"benchmark": "bench_recovery", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                           "machine": machine_info()}

    rb = doc["rollback"] = rollback_cost(market, tmp, args.rollback_repeats, args.update_repeats)
    print(f"(a) one PPO update (train() on 2,048 steps, 10 epochs x 8 minibatches): "
          f"{rb['ppo_update']['median_ms']:.1f} ms [{rb['ppo_update']['min_ms']:.1f}, "
          f"{rb['ppo_update']['max_ms']:.1f}]")
    for name, v in rb["variants"].items():
        r = v["rollback"]
        print(f"    rollback ({name}, {v['file_bytes'] / 1024:.0f} KiB): {r['median_ms']:.2f} ms "
              f"[{r['min_ms']:.2f}, {r['max_ms']:.2f}] (load_latest_good {v['load_latest_good']['median_ms']:.2f} + "
              f"load_weights {v['load_weights']['median_ms']:.2f}) = {100 * v['fraction_of_update']:.1f}% of an update")

    rc = doc["resume_correctness"] = resume_correctness(market, tmp, args.resume_steps)
    print(f"(b) restore into a fresh model after {rc['learned_steps']} steps:")
    for row in rc["items"]:
        print(f"    {'PASS' if row['pass'] else 'FAIL'}  {row['item']}")

    ok = rc["all_pass"]
    if not args.skip_e2e:
        e2e = doc["end_to_end"] = end_to_end(tmp, args.e2e_timeout, args.kill_extra_steps)
        print(f"(c) run {e2e['run_id']}: SIGKILL on {e2e['kill_trigger']}")
        print(f"    killed {e2e['kill_after_s']:.1f}s after start, newest checkpoint "
              f"{e2e['newest_checkpoint_at_kill']} (max logged step {e2e['max_logged_step_before_resume']}); "
              f"resume wall {e2e['resume_wall_s']:.1f}s, start-up to resumed tag {e2e['resume_startup_to_tag_s']}s, "
              f"to first new metric {e2e['resume_startup_to_first_new_metric_s']}s")
        print(f"    status after kill {e2e['status_after_kill']}, after resume {e2e['status_after_resume']}, "
              f"resumed_from_step {e2e['resumed_from_step']}, "
              f"final time/total_timesteps {e2e['final_total_timesteps']:.0f}, "
              f"{e2e['metric_keys_checked']} metric keys checked")
        for name, passed in e2e["checks"].items():
            print(f"    {'PASS' if passed else 'FAIL'}  {name}")
        ok = ok and e2e["all_pass"]
    write_result(doc, args.out)
    if args.keep_tmp:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
