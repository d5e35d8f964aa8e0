"""The training coordinator: one config in, one fully tracked MLflow run out.

Order matters for the exit contract: the config and the data are validated
*before* a run is opened, so a user mistake creates nothing. Once the run is
open, every exit path ends it: FINISHED on success, FAILED on an exception,
KILLED on SIGINT/SIGTERM (after a final checkpoint and flush).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger

from .. import config as cfgmod
from ..components import (
    AdvancedLRScheduler,
    ConvergenceMonitor,
    MonitorThresholds,
    RegularizationSchedule,
)
from ..components.ensemble import block_start_sampler, block_starts
from ..components.meta import MetaLearningController
from ..components.plasticity import PLASTICITY_ACTIONS, PlasticityGate
from ..components.replay_scenario import ScenarioReplay
from ..tracking import MLflowOutputFormat, RunHandle, get_run_tags, open_run
from .augment import AugmentCallback, build_augmentation
from .callbacks import CheckpointCallback, ConvergenceCallback, ValidationEvalCallback
from .checkpoints import CheckpointStore, restore_training_state
from .control import ComponentGuard, StopRequest, signals_to
from .counterfactual import attach_counterfactual
from .curriculum import CurriculumCallback, build_curriculum, start_curriculum
from .evaluate import validation_pnl, validation_scorer
from .interventions import InterventionActuator, TrainingDiverged
from .meta import MetaCallback, build_strata, label_train_split, stratum_scored
from .plasticity import PlasticitySurgeon
from .progress import RolloutProgressBar
from .replay import build_replay
from .reporting import finalize_run, write_progress_artifacts
from .resume import plan_resume
from .result import TrainResult  # noqa: F401 - the coordinator's result, also from here
from .run_meta import (
    describe,
    eval_freq,
    log_run_inputs,
    run_display_name,
    run_tags,
    warn_harm,
)
from .selection import choose_final_model, judge_edge
from .setup import Market, load_market, make_env, make_model


@dataclass
class Components:
    """The optional parts of a run; tests inject their own (e.g. a failing scheduler)."""

    scheduler: Any = None
    monitor: Any = None
    regularization: Any = None
    curriculum: Any = None
    replay: Any = None
    augmentation: Any = None
    meta: Any = None

    def stateful(self) -> dict[str, Any]:
        """The components present that checkpoint their state (``state_dict``/``load_state_dict``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None and hasattr(getattr(self, f.name), "state_dict")}


def build_components(cfg: cfgmod.OptimizedTrainingConfig) -> Components:
    scheduler = None
    if cfg.scheduler_enabled:
        scheduler = AdvancedLRScheduler(
            cfg.base_learning_rate, cfg.lr_schedule_type, min_lr=cfg.min_learning_rate,
            max_lr=cfg.max_learning_rate, total_steps=cfg.run.total_timesteps, restart_period=cfg.restart_period,
            period_mult=cfg.period_mult, warmup_steps=cfg.warmup_steps,
        )
    monitor = None
    if cfg.monitor.enabled:
        actions = list(cfg.monitor.interventions)
        if cfg.monitor.overfit_response == "early_stop":  # the monitor answers overfitting with what is allowed
            actions = [a for a in actions if a != "increase_regularization"] + ["early_stop"] * ("early_stop" not in actions)
        thresholds = MonitorThresholds(monitoring_window=cfg.monitoring_window, plateau_cv=cfg.plateau_threshold,
                                       intervention_threshold=cfg.intervention_threshold)
        plastic = [a for a in PLASTICITY_ACTIONS if a in actions]
        monitor = ConvergenceMonitor(thresholds, actions,
                                     cooldowns=dict.fromkeys(plastic, cfg.monitor.plasticity_cooldown),
                                     plasticity=_plasticity_gate(cfg.monitor) if plastic else None)
    regularization = RegularizationSchedule(cfg.ppo.ent_coef, max_ent_coef=cfg.monitor.max_ent_coef,
                                            weight_decay=cfg.ppo.weight_decay,
                                            max_weight_decay=cfg.monitor.max_weight_decay)
    meta = None
    if cfg.meta_enabled:
        meta = MetaLearningController({"meta_learning_rate": cfg.meta_learning_rate,
                                       "adaptation_frequency": cfg.adaptation_frequency, "seed": cfg.run.seed,
                                       "stratified": cfg.meta_stratified})
    return Components(scheduler, monitor, regularization, curriculum=build_curriculum(cfg), replay=build_replay(cfg),
                      augmentation=build_augmentation(cfg), meta=meta)


def _plasticity_gate(monitor: cfgmod.MonitorConfig) -> PlasticityGate:
    return PlasticityGate(monitor.plasticity_patience, dead_fraction=monitor.plasticity_dead_fraction,
                          saturated_logit_range=monitor.plasticity_logit_range)


