"""The A/B study: a balanced arm x seed grid in Optuna, trained cell by cell by workers.

Optuna is the ledger and the scheduler. The study's ``GridSampler`` declares the grid
(``arm`` x ``seed``) and hands out fresh cells; a cell that must run again (a failed
training, a sequential round) is enqueued explicitly; a trial whose worker died is failed
(by its pid when that worker ran on this host, else by RDB heartbeats: see
:mod:`.liveness`) and re-queued by ``RetryHeartbeatStaleTrialCallback``. No trial is
pruned: pruning biases an A/B comparison. ``MaxTrialsCallback`` keeps the study-wide
budget of one COMPLETE trial per cell, and a trial that finds its cell already held stands
down (:func:`~convopt_mlflow.experiments.trial.duplicate_of`), so no cell trains twice,
even when the study is re-run to resume it.

Example (one worker, sqlite; it trains every cell, so it is shown here rather than run as a
doctest: ``tests/experiments/test_abtest.py`` runs it at a tiny budget):

```python
spec = StudySpec(arms=("baseline", "lr"), seeds=(0, 1))
study = open_study(spec, get_storage(None), "ab-demo")
run_cells(study, spec, parent_run_id)
[r.arm for r in completed_trials(study, spec)]
```
"""
from __future__ import annotations

import logging
import random
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import optuna
from optuna.samplers import GridSampler
from optuna.storages import BaseStorage, fail_stale_trials
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from ..errors import UserError
from .liveness import DEFAULT_WAIT_TIMEOUT_S, RecordsWorker, Wait, describe_holder, fail_dead_trials
from .spec import StudySpec
from .trial import NO_METRIC, DuplicateCell, TrialFailed, TrialRunner, cell_of, seed_is_categorical

SPEC_ATTR = "convopt.spec"
PARENT_ATTR = "convopt.parent_run_id"
#: Seeds per arm of each earlier design of an extended study, oldest first.
EXTENDED_ATTR = "convopt.extended_from_seeds"
#: Failed trainings of one cell before the study gives up on it (stale retries are Optuna's).
MAX_FAILURES_PER_CELL = 2


class StudyNotFound(UserError):
    """``convopt worker`` named a study that no ``convopt ab-test`` has created."""


class WorkerGridSampler(RecordsWorker, GridSampler):
    """The study's grid sampler; each trial records its worker's ``host:pid`` when claimed."""


def _sampler(spec: StudySpec) -> GridSampler:
    return WorkerGridSampler({"arm": list(spec.arms), "seed": list(spec.seeds)}, seed=0)


