"""A console progress bar for training runs that moves once per rollout."""
from __future__ import annotations

from stable_baselines3.common.callbacks import BaseCallback


class RolloutProgressBar(BaseCallback):
    """Console progress bar that moves once per rollout.

    SB3's ``progress_bar=True`` updates a rich bar on every env step, which cost about 5% of
    a default run here; one update per rollout (a few dozen per run) costs nothing.
    """

    per_step = False

    def _on_training_start(self) -> None:
        from tqdm.rich import tqdm

        self._done = self.model.num_timesteps
        self.bar = tqdm(total=self.locals["total_timesteps"] - self._done, unit="steps")

    def _on_rollout_end(self) -> None:
        self.bar.update(self.model.num_timesteps - self._done)
        self._done = self.model.num_timesteps

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self._on_rollout_end()
        self.bar.refresh()
        self.bar.close()
