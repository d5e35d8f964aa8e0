"""Read-only views of a tracking store for the live dashboard, polled every few seconds.

Everything is read through :class:`~mlflow.tracking.MlflowClient` (so it works
against a remote tracking server); nothing is ever written.

**Incremental metric reads.** ``MlflowClient.get_metric_history`` returns a key's
whole history on every call. A poll of :meth:`LiveReader.series` instead:

1. reads the run once (``get_run``): every store keeps each key's latest point, so
   a key whose latest ``(step, timestamp)`` is what the cache already holds costs
   nothing more;
2. for a key that moved, asks the client's store for the page of the history that
   starts after the points already held (``get_metric_history(max_results,
   page_token)``; the SQL store pages by offset in ``(timestamp, step, value)``
   order, so points logged later come after those already read). A store that
   cannot page falls back to the full history.

Example:
    >>> reader = LiveReader(MlflowClient("sqlite:///mlflow.db"))   # doctest: +SKIP
    >>> reader.series(run_id)["eval/score"]                         # doctest: +SKIP
    (array([ 1024., 2048.]), array([0.1, 0.3]))
"""
from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

__all__ = ["LiveReader", "evidence_summary", "wanted_key"]

_PAGE = 10_000
_ROLES_HIDDEN = ("ensemble-member",)


def wanted_key(key: str) -> bool:
    """Keys the live convergence view draws (see ``evaluation.dashboards``)."""
    from convopt_mlflow.evaluation.dashboards import ACTIVITY_PREFIXES, BAND_KEYS, HISTORY_KEYS

    return (key in HISTORY_KEYS or key in BAND_KEYS or key.startswith(ACTIVITY_PREFIXES)
            or (key.startswith("intervention/") and not key.endswith("_count")))


def _offset_token(offset: int) -> str:
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode()


@dataclass
class _Cached:
    steps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    latest: tuple[int, int] = (-1, -1)  # (step, timestamp) of the key's latest point when last read


@dataclass
class PollStats:
    """What the reader fetched so far: requests to the store and metric points received."""

    requests: int = 0
    points: int = 0


