"""Ensemble training: one ensemble run, one nested child run per member, members in parallel.

Flow (``train_ensemble_run``):

1. The config, the data and every member's config are validated before any run exists.
2. The ensemble run is opened (``convopt.role=ensemble``) and one child run per member is
   created under it (``mlflow.parentRunId``, ``convopt.role=ensemble-member``).
3. Each member is a full convopt training run, ``coordinator.train(member_cfg, run_id=child)``,
   with its own monitor, checkpoints, backtest and model. Members run on ``ensemble.workers``
   long-lived spawned worker processes (:mod:`.member_pool`), one torch thread each: a worker
   imports once, keeps the market by digest (:func:`member_market`) and runs one member after
   another. A member that raises ends its child run FAILED; a member whose worker dies takes
   down only itself (its child run is ended KILLED with the reason) and the worker is replaced.
4. With at least ``ensemble.min_members`` finished members the ensemble is built from them:
   the combination is chosen on validation (:class:`~convopt_mlflow.components.ensemble.EnsembleDecision`),
   backtested on val and test next to each member and the benchmarks, and logged as one model
   holding every member's weights. It is registered as a new version of ``ensemble.registry_name``
   unless it has no edge on validation (``convopt.no_edge=true``: its deflated Sharpe ratio, counting
   every validation score the members' selections and the combination looked at, is not above 0.95;
   :mod:`convopt_mlflow.evaluation.edge`). Fewer members: the ensemble
   run ends FAILED with the reason.

Test hook: ``CONVOPT_ENSEMBLE_FAULTS="1:kill,2:raise"`` makes member 1 SIGKILL its own worker and
member 2 raise, each after its first rollout.
"""
from __future__ import annotations

import json
import os
from functools import partial
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from .. import config as cfgmod
from ..components.ensemble import EnsembleLearningFramework, MemberOutcome, MemberPlan
from .ensemble_member import FAULTS_ENV, MemberTask, member_market, train_member  # noqa: F401 - the worker side
from .market import load_market
from .member_pool import ParallelMembers, start_members
from .result import TrainResult
from .run_meta import describe, run_display_name, run_tags

if TYPE_CHECKING:
    from .ensemble_eval import EnsembleReport

_SUMMARY = ("backtest/val/sharpe", "backtest/test/sharpe", "backtest/test/max_drawdown", "backtest/test/total_return")


# ------------------------------------------------------------------ plans -> member configs
def diversity_config(cfg: cfgmod.OptimizedTrainingConfig) -> dict[str, Any]:
    ens = cfg.ensemble
    return {"lr_factor": ens.lr_factor, "ent_coef": ens.ent_coef, "clip_range": ens.clip_range,
            "net_archs": [tuple(int(n) for n in a.split("x")) for a in ens.net_archs],
            "activations": ens.activations, "data_subsets": ens.data_subsets, "n_blocks": ens.n_blocks,
            "diversity_penalty": cfg.diversity_penalty}


def member_config(cfg: cfgmod.OptimizedTrainingConfig, plan: MemberPlan) -> cfgmod.OptimizedTrainingConfig:
    """The full config one member trains with: the ensemble's, varied by ``plan``."""
    values: dict[str, Any] = {
        "ensemble_size": 1, "run.seed": plan.seed, "ppo.torch_threads": 1, "run.progress_bar": False,
        "base_learning_rate": cfg.base_learning_rate * plan.lr_factor,
        "min_learning_rate": cfg.min_learning_rate * plan.lr_factor,
        "max_learning_rate": cfg.max_learning_rate * plan.lr_factor,
        "ppo.ent_coef": plan.ent_coef, "ppo.clip_range": plan.clip_range, "ensemble.train_blocks": plan.blocks,
    }
    if cfg.direct.enabled:  # the direct learner's LR is its own; ppo.ent_coef is its entropy bonus
        values["direct.lr"] = cfg.direct.lr * plan.lr_factor
    if plan.net_arch is not None:
        values["ppo.net_arch"] = plan.net_arch
    if plan.activation is not None:
        values["ppo.activation"] = plan.activation
    return cfgmod.apply_values(cfg, values)


