"""The worker side of an ensemble (:mod:`.ensemble`): one member's full convopt training run, in a
long-lived worker process (:mod:`.member_pool`), into the child run the ensemble created for it.

Test hook: ``CONVOPT_ENSEMBLE_FAULTS="1:kill,2:raise"`` makes member 1 SIGKILL its own worker and
member 2 raise, each after its first rollout.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Mapping

from .. import config as cfgmod
from ..components.ensemble import MemberOutcome, MemberPlan
from .market import Market, shared_market

FAULTS_ENV = "CONVOPT_ENSEMBLE_FAULTS"


@dataclass(frozen=True)
class MemberTask:
    """What a worker process needs to train one member (picklable)."""

    config_json: str
    run_id: str
    preset: str
    tags: Mapping[str, str]
    checkpoint_root: str | None
    data_digest: str = ""
    """The digest of the market the ensemble run loaded: the worker's cache key."""


#: This worker process's markets: ``(data digest, what the market is built from) -> Market``.
def member_market(cfg: cfgmod.OptimizedTrainingConfig, digest: str) -> tuple[Market, bool]:
    """The member's market, from this worker's cache when one with ``digest`` was built here
    from the same data and env settings; ``(market, hit)``. Members share their data settings,
    so a worker generates and featurizes the market once (:func:`.setup.shared_market`)."""
    return shared_market(cfg, digest)


def _faults(index: int) -> list[Any]:
    from .member_callbacks import Fault

    for item in os.environ.get(FAULTS_ENV, "").split(","):
        who, _, action = item.partition(":")
        if who.strip() == str(index) and action.strip() in ("kill", "raise"):
            return [Fault(action.strip())]
    return []


def train_member(tasks: Mapping[int, MemberTask], plan: MemberPlan) -> MemberOutcome:
    """Runs in a worker process: one full convopt training run into the member's child run."""
    import torch

    from ..tracking import policy_spec
    from .coordinator import train
    from .member_callbacks import KeepModel

    torch.set_num_threads(1)
    task = tasks[plan.index]
    cfg = cfgmod.from_dict(json.loads(task.config_json))
    market, hit = member_market(cfg, task.data_digest)
    tags = {**task.tags, "convopt.worker.pid": str(os.getpid()), "convopt.worker.market_cache": "hit" if hit else "miss"}
    keep = KeepModel()
    result = train(cfg, preset=task.preset, run_id=task.run_id, tags=tags, market=market,
                   extra_callbacks=[keep, *_faults(plan.index)], checkpoint_root=task.checkpoint_root)
    if result.status != "FINISHED":
        return MemberOutcome(plan.index, result.status, result.reason)
    weights = {k: v.detach().cpu().numpy() for k, v in keep.model.policy.state_dict().items()}
    payload = {"run_id": task.run_id, "weights": weights, "spec": policy_spec(keep.model), "metrics": result.metrics}
    return MemberOutcome(plan.index, "FINISHED", "", payload)
