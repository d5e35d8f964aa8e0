"""A training run's metadata: its display name, tags, logged inputs, description and harm warning.

Thin glue between the config and the tracking layer, shared by the single-model run
(:mod:`.coordinator`) and the ensemble parent (:mod:`.ensemble`).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from .. import config as cfgmod
from ..tracking import RunHandle, log_dataset
from ..tracking.splits import log_split_boundaries
from .market import Market, split_record


def run_display_name(preset: str, seed: int, role: str = "",
                     cfg: cfgmod.OptimizedTrainingConfig | None = None) -> str:
    """The name a run shows in the MLflow UI: ``<preset>-s<seed>``, then its role (``-member2``).

    With ``cfg``, what it changes from the preset is shown compactly: ``baseline[lr=1e-4]-s0``
    (see :mod:`convopt_mlflow.config.names`).
    """
    label = preset
    if cfg is not None and preset in cfgmod.PRESETS:
        from ..config.names import config_differences, preset_label

        preset_flat = cfgmod.flatten(cfgmod.build_config(preset))
        label = preset_label(preset, config_differences(cfgmod.flatten(cfg), preset_flat))
    return f"{label}-s{seed}" + (f"-{role}" if role else "")


def run_tags(cfg, preset: str) -> dict[str, str]:
    return {"convopt.preset": preset, "convopt.arm": preset, "convopt.seed": str(cfg.run.seed),
            "convopt.role": "train", "convopt.config_hash": cfgmod.config_hash(cfg),
            "convopt.pid": str(os.getpid()), "convopt.host": socket.gethostname()}


def warn_harm(handle: RunHandle, cfg, metrics: dict) -> None:
    """Tag ``convopt.harm_warning`` (and say it) when a component-on run ends below flat on validation."""
    from ..evaluation.harm import HARM_TAG, components_on, harm_warning

    warning = harm_warning(components_on(cfg), metrics)
    if warning:
        handle.set_tags({HARM_TAG: warning})
        print(f"convopt: warning: {warning}")


def describe(handle: RunHandle) -> None:
    """The run's markdown description in the MLflow UI; a failure to write it only warns."""
    from ..tracking.describe import describe_run

    try:
        describe_run(handle.run_id, handle.client, status="FINISHED")
    except Exception as exc:  # noqa: BLE001 - the run itself is done and logged
        print(f"convopt: warning: run description not written ({type(exc).__name__}: {exc})")


def log_run_inputs(handle: RunHandle, cfg, market: Market, ckpt_dir: Path) -> None:
    from .evaluate import MIN_EVALUATIONS  # torch: here, so naming and tagging a run does not import it

    handle.log_text(cfgmod.to_json(cfg), "config.json")  # first: a resume needs only this
    handle.set_tags({"convopt.checkpoint_dir": str(ckpt_dir), "convopt.data.digest": market.bars.digest,
                     "convopt.phase": "training"})
    params = cfgmod.flatten(cfg)
    params["config_hash"] = cfgmod.config_hash(cfg)
    params["run.eval_freq_effective"] = eval_freq(cfg)
    handle.log_params(params)
    if params["run.eval_freq_effective"] != cfg.run.eval_freq:
        print(f"convopt: evaluating on validation every {params['run.eval_freq_effective']:,} steps: "
              f"run.eval_freq={cfg.run.eval_freq:,} would give fewer than {MIN_EVALUATIONS} evaluations "
              f"in {cfg.run.total_timesteps:,} steps")
    log_dataset(handle, market.bars.frame, name=market.bars.name, source=market.bars.source,
                digest=market.bars.digest)
    log_split_boundaries(handle, split_record(cfg, market))


def eval_freq(cfg) -> int:
    from .evaluate import effective_eval_freq

    return effective_eval_freq(cfg.run.eval_freq, cfg.run.total_timesteps, cfg.ppo.n_steps * cfg.env.n_envs)
