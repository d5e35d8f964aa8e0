"""Which runs ``--resume`` may continue, and from where.

Refused (UserError, exit 2, nothing changed): a FINISHED run (resuming it would retrain
and log a second backtest and model into it), a RUNNING run whose process may still be
alive (two writers on one checkpoint directory), and a run with logged progress but no
usable checkpoint. A run killed before its first checkpoint has lost nothing: it starts
again from step 0, in the same run, with its logged config.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import config as cfgmod
from ..errors import UserError
from .checkpoints import CheckpointStore, NoCheckpointError


@dataclass(frozen=True)
class ResumePlan:
    """``checkpoint``: ``(entry, state, skipped)`` to continue from, or None to start at step 0."""

    cfg: cfgmod.OptimizedTrainingConfig
    preset: str
    checkpoint_dir: Path | None
    checkpoint: tuple | None


def plan_resume(run_id: str) -> ResumePlan:
    from ..tracking import get_run_config, get_run_state

    state = get_run_state(run_id)  # RunNotFoundError when missing or deleted
    if state.status == "FINISHED":
        raise UserError(f"run {run_id} is FINISHED: it has its backtest and model, so there is nothing to resume; "
                        "start a new run to train more")
    if state.alive:
        raise UserError(f"run {run_id} is RUNNING and its {state.alive}; a resume would make two processes write "
                        "one run and one checkpoint directory. Stop that process first (a run whose process died "
                        "on another host: `convopt runs cleanup --older-than <seconds>`)")
    cfg = cfgmod.from_dict(get_run_config(run_id))
    raw_dir = state.tags.get("convopt.checkpoint_dir")
    directory = Path(raw_dir) if raw_dir else None
    checkpoint, problem = None, f"no checkpoint directory {raw_dir or '(tag convopt.checkpoint_dir)'} on this machine"
    if directory is not None and directory.is_dir():
        try:  # loaded (and verified) once, before the run is reopened
            checkpoint = CheckpointStore(directory).load_latest_good()
        except NoCheckpointError as exc:
            problem = str(exc)
    if checkpoint is None and state.last_step >= 0:
        raise UserError(f"run {run_id} has no usable checkpoint to resume from, and it logged progress up to step "
                        f"{state.last_step} that a restart would repeat: {problem}")
    return ResumePlan(cfg, state.tags.get("convopt.preset", "custom"), directory, checkpoint)
