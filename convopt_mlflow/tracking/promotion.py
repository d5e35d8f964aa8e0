"""``convopt promote``: move the ``champion`` alias to the challenger only on evidence.

1. Read the challenger version and the current champion (``v0``, maybe none).
2. Re-walk both with the verified loader (:func:`~convopt_mlflow.tracking.registry.load_model`)
   over the holdout split (``split="test"`` on request) of the data recorded on the
   challenger's runs, and compute per-bar net log returns; decide with
   :func:`~convopt_mlflow.evaluation.promotion.decide_promotion`. Before any of that, the
   bars are checked against the split boundaries recorded on both models' source runs
   (:func:`~convopt_mlflow.tracking.splits.check_promotion_bars`): bars either model trained
   or was selected on are refused (exit 2); bars an A/B verdict already used are recorded
   as ``convopt.promotion.bars_reused=true``.
3. Write the evidence to the challenger version's tags (``convopt.promotion.*``).
4. Compare-and-set: claim the move by creating the registered model
   ``<name>.promotion-lock`` (MLflow refuses a second one atomically, in one SQL insert),
   re-read the champion, refuse if it is no longer ``v0``, move the alias, drop the lock.
   Of two concurrent promotions exactly one moves the alias; the other raises
   :class:`PromotionConflict` naming what changed (old version -> new version).

The lock is the one every alias move takes (:mod:`.locks`; ``challenger`` moves under it
too). A lock left behind by a process killed between claim and release is taken over when
its holder is dead (same host, pid gone), and the takeover is recorded on the version and
the run (``convopt.promotion.lock_takeover``); a lock held on another host is not taken
over automatically, and the refusal names it and says how to remove it.

A challenger without an edge over flat is refused before any comparison: its version tag
``convopt.no_edge``, or, for a version registered without that tag, its source runs'.
A registry read that fails (a timeout, a 403) is an error (exit 2), never "no champion".

Every attempt that gets as far as comparing is also an MLflow run (``convopt.role=promotion``;
under ``mlflow run -e promote`` the project's run): params name the model, both versions,
alpha and the data; metrics ``promotion/*`` hold the test's numbers; tags repeat the
evidence written on the version, with the final ``convopt.promotion.decision``
(``promoted``, ``refuse`` on the evidence, ``refused`` on a compare-and-set conflict). The
run ends FINISHED when the evidence decided, FAILED on a conflict (exit 1) or an error.
Bad input (no such model, alias or version; the challenger is already champion or has no
edge) is refused before any run exists.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from mlflow.tracking import MlflowClient

from convopt_mlflow.errors import UserError
from convopt_mlflow.evaluation.promotion import PromotionDecision, decide_promotion
from convopt_mlflow.tracking.locks import Claim, Held, release, try_claim
from convopt_mlflow.tracking.registration import (
    NO_EDGE_TAG,
    alias_version,
    get_version,
    no_edge_of_runs,
    set_alias,
    set_version_tags,
)

__all__ = ["CHAMPION", "PromotionConflict", "PromotionOutcome", "promote", "walk_test_returns"]

CHAMPION = "champion"
BARRIER_ENV = "CONVOPT_PROMOTE_BARRIER"
"""Test hook: a file path; promote announces ``<path>.ready.<pid>`` and waits for ``<path>``
before its final re-read, so that a test can line two promotions up deterministically."""
_CONFLICT_WAIT_S = 30.0


class PromotionConflict(UserError):
    """The champion changed (or is being changed) while this promotion compared; exit 1."""

    exit_code = 1


@dataclass(frozen=True)
class PromotionOutcome:
    name: str
    challenger: str
    previous_champion: str | None
    decision: PromotionDecision
    data_source: str
    run_id: str = ""
    """The ``convopt.role=promotion`` run that recorded this attempt."""
    split: str = "holdout"
    bars_reused: bool = False
    """The bars were already used by an A/B verdict (``convopt.promotion.bars_reused``)."""


def _source_runs(version) -> list[str]:
    return [r for r in version.tags.get("convopt.source_runs", "").split(",") if r] or [version.run_id]


def _no_edge(version, client: MlflowClient) -> bool:
    """The version's ``convopt.no_edge`` tag; without one, whether any source run has no edge."""
    if NO_EDGE_TAG in version.tags:
        return version.tags[NO_EDGE_TAG] == "true"
    return no_edge_of_runs(_source_runs(version), client)