def train(cfg: cfgmod.OptimizedTrainingConfig, *, preset: str = "custom", resume: str = "",
          run_id: str | None = None, components: Components | None = None,
          extra_callbacks: Sequence[BaseCallback] = (), checkpoint_root: str | None = None,
          tags: Mapping[str, str] | None = None, after_eval: BaseCallback | None = None,
          market: Market | None = None) -> TrainResult:
    """Train one PPO agent as one MLflow run. Raises UserError before any run exists.

    ``tags`` are set on the run next to (and over) the standard ``convopt.*`` tags, e.g. an
    ensemble member's ``convopt.role`` or an A/B trial's ``convopt.role=ab-trial``.
    ``after_eval`` runs after each validation eval (``parent.history[-1]``); returning False
    stops training, which then ends as usual (final model, backtest, FINISHED).
    ``market``: the market ``cfg`` loads, already built (a worker's cached one); a resume loads its own.
    """
    plan = None
    if resume:
        plan = plan_resume(resume)  # refuses FINISHED and live runs before anything changes
        cfg, run_id, preset = plan.cfg, resume, plan.preset
    if market is None or resume:
        market = load_market(cfg)  # UserError on bad data, before any run exists
    named_here = run_id is None and not resume  # a new run, or the one `mlflow run` created: ours to name
    if run_id is None:
        run_id = os.environ.get("MLFLOW_RUN_ID") or None
    comps = components or build_components(cfg)
    checkpoint = plan.checkpoint if plan else None
    handle = open_run(experiment=cfg.run.experiment or None, run_id=run_id,
                      run_name=run_display_name(preset, cfg.run.seed, cfg=cfg) if named_here else None,
                      tags={**run_tags(cfg, preset), **(tags or {})})
    root = Path(checkpoint_root or os.environ.get("CONVOPT_CHECKPOINT_ROOT", ".convopt/checkpoints"))
    ckpt_dir = plan.checkpoint_dir if plan and plan.checkpoint_dir else (root / handle.run_id).resolve()
    stop = StopRequest()
    with signals_to(stop):
        try:
            if checkpoint is None:  # a new run, or one killed before its first checkpoint
                log_run_inputs(handle, cfg, market, ckpt_dir)
            store = CheckpointStore(ckpt_dir, keep_last=cfg.run.keep_checkpoints)
            return _train_in_run(cfg, market, handle, comps, stop, store, checkpoint, extra_callbacks, after_eval)
        except TrainingDiverged as exc:
            handle.set_tags({"convopt.failure_reason": str(exc)[:5000]})
            handle.end("FAILED")
            return TrainResult(handle.run_id, "FAILED", 1, str(exc))
        except BaseException as exc:
            handle.set_tags({"convopt.failure_reason": f"{type(exc).__name__}: {exc}"[:5000]})
            handle.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise


