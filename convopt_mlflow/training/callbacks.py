"""SB3 callbacks: validation evaluation, the convergence monitor, checkpoints, stopping.

They follow SB3's conventions: each is small, values go through ``self.logger.record``
(our MLflow ``KVWriter`` delivers them), and they compose. The timing is the update
boundary: ``on_rollout_start`` of rollout k+1 runs right after update k, before any
new experience is collected, so evaluation, monitoring, rollback and checkpoints all
see a consistent "between updates" model.

Typical composition (what the coordinator builds)::

    CallbackList([
        ValidationEvalCallback(evaluate, eval_freq),
        ConvergenceCallback(monitor, actuator=actuator, callback_after_update=CheckpointCallback(store, freq)),
    ])

``ConvergenceCallback`` also ends ``learn()`` once the actuator's ``StopRequest`` is set
(early stop, or SIGINT/SIGTERM through the coordinator's signal handler).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback

from ..components.convergence_types import UNANSWERED
from .control import ComponentGuard
from .interventions import InterventionActuator
from .checkpoints import CheckpointStore, capture_training_state
from .param_watch import parameter_health
from .probe import GradientProbe
from .schedule import install_scheduler

#: Observations of the latest rollout that the parameter watch feeds through the policy.
WATCH_SAMPLE = 256


class _UpdateCallback(BaseCallback):
    """Calls ``_on_update()`` once after every PPO update (and after the last one).

    Nothing happens per env step (``per_step = False``): under ``ConvoptPPO`` the rollout
    runs without calling it at all.
    """

    per_step = False

    def _init_callback(self) -> None:
        self._seen_updates = self.model._n_updates

    def _on_rollout_start(self) -> None:
        self.num_timesteps = self.model.num_timesteps
        if self.model._n_updates != self._seen_updates:
            self._seen_updates = self.model._n_updates
            self._on_update()

    def _on_training_end(self) -> None:
        self._on_rollout_start()

    def _on_step(self) -> bool:
        return True

    def _on_update(self) -> None:
        raise NotImplementedError


class ValidationEvalCallback(_UpdateCallback):
    """Every ``eval_freq`` steps, score the deterministic policy on the validation split.

    ``evaluate(policy) -> dict`` must return at least ``score``; every value is recorded
    as ``eval/<key>``, and ``eval/score`` feeds the monitor's stagnation detection.

    ``callback_after_eval`` (as in SB3's ``EvalCallback``) is called after each evaluation,
    with ``parent.history[-1]`` holding its result; when it returns False, training stops
    at the next step (e.g. a pruned tuning trial).

    ``scores()`` lists ``(step, score)`` of every evaluation of the run: ``earlier`` holds those a
    resumed run made before its restart (saved with each checkpoint), ``history`` this process's.
    """

    def __init__(self, evaluate: Callable[[Any], Mapping[str, float]], eval_freq: int, verbose: int = 0,
                 callback_after_eval: BaseCallback | None = None):
        super().__init__(verbose)
        self.evaluate = evaluate
        self.eval_freq = eval_freq
        self.best_score = -math.inf
        self.history: list[dict[str, float]] = []
        self.earlier: list[tuple[float, float]] = []
        self.callback_after_eval = callback_after_eval
        self._continue = True

    def _init_callback(self) -> None:
        super()._init_callback()
        if self.callback_after_eval is not None:
            self.callback_after_eval.init_callback(self.model)
            self.callback_after_eval.parent = self
        freq = max(self.eval_freq, 1)  # eval_freq 0 disables evaluation (checked in _on_update)
        self._next_eval = (self.model.num_timesteps // freq + 1) * freq

    def _on_update(self) -> None:
        if self.eval_freq <= 0 or self.num_timesteps < self._next_eval:
            return
        while self._next_eval <= self.num_timesteps:
            self._next_eval += self.eval_freq
        result = dict(self.evaluate(self.model.policy))
        for key, value in result.items():
            if np.isfinite(value):
                self.logger.record(f"eval/{key}", float(value))
        self.best_score = max(self.best_score, result.get("score", -math.inf))
        self.history.append({"step": float(self.num_timesteps), **result})
        if self.callback_after_eval is not None and not self.callback_after_eval.on_step():
            self._continue = False

    def _on_step(self) -> bool:
        return self._continue

    def scores(self) -> list[tuple[float, float]]:
        """``(step, score)`` of every evaluation of the run, a resumed run's earlier ones first."""
        return [*self.earlier, *((float(h["step"]), float(h.get("score", math.nan))) for h in self.history)]


class ConvergenceCallback(_UpdateCallback):
    """Feeds every PPO update to a ``ConvergenceMonitor`` and applies its interventions.

    Works with plain SB3 PPO in a user's own script::

        monitor = ConvergenceMonitor()
        model = PPO("MlpPolicy", env)
        scheduler = AdvancedLRScheduler(3e-4, "cosine", max_lr=3e-4, total_steps=100_000)
        model.learn(100_000, callback=ConvergenceCallback(monitor, scheduler=scheduler, dump_logs=True),
                    log_interval=None)

    Args:
        monitor: the pure monitor; ``analyze_convergence`` + ``decide`` are called once per update.
        scheduler: optional ``AdvancedLRScheduler``; installed as the model's LR schedule.
        actuator: applies interventions (default: one built around ``scheduler``).
        guard: isolates optional components (the scheduler's adaptive part, the monitor).
        param_watch: measure parameter norms, dead units and logit range each update.
        dump_logs: call ``model.dump_logs()`` after each update, so exactly one logger write
            happens per rollout (use with ``learn(log_interval=None)``).
        callback_after_update: child callback run after each analysed update
            (e.g. :class:`CheckpointCallback`); it can read ``parent.last_state``.
    """

    def __init__(self, monitor: Any, *, scheduler: Any = None, actuator: Any = None,
                 guard: ComponentGuard | None = None, param_watch: bool = True, dump_logs: bool = False,
                 fallback_lr: float | None = None, callback_after_update: BaseCallback | None = None,
                 verbose: int = 0):
        super().__init__(verbose)
        self.monitor = monitor
        self.scheduler = scheduler
        self.actuator = actuator or InterventionActuator(scheduler=scheduler)
        self.guard = guard or ComponentGuard()
        self.param_watch = param_watch
        self.dump = dump_logs
        self.fallback_lr = fallback_lr
        self.child = callback_after_update
        self.last_state: Any = None
        self.last_metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.interventions: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self._reported_guard_events = 0
        self._iteration = 0
        self.watch_sample: np.ndarray | None = None

    def _init_callback(self) -> None:
        super()._init_callback()
        # ConvoptPPO lets the probe clip, so the pre-clip norm costs one fused norm per step
        self._sb3_clip = None
        if getattr(self.model, "probe_clips", False) and math.isfinite(self.model.max_grad_norm):
            self._sb3_clip, self.model.max_grad_norm = self.model.max_grad_norm, math.inf
        space = self.model.action_space
        if getattr(self.monitor, "max_entropy", 0.0) is None and isinstance(space, spaces.Discrete) and space.n > 1:
            self.monitor.max_entropy = math.log(int(space.n))  # entropy scale of this policy's actions
        self.probe = GradientProbe(self.model.policy, self.model.policy.optimizer, clip_norm=self._sb3_clip)
        if self.scheduler is not None:
            fallback = self.fallback_lr if self.fallback_lr is not None else float(self.scheduler.base_lr)
            install_scheduler(self.model, self.scheduler, self.model._total_timesteps, guard=self.guard,
                              fallback_lr=fallback)
        if self.child is not None:
            self.child.init_callback(self.model)
            self.child.parent = self
        if hasattr(self.model, "divergence_handler"):  # ConvoptPPO: non-finite forward passes come here
            self.model.divergence_handler = self._on_nonfinite

    @property
    def stop_request(self) -> Any:
        """The actuator's ``StopRequest``: ``learn()`` ends at the next env step once it is set."""
        return self.actuator.stop

    def _on_step(self) -> bool:
        return not self.actuator.stop.requested

    def _on_rollout_end(self) -> None:
        # SB3 zeroes the rollout buffer right before on_rollout_start, where the update is analysed:
        # keep the newest observations of the rollout the update is about to train on
        if self.param_watch:
            obs = self.model.rollout_buffer.observations
            if isinstance(obs, np.ndarray):
                self.watch_sample = obs.reshape(-1, obs.shape[-1])[-WATCH_SAMPLE:].copy()

    def _on_training_end(self) -> None:
        super()._on_training_end()
        self.probe.remove()
        if getattr(self.model, "divergence_handler", None) == self._on_nonfinite:
            self.model.divergence_handler = None
        if self._sb3_clip is not None:
            self.model.max_grad_norm = self._sb3_clip

    # ------------------------------------------------------------ one update
    def _on_update(self) -> None:
        step = self.num_timesteps
        self._iteration += 1
        metrics = self._gather(step)
        state = self.guard.call("monitor", self.monitor.analyze_convergence, metrics, fallback=None, step=step)
        self.last_metrics, self.last_state = metrics, state
        if self.scheduler is not None:
            self.guard.call("scheduler", self.scheduler.update, metrics, fallback=None, step=step)
        if state is not None:
            for key, value in state.to_metrics().items():
                self.logger.record(f"convergence/{key}", value)
            for signal in getattr(state, "unanswered", {}):
                self.logger.record(f"convergence/unanswered_{signal}", 1.0)
            decisions = self.guard.call("monitor", self.monitor.decide, state, fallback=[], step=step)
            for decision in decisions:
                if decision.action == UNANSWERED:  # a signal nothing allowed answers: on record, not applied
                    self.interventions.append({"step": step, "action": UNANSWERED, "reason": decision.reason,
                                               "values": {}, "applied": "nothing: no allowed action answers it",
                                               "outcome": None})
                    continue
                self._apply(decision.action, decision.reason, decision.values, step)
            for done in self.monitor.pop_completed_outcomes():
                self._attach_outcome(done)
        self._report_guard_events()
        self._record_watch(metrics)
        self.history.append({"step": float(step), **metrics, **(state.to_metrics() if state is not None else {})})
        if self.child is not None:
            self.child.on_rollout_start()
        if self.dump:
            self.model.dump_logs(self._iteration)

    def _on_nonfinite(self, phase: str, where: str) -> None:
        """ConvoptPPO found non-finite ``where`` during ``phase`` ("rollout" or "update"): roll back now.

        The actuator lowers the LR and raises ``TrainingDiverged`` once ``max_rollbacks`` are used up.
        """
        step = self.num_timesteps = self.model.num_timesteps
        self.logger.record("convergence/divergence_detected", 1.0)
        self._apply("rollback", f"divergence: non-finite {where} during the {phase}", {"nonfinite": 1.0}, step)
        if self.dump:  # this update is never analysed: write its row now, at its step
            self.model.logger.dump(step)

    def _gather(self, step: int) -> dict[str, float]:
        logged = self.logger.name_to_value
        metrics: dict[str, float] = {"step": float(step)}
        for key, name in (("loss", "train/loss"), ("policy_loss", "train/policy_gradient_loss"),
                          ("value_loss", "train/value_loss"), ("approx_kl", "train/approx_kl"),
                          ("clip_fraction", "train/clip_fraction"), ("lr", "train/learning_rate"),
                          ("eval_score", "eval/score")):
            if key == "eval_score" and name not in logged:  # only on updates that evaluated
                continue
            metrics[key] = float(logged.get(name, float("nan")))
        metrics["entropy"] = -float(logged.get("train/entropy_loss", float("nan")))
        metrics.update(self.probe.pop_update())
        episodes = [info["r"] for info in self.model.ep_info_buffer]
        if episodes:
            metrics["train_return"] = float(np.mean(episodes))
        guard_count = _pop_env_nonfinite(self.training_env)
        memory = getattr(self.model, "memory_events", [])
        metrics["memory_error"] = 1.0 if memory and memory[-1]["step"] >= step else 0.0
        if self.param_watch:
            metrics.update(parameter_health(self.model.policy, self.watch_sample, sample_size=WATCH_SAMPLE))
        nonfinite_losses = sum(not np.isfinite(metrics[k]) for k in ("loss", "value_loss"))
        metrics["nonfinite"] = float(metrics["nonfinite_grad_steps"] + guard_count + nonfinite_losses
                                     + metrics.get("nonfinite_params", 0.0))
        return metrics

    def _apply(self, action: str, reason: str, values: Mapping[str, float], step: int) -> None:
        applied = self.actuator.apply(action, self.model, step)
        self.record_intervention(action, reason, values, applied, step)
        health = getattr(self.actuator, "pop_health", lambda: None)()
        if health:  # a plasticity action: the parameter health before and after it
            self.interventions[-1]["health"] = health
        if self.verbose:
            print(f"[convopt] step {step}: {action} ({reason}) -> {applied}")

    def record_intervention(self, action: str, reason: str, values: Mapping[str, float], applied: str,
                            step: int) -> None:
        """Record a decision another component applied itself (e.g. the meta controller's ``meta_adapt``)
        as one intervention row, with the same ``intervention/<action>`` metrics as the monitor's."""
        self.counts[action] = self.counts.get(action, 0) + 1
        self.logger.record(f"intervention/{action}", 1.0)
        self.logger.record(f"intervention/{action}_count", float(self.counts[action]))
        self.interventions.append({"step": step, "action": action, "reason": reason,
                                   "values": {k: float(v) for k, v in values.items() if _is_number(v)},
                                   "applied": applied, "outcome": None})

    def _attach_outcome(self, done: Mapping[str, Any]) -> None:
        for row in reversed(self.interventions):
            if row["step"] == done.get("step") and row["action"] == done.get("action") and row["outcome"] is None:
                row["outcome"] = done.get("outcome")
                return

    def _report_guard_events(self) -> None:
        for event in self.guard.events[self._reported_guard_events:]:
            self._reported_guard_events += 1
            self.counts["disable_component"] = self.counts.get("disable_component", 0) + 1
            self.logger.record("intervention/disable_component", 1.0)
            self.logger.record("intervention/disable_component_count", float(self.counts["disable_component"]))
            self.interventions.append({"step": event["step"], "action": "disable_component",
                                       "reason": f"{event['component']} raised {event['error']}",
                                       "values": {}, "applied": f"{event['component']} disabled; baseline behaviour",
                                       "outcome": None})

    def _record_watch(self, metrics: Mapping[str, float]) -> None:
        for key in ("grad_norm", "grad_norm_mean", "param_norm", "pi_param_norm", "vf_param_norm",
                    "dead_fraction", "logit_range"):
            if key in metrics and np.isfinite(metrics[key]):
                self.logger.record(f"convergence/{key}", metrics[key])
        lr = metrics.get("lr", float("nan"))
        if np.isfinite(lr):
            self.logger.record("lr", lr)
        self.logger.record("regularization/ent_coef", float(self.model.ent_coef))
        self.logger.record("train/batch_size", float(self.model.batch_size))


class CheckpointCallback(BaseCallback):
    """Atomic checkpoints every ``checkpoint_freq`` steps and at every new best eval score.

    Meant as ``callback_after_update`` of :class:`ConvergenceCallback`: it saves only when
    the update just analysed was healthy, so a diverged model never becomes "last good".
    """

    def __init__(self, store: CheckpointStore, checkpoint_freq: int, *,
                 extras: Callable[[], Mapping[str, Any]] | None = None, verbose: int = 0):
        super().__init__(verbose)
        self.store = store
        self.checkpoint_freq = checkpoint_freq
        self.extras = extras or (lambda: {})
        self.parent: Any = None
        self.best_score = -math.inf
        self.saved: list[int] = []

    def _init_callback(self) -> None:
        freq = max(self.checkpoint_freq, 1)
        # a child callback is initialised before it ever sees a step: read the model's clock
        self._next = (self.model.num_timesteps // freq + 1) * freq

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        # a child callback never gets on_step(), which is what refreshes num_timesteps in SB3
        self.num_timesteps = self.model.num_timesteps
        state, metrics = getattr(self.parent, "last_state", None), getattr(self.parent, "last_metrics", {})
        if state is not None and (state.divergence_detected or metrics.get("nonfinite", 0) > 0):
            return
        score = metrics.get("eval_score")
        new_best = score is not None and np.isfinite(score) and score > self.best_score
        due = self.checkpoint_freq > 0 and self.num_timesteps >= self._next
        if not (due or new_best):
            return
        if new_best:
            self.best_score = float(score)
        while self.checkpoint_freq > 0 and self._next <= self.num_timesteps:
            self._next += self.checkpoint_freq
        self.save(score=float(score) if new_best else None)

    def save(self, score: float | None = None) -> None:
        self.num_timesteps = self.model.num_timesteps  # also called directly (step 0, on SIGTERM)
        state = capture_training_state(self.model, extras=dict(self.extras()))
        self.store.save(self.num_timesteps, state, score=score)
        self.saved.append(self.num_timesteps)


def _pop_env_nonfinite(env: Any) -> int:
    while env is not None:
        if hasattr(env, "pop_count"):
            return int(env.pop_count())
        env = getattr(env, "venv", None)
    return 0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(float(value))