def _market(version, data: str | None, load_market: Callable[[Any], Any]):
    """The market of the challenger's runs (config of its first source run), or ``data``'s bars with its splits.

    ``load_market`` (config -> market) is the training layer's, passed in by the caller: tracking
    never imports upward."""
    from convopt_mlflow import config as cfgmod
    from convopt_mlflow.tracking.runs import get_run_config

    cfg = cfgmod.from_dict(get_run_config(_source_runs(version)[0]))
    if data:
        cfg = cfgmod.apply_values(cfg, {"data.source": data})
    return cfg, load_market(cfg)


def walk_test_returns(model_uri: str, market, *, cost_bps: float, split: str = "holdout") -> np.ndarray:
    """Per-bar net log returns ``(bars,)`` of the verified model walked over the market's ``split``.

    The model sees bars from just early enough that its first decision is the split's first
    bar (it starts flat there, as the training backtest does); its positions at test bars
    ``start .. stop - 2`` earn the next bar's log return, net of ``cost_bps`` per unit traded.
    """
    from convopt_mlflow.evaluation import net_log_pnl
    from convopt_mlflow.tracking.registry import load_model

    model = load_model(model_uri)
    frame = market.bars.frame
    start, stop = getattr(market.splits, split)
    # The first decidable row depends only on the model's warm-up and window, not on where the input starts.
    ready = np.flatnonzero(model.predict(frame.iloc[: min(len(frame), 4096)])["ready"].to_numpy())
    if ready.size == 0:
        raise UserError(f"model {model_uri} needs more than 4096 bars of warm-up; cannot walk {market.bars.source}")
    first_ready = int(ready[0])
    lo = max(0, start - first_ready)
    walked = model.predict(frame.iloc[lo:stop])
    positions = walked["position"].to_numpy(dtype=float)[start - lo: stop - 1 - lo]
    if not walked["ready"].to_numpy()[start - lo: stop - 1 - lo].all():
        raise UserError(f"model {model_uri} cannot decide every {split} bar of {market.bars.source}")
    bars = np.arange(start, stop - 1)
    return net_log_pnl(positions, market.features.log_returns[bars + 1], cost_bps=cost_bps)


def buy_and_hold_returns(market, *, cost_bps: float, split: str = "holdout") -> np.ndarray:
    from convopt_mlflow.evaluation import net_log_pnl

    start, stop = getattr(market.splits, split)
    returns = market.features.log_returns[np.arange(start, stop - 1) + 1]
    return net_log_pnl(np.ones_like(returns), returns, cost_bps=cost_bps)