class LiveReader:
    """Runs, one run's metric series (incremental), and the registry, read through ``client``."""

    def __init__(self, client: MlflowClient, *, page_size: int = _PAGE, keys: Callable[[str], bool] = wanted_key):
        self.client = client
        self.page_size = page_size
        self.keys = keys
        self.stats = PollStats()
        self._cache: dict[str, dict[str, _Cached]] = {}
        self._reasons: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ runs
    def experiments(self) -> list[str]:
        self.stats.requests += 1
        return [e.name for e in self.client.search_experiments()]

    def runs(self, experiment: str, *, max_results: int = 200) -> list[dict[str, Any]]:
        """The experiment's runs, RUNNING first, then newest first: id, name, status, preset,
        seed, role, latest eval score and step. Ensemble members are left out (their parent shows)."""
        found = self.client.get_experiment_by_name(experiment)
        self.stats.requests += 1
        if found is None:
            return []
        runs = self.client.search_runs([found.experiment_id], max_results=max_results,
                                       order_by=["attributes.start_time DESC"])
        self.stats.requests += 1
        rows = []
        for run in runs:
            tags = run.data.tags
            if tags.get("convopt.role") in _ROLES_HIDDEN:
                continue
            steps = [m.step for m in run.data.to_proto().metrics]
            rows.append({"run_id": run.info.run_id, "name": run.info.run_name, "status": run.info.status,
                         "preset": tags.get("convopt.preset", ""), "seed": tags.get("convopt.seed", ""),
                         "role": tags.get("convopt.role", ""), "eval": run.data.metrics.get("eval/score"),
                         "test_sharpe": run.data.metrics.get("backtest/test/sharpe"),
                         "step": max(steps, default=0), "start_time": run.info.start_time})
        rows.sort(key=lambda r: (r["status"] != "RUNNING", -(r["start_time"] or 0)))
        return rows

    # ------------------------------------------------------------------ one run, incrementally
    def series(self, run_id: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``key -> (steps, values)`` of the wanted keys, fetching only points newer than those held."""
        run = self.client.get_run(run_id)
        self.stats.requests += 1
        with self._lock:
            cache = self._cache.setdefault(run_id, {})
            for metric in run.data.to_proto().metrics:
                if not self.keys(metric.key):
                    continue
                held = cache.setdefault(metric.key, _Cached())
                latest = (int(metric.step), int(metric.timestamp))
                if latest != held.latest:
                    self._fetch_newer(run_id, metric.key, held)
                    held.latest = latest
            return {k: (np.asarray(c.steps), np.asarray(c.values)) for k, c in cache.items()}

    def run_info(self, run_id: str) -> dict[str, Any]:
        run = self.client.get_run(run_id)
        self.stats.requests += 1
        return {"run_id": run_id, "name": run.info.run_name, "status": run.info.status,
                "tags": {k: v for k, v in run.data.tags.items() if k.startswith("convopt.")}}

    def interventions(self, run_id: str) -> list[dict[str, Any]]:
        """The run's ``interventions.json`` rows (reasons), once the run has written it; else [].
        Read once per run: call it for ended runs only (the file is final then)."""
        if run_id not in self._reasons:
            self._reasons[run_id] = self._read_interventions(run_id)
        return self._reasons[run_id]

    def _read_interventions(self, run_id: str) -> list[dict[str, Any]]:
        from convopt_mlflow.tracking.runs import quiet_artifact_transfers

        try:
            names = {f.path for f in self.client.list_artifacts(run_id)}
            self.stats.requests += 1
            if "interventions.json" not in names:
                return []
            import tempfile

            with tempfile.TemporaryDirectory() as tmp, quiet_artifact_transfers():
                path = self.client.download_artifacts(run_id, "interventions.json", tmp)
                with open(path, encoding="utf-8") as stream:
                    return list(json.load(stream))
        except (MlflowException, OSError, ValueError):
            return []

    def _fetch_newer(self, run_id: str, key: str, held: _Cached) -> None:
        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        try:
            while True:
                page = store.get_metric_history(run_id, key, max_results=self.page_size,
                                                page_token=_offset_token(len(held.steps)))
                self.stats.requests += 1
                self._append(held, page)
                if not getattr(page, "token", None):
                    return
        except (AttributeError, TypeError, MlflowException):
            full = self.client.get_metric_history(run_id, key)  # a store that does not page
            self.stats.requests += 1
            held.steps, held.values = [], []
            self._append(held, sorted(full, key=lambda m: (m.timestamp, m.step, m.value)))

    def _append(self, held: _Cached, points) -> None:
        for m in points:
            held.steps.append(float(m.step))
            held.values.append(float(m.value))
        self.stats.points += len(points)

    # ------------------------------------------------------------------ registry
    def registry(self, name: str = "convopt-ensemble") -> list[dict[str, Any]]:
        """Versions of registered model ``name``, newest first: version, aliases, run, evidence tags."""
        try:
            model = self.client.get_registered_model(name)
            versions = self.client.search_model_versions(f"name = '{name}'")
        except MlflowException:
            return []
        self.stats.requests += 2
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        return [{"version": v.version, "aliases": sorted(aliases.get(str(v.version), [])), "run_id": v.run_id,
                 "status": v.status, "created": v.creation_timestamp, "tags": dict(v.tags),
                 "evidence": evidence_summary(v.tags)}
                for v in sorted(versions, key=lambda v: -int(v.version))]


def _number(tags: Mapping[str, str], key: str) -> str | None:
    value = tags.get(f"convopt.evidence.{key}")
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return None


def evidence_summary(tags: Mapping[str, str]) -> str:
    """A model version's A/B evidence on one line, from its ``convopt.evidence.*`` tags.

    ``"lr vs baseline on backtest/val/sharpe: diff 0.7 [0.59, 0.78], p (Holm) 0.0013, g 1.82, n 4"``,
    then the DSR and the promotion decision when recorded; empty when the version has no evidence.
    """
    parts = []
    if tags.get("convopt.evidence.baseline"):
        parts.append(f"{tags.get('convopt.arm', '?')} vs {tags['convopt.evidence.baseline']} on "
                     f"{tags.get('convopt.evidence.metric', '?')}:")
    diff, low, high = (_number(tags, k) for k in ("mean_difference", "ci_low", "ci_high"))
    if diff is not None:
        parts.append(f"diff {diff}" + (f" [{low}, {high}]," if low is not None and high is not None else ","))
    for key, label in (("p_adjusted", "p (Holm)"), ("hedges_g", "g"), ("n", "n"), ("dsr", "DSR")):
        value = _number(tags, key)
        if value is not None:
            parts.append(f"{label} {value},")
    text = " ".join(parts).rstrip(",:")
    if tags.get("convopt.promotion.decision"):
        text += ("; " if text else "") + f"promotion: {tags['convopt.promotion.decision']}"
    return text

