"""Split boundaries on a run: written by every training run, read back by ``convopt promote``.

A run records the record of :func:`~convopt_mlflow.data.splits.split_boundaries` as the
``splits.json`` artifact, and its key values as params, one pair per split::

    split.<name>.bars = "<start>:<stop>"          half-open bar indices
    split.<name>.time = "<first>/<last>"          ISO timestamps of the first and last bar

With no holdout (``data.holdout_fraction=0``) ``split.holdout.bars`` is ``none`` and the
run is tagged ``convopt.splits.holdout=none``. The bars' digest is the run's
``convopt.data.digest`` tag, as before.

Example:
    >>> import pandas as pd
    >>> from convopt_mlflow.data.splits import chronological_splits, split_boundaries
    >>> from convopt_mlflow.tracking.runs import open_run
    >>> times = pd.date_range("2024-01-01", periods=1000, freq="h")
    >>> record = split_boundaries(chronological_splits(1000), times, embargo_bars=0, digest="abc")
    >>> handle = open_run(experiment="convopt", run_id=None, tags={})
    >>> log_split_boundaries(handle, record)
    >>> read_split_boundaries(handle.run_id)["splits"]["val"]
    {'start': 600, 'stop': 750, 'first': '2024-01-26T00:00:00', 'last': '2024-02-01T05:00:00'}
"""
from __future__ import annotations

from typing import Any, Mapping

from mlflow.tracking import MlflowClient

from convopt_mlflow.data.splits import SPLIT_NAMES

__all__ = ["SPLITS_ARTIFACT", "check_promotion_bars", "log_split_boundaries", "read_split_boundaries", "source_runs",
           "split_params"]

SPLITS_ARTIFACT = "splits.json"
HOLDOUT_TAG = "convopt.splits.holdout"


def split_params(record: Mapping[str, Any]) -> dict[str, str]:
    """The params of a :func:`~convopt_mlflow.data.splits.split_boundaries` record.

    Example:
        >>> split_params({"splits": {"train": {"start": 0, "stop": 9, "first": "a", "last": "b"},
        ...                          "holdout": None}})
        {'split.train.bars': '0:9', 'split.train.time': 'a/b', 'split.holdout.bars': 'none'}
    """
    params: dict[str, str] = {}
    for name, bounds in record["splits"].items():
        if bounds is None:
            params[f"split.{name}.bars"] = "none"
            continue
        params[f"split.{name}.bars"] = f"{bounds['start']}:{bounds['stop']}"
        params[f"split.{name}.time"] = f"{bounds['first']}/{bounds['last']}"
    return params


def log_split_boundaries(handle: Any, record: Mapping[str, Any]) -> None:
    """Write ``splits.json``, the ``split.*`` params and the holdout tag on ``handle``'s run."""
    handle.log_dict(dict(record), SPLITS_ARTIFACT)
    handle.log_params(split_params(record))
    holdout = record["splits"].get("holdout")
    handle.set_tags({HOLDOUT_TAG: "none" if holdout is None else f"{holdout['start']}:{holdout['stop']}"})


def read_split_boundaries(run_id: str, client: MlflowClient | None = None) -> dict[str, Any] | None:
    """``{"digest", "splits": {name: {"start", "stop", "first", "last"} | None}}`` read back from
    run ``run_id``'s params and ``convopt.data.digest`` tag, or None when the run recorded no
    boundaries (trained before runs recorded them)."""
    client = client or MlflowClient()
    run = client.get_run(run_id)
    params = run.data.params
    if "split.train.bars" not in params:
        return None
    splits: dict[str, Any] = {}
    for name in SPLIT_NAMES:
        bars = params.get(f"split.{name}.bars", "none")
        if bars == "none":
            splits[name] = None
            continue
        start, stop = (int(x) for x in bars.split(":"))
        first, _, last = params.get(f"split.{name}.time", "/").partition("/")
        splits[name] = {"start": start, "stop": stop, "first": first, "last": last}
    return {"digest": run.data.tags.get("convopt.data.digest", ""), "splits": splits}


def source_runs(version: Any) -> list[str]:
    """The training runs behind a model version (``convopt.source_runs``, else the version's run)."""
    return [r for r in version.tags.get("convopt.source_runs", "").split(",") if r] or [version.run_id]


def check_promotion_bars(market: Any, split: str, versions: Mapping[str, Any],
                         client: MlflowClient | None = None) -> tuple[Any, Any]:
    """``(EvaluationBars, SplitCheck)`` of ``market``'s ``split`` against every source run of ``versions``.

    Args:
        market: the data the promotion walks (``splits``, ``bars.digest``, ``bars.frame.index``).
        split: ``holdout`` or ``test``.
        versions: ``label -> ModelVersion`` (the challenger, and the champion if any).

    Raises:
        UserError: ``split`` is not one promotion may use, or the data has no such split.
    """
    from convopt_mlflow.errors import UserError
    from convopt_mlflow.evaluation.split_guard import PROMOTION_SPLITS, EvaluationBars, check_evaluation_bars

    if split not in PROMOTION_SPLITS:
        raise UserError(f"--split must be one of {', '.join(PROMOTION_SPLITS)} (promotion never judges on the "
                        f"train or validation split); got {split!r}")
    bounds = getattr(market.splits, split)
    if bounds is None:
        raise UserError("the challenger's data reserves no holdout (data.holdout_fraction=0): retrain with a "
                        "holdout, or pass --split test to promote on the A/B's test bars (recorded as "
                        "convopt.promotion.bars_reused=true)")
    start, stop = int(bounds[0]), int(bounds[1])
    times = market.bars.frame.index
    bars = EvaluationBars(split, market.bars.digest, start, stop, times[start].isoformat(), times[stop - 1].isoformat())
    client = client or MlflowClient()
    records = {f"{label} (run {run_id})": _boundaries_or_none(run_id, client)
               for label, version in versions.items() for run_id in source_runs(version)}
    return bars, check_evaluation_bars(bars, records)


def _boundaries_or_none(run_id: str, client: MlflowClient) -> dict[str, Any] | None:
    from mlflow.exceptions import MlflowException

    try:
        return read_split_boundaries(run_id, client)
    except MlflowException:  # a deleted or unreadable source run: its bars are unknown, so refused
        return None