def open_study(spec: StudySpec, storage: BaseStorage, name: str) -> optuna.Study:
    """Create the study, load it to resume, or extend it with more seeds (:func:`_extend`);
    UserError when it exists with another design."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, sampler=_sampler(spec), direction="maximize",
                                pruner=optuna.pruners.NopPruner(), load_if_exists=True)
    stored = study.user_attrs.get(SPEC_ATTR)
    if stored is None:
        study.set_user_attr(SPEC_ATTR, spec.to_json())
        return study
    previous = StudySpec.from_json(stored)
    if spec.extends(previous):
        return _extend(study, spec, previous, name)
    diffs = spec.differences(previous)
    if diffs:
        raise UserError(f"study {name!r} already exists with another design ({'; '.join(diffs)}); "
                        f"re-run it with the same arguments to resume, or choose another --study")
    return study


def _extend(study: optuna.Study, spec: StudySpec, previous: StudySpec, name: str) -> optuna.Study:
    """More seeds for the same arms, budget, data and metric: only the new cells will train.

    A fixed-sample study extended is a new fixed-sample analysis over all its seeds (the
    report says how many). A sequential study is refused: its alpha spending was planned
    for the looks of its seed count, and more looks would spend alpha it does not have.
    """
    if previous.sequential:
        raise UserError(f"study {name!r} is sequential: its alpha spending was planned for looks at "
                        f"{', '.join(map(str, previous.looks()))} seeds, so it cannot take more seeds; "
                        f"start a new --study with --seeds {len(spec.seeds)}")
    if seed_is_categorical(study):
        raise UserError(f"study {name!r} was made by an earlier convopt, whose seeds cannot be added to; "
                        f"start a new --study with --seeds {len(spec.seeds)}")
    history = list(study.user_attrs.get(EXTENDED_ATTR, [])) + [len(previous.seeds)]
    study.set_user_attr(SPEC_ATTR, spec.to_json())
    study.set_user_attr(EXTENDED_ATTR, history)
    return study


def load_study(storage: BaseStorage, name: str) -> tuple[optuna.Study, StudySpec, str]:
    """An existing study with its spec and parent run id, for ``convopt worker``."""
    try:
        summaries = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    except Exception as exc:
        raise UserError(f"cannot read studies from the storage: {exc}") from None
    if name not in summaries or SPEC_ATTR not in summaries[name].user_attrs:
        known = ", ".join(sorted(summaries)) or "none"
        raise StudyNotFound(f"no A/B study {name!r} in this storage (studies: {known}); "
                            f"create it with `convopt ab-test --study {name} ...`")
    spec = StudySpec.from_json(summaries[name].user_attrs[SPEC_ATTR])
    study = optuna.load_study(study_name=name, storage=storage, sampler=_sampler(spec),
                              pruner=optuna.pruners.NopPruner())
    return study, spec, study.user_attrs.get(PARENT_ATTR, "")


@dataclass
class Ledger:
    """Trials of the study by cell: what is done, running, waiting, or given up."""

    complete: dict[tuple[str, int], optuna.trial.FrozenTrial] = field(default_factory=dict)
    busy: set[tuple[str, int]] = field(default_factory=set)
    holders: dict[tuple[str, int], optuna.trial.FrozenTrial] = field(default_factory=dict)
    """The RUNNING trial of each busy cell (what a waiting worker names)."""
    waiting: set[tuple[str, int]] = field(default_factory=set)
    touched: set[tuple[str, int]] = field(default_factory=set)
    failures: dict[tuple[str, int], int] = field(default_factory=dict)
    reasons: dict[tuple[str, int], str] = field(default_factory=dict)
    """The latest failure's reason, per cell."""
    final: set[tuple[str, int]] = field(default_factory=set)
    """Cells whose failure a retry would repeat: no decision metric (``NO_METRIC``). Training the same
    deterministic seed again gives the same run, so such a cell is given up after one try."""
    ungridded: bool = False
    """Some trial was enqueued rather than drawn by GridSampler, which then can't see its cell."""

    @classmethod
    def of(cls, study: optuna.Study) -> "Ledger":
        ledger = cls()
        for trial in study.get_trials(deepcopy=False):
            cell = cell_of(trial)
            if cell is None:
                continue
            ledger.touched.add(cell)
            ledger.ungridded |= "grid_id" not in trial.system_attrs
            if trial.state == TrialState.COMPLETE:
                ledger.complete.setdefault(cell, trial)  # the first COMPLETE trial is the cell's result
            elif trial.state in (TrialState.RUNNING, TrialState.WAITING):
                ledger.busy.add(cell)
                if trial.state == TrialState.RUNNING:
                    ledger.holders[cell] = trial
                if trial.state == TrialState.WAITING:
                    ledger.waiting.add(cell)
            elif trial.state == TrialState.FAIL and (reason := _failure(trial)) is not None:
                ledger.failures[cell] = ledger.failures.get(cell, 0) + 1
                ledger.reasons[cell] = reason
                if _no_metric(trial):
                    ledger.final.add(cell)
        return ledger

    def given_up(self, cell: tuple[str, int]) -> bool:
        return cell not in self.complete and (
            cell in self.final or self.failures.get(cell, 0) >= MAX_FAILURES_PER_CELL)


def _no_metric(trial: optuna.trial.FrozenTrial) -> bool:
    """The run FINISHED without the decision metric (older studies: FINISHED, metrics stored, trial FAIL)."""
    status = trial.user_attrs.get("convopt.status")
    return status == NO_METRIC or (status == "FINISHED" and "metrics" in trial.user_attrs)


def _failure(trial: optuna.trial.FrozenTrial) -> str | None:
    """Why a FAIL trial's training failed; None for a stand-down or a stale trial (Optuna retries those)."""
    if trial.user_attrs.get("convopt.status") == "FAILED" or _no_metric(trial):
        return str(trial.user_attrs.get("convopt.failure_reason") or trial.user_attrs.get("convopt.status"))
    return None


