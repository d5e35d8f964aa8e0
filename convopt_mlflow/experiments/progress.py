"""Read-only progress of A/B studies for the live dashboard.

Opens the Optuna storage without creating tables or upgrading its schema, and
reads trials only: never a trial, attribute or study is written.

- :func:`list_studies`: the A/B studies in a storage;
- :func:`study_progress`: trials done / running / failed per arm, and the current
  comparison of every arm with the baseline (the same ``analyze`` as the report,
  over the seeds complete in every arm so far).
"""
from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from .abtest import SPEC_ATTR, PARENT_ATTR, completed_trials
from .report import analyze
from .spec import StudySpec
from .storage import get_storage, storage_kind
from .trial import cell_of

__all__ = ["list_studies", "open_read_only", "study_progress"]


def open_read_only(url: str) -> BaseStorage:
    """The storage at ``url``; an RDB one without table creation or schema checks (a reader writes nothing)."""
    if storage_kind(url) == "journal":
        return get_storage(url)
    return optuna.storages.RDBStorage(url, skip_table_creation=True, skip_compatibility_check=True)


def list_studies(storage: BaseStorage) -> list[str]:
    """Names of the A/B studies (those with a convopt spec) in ``storage``."""
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    return sorted(s.study_name for s in summaries if SPEC_ATTR in s.user_attrs)


def study_progress(storage: BaseStorage, name: str) -> dict[str, Any]:
    """Per-arm trial counts and the current comparison with the baseline (JSON-able).

    Returns:
        ``{"study", "parent_run_id", "metric", "baseline", "arms": {arm: {"complete",
        "running", "failed", "planned"}}, "labels": {arm: one-line label}, "comparisons": [{"arm", "mean_difference",
        "difference_ci_low", "difference_ci_high", "p_adjusted", "significant"}], "verdict"}``
    """
    study = optuna.load_study(study_name=name, storage=storage)
    spec = StudySpec.from_json(study.user_attrs[SPEC_ATTR])
    arms = {arm: {"complete": 0, "running": 0, "failed": 0, "planned": len(spec.seeds)} for arm in spec.arms}
    for trial in study.get_trials(deepcopy=False):
        cell = cell_of(trial)
        if cell is None or cell[0] not in arms:
            continue
        state = {TrialState.COMPLETE: "complete", TrialState.RUNNING: "running",
                 TrialState.FAIL: "failed"}.get(trial.state)
        if state:
            arms[cell[0]][state] += 1
    records = [{"arm": r.arm, "seed": r.seed, "run_id": r.run_id, "value": r.value, "metrics": r.metrics,
                "no_edge": r.no_edge} for r in completed_trials(study, spec)]
    report = analyze(records, arms=spec.arms, metric=spec.metric, alpha=spec.alpha, planned_cells=len(spec.cells))
    keys = ("arm", "mean_difference", "difference_ci_low", "difference_ci_high", "p_adjusted", "significant")
    return {"study": name, "parent_run_id": study.user_attrs.get(PARENT_ATTR, ""), "metric": spec.metric,
            "baseline": spec.baseline, "arms": arms, "verdict": report["verdict"],
            "labels": {a.name: a.label for a in spec.parsed_arms()},
            "comparisons": [{k: c.get(k) for k in keys} for c in report["comparisons"]]}
