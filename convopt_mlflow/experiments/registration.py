"""The A/B winner becomes a ``challenger``: its seed models as one ensemble in the registry.

Only a significant winner (Holm-corrected, or the group-sequential test's decision with
``--sequential``, see :mod:`.report`) whose seed models all found an edge over flat on
validation, and that no failed cell makes unregistrable under the study's failure rule
(``--on-failure``), is registered; anything else is recorded on the
parent run as ``convopt.registration_skipped=<reason>``. The ensemble is built as
``convopt train`` builds one (:func:`~convopt_mlflow.training.ensemble_eval.ensemble_report`):
the combination (``mean_prob``, ``majority_vote`` or diversity-``weighted``) is chosen on
the validation split, then the ensemble is backtested on val and test next to each member;
an ensemble whose validation Sharpe is not above flat's (0) is not registered either. The
version carries its evidence as tags (:func:`evidence_tags`), the chosen combination, and
the data source and split config of its runs, which ``convopt promote`` re-walks.

A study registers once: when a version tagged with the study's parent run
(``convopt.ab_parent_run``) exists, a re-run reuses it, registers nothing and leaves
``challenger`` where it is (a newer challenger may be there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .report import Winner

DEFAULT_REGISTRY_NAME = "convopt-ensemble"
CHALLENGER = "challenger"
#: Tags copied from the winner's first seed run onto the version (what data, which code).
RUN_TAGS = ("convopt.data.digest", "convopt.version", "convopt.git_commit", "convopt.git_dirty",
            "convopt.config_hash")


@dataclass(frozen=True)
class Registration:
    """What happened: the new version, or why nothing was registered."""

    version: str | None
    skipped: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    """The winner's ensemble backtest (``winner/...``), for the parent run; empty when none was built."""
    decision: Mapping[str, Any] = field(default_factory=dict)
    """The combination chosen on validation (method, weights, scores per method, reason)."""
    reused: bool = False
    """True when the study had registered ``version`` before (a re-run): nothing new was registered."""
    alias_refused: str = ""
    """Why ``challenger`` was not moved to a new ``version`` ("" when it was)."""

    def run_tags(self) -> dict[str, str]:
        """Tags for the A/B parent run."""
        if self.version is not None:
            return {"convopt.registered_version": self.version,
                    **({"convopt.registration_reused": "true"} if self.reused else {})}
        return {"convopt.registration_skipped": str(self.skipped)[:5000]}


def _text(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.6g}"
    return "" if value is None else str(value)


def evidence_tags(winner: Winner, *, study: str, parent_run_id: str, run_tags: Mapping[str, str],
                  data_source: str) -> dict[str, str]:
    """Version tags: the arm, the study, the test and its numbers, the data and the code.

    Example:
        >>> w = Winner("lr", ("r1", "r2"), (0, 1), {"test": "paired_t (Holm over 1)", "p_value": 0.01,
        ...            "p_adjusted": 0.01, "hedges_g": 2.0, "ci_low": 0.1, "ci_high": 0.5, "n": 2,
        ...            "dsr": None, "baseline": "baseline", "metric": "backtest/val/sharpe",
        ...            "mean_difference": 0.3}, True)
        >>> tags = evidence_tags(w, study="s", parent_run_id="p", run_tags={}, data_source="eurusd-1h")
        >>> tags["convopt.evidence.p_adjusted"], tags["convopt.source_runs"]
        ('0.01', 'r1,r2')
    """
    e = winner.evidence
    tags = {
        "convopt.arm": winner.arm, "convopt.study": study, "convopt.ab_parent_run": parent_run_id,
        "convopt.source_runs": ",".join(winner.run_ids), "convopt.seeds": ",".join(map(str, winner.seeds)),
        "convopt.data.source": data_source,
        "convopt.evidence.test": e.get("test"), "convopt.evidence.baseline": e.get("baseline"),
        "convopt.evidence.metric": e.get("metric"), "convopt.evidence.p_value": e.get("p_value"),
        "convopt.evidence.p_adjusted": e.get("p_adjusted"), "convopt.evidence.hedges_g": e.get("hedges_g"),
        "convopt.evidence.mean_difference": e.get("mean_difference"),
        "convopt.evidence.ci_low": e.get("ci_low"), "convopt.evidence.ci_high": e.get("ci_high"),
        "convopt.evidence.n": e.get("n"), "convopt.evidence.dsr": e.get("dsr"),
        "convopt.evidence.on_failure": e.get("on_failure", "refuse"),
        "convopt.evidence.failed_cells": ",".join(f"{c['arm']}/{c['seed']}" for c in e.get("failed_cells") or []),
    }
    tags.update({key: run_tags[key] for key in RUN_TAGS if key in run_tags})
    return {key: _text(value) for key, value in tags.items()}


