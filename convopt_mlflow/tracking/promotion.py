"""``convopt promote``: move the ``champion`` alias to the challenger only on evidence.

1. Read the challenger version and the current champion (``v0``, maybe none).
2. Re-walk both with the verified loader (:func:`~convopt_mlflow.tracking.registry.load_model`)
   over the test split of the data recorded on the challenger's runs, and compute per-bar
   net log returns; decide with :func:`~convopt_mlflow.evaluation.promotion.decide_promotion`.
3. Write the evidence to the challenger version's tags (``convopt.promotion.*``).
4. Compare-and-set: claim the move by creating the registered model
   ``<name>.promotion-lock`` (MLflow refuses a second one atomically, in one SQL insert),
   re-read the champion, refuse if it is no longer ``v0``, move the alias, drop the lock.
   Of two concurrent promotions exactly one moves the alias; the other raises
   :class:`PromotionConflict` naming what changed (old version -> new version).

A process killed between claim and release leaves the lock behind; the refusal names it
and says how to remove it.

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
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from convopt_mlflow.errors import UserError
from convopt_mlflow.evaluation.promotion import PromotionDecision, decide_promotion
from convopt_mlflow.tracking.registration import alias_version, get_version, set_alias, set_version_tags

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


def _market(version, data: str | None):
    """The market of the challenger's runs (config of its first source run), or ``data``'s bars with its splits."""
    from convopt_mlflow import config as cfgmod
    from convopt_mlflow.tracking.runs import get_run_config
    from convopt_mlflow.training.setup import load_market

    source_runs = [r for r in version.tags.get("convopt.source_runs", "").split(",") if r] or [version.run_id]
    cfg = cfgmod.from_dict(get_run_config(source_runs[0]))
    if data:
        cfg = cfgmod.apply_values(cfg, {"data.source": data})
    return cfg, load_market(cfg)


def walk_test_returns(model_uri: str, market, *, cost_bps: float) -> np.ndarray:
    """Per-bar net log returns ``(bars,)`` of the verified model walked over the market's test split.

    The model sees bars from just early enough that its first decision is the split's first
    bar (it starts flat there, as the training backtest does); its positions at test bars
    ``start .. stop - 2`` earn the next bar's log return, net of ``cost_bps`` per unit traded.
    """
    from convopt_mlflow.evaluation import net_log_pnl
    from convopt_mlflow.tracking.registry import load_model

    model = load_model(model_uri)
    frame = market.bars.frame
    start, stop = market.splits.test
    # The first decidable row depends only on the model's warm-up and window, not on where the input starts.
    ready = np.flatnonzero(model.predict(frame.iloc[: min(len(frame), 4096)])["ready"].to_numpy())
    if ready.size == 0:
        raise UserError(f"model {model_uri} needs more than 4096 bars of warm-up; cannot walk {market.bars.source}")
    first_ready = int(ready[0])
    lo = max(0, start - first_ready)
    walked = model.predict(frame.iloc[lo:stop])
    positions = walked["position"].to_numpy(dtype=float)[start - lo: stop - 1 - lo]
    if not walked["ready"].to_numpy()[start - lo: stop - 1 - lo].all():
        raise UserError(f"model {model_uri} cannot decide every test bar of {market.bars.source}")
    bars = np.arange(start, stop - 1)
    return net_log_pnl(positions, market.features.log_returns[bars + 1], cost_bps=cost_bps)


def buy_and_hold_returns(market, *, cost_bps: float) -> np.ndarray:
    from convopt_mlflow.evaluation import net_log_pnl

    start, stop = market.splits.test
    returns = market.features.log_returns[np.arange(start, stop - 1) + 1]
    return net_log_pnl(np.ones_like(returns), returns, cost_bps=cost_bps)


def promote(name: str, *, alpha: float = 0.05, data: str | None = None, challenger: str = "challenger",
            client: MlflowClient | None = None, experiment: str | None = None) -> PromotionOutcome:
    """Compare ``challenger`` (alias or version) with ``champion`` and move ``champion`` on evidence.

    The attempt is recorded as a ``convopt.role=promotion`` run in ``experiment`` (None: the
    default, or the ``mlflow run`` project's run), whatever the outcome.

    Raises:
        ModelNotFoundError: no such registered model, alias or version (exit 2).
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
    if version.tags.get("convopt.no_edge") == "true":
        raise UserError(f"version {v} of {name!r} found no edge over flat (convopt.no_edge); it is never promoted")
    cfg, market = _market(version, data)
    run = open_run(experiment=experiment, run_id=os.environ.get("MLFLOW_RUN_ID") or None, client=client,
                   run_name=f"promotion-{name}-v{v}",
                   tags={"convopt.role": "promotion", "convopt.registered_model": name,
                         "convopt.promotion.challenger": v, "convopt.promotion.previous_champion": champion_v0 or "none"})
    try:
        run.log_params({"registry_name": name, "challenger": v, "champion": champion_v0 or "none", "alpha": alpha,
                        "data": market.bars.source})
        outcome = _compare(client, name, v, champion_v0, cfg, market, alpha, run)
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


def _compare(client: MlflowClient, name: str, v: str, champion_v0: str | None, cfg, market, alpha: float,
             run) -> PromotionOutcome:
    """Walk both versions over the test split, record the evidence, and move the alias if it says so."""
    cost = cfg.env.cost_bps
    mine = walk_test_returns(f"models:/{name}/{v}", market, cost_bps=cost)
    theirs = walk_test_returns(f"models:/{name}/{champion_v0}", market, cost_bps=cost) if champion_v0 else None
    decision = decide_promotion(mine, buy_and_hold=buy_and_hold_returns(market, cost_bps=cost), champion=theirs,
                                alpha=alpha, champion_label=f"version {champion_v0}" if champion_v0 else "",
                                periods_per_year=market.bars.periods_per_year)
    evidence = {**decision.tags(), "convopt.promotion.data_source": market.bars.source,
                "convopt.promotion.data_digest": market.bars.digest,
                "convopt.promotion.test_bars": f"{market.splits.test[0]}:{market.splits.test[1]}",
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
    outcome = PromotionOutcome(name, v, champion_v0, decision, market.bars.source, run.run_id)
    if not decision.promote:
        return outcome
    _wait_at_barrier()
    _compare_and_set(client, name, v, champion_v0)
    return outcome


def _lock_name(name: str) -> str:
    return f"{name}.promotion-lock"


def _compare_and_set(client: MlflowClient, name: str, version: str, expected: str | None) -> None:
    lock = _lock_name(name)
    holder = f"{socket.gethostname()}:{os.getpid()}"
    try:
        client.create_registered_model(lock, tags={"convopt.lock.challenger": version,
                                                   "convopt.lock.from": expected or "none",
                                                   "convopt.lock.holder": holder},
                                       description=f"held while `convopt promote` moves {name}@{CHAMPION}")
    except MlflowException:
        _refuse_claimed(client, name, version, expected, lock)
    try:
        current = alias_version(name, CHAMPION, client)  # the final re-read, under the claim
        if current != expected:
            _refuse(client, name, version, expected, current)
        set_alias(name, CHAMPION, version, client)
        set_version_tags(name, version, {"convopt.promotion.decision": "promoted"}, client)
    finally:
        try:
            client.delete_registered_model(lock)
        except MlflowException:
            pass


def _refuse_claimed(client, name: str, version: str, expected: str | None, lock: str) -> None:
    """Another promotion holds the claim: wait for it to move the champion, then name the change."""
    deadline = time.monotonic() + _CONFLICT_WAIT_S
    while time.monotonic() < deadline:
        current = alias_version(name, CHAMPION, client)
        if current != expected:
            _refuse(client, name, version, expected, current)
        try:
            client.get_registered_model(lock)
        except MlflowException:  # released without a move (that promotion refused): the champion is unchanged
            break
        time.sleep(0.2)
    current = alias_version(name, CHAMPION, client)
    if current != expected:
        _refuse(client, name, version, expected, current)
    reason = (f"another promotion holds {lock!r} for {name}@{CHAMPION} (still version {expected or 'none'}); "
              f"re-run when it is done, or delete that registered model if no promotion is running")
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
