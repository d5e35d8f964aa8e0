"""``convopt ab-test`` end to end: validate, open the study and the parent run, train, report.

Every user mistake (unknown arm, bad storage URL, sqlite with several workers, bad data)
is raised as a UserError before a study or run exists. Once the parent run is open, every
exit path ends it: FINISHED, FAILED on an exception, KILLED on Ctrl-C.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import UserError
from . import render
from .abtest import EXTENDED_ATTR, PARENT_ATTR, Ledger, completed_trials, failed_cells, open_study, run_cells
from .liveness import DEFAULT_WAIT_TIMEOUT_S, WaitTimeout
from .registration import Registration, register_winner
from .report import Winner, analyze, headline_metrics, sequential_look, winner_of
from .spec import DEFAULT_METRIC, StudySpec
from .storage import get_storage, redact, storage_kind
from .trial import PNL_ARTIFACT
from .worker import ab_worker, run_local_workers


@dataclass(frozen=True)
class ABResult:
    """What one ``ab-test`` invocation produced; ``winner`` is the registration hook's input."""

    parent_run_id: str
    study_name: str
    report: dict[str, Any]
    records: list[dict[str, Any]]
    winner: Winner | None
    registration: Registration | None = None


def parent_run_name(study_name: str) -> str:
    """``ab-<study>``; a study already named ``ab-...`` (the default) is not prefixed twice."""
    return study_name if study_name.startswith("ab-") else f"ab-{study_name}"


def validate(spec: StudySpec, storage: str | None, workers: int) -> None:
    """Every check that needs no study and no run: arms, workers, storage URL, and the data."""
    from ..training.setup import load_market

    arms = spec.parsed_arms()
    if workers < 1:
        raise UserError(f"--workers must be at least 1; got {workers}")
    if storage_kind(storage) == "sqlite" and workers > 1:
        get_storage(storage, workers=workers)  # raises the message naming the alternatives
    load_market(arms[0].config(spec.common, spec.seeds[0]))  # bad data: exit 2, nothing written