def winner_ensemble(sources: Sequence[Any], cfg: Any) -> Any:
    """The winner's seed models combined and backtested as ``convopt train`` ensembles are.

    Args:
        sources: verified models (:func:`~convopt_mlflow.tracking.registration.ensemble_sources`);
            every member of every source becomes one ensemble member, in order.
        cfg: the config of the winner's runs (data, splits, cost; seeds don't matter here).

    Returns:
        The :class:`~convopt_mlflow.training.ensemble_eval.EnsembleReport`: its ``decision``
        is the combination chosen on validation, its ``metrics`` the val/test backtests.
    """
    from ..components.ensemble import EnsembleLearningFramework
    from ..tracking import build_policy
    from ..training.ensemble import diversity_config
    from ..training.ensemble_eval import ensemble_report
    from ..training.setup import load_market

    policies = []
    for source in sources:
        for state in source.members:
            policy = build_policy(source.spec)
            policy.load_state_dict(state)
            policies.append(policy)
    framework = EnsembleLearningFramework(len(policies), diversity_config(cfg), seed=cfg.run.seed)
    return ensemble_report(framework, policies, list(range(len(policies))), load_market(cfg),
                           cost_bps=cfg.env.cost_bps, long_only=cfg.env.long_only)


def register_winner(winner: Winner | None, *, parent_run_id: str, study: str, verdict: str,
                    registry_name: str = DEFAULT_REGISTRY_NAME) -> Registration:
    """Register ``winner``'s seed models as one ensemble version aliased ``challenger``, if it may be.

    Nothing is registered when there is no significant winner (``verdict``, which states the
    minimum detectable effect, is the reason), when a failed cell makes the winner
    unregistrable (``winner.refusal``), when a seed model has ``convopt.no_edge``, or
    when the combined ensemble has no edge on validation (its deflated Sharpe ratio, counting every
    validation score the seed models' selections and the combination looked at, is not above 0.95;
    :mod:`convopt_mlflow.evaluation.edge`). A study that already
    registered a version (tagged with ``parent_run_id``) gets that version back, marked
    ``reused``; ``challenger`` is not moved.
    """
    if winner is None:
        return Registration(None, f"no significant winner: {verdict}")
    if not winner.registrable and winner.refusal:
        return Registration(None, f"winner {winner.arm} is not registered: {winner.refusal}")
    if not winner.registrable:
        runs = ", ".join(winner.evidence.get("no_edge_runs") or [])
        return Registration(None, f"winner {winner.arm} has seed models without an edge over flat on "
                                  f"validation (convopt.no_edge: {runs}); a no-edge model is never registered")
    from .. import config as cfgmod
    from ..tracking import get_run_tags
    from ..tracking.registration import ensemble_sources, register_members, study_version
    from ..tracking.runs import get_run_config
    from ..training.ensemble_eval import ensemble_edge

    existing = study_version(registry_name, parent_run_id)
    if existing is not None:
        return Registration(existing, reused=True)

    run_tags = get_run_tags(winner.run_ids[0])
    cfg = cfgmod.from_dict(get_run_config(winner.run_ids[0]))
    sources = ensemble_sources([f"runs:/{run_id}/model" for run_id in winner.run_ids])
    report = winner_ensemble(sources, cfg)
    decision = report.decision
    chosen = {"method": decision.method, "weights": list(decision.weights), "val_scores": dict(decision.val_scores),
              "reason": decision.reason, "members": len(decision.weights)}
    metrics = {f"winner/{key}": float(value) for key, value in report.metrics.items() if math.isfinite(float(value))}
    edge = ensemble_edge(report, winner.evidence.get("edge_trials") or [1.0] * len(winner.run_ids))
    metrics.update({f"winner/{k}": v for k, v in edge.metrics().items()})
    if edge.no_edge:
        return Registration(None, f"winner {winner.arm}'s ensemble ({decision.method}) has no edge over flat on "
                                  f"validation ({edge.reason()}); a no-edge model is never registered",
                            metrics, chosen)
    tags = evidence_tags(winner, study=study, parent_run_id=parent_run_id, run_tags=run_tags,
                         data_source=str(cfg.data.source))
    summary = {key: report.metrics[key] for key in ("backtest/val/sharpe", "backtest/test/sharpe") if key in report.metrics}
    tags.update({"convopt.ensemble.combination": decision.method, "convopt.ensemble.reason": decision.reason[:5000],
                 "convopt.ensemble.size": str(len(decision.weights)),
                 **{f"convopt.{key.replace('/', '.')}": _text(float(v)) for key, v in summary.items()}})
    version = register_members(parent_run_id, sources, name=registry_name, tags=tags,
                               combination=decision.combination(), alias=CHALLENGER)
    return Registration(str(version.version), None, metrics, chosen,
                        alias_refused=version.tags.get("convopt.registration.alias_refused", ""))
