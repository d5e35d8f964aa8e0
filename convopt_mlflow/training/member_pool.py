"""Long-lived worker processes for ensemble members.

:class:`ParallelMembers` runs members on ``workers`` slots. Each slot is a spawned
one-process ``ProcessPoolExecutor`` that lives for the whole ensemble: it imports torch,
SB3 and MLflow once (:func:`warm_worker`) and runs one member after another, so start-up
is paid once per worker, not once per member. A worker keeps the market it built, keyed by
the dataset's digest (see :func:`convopt_mlflow.training.ensemble_member.member_market`).

Failure semantics, per member:

- a member that raises becomes a FAILED outcome; its worker stays up and runs the next one;
- a worker that dies (SIGKILL, out of memory) breaks only its own slot
  (``BrokenProcessPool``): the member it was running becomes a KILLED outcome, the slot is
  rebuilt with a fresh process and the members still pending go on, on every slot.

Slots are separate executors on purpose: one executor with several processes terminates
all of them when one dies, which would lose the members running next to the dead one.

Off the critical path (issue 20: an ensemble of 3 on 2 workers against one member's run):

- :meth:`ParallelMembers.start` spawns the slots and runs their initializer right away, so the
  workers import while the parent is still creating its runs and logging its inputs; the slots that
  will run one member more than the others (:func:`lead_slots`: 1 of 2 for 3 members) also pay what
  their first member would pay and no member decides (:func:`warm_first_member`), so the member
  that frees a slot for the last one ends sooner;
- a slot with nothing left to run is shut down without waiting for its process to exit (a
  worker that ran a member takes seconds to tear down torch and MLflow): its exit overlaps the
  members still training and the parent's own work. Every result is in hand by then;
- ``on_outcome`` lets the parent work on each member as it arrives (the ensemble builds its
  policy and evaluates it on val and test) while the others still train;
- ``while_idle`` runs once, in the parent, as soon as a core is free for it: nothing is pending
  and fewer members run than there are slots (3 members on 2 workers: while the third trains
  alone). The ensemble prepares what its build needs that no member decides (imports, the
  benchmarks' backtests, the run's plotly.js), so only what depends on the last member is left
  for after it;
- :func:`start_members` lets a caller start the workers before it imports torch, SB3 and MLflow
  itself (``convopt train`` does), so the workers' imports overlap the parent's.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable

from ..components.ensemble import MemberOutcome, MemberPlan

KILLED_REASON = "its worker process died (killed by a signal or out of memory)"


def warm_worker(first_member: bool = False) -> None:
    """Executor initializer: one torch thread, and the heavy imports paid once per process, while
    the parent sets up (its imports, data, runs). Members' optimizers are ``EagerAdam``, which does
    not import ``torch._dynamo`` (about 1.2 s of CPU), so nothing builds a torch optimizer here.
    ``first_member``: then :func:`warm_first_member` too (a lead slot, see :func:`lead_slots`)."""
    import convopt_mlflow.tracking  # noqa: F401 - MLflow, imported once per worker through its glue
    import stable_baselines3  # noqa: F401
    import torch

    from . import coordinator  # noqa: F401

    torch.set_num_threads(1)
    if first_member:
        warm_first_member()


def warm_first_member() -> None:
    """What a worker's first member would pay and no member decides, paid before it arrives (the
    parent is still importing and opening its runs): MLflow's SQLAlchemy store modules (its first run call,
    about 0.7 s), ``mlflow.pyfunc`` (its model) and plotly's first page (its dashboards, equity
    pages and plotly.js). Imports and pure warm-ups only: the store is neither contacted nor created
    here, the parent does that first. Best effort: a warm-up that fails is left to the member, which
    reports its own errors; it never breaks the worker (a raising initializer would kill every member)."""
    from ..tracking.warm import warm_model_logging, warm_tracking_store
    from .reporting import warm_figures

    for warm in (warm_tracking_store, warm_model_logging, warm_figures):
        try:
            warm()
        except Exception:  # noqa: BLE001, S112 - best effort, see above
            continue


class ParallelMembers:
    """``map_fn`` for :meth:`EnsembleLearningFramework.train_ensemble`: members on ``workers``
    long-lived spawned processes; a raise becomes FAILED, a dead worker KILLED (see module doc)."""

    def __init__(self, workers: int, initializer: Callable[[], None] | None = warm_worker,
                 on_outcome: Callable[[MemberOutcome], None] | None = None,
                 while_idle: Callable[[], None] | None = None, lead_slots: int = 0):
        self.workers = max(1, int(workers))
        self.lead_slots = max(0, int(lead_slots))
        """How many slots, the first ones, start with ``initializer(True)`` (:func:`warm_worker` then pays
        the first member's member-independent costs): those that run one member more (:func:`lead_slots`)."""
        self.initializer = initializer
        self.on_outcome = on_outcome
        """Called in this process with each outcome as it arrives, after the freed slot got its next
        member: the parent's own work on a member overlaps the members still training."""
        self.while_idle = while_idle
        """Called once in this process when a slot is free for good while members still run (nothing
        pending, every arrived outcome handled): the parent's work that waits on no member."""
        self.processes_started = 0
        """How many worker processes this map started (``workers``, plus one per dead worker replaced)."""
        self._started: list[ProcessPoolExecutor] = []
        self._context = multiprocessing.get_context("spawn")

    def _slot(self, lead: bool = False) -> ProcessPoolExecutor:
        self.processes_started += 1
        return ProcessPoolExecutor(max_workers=1, mp_context=self._context, initializer=self.initializer,
                                   initargs=(True,) if lead else ())

    def start(self) -> "ParallelMembers":
        """Spawn the ``workers`` slots now; each imports (its initializer) in the background.

        Call :meth:`close` on every path that does not go on to call the map."""
        while len(self._started) < self.workers:
            slot = self._slot(lead=len(self._started) < self.lead_slots)
            slot.submit(_ready)  # a process pool spawns its process on the first submit
            self._started.append(slot)
        return self

    def close(self) -> None:
        """Shut down started slots the map did not take (a run that failed before its members).

        Their processes ran no member, so they are terminated rather than left to finish their imports:
        the interpreter's exit would wait for them (bad input would take seconds more to return)."""
        for slot in self._started:
            processes = list(getattr(slot, "_processes", None) or {})  # the executor's own (private) table
            processes = [slot._processes[pid] for pid in processes]
            slot.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
        self._started = []

    def __call__(self, fn: Callable[[MemberPlan], MemberOutcome], plans: Iterable[MemberPlan]) -> list[MemberOutcome]:
        pending, outcomes = list(plans), []
        slots: list[ProcessPoolExecutor | None] = [None] * min(self.workers, max(1, len(pending)))
        for slot, pool in enumerate(self._started):
            if slot < len(slots):
                slots[slot] = pool
            else:  # more started than members: not needed
                pool.shutdown(wait=False)
        fresh = set(range(len(self._started), len(slots)))  # never started: a lead slot may be among them
        self._started = []
        running: dict[Future, tuple[MemberPlan, int]] = {}
        arrived: list[MemberOutcome] = []
        try:
            while pending or running or arrived:
                busy = {slot for _, slot in running.values()}
                for slot in range(len(slots)):
                    if pending and slot not in busy:
                        if slots[slot] is None:  # a replacement is no lead: its member comes at once
                            slots[slot] = self._slot(lead=slot in fresh and slot < self.lead_slots)
                            fresh.discard(slot)
                        plan = pending.pop(0)
                        running[slots[slot].submit(fn, plan)] = (plan, slot)
                for outcome in arrived:
                    if self.on_outcome is not None:
                        self.on_outcome(outcome)
                arrived = []
                if not running:
                    continue
                if self.while_idle is not None and not pending and len(running) < len(slots):
                    idle, self.while_idle = self.while_idle, None
                    idle()
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    plan, slot = running.pop(future)
                    outcome, broken = _outcome(future, plan)
                    outcomes.append(outcome)
                    arrived.append(outcome)
                    if broken:  # only this slot's process died: replace it, the others go on
                        slots[slot].shutdown(wait=True)
                        slots[slot] = None
                    elif not pending and slots[slot] is not None:  # nothing left for it: let it exit meanwhile
                        slots[slot].shutdown(wait=False)
                        slots[slot] = None
        finally:
            interrupted = bool(running)
            for pool in slots:  # interrupted: don't leave workers behind
                if pool is not None:
                    pool.shutdown(wait=not interrupted, cancel_futures=True)
        return outcomes


def member_workers(ensemble_size: int, configured: int = 0) -> int:
    """How many worker processes an ensemble of ``ensemble_size`` runs on: ``ensemble.workers``
    (``configured``), or the machine's CPU count when 0, never more than the members."""
    return max(1, min(configured or os.cpu_count() or 1, ensemble_size))


def lead_slots(members: int, workers: int) -> int:
    """How many of ``workers`` slots run one member more than the others: ``members % workers``.

    The ensemble ends after their last member, so only they pay their first member's member-independent
    costs at start (:func:`warm_first_member`): 3 members on 2 workers, 1. Before the members start both
    cores are busy (the parent's imports and runs, the workers' imports), so each warm-up there delays
    the parent; one is worth it where it shortens the path to the last member, none where the members
    divide evenly (every slot is then on that path, and warming all delays the parent as much as it saves)."""
    return members % workers if workers > 0 else 0


def start_members(ensemble_size: int, configured: int = 0) -> ParallelMembers:
    """An ensemble's workers, started now (:func:`member_workers` of them, :func:`lead_slots` of them
    lead): hand the result to ``train_ensemble_run(pool=...)``, which closes it on every path. Imports
    only what spawning needs, so a caller that has not imported torch yet overlaps its imports with the workers'."""
    workers = member_workers(ensemble_size, configured)
    return ParallelMembers(workers, lead_slots=lead_slots(ensemble_size, workers)).start()


def _ready() -> None:
    """The first job of a started slot: returns once its initializer has run."""


def _outcome(future: Future, plan: MemberPlan) -> tuple[MemberOutcome, bool]:
    """The member's outcome, and whether its worker process died."""
    try:
        return future.result(), False
    except BrokenProcessPool:
        return MemberOutcome(plan.index, "KILLED", KILLED_REASON), True
    except BaseException as exc:  # the member's run is already ended FAILED by the coordinator
        return MemberOutcome(plan.index, "FAILED", f"{type(exc).__name__}: {exc}"[:2000]), False