def run_ab_test(spec: StudySpec, *, study_name: str, storage: str | None = None, workers: int = 1,
                experiment: str | None = None, heartbeat_interval: int = 30,
                checkpoint_root: str | None = None, console: bool = True,
                registry_name: str | None = "convopt-ensemble",
                wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S) -> ABResult:
    """Run (or resume) the study and log its report on the parent run.

    With ``registry_name`` (None: don't register), a significant, registrable winner is
    registered as a new version of that model under the alias ``challenger``; the parent
    run records ``convopt.registered_version`` or ``convopt.registration_skipped``.
    """
    from ..tracking import end_run_if_running, open_run

    validate(spec, storage, workers)
    optuna_storage = get_storage(storage, workers=workers, heartbeat_interval=heartbeat_interval)
    study = open_study(spec, optuna_storage, study_name)
    parent_id = os.environ.get("MLFLOW_RUN_ID") or study.user_attrs.get(PARENT_ATTR) or None
    parent = open_run(experiment=experiment or None, run_id=parent_id, run_name=parent_run_name(study_name),
                      tags={"convopt.role": "ab-parent", "convopt.study": study_name,
                            "convopt.arms": ",".join(spec.arms), "convopt.baseline": spec.baseline,
                            "convopt.ab.on_failure": spec.on_failure})
    study.set_user_attr(PARENT_ATTR, parent.run_id)
    extended = _note_extension(study, spec, parent, console)
    try:
        parent.log_params({"arms": ",".join(spec.arms), "seeds": extended or len(spec.seeds), "metric": spec.metric,
                           "alpha": spec.alpha, "sequential": spec.sequential, "on_failure": spec.on_failure,
                           "study": study_name,
                           "storage": redact(storage or "sqlite:///optuna.db"), "workers": workers,
                           **{f"common.{k}": v for k, v in spec.common.items()}})
        sequential = _train(study, spec, parent.run_id, study_name, storage, workers,
                            (heartbeat_interval, wait_timeout_s), checkpoint_root)
        result = _report(study, spec, parent, study_name, sequential, console)
        if registry_name:
            registration = register_winner(result.winner, parent_run_id=parent.run_id, study=study_name,
                                           verdict=result.report["verdict"], registry_name=registry_name)
        else:
            registration = Registration(None, "registration disabled (--no-register)")
        parent.set_tags(registration.run_tags())
        if registration.metrics:
            parent.log_metrics(dict(registration.metrics), step=0)
        if registration.decision:
            parent.log_dict(dict(registration.decision), "ab/winner_ensemble.json")
        result = dataclasses.replace(result, registration=registration)
    except BaseException as exc:
        parent.set_tags({"convopt.failure_reason": f"{type(exc).__name__}: {exc}"[:5000]})
        end_run_if_running(parent.run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    parent.end("FINISHED")
    return result


def _note_extension(study, spec: StudySpec, parent, console: bool) -> int | None:
    """Tag (and say) that the study was extended; returns the seed count of its first design
    (the parent's immutable ``seeds`` param), None when never extended."""
    import sys

    history = study.user_attrs.get(EXTENDED_ATTR)
    if not history:
        return None
    parent.set_tags({"convopt.ab.seeds": str(len(spec.seeds)),
                     "convopt.ab.extended_from_seeds": ",".join(map(str, history))})
    if console:
        print(f"convopt: study {study.study_name} extended from {history[-1]} to {len(spec.seeds)} seeds per arm: "
              f"only cells without a result train; the report is a new fixed-sample analysis over all seeds",
              file=sys.stderr)
    return int(history[0])


def _train_round(study, spec, parent_id, study_name, storage, workers, timing, ckpt, seeds):
    heartbeat, wait_timeout_s = timing
    if workers == 1:
        run_cells(study, spec, parent_id, seeds=seeds, checkpoint_root=ckpt, wait_timeout_s=wait_timeout_s)
        return

    def here(idle) -> int:  # this process is one of the workers: it trains while the others start
        try:
            run_cells(study, spec, parent_id, seeds=seeds, checkpoint_root=ckpt, wait_timeout_s=wait_timeout_s,
                      idle=idle)
        except WaitTimeout as exc:
            print(f"convopt worker: error: {exc}", file=sys.stderr)
            return exc.exit_code
        return 0

    target, args = ab_worker(study_name, storage, workers, seeds=seeds, heartbeat_interval=heartbeat,
                             checkpoint_root=ckpt, wait_timeout_s=wait_timeout_s)
    codes = run_local_workers(workers, target, args, in_process=here)
    scope = [c for c in spec.cells if seeds is None or c[1] in set(seeds)]
    ledger = Ledger.of(study)
    if any(codes) and any(c not in ledger.complete and not ledger.given_up(c) for c in scope):
        # a worker that gave up waiting (exit 3) is harmless when its siblings finished the cells
        raise RuntimeError(f"worker processes exited with codes {codes}")


def _train(study, spec: StudySpec, parent_id: str, study_name: str, storage, workers: int,
           timing: tuple[int, float], ckpt) -> dict[str, Any] | None:
    """Train every cell, or, with ``--sequential``, round by round until the evidence is decisive.

    A sequential comparison's decision is final once it is not ``continue``: an interim
    rejection (or futility stop) is never revisited at a later look (:func:`.report.sequential_look`).
    """
    if not spec.sequential:
        _train_round(study, spec, parent_id, study_name, storage, workers, timing, ckpt, None)
        return None
    looks, others = spec.looks(), [a for a in spec.arms if a != spec.baseline]
    alpha_each = spec.alpha / len(others)  # Bonferroni across the arms compared with the baseline
    rounds, decided = [], {}
    for k, n in enumerate(looks):
        _train_round(study, spec, parent_id, study_name, storage, workers, timing, ckpt, spec.seeds[:n])
        scope = set(spec.seeds[:n])
        records = [r.__dict__ for r in completed_trials(study, spec) if r.seed in scope]
        failed = [f.__dict__ for f in failed_cells(study, spec) if f.seed in scope]
        decided = sequential_look(decided, records, failed, arms=spec.arms, looks=looks, n=n, alpha=alpha_each,
                                  rule=spec.on_failure)
        rounds.append({"look": k + 1, "seeds": n,
                       "decisions": {a: decided[a]["decision"] if a in decided else "continue" for a in others}})
        if len(decided) == len(others):
            break
    for arm in others:  # failed cells left too few pairs for the last look: not significant
        decided.setdefault(arm, {"decision": "accept", "look": len(rounds), "n": 0, "z": float("nan"),
                                 "boundary": float("nan")})
    planned = len(spec.cells)
    ran = len(completed_trials(study, spec)) + len(failed_cells(study, spec))
    return {"looks": list(looks), "alpha_per_comparison": alpha_each, "rounds": rounds, "decisions": decided,
            "trials_planned": planned, "trials_run": ran, "compute_saved": 1.0 - ran / planned}


def _report(study, spec: StudySpec, parent, study_name: str, sequential, console: bool) -> ABResult:
    from ..evaluation.figures import shared_plotly_loader
    from ..tracking import metric_history, read_json_artifact
    from ..tracking.html import log_plotly_bundle

    records = [r.__dict__ for r in completed_trials(study, spec)]
    failed = [f.__dict__ for f in failed_cells(study, spec)]
    pnl = {}
    for r in records:
        data = read_json_artifact(r["run_id"], PNL_ARTIFACT, client=parent.client)
        if data:
            pnl[r["run_id"]] = np.asarray(data["net_log_pnl"], dtype=float)
    curves = {r["run_id"]: metric_history(r["run_id"], "eval/score", client=parent.client) for r in records}
    report = analyze(records, arms=spec.arms, metric=spec.metric, alpha=spec.alpha, planned_cells=len(spec.cells),
                     pnl=pnl, sequential=sequential, failed=failed, on_failure=spec.on_failure)
    winner = winner_of(report, records)
    report["study"] = study_name
    report["trials"] = [{k: r[k] for k in ("arm", "seed", "number", "run_id", "value", "no_edge")} for r in records]
    report["winner_evidence"] = winner.evidence if winner else None
    title = f"A/B study {study_name}: {', '.join(spec.arms)}"
    keys = {a.name: a.key for a in spec.parsed_arms()}
    parent.log_metrics(headline_metrics(report, keys), step=0)
    parent.log_dict(report, "ab/report.json")
    parent.log_text(render.markdown(report, title), "ab/report.md")
    log_plotly_bundle(parent)
    loader = shared_plotly_loader(parent.run_id, "ab/report.html")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(render.html(report, records, curves, title, plotly_loader=loader), encoding="utf-8")
        parent.log_artifact(page, "ab")
    parent.set_tags({"convopt.ab.verdict": report["verdict"], "convopt.ab.winner": report.get("winner") or ""})
    if console:
        render.console_table(report, title)
    return ABResult(parent.run_id, study_name, report, records, winner)


def spec_from_args(arms: str, seeds: int, *, total_timesteps: Any = None, data: str | None = None,
                   metric: str | None = None, alpha: float = 0.05, sequential: bool = False,
                   overrides: Mapping[str, str] | None = None, on_failure: str = "refuse",
                   first_seed: Any = 0) -> StudySpec:
    """The study's design from CLI-style arguments (budget and data become shared overrides).

    The seeds are ``first_seed, first_seed + 1, ...``: a study re-testing a tuned config
    starts after the tuner's seeds, so that no seed replays a trial the tuner selected on."""
    from .arms import parse_arms

    common = dict(overrides or {})
    if data:
        common["data.source"] = str(data)
    if total_timesteps not in (None, ""):
        common["run.total_timesteps"] = str(int(float(total_timesteps)))
    names = tuple(a.name for a in parse_arms(arms))
    try:
        n = int(float(seeds))
    except ValueError:
        raise UserError(f"--seeds must be a whole number of seeds per arm; got {seeds!r}") from None
    try:
        first = int(float(first_seed))
    except (TypeError, ValueError):
        raise UserError(f"--first-seed must be a whole number; got {first_seed!r}") from None
    if first < 0 or float(first_seed) != first:
        raise UserError(f"--first-seed must be a non-negative whole number; got {first_seed!r}")
    return StudySpec(arms=names, seeds=tuple(range(first, first + n)), common=common, metric=metric or DEFAULT_METRIC,
                     alpha=float(alpha), sequential=sequential,
                     on_failure=on_failure)