def _train_in_run(cfg, market: Market, handle: RunHandle, comps: Components, stop: StopRequest,
                  store: CheckpointStore, checkpoint: tuple | None,
                  extra_callbacks: Sequence[BaseCallback], after_eval: BaseCallback | None = None) -> TrainResult:
    """``checkpoint``: ``(entry, state, skipped)`` to resume from, or None for a new run."""
    resumed = checkpoint is not None
    guard = ComponentGuard()
    model = None
    env = make_env(cfg, market, augmentation=comps.augmentation, on_augment_error=lambda exc: guard.fail(
        "augmentation", exc, model.num_timesteps if model is not None else 0))
    model = make_model(cfg, env)
    if comps.replay is not None:
        _attach_replay(model, comps.replay, cfg, guard)
    attach_counterfactual(model, cfg, guard)
    curriculum = start_curriculum(comps.curriculum, cfg, market, env.unwrapped, guard)
    _share_start_pools(model, curriculum, cfg, market)
    actuator = InterventionActuator(scheduler=comps.scheduler, regularization=comps.regularization, store=store,
                                    stop=stop, max_rollbacks=cfg.run.max_rollbacks, curriculum=curriculum,
                                    plasticity=PlasticitySurgeon(cfg.monitor.shrink_perturb_fraction, cfg.run.seed,
                                                                 observations=lambda: convergence.watch_sample))
    evaluation = ValidationEvalCallback(validation_scorer(market, cost_bps=cfg.env.cost_bps), eval_freq(cfg),
                                        callback_after_eval=after_eval)
    phase = {"training_done": False}  # saved with every checkpoint: True only in the final one
    checkpoints = CheckpointCallback(store, cfg.run.checkpoint_freq,
                                     extras=lambda: {**_extras(comps, convergence, model, evaluation), **phase})
    convergence = ConvergenceCallback(
        comps.monitor or _NullMonitor(), scheduler=comps.scheduler, actuator=actuator, guard=guard,
        param_watch=cfg.monitor.enabled and cfg.monitor.param_watch, dump_logs=True,
        fallback_lr=cfg.base_learning_rate, callback_after_update=checkpoints,
    )
    min_step = -1
    if resumed:
        min_step, phase["training_done"] = _restore(model, checkpoint, comps, convergence, evaluation, checkpoints,
                                                    actuator, handle)
    if curriculum is not None:
        curriculum.install(model.num_timesteps)  # before learn() resets the env: the (restored) stage's pool
    writer = MLflowOutputFormat(handle.run_id, handle.client, min_step=min_step, background=cfg.run.async_logging)
    model.set_logger(Logger(folder=None, output_formats=[writer]))
    remaining = 0 if phase["training_done"] else cfg.run.total_timesteps - model.num_timesteps
    if not resumed:
        checkpoints.init_callback(model)
        checkpoints.save()  # step 0: rollback always has somewhere to go
    progress = [RolloutProgressBar()] if cfg.run.progress_bar else []
    meta = _meta_callback(cfg, market, comps, guard, convergence, evaluation)
    episodes = ([CurriculumCallback(curriculum)] if curriculum is not None else []) + (
        [AugmentCallback(comps.augmentation, lambda: guard.active("augmentation"))] if comps.augmentation else [])
    # convergence honours `stop`; meta and the episode callbacks go before it (same dump, same-update guard report)
    callbacks = CallbackList([evaluation, *meta, *episodes, convergence, *progress, *extra_callbacks])
    try:
        if remaining > 0:
            model.learn(remaining, callback=callbacks, log_interval=None, reset_num_timesteps=not resumed)
    finally:
        if model.logger.name_to_value:  # an update that raised (e.g. TrainingDiverged) left its values unwritten
            model.logger.dump(model.num_timesteps)
        writer.close()  # every batch is in the store before the run ends, on every exit path
        if guard.disabled:
            handle.set_tags({"convopt.degraded": ",".join(sorted(guard.disabled))})
        write_progress_artifacts(handle, convergence, actuator)
    if stop.requested and stop.status == "KILLED":
        checkpoints.save()
        handle.set_tags({"convopt.stop_reason": stop.reason})
        handle.end("KILLED")
        return TrainResult(handle.run_id, "KILLED", stop.exit_code, stop.reason)
    early_stop = stop.reason if stop.requested else ""
    if early_stop:
        handle.set_tags({"convopt.stop_reason": early_stop})
        stop.clear()  # a SIGINT/SIGTERM from now on stops finalization
    if not phase["training_done"]:
        # which weights ship, decided once: a resume into finalization keeps the decision
        choice = choose_final_model(model, store, lambda policy: evaluation.evaluate(policy)["score"],
                                    final_model=cfg.run.final_model)
        choice = judge_edge(choice, validation_pnl(model.policy, market, cost_bps=cfg.env.cost_bps),
                            evaluation.scores(), last_step=model.num_timesteps, final_model=cfg.run.final_model,
                            periods_per_year=market.bars.periods_per_year)
        handle.set_tags(choice.tags())
        handle.log_metrics(choice.metrics(), step=model.num_timesteps)
        phase["training_done"] = True
        if checkpoints.model is None:
            checkpoints.init_callback(model)
        checkpoints.save()  # the shipped model: a resume from here only finalizes
    handle.set_tags({"convopt.phase": "finalizing"})
    metrics = finalize_run(handle, cfg, market, model, stopped=lambda: stop.requested)
    if stop.requested:  # SIGINT/SIGTERM while finalizing: a resume logs only what is missing
        reason = f"{stop.reason} during finalization"
        handle.set_tags({"convopt.stop_reason": reason})
        handle.end("KILLED")
        return TrainResult(handle.run_id, "KILLED", stop.exit_code,
                           f"{reason}; `convopt train --resume {handle.run_id}` logs what is missing")
    warn_harm(handle, cfg, metrics or {})
    handle.set_tags({"convopt.phase": "finished"})
    describe(handle)
    handle.end("FINISHED")
    no_edge = get_run_tags(handle.run_id).get("convopt.no_edge") == "true"
    chosen = {k: v for k, v in handle.client.get_run(handle.run_id).data.metrics.items() if k.startswith("model/")}
    return TrainResult(handle.run_id, "FINISHED", 0, early_stop, {**chosen, **(metrics or {})}, no_edge=no_edge)