def run_cells(study: optuna.Study, spec: StudySpec, parent_run_id: str, *, seeds: Sequence[int] | None = None,
              checkpoint_root: str | None = None, poll_s: float = 1.0,
              wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S, wait_for_others: bool = True,
              idle: Callable[[float], object] = time.sleep) -> Ledger:
    """Train the study's cells (those of ``seeds``, default all) until each is COMPLETE or given up.

    Safe to run in any number of processes on one study. Before each claim it fails the
    trials of dead workers (by pid on this host, by heartbeat on RDB storages) so that their
    cells are retried. While every open cell is held by another worker it waits, naming the
    trials it waits for on stderr, and raises
    :class:`~convopt_mlflow.experiments.liveness.WaitTimeout` after ``wait_timeout_s``;
    with ``wait_for_others=False`` it returns instead (a worker whose caller waits for them).
    ``idle(seconds)`` is its pause between two looks (a caller may end it early).
    """
    scope = [c for c in spec.cells if seeds is None or c[1] in set(seeds)]
    runner = TrialRunner(spec, parent_run_id, study.study_name, checkpoint_root)
    budget = MaxTrialsCallback(len(spec.cells), states=(TrialState.COMPLETE,))
    rng = random.Random()
    wait = Wait(timeout_s=wait_timeout_s, what="cell(s)")
    logging.getLogger("optuna").setLevel(logging.WARNING)
    # GridSampler ignores trials drawn from an earlier, smaller grid and could hand out a done cell
    extended = EXTENDED_ATTR in study.user_attrs
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)  # heartbeat stale (RDB): failed and re-queued
        fail_dead_trials(study)  # its worker's process is gone from this host: failed and re-queued
        ledger = Ledger.of(study)
        todo = [c for c in scope if c not in ledger.complete and not ledger.given_up(c)]
        if not todo:
            return ledger
        free = [c for c in todo if c not in ledger.busy]
        if not free and not ledger.waiting.intersection(todo):  # other workers hold every open cell
            if not wait_for_others:
                return ledger
            wait.check([f"({arm}, seed {seed}) " + (describe_holder(ledger.holders[(arm, seed)])
                                                    if (arm, seed) in ledger.holders else "queued")
                        for arm, seed in todo])
            idle(poll_s * (0.5 + rng.random()))
            continue
        wait.reset()
        if ledger.waiting.intersection(todo):
            pass  # optimize() runs the waiting trial first (a retried or enqueued cell)
        elif len(scope) < len(spec.cells) or ledger.ungridded or ledger.touched.intersection(free) or extended:
            study.enqueue_trial({"arm": (cell := rng.choice(free))[0], "seed": cell[1]})
        # else: only fresh cells of the full grid are open, and GridSampler picks one
        study.optimize(runner, n_trials=1, catch=(TrialFailed, DuplicateCell), callbacks=[budget],
                       gc_after_trial=False)


@dataclass(frozen=True)
class TrialRecord:
    """The COMPLETE trial of one cell."""

    arm: str
    seed: int
    number: int
    run_id: str
    value: float
    metrics: dict
    no_edge: bool


def completed_trials(study: optuna.Study, spec: StudySpec) -> list[TrialRecord]:
    """One record per COMPLETE cell, in the spec's cell order."""
    ledger = Ledger.of(study)
    return [TrialRecord(arm, seed, t.number, t.user_attrs.get("mlflow_run_id", ""), float(t.value),
                        dict(t.user_attrs.get("metrics", {})), bool(t.user_attrs.get("no_edge", False)))
            for (arm, seed) in spec.cells if (t := ledger.complete.get((arm, seed))) is not None]


@dataclass(frozen=True)
class FailedCell:
    """A cell the study gave up on: a failed seed is an outcome of its arm, never a missing value."""

    arm: str
    seed: int
    reason: str
    attempts: int


def failed_cells(study: optuna.Study, spec: StudySpec) -> list[FailedCell]:
    """One record per given-up cell, in the spec's cell order."""
    ledger = Ledger.of(study)
    return [FailedCell(arm, seed, ledger.reasons.get((arm, seed), "failed"), ledger.failures.get((arm, seed), 0))
            for (arm, seed) in spec.cells if ledger.given_up((arm, seed))]


def cell_counts(study: optuna.Study) -> dict[tuple[str, int], dict[str, int]]:
    """For each cell, how many trials ended in each state (a test's view of "trained once")."""
    counts: dict[tuple[str, int], dict[str, int]] = {}
    for trial in study.get_trials(deepcopy=False):
        cell = cell_of(trial)
        if cell is not None:
            by_state = counts.setdefault(cell, {})
            by_state[trial.state.name] = by_state.get(trial.state.name, 0) + 1
    return counts
