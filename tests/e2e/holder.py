"""Runs ``convopt`` with a hold at a point the test chooses, so a kill lands exactly there.

    python holder.py MARKER RELEASE SPEC -- <convopt args>

SPEC is ``step:N`` (at the first rollout start with num_timesteps >= N, after that
step's checkpoint), or ``before:module:attr.path`` / ``after:module:attr.path`` (around
a call of that function). At the hold it writes MARKER, then waits until the file
RELEASE exists (signal handlers still run meanwhile).
"""
import functools
import importlib
import sys
import time
from pathlib import Path

from stable_baselines3.common.callbacks import BaseCallback


def hold(marker: Path, release: Path) -> None:
    marker.write_text("held")
    deadline = time.time() + 300
    while not release.exists() and time.time() < deadline:
        time.sleep(0.05)


class HoldAtStep(BaseCallback):
    def __init__(self, step: int, marker: Path, release: Path):
        super().__init__()
        self.step, self.marker, self.release, self.done = step, marker, release, False

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if not self.done and self.model.num_timesteps >= self.step:
            self.done = True
            hold(self.marker, self.release)


def install(spec: str, marker: Path, release: Path) -> None:
    kind, _, where = spec.partition(":")
    if kind == "step":
        from convopt_mlflow.training import coordinator

        original_train = coordinator.train
        coordinator.train = functools.partial(original_train, extra_callbacks=[HoldAtStep(int(where), marker, release)])
        return
    module_name, _, path = where.partition(":")
    owner = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if kind == "before":
            hold(marker, release)
        result = original(*args, **kwargs)
        if kind == "after":
            hold(marker, release)
        return result

    setattr(owner, name, wrapper)


if __name__ == "__main__":
    marker, release, spec, sep, *args = sys.argv[1:]
    assert sep == "--"
    install(spec, Path(marker), Path(release))
    from convopt_mlflow import cli

    sys.exit(cli.main(args))