def _restore(model, checkpoint, comps, convergence, evaluation, checkpoints, actuator, handle) -> tuple[int, bool]:
    """Load the checkpoint into everything; return (last logged step, whether training was done)."""
    entry, state, skipped = checkpoint
    extras = restore_training_state(model, state)
    for name, part in comps.stateful().items():
        if name in extras:
            part.load_state_dict(extras[name])
    if comps.regularization is not None and "regularization" in extras:
        model.ent_coef = comps.regularization.ent_coef
    if "env_rng" in extras:
        model.env.unwrapped.rng_state = extras["env_rng"]
    model.batch_size = int(extras.get("batch_size", model.batch_size))
    convergence.history = list(extras.get("history", []))
    convergence.interventions = list(extras.get("interventions", []))
    convergence.counts = dict(extras.get("counts", {}))
    evaluation.earlier = [(float(step), float(score)) for step, score in extras.get("eval_scores", [])]
    if extras.get("best_eval") is not None:
        evaluation.best_score = checkpoints.best_score = float(extras["best_eval"])
    actuator.skipped_checkpoints = list(extras.get("skipped_checkpoints", []))
    actuator.load_state_dict(extras.get("actuator", {}), model)
    actuator.note_skipped(skipped, at_step=entry.step)
    handle.set_tags({"convopt.resumed_from_step": str(entry.step)})
    return handle.last_logged_step(), bool(extras.get("training_done", False))


def _attach_replay(model, replay, cfg, guard: ComponentGuard) -> None:
    """Hand the replay component to the PPO extension; a failure here disables it (baseline PPO)."""
    if not hasattr(model, "attach_replay"):  # a model built without the replay extension
        guard.fail("replay", TypeError(f"{type(model).__name__} cannot replay"), model.num_timesteps)
        return
    guard.call("replay", model.attach_replay, replay, replay_ratio=cfg.replay_ratio, guard=guard,
               vol_window=cfg.data.vol_window, fallback=None, step=model.num_timesteps)


def _share_start_pools(model, curriculum, cfg, market: Market) -> None:
    """Scenario replay prioritizes inside the starts the run may use: the curriculum stage's pool
    (the curriculum hands it over instead of installing its own sampler) or a member's blocks.
    Each pool comes with the sampler the run uses for it without replay (the member's block
    sampler; the curriculum's pools are drawn uniformly), so replay_ratio=0 draws what no replay draws."""
    if not isinstance(getattr(model, "replay", None), ScenarioReplay):
        return
    if cfg.ensemble.train_blocks:
        bounds, blocks, n_blocks = market.cores["train"].start_bounds, cfg.ensemble.train_blocks, cfg.ensemble.n_blocks
        model.set_start_pool(block_starts(bounds, blocks, n_blocks), block_start_sampler(bounds, blocks, n_blocks))
    if curriculum is not None:
        curriculum.sink = model.set_start_pool


def _meta_callback(cfg, market: Market, comps: Components, guard: ComponentGuard, convergence, evaluation) -> list:
    """The meta controller's callback (before the convergence callback: same dump, same-update guard report)."""
    if comps.meta is None:
        return []
    if getattr(comps.meta, "labels", None) is not None and comps.meta.labels.size == 0:
        guard.call("meta", label_train_split, comps.meta, market.features.log_returns, market.splits.train,
                   market.features.warmup, fallback=None, step=0)
    bounds = (cfg.min_learning_rate, cfg.max_learning_rate) if cfg.scheduler_enabled else None
    strata = scored = None
    if getattr(comps.meta, "stratified", False):  # stratified rollouts: strata, per-stratum validation scores
        strata = guard.call("meta", build_strata, comps.meta, market, fallback=None, step=0)
        if strata is not None:
            scored = stratum_scored(evaluation.evaluate, market, strata, cost_bps=cfg.env.cost_bps)
            evaluation.evaluate = scored
    return [MetaCallback(comps.meta, regularization=comps.regularization, guard=guard,
                         record=convergence.record_intervention, scores=lambda: evaluation.history,
                         lr_bounds=bounds, strata=strata, evaluate=scored)]


def _extras(comps: Components, convergence: ConvergenceCallback, model, evaluation) -> dict[str, Any]:
    out: dict[str, Any] = {"batch_size": model.batch_size, "history": convergence.history,
                           "interventions": convergence.interventions, "counts": convergence.counts,
                           "skipped_checkpoints": convergence.actuator.skipped_checkpoints,
                           "actuator": convergence.actuator.state_dict(model),
                           "best_eval": evaluation.best_score if math.isfinite(evaluation.best_score) else None,
                           "eval_scores": [[step, score] for step, score in evaluation.scores()]}
    for name, part in comps.stateful().items():
        out[name] = part.state_dict()
    out["env_rng"] = model.env.unwrapped.rng_state
    return out


class _NullMonitor:
    """Stands in when the monitor is disabled (baseline): no analysis, no interventions."""

    def analyze_convergence(self, metrics):
        return None

    def decide(self, state):
        return []

    def pop_completed_outcomes(self):
        return []