# ------------------------------------------------------------------ the ensemble run
def train_ensemble_run(cfg: cfgmod.OptimizedTrainingConfig, *, preset: str = "custom", run_id: str | None = None,
                       checkpoint_root: str | None = None, pool: ParallelMembers | None = None,
                       bars: Any = None, tags: Mapping[str, str] | None = None, market: Any = None) -> TrainResult:
    """Train ``cfg.ensemble_size`` members as child runs of one ensemble run (see module doc).

    ``pool``: the workers, already started (:func:`.member_pool.start_members`, as ``convopt train``
    does before its own imports); closed here on every path. None: started here, once the config, the
    data and every member's config are validated. ``bars``: ``cfg``'s bars, already read
    (:func:`.data_source.read_bars`, as ``convopt train`` reads them before it starts the workers).
    ``tags``: set on the ensemble run over the standard ones (an A/B trial's ``convopt.role=ab-trial``).
    ``market``: ``cfg``'s market, already built (an A/B worker's kept one); ``bars`` is then not read."""
    from ..tracking import open_run, run_experiment_name

    try:
        market = market if market is not None else load_market(cfg, bars)  # UserError on bad data, before any run
        framework = EnsembleLearningFramework(cfg.ensemble_size, diversity_config(cfg), seed=cfg.run.seed,
                                              min_members=cfg.ensemble.min_members)
        plans = framework.initialize_models()
        member_cfgs = [member_config(cfg, plan) for plan in plans]  # ConfigError before any run exists
    except BaseException:
        if pool is not None:
            pool.close()
        raise
    # torch, SB3 and the evaluation code are imported at the parent's first use of them (a member's
    # outcome, when the slot it frees takes the next member or is idle), not before the members start
    pool = pool or start_members(len(plans), cfg.ensemble.workers)  # the workers import meanwhile
    workers = pool.workers
    prepared: dict[int, tuple[Any, dict]] = {}  # each member's policy and tables, made while others train
    pool.on_outcome = partial(_prepare, prepared, market, cfg.ppo.torch_threads)
    run_id = run_id or os.environ.get("MLFLOW_RUN_ID") or None
    try:
        parent = open_run(experiment=cfg.run.experiment or None, run_id=run_id,
                          run_name=run_display_name(preset, cfg.run.seed, "ensemble", cfg=cfg),
                          tags={**run_tags(cfg, preset), "convopt.role": "ensemble", **(tags or {})})
    except BaseException:
        pool.close()
        raise
    warm: dict[str, Any] = {}  # what the build needs that no member decides, made while the last one trains
    pool.while_idle = partial(_before_build, warm, parent, cfg, market)
    try:
        _log_inputs(parent, cfg, market)
        parent.log_dict({"plans": [vars(p) for p in plans]}, "ensemble/plans.json")
        experiment = run_experiment_name(parent.run_id, parent.client)
        children, tasks = {}, {}
        for plan, member_cfg in zip(plans, member_cfgs):
            tags = {"mlflow.parentRunId": parent.run_id, "convopt.role": "ensemble-member",
                    "convopt.member": str(plan.index), "convopt.ensemble_run": parent.run_id}
            child = open_run(experiment=experiment, run_id=None,
                             run_name=run_display_name(preset, member_cfg.run.seed, f"member{plan.index}", cfg=cfg),
                             tags={**run_tags(member_cfg, preset), **tags}, client=parent.client)
            children[plan.index] = child
            tasks[plan.index] = MemberTask(cfgmod.to_json(member_cfg), child.run_id, preset, tags, checkpoint_root,
                                           market.bars.digest)
        parent.set_tags({"convopt.ensemble.workers": str(workers)})
        training = framework.train_ensemble(partial(train_member, tasks), map_fn=pool)
        _end_lost_members(training.failed, children)
        parent.log_metrics({"ensemble/members_finished": len(training.finished),
                            "ensemble/members_failed": len(training.failed)}, step=cfg.run.total_timesteps)
        if not training.enough:
            parent.set_tags({"convopt.failure_reason": f"too few members to build the ensemble: {training.reason}"})
            parent.end("FAILED")
            return TrainResult(parent.run_id, "FAILED", 1, f"too few members: {training.reason}")
        if training.failed:
            parent.set_tags({"convopt.ensemble.lost_members": training.reason})
        return _build(parent, cfg, preset, market, framework, training.finished, prepared, warm)
    except KeyboardInterrupt:
        pool.close()
        parent.set_tags({"convopt.stop_reason": "interrupted"})
        parent.end("KILLED")
        return TrainResult(parent.run_id, "KILLED", 130, "interrupted")
    except BaseException as exc:
        pool.close()
        parent.set_tags({"convopt.failure_reason": f"{type(exc).__name__}: {exc}"[:5000]})
        parent.end("FAILED")
        raise