def promote(name: str, *, load_market: Callable[[Any], Any], alpha: float = 0.05, data: str | None = None, challenger: str = "challenger",
            client: MlflowClient | None = None, experiment: str | None = None,
            split: str = "holdout") -> PromotionOutcome:
    """Compare ``challenger`` (alias or version) with ``champion`` and move ``champion`` on evidence.

    ``load_market`` builds the market (bars, features, splits) from a run's config; the CLI passes
    ``training.setup.load_market``. ``split`` is what both are judged on: ``holdout`` (default), or ``test``, the bars the
    A/B verdict already used (then recorded as ``convopt.promotion.bars_reused=true``).

    The attempt is recorded as a ``convopt.role=promotion`` run in ``experiment`` (None: the
    default, or the ``mlflow run`` project's run), whatever the outcome.

    Raises:
        ModelNotFoundError: no such registered model, alias or version (exit 2).
        UserError: the bars overlap either model's train or validation split, or a source
            run recorded no split boundaries (exit 2).
        PromotionConflict: the champion changed since the comparison started (exit 1).
    """
    from convopt_mlflow.tracking.ab import end_run_if_running
    from convopt_mlflow.tracking.runs import open_run

    client = client or MlflowClient()
    version = get_version(name, challenger, client)
    v = str(version.version)
    champion_v0 = alias_version(name, CHAMPION, client)
    if champion_v0 == v:
        raise UserError(f"version {v} of {name!r} is already the champion; nothing to compare")
    if _no_edge(version, client):
        raise UserError(f"version {v} of {name!r} found no edge over flat (convopt.no_edge); it is never promoted")
    cfg, market = _market(version, data, load_market)
    checked = _checked_bars(client, name, version, champion_v0, market, split)  # refused here: no run yet
    run = open_run(experiment=experiment, run_id=os.environ.get("MLFLOW_RUN_ID") or None, client=client,
                   run_name=f"promotion-{name}-v{v}",
                   tags={"convopt.role": "promotion", "convopt.registered_model": name,
                         "convopt.promotion.challenger": v, "convopt.promotion.previous_champion": champion_v0 or "none"})
    try:
        run.log_params({"registry_name": name, "challenger": v, "champion": champion_v0 or "none", "alpha": alpha,
                        "data": market.bars.source, "split": checked[0].split})
        outcome = _compare(client, name, v, champion_v0, cfg, market, alpha, run, checked)
    except PromotionConflict as exc:
        run.set_tags({"convopt.promotion.decision": "refused", "convopt.promotion.refusal": str(exc)})
        run.end("FAILED")
        raise
    except BaseException as exc:
        run.set_tags({"convopt.failure_reason": f"{type(exc).__name__}: {exc}"[:5000]})
        end_run_if_running(run.run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED", client=client)
        raise
    run.set_tags({"convopt.promotion.decision": "promoted" if outcome.decision.promote else outcome.decision.decision})
    run.end("FINISHED")
    return outcome


def _checked_bars(client: MlflowClient, name: str, version, champion_v0: str | None, market, split: str):
    """The bars to judge on, refused (exit 2) where either model trained or was selected on them."""
    from convopt_mlflow.tracking.splits import check_promotion_bars

    versions = {f"version {version.version}": version}
    if champion_v0:
        versions[f"champion version {champion_v0}"] = get_version(name, champion_v0, client)
    bars, check = check_promotion_bars(market, split, versions, client)
    if check.conflicts:
        raise UserError(f"refusing to promote on the {split} split of {market.bars.source}: "
                        + "; ".join(check.conflicts) + ". Promotion judges only on bars neither model learned "
                        "from or was selected on; use newer data (--data) whose holdout lies after both models' "
                        "validation bars")
    return bars, check


def _compare(client: MlflowClient, name: str, v: str, champion_v0: str | None, cfg, market, alpha: float,
             run, checked) -> PromotionOutcome:
    """Walk both versions over the checked bars, record the evidence, and move the alias if it says so."""
    cost, (bars, check) = cfg.env.cost_bps, checked
    mine = walk_test_returns(f"models:/{name}/{v}", market, cost_bps=cost, split=bars.split)
    theirs = (walk_test_returns(f"models:/{name}/{champion_v0}", market, cost_bps=cost, split=bars.split)
              if champion_v0 else None)
    decision = decide_promotion(mine, buy_and_hold=buy_and_hold_returns(market, cost_bps=cost, split=bars.split),
                                champion=theirs, alpha=alpha,
                                champion_label=f"version {champion_v0}" if champion_v0 else "",
                                periods_per_year=market.bars.periods_per_year)
    evidence = {**decision.tags(), "convopt.promotion.data_source": market.bars.source,
                "convopt.promotion.data_digest": market.bars.digest, "convopt.promotion.split": bars.split,
                "convopt.promotion.bars": f"{bars.start}:{bars.stop}",
                "convopt.promotion.bars_time": f"{bars.first}/{bars.last}",
                "convopt.promotion.bars_reused": str(check.bars_reused).lower(),
                "convopt.promotion.bars_reused_by": ",".join(check.reused_by) or "none",
                "convopt.promotion.previous_champion": champion_v0 or "none",
                "convopt.promotion.time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "convopt.promotion.run_id": run.run_id}
    set_version_tags(name, v, evidence, client)
    run.set_tags(evidence)
    run.log_dict(evidence, "promotion/evidence.json")
    run.log_metrics({"promotion/sharpe_challenger": decision.in_unit(decision.sharpe_challenger),  # annualized
                     "promotion/sharpe_other": decision.in_unit(decision.sharpe_other),
                     "promotion/sharpe_difference": decision.in_unit(decision.sharpe_difference),
                     "promotion/z": decision.z,
                     "promotion/p_value": decision.p_value, "promotion/n_bars": decision.n_bars,
                     "promotion/promote": float(decision.promote)}, step=0)
    outcome = PromotionOutcome(name, v, champion_v0, decision, market.bars.source, run.run_id, bars.split,
                               check.bars_reused)
    if not decision.promote:
        return outcome
    _wait_at_barrier()
    took_over = _compare_and_set(client, name, v, champion_v0)
    if took_over:
        run.set_tags({"convopt.promotion.lock_takeover": took_over})
    return outcome


def _compare_and_set(client: MlflowClient, name: str, version: str, expected: str | None) -> str:
    """Move the champion under the lock if it is still ``expected``; return the takeover record ("" if none)."""
    tags = {"convopt.lock.alias": CHAMPION, "convopt.lock.to": version, "convopt.lock.from": expected or "none"}
    claim = try_claim(client, name, tags, f"held while `convopt promote` moves {name}@{CHAMPION}")
    if isinstance(claim, Held):
        claim = _wait_for_claim(client, name, version, expected, tags, claim)
    took_over = ""
    if claim.took_over:
        took_over = f"took over {claim.lock!r} from {claim.took_over}, a dead process on this host"
        set_version_tags(name, version, {"convopt.promotion.lock_takeover": took_over}, client)
    try:
        current = alias_version(name, CHAMPION, client)  # the final re-read, under the claim
        if current != expected:
            _refuse(client, name, version, expected, current)
        set_alias(name, CHAMPION, version, client)
        set_version_tags(name, version, {"convopt.promotion.decision": "promoted"}, client)
    finally:
        release(client, claim)
    return took_over


def _wait_for_claim(client, name: str, version: str, expected: str | None, tags, held: Held) -> Claim:
    """Another process holds the lock: wait for it to move the champion (then name the change) or let go."""
    deadline = time.monotonic() + _CONFLICT_WAIT_S
    while time.monotonic() < deadline:
        current = alias_version(name, CHAMPION, client)
        if current != expected:
            _refuse(client, name, version, expected, current)
        claim = try_claim(client, name, tags, f"held while `convopt promote` moves {name}@{CHAMPION}")
        if isinstance(claim, Claim):  # released without a move (that promotion refused), or taken over
            return claim
        held = claim
        time.sleep(0.2)
    current = alias_version(name, CHAMPION, client)
    if current != expected:
        _refuse(client, name, version, expected, current)
    reason = f"{name}@{CHAMPION} is still version {expected or 'none'}, but {held.describe()}"
    set_version_tags(name, version, {"convopt.promotion.decision": "refused",
                                     "convopt.promotion.refusal": reason}, client)
    raise PromotionConflict(reason)


def _refuse(client, name: str, version: str, expected: str | None, current: str | None) -> None:
    reason = (f"{name}@{CHAMPION} changed while this promotion compared: version {expected or 'none'} -> "
              f"version {current or 'none'}; refusing to overwrite it. Re-run `convopt promote` to compare "
              f"version {version} with the new champion")
    set_version_tags(name, version, {"convopt.promotion.decision": "refused",
                                     "convopt.promotion.refusal": reason}, client)
    raise PromotionConflict(reason)


def _wait_at_barrier(timeout_s: float = 120.0) -> None:
    path = os.environ.get(BARRIER_ENV)
    if not path:
        return
    Path(f"{path}.ready.{os.getpid()}").touch()
    deadline = time.monotonic() + timeout_s
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{BARRIER_ENV}: {path} did not appear within {timeout_s:.0f} s")
        time.sleep(0.05)
