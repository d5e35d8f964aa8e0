"""Read-only progress of A/B studies for the live dashboard.

Opens the Optuna storage without creating tables or upgrading its schema, and
reads trials only: never a trial, attribute or study is written.

- :func:`list_studies`: the A/B studies in a storage;
- :func:`study_progress`: trials done / running / failed per arm, and the current
  comparison of every arm with the baseline (the same ``analyze`` as the report,
  over the seeds complete in every arm so far). Its bootstrap is the costly part: given a
  ``cache``, it is recomputed only when the set of finished trials changed.
"""
from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from .abtest import SPEC_ATTR, PARENT_ATTR, completed_trials, failed_cells
from .report import analyze
from .spec import StudySpec
from .storage import StorageError, get_storage, psycopg2_url, redact, storage_kind
from .trial import cell_of

__all__ = ["list_studies", "open_read_only", "study_progress"]


def open_read_only(url: str) -> BaseStorage:
    """The storage at ``url``; an RDB one without table creation or schema checks (a reader writes nothing).

    A bare ``postgresql://`` gets the same psycopg2 driver as :func:`get_storage` gives it.

    Raises:
        StorageError: an unsupported URL, a missing driver, or a database that cannot be reached.
    """
    kind = storage_kind(url)
    if kind == "journal":
        return get_storage(url)
    engine = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}} if kind == "postgresql" else {}
    try:
        return optuna.storages.RDBStorage(psycopg2_url(url.strip()), skip_table_creation=True,
                                          skip_compatibility_check=True, engine_kwargs=engine)
    except ImportError:
        raise StorageError(f"--storage {redact(url)!r} needs the PostgreSQL driver: "
                           "pip install 'convopt-mlflow[postgresql]' (psycopg2-binary)") from None
    except Exception as exc:  # sqlalchemy/driver/OS errors: a URL the user can fix
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"cannot open --storage {redact(url)!r}: {redact(detail)}") from None


def list_studies(storage: BaseStorage) -> list[str]:
    """Names of the A/B studies (those with a convopt spec) in ``storage``."""
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    return sorted(s.study_name for s in summaries if SPEC_ATTR in s.user_attrs)


def study_progress(storage: BaseStorage, name: str, *, cache: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per-arm trial counts and the current comparison with the baseline (JSON-able).

    ``cache``: a dict the caller keeps between polls; it holds each study's last analysis
    with the finished trials it was computed from (arm, seed, run, value, metrics), and is
    reused while they are the same.

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
    failed = [f.__dict__ for f in failed_cells(study, spec)]
    finished = tuple(sorted((r["arm"], r["seed"], r["run_id"], repr(r["value"]), repr(sorted(r["metrics"].items())),
                             r["no_edge"]) for r in records))
    finished += tuple(sorted(repr(sorted(f.items())) for f in failed))
    if cache is not None and name in cache and cache[name][0] == finished:
        report = cache[name][1]
    else:
        report = analyze(records, arms=spec.arms, metric=spec.metric, alpha=spec.alpha,
                         planned_cells=len(spec.cells), failed=failed, on_failure=spec.on_failure)
        if cache is not None:
            cache[name] = (finished, report)
    keys = ("arm", "mean_difference", "difference_ci_low", "difference_ci_high", "p_adjusted", "significant")
    return {"study": name, "parent_run_id": study.user_attrs.get(PARENT_ATTR, ""), "metric": spec.metric,
            "baseline": spec.baseline, "arms": arms, "verdict": report["verdict"],
            "labels": {a.name: a.label for a in spec.parsed_arms()},
            "comparisons": [{k: c.get(k) for k in keys} for c in report["comparisons"]]}
