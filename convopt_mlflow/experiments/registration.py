"""The A/B winner becomes a ``challenger``: its seed models as one ensemble in the registry.

Only a significant winner (Holm-corrected, see :mod:`.report`) whose seed models all
found an edge over flat on validation is registered; anything else is recorded on the
parent run as ``convopt.registration_skipped=<reason>``. The version carries its evidence
as tags (:func:`evidence_tags`) and the data source and split config of its runs, which
``convopt promote`` re-walks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

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

    def run_tags(self) -> dict[str, str]:
        """Tags for the A/B parent run."""
        if self.version is not None:
            return {"convopt.registered_version": self.version}
        return {"convopt.registration_skipped": str(self.skipped)[:5000]}


def winner_combination(n_members: int) -> dict[str, Any]:
    """How the winner's seed models are combined: ``mean_prob`` with equal weights, for now.

    The one place to swap in a validation-chosen method (the ensemble framework's choice).

    Example:
        >>> winner_combination(2)
        {'method': 'mean_prob', 'weights': [0.5, 0.5]}
    """
    return {"method": "mean_prob", "weights": [1.0 / n_members] * n_members}


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
        "convopt.ensemble.combination": winner_combination(len(winner.run_ids))["method"],
    }
    tags.update({key: run_tags[key] for key in RUN_TAGS if key in run_tags})
    return {key: _text(value) for key, value in tags.items()}


def register_winner(winner: Winner | None, *, parent_run_id: str, study: str, verdict: str,
                    registry_name: str = DEFAULT_REGISTRY_NAME) -> Registration:
    """Register ``winner``'s seed models as one ensemble version aliased ``challenger``, if it may be.

    Nothing is registered when there is no significant winner (``verdict``, which states the
    minimum detectable effect, is the reason) or when a seed model has ``convopt.no_edge``.
    """
    if winner is None:
        return Registration(None, f"no significant winner: {verdict}")
    if not winner.registrable:
        runs = ", ".join(winner.evidence.get("no_edge_runs") or [])
        return Registration(None, f"winner {winner.arm} has seed models without an edge over flat on "
                                  f"validation (convopt.no_edge: {runs}); a no-edge model is never registered")
    from ..tracking import get_run_tags
    from ..tracking.runs import get_run_config
    from ..tracking.registration import register_ensemble

    run_tags = get_run_tags(winner.run_ids[0])
    source = str(get_run_config(winner.run_ids[0]).get("data", {}).get("source", ""))
    tags = evidence_tags(winner, study=study, parent_run_id=parent_run_id, run_tags=run_tags, data_source=source)
    version = register_ensemble(parent_run_id, [f"runs:/{run_id}/model" for run_id in winner.run_ids],
                                name=registry_name, tags=tags, combination=winner_combination(len(winner.run_ids)),
                                alias=CHALLENGER)
    return Registration(str(version.version))