def _log_inputs(parent: Any, cfg: cfgmod.OptimizedTrainingConfig, market: Any) -> None:
    from ..tracking import log_dataset
    from ..tracking.splits import log_split_boundaries
    from .market import split_record

    params = cfgmod.flatten(cfg)
    params["config_hash"] = cfgmod.config_hash(cfg)
    parent.log_params(params)
    parent.log_text(cfgmod.to_json(cfg), "config.json")
    parent.set_tags({"convopt.data.digest": market.bars.digest})
    log_dataset(parent, market.bars.frame, name=market.bars.name, source=market.bars.source, digest=market.bars.digest)
    log_split_boundaries(parent, split_record(cfg, market))


def _end_lost_members(failed: list[MemberOutcome], children: Mapping[int, Any]) -> None:
    """A member whose process died left its child run RUNNING: end it with the reason."""
    for outcome in failed:
        child = children[outcome.index]
        if child.client.get_run(child.run_id).info.status == "RUNNING":
            child.set_tags({"convopt.failure_reason": outcome.reason})
            child.end("KILLED" if outcome.status == "KILLED" else "FAILED")


def _use_torch(threads: int) -> None:
    """The parent's torch on ``threads`` threads: it evaluates every member on val and test, and with
    torch's default of one thread per core it would compete with the workers, as a run's own does not."""
    import torch

    torch.set_num_threads(threads)


def _member_policy(outcome: MemberOutcome) -> Any:
    from ..tracking import build_policy

    policy = build_policy(outcome.payload["spec"])
    policy.load_state_dict(_tensors(outcome.payload["weights"]))
    return policy


def _prepare(prepared: dict[int, tuple[Any, dict]], market: Any, threads: int, outcome: MemberOutcome) -> None:
    """While other members train: a finished member's policy and its tables on val and test.
    Best effort: whatever fails here is done again by :func:`_build`."""
    if outcome.status != "FINISHED":
        return
    try:
        from .ensemble_eval import member_tables

        _use_torch(threads)
        policy = _member_policy(outcome)
        prepared[outcome.index] = (policy, member_tables(policy, market))
    except Exception:  # noqa: BLE001 - _build rebuilds it and reports its own errors
        prepared.pop(outcome.index, None)


def _before_build(warm: dict[str, Any], parent: Any, cfg: cfgmod.OptimizedTrainingConfig, market: Any) -> None:
    """While the last member trains, on the core it leaves free: the benchmarks' side of the report,
    the run's plotly.js, and the first use of plotly and MLflow's pyfunc (imports, templates), which
    the build would otherwise pay after the last member. Best effort: :func:`_build` does what is missing."""
    try:
        from ..tracking.html import log_plotly_bundle
        from ..tracking.warm import warm_model_logging
        from .ensemble_eval import split_benchmarks
        from .reporting import warm_figures

        _use_torch(cfg.ppo.torch_threads)
        warm_model_logging()

        warm["benchmarks"] = split_benchmarks(market, cost_bps=cfg.env.cost_bps, long_only=cfg.env.long_only)
        warm_figures(market.bars.frame.index[:2])  # plotly's lazy modules, its template, the packed plotly.js
        log_plotly_bundle(parent)
    except Exception:  # noqa: BLE001 - _build does it all again and reports its own errors
        warm.pop("benchmarks", None)


def _build(parent: Any, cfg: cfgmod.OptimizedTrainingConfig, preset: str, market: Any,
           framework: EnsembleLearningFramework, finished: list[MemberOutcome],
           prepared: Mapping[int, tuple[Any, dict]] | None = None, warm: Mapping[str, Any] | None = None) -> TrainResult:
    from .ensemble_eval import ensemble_report

    _use_torch(cfg.ppo.torch_threads)
    prepared, warm = prepared or {}, warm or {}
    policies = [prepared[o.index][0] if o.index in prepared else _member_policy(o) for o in finished]
    computed = [prepared[o.index][1] if o.index in prepared else None for o in finished]
    indices = [o.index for o in finished]
    report = ensemble_report(framework, policies, indices, market, cost_bps=cfg.env.cost_bps,
                             long_only=cfg.env.long_only, computed=computed, benchmarks=warm.get("benchmarks"))
    step = cfg.run.total_timesteps
    parent.log_metrics(report.metrics, step=step)
    decision = report.decision
    parent.log_dict({"method": decision.method, "weights": dict(zip(map(str, indices), decision.weights)),
                     "val_scores": dict(decision.val_scores), "reason": decision.reason,
                     "mean_return_correlations": dict(zip(map(str, indices), decision.correlations)),
                     "members": {str(o.index): o.payload["run_id"] for o in finished}}, "ensemble/decision.json")
    _log_equity(parent, report, market)
    edge = _edge_verdict(report, finished)
    parent.log_metrics(edge.metrics(), step=step)
    no_edge = edge.no_edge
    tags = {"convopt.ensemble.method": decision.method, "convopt.ensemble.reason": decision.reason,
            **edge.tags(), "convopt.ensemble.members": ",".join(map(str, indices))}
    uri, why_not = _log_model(parent, cfg, market, finished, decision, step)
    if uri:
        tags["convopt.model_uri"] = uri
    if why_not:
        tags["convopt.model_skipped"] = why_not
    reason = ""
    if no_edge:
        reason = f"no edge on validation ({edge.reason()}): not registered"
    elif uri and cfg.ensemble.register:
        from ..tracking import register_verified_model

        version = str(register_verified_model(uri, cfg.ensemble.registry_name,
                                              _version_tags(parent, cfg, preset, market, report, decision)).version)
        tags.update({"convopt.registered_model": cfg.ensemble.registry_name, "convopt.registered_version": version})
        reason = f"registered {cfg.ensemble.registry_name} version {version}"
    from ..evaluation.harm import HARM_TAG, components_on, harm_warning

    warning = harm_warning(components_on(cfg), report.metrics)
    if warning:  # the ensemble itself is a component: judged on the ensemble's validation Sharpe
        tags[HARM_TAG] = warning
    parent.set_tags(tags)
    describe(parent)
    parent.end("FINISHED")
    return TrainResult(parent.run_id, "FINISHED", 0, reason, report.metrics, no_edge=no_edge,
                       test_pnl=report.test_pnl)


def _edge_verdict(report: EnsembleReport, finished: list[MemberOutcome]):
    """The no-edge verdict on the ensemble, counting each member's selection (1 where a member lacks it):
    each member's run returned its ``model/edge/n_trials`` with its metrics."""
    from .ensemble_eval import ensemble_edge

    members = [(o.payload.get("metrics") or {}).get("model/edge/n_trials", 1.0) for o in finished]
    return ensemble_edge(report, members)


def _tensors(weights: Mapping[str, np.ndarray]) -> dict:
    import torch

    return {k: torch.as_tensor(v) for k, v in weights.items()}


def _log_model(parent: Any, cfg, market, finished: list[MemberOutcome], decision, step: int) -> tuple[str, str]:
    """Log one model holding every member; ``(uri, "")`` or ``("", why it was not logged)``."""
    from ..tracking import log_policy_model
    from .reporting import model_inputs

    specs = [json.dumps(o.payload["spec"], sort_keys=True) for o in finished]
    if len(set(specs)) > 1:
        return "", "members have different network specs (ensemble.net_archs/activations); the model format holds one"
    feature_config, example = model_inputs(cfg, market)
    uri = log_policy_model(parent.run_id, step=step, members=[_tensors(o.payload["weights"]) for o in finished],
                           spec=finished[0].payload["spec"], feature_config=feature_config, input_example=example,
                           combination=decision.combination())
    parent.set_tags({"convopt.model_combination": decision.method})
    return uri, ""


def _log_equity(parent: Any, report: EnsembleReport, market: Any) -> None:
    from ..evaluation import equity_figure
    from ..tracking.html import log_figure
    from .reporting import EQUITY_POINTS, SPLITS

    for split in SPLITS:
        fig = equity_figure(report.timestamps[split], report.curves[split],
                            title=f"Ensemble and members on {split} ({market.bars.name})", max_points=EQUITY_POINTS)
        log_figure(parent, fig, "backtest", f"equity_{split}.html")


def _version_tags(parent, cfg, preset: str, market, report: EnsembleReport, decision) -> dict[str, str]:
    from ..tracking import convopt_tags

    summary = {k.replace("/", "."): f"{report.metrics[k]:.4g}" for k in _SUMMARY if k in report.metrics}
    return {**convopt_tags(), "convopt.data.digest": market.bars.digest, "convopt.preset": preset,
            "convopt.config_hash": cfgmod.config_hash(cfg), "convopt.run_id": parent.run_id,
            "convopt.ensemble.method": decision.method, "convopt.ensemble.size": str(cfg.ensemble_size),
            "convopt.backtest": json.dumps(summary, sort_keys=True), **{f"convopt.{k}": v for k, v in summary.items()}}
