"""Read-only views of a tracking store for the live dashboard, polled every few seconds.

Everything is read through :class:`~mlflow.tracking.MlflowClient` (so it works
against a remote tracking server); nothing is ever written.

**First look: a sample.** The first read of a key asks the store for at most
``sample_size`` evenly spaced points of its history, the first and the last always
included (``get_metric_history_bulk_interval``, what MLflow's own UI draws charts
with; the SQL store samples in SQL). A run with 100k points per key costs one
bounded query per key, not 100k rows.

**Then every new point.** A poll of :meth:`LiveReader.series`:

1. reads the run once (``get_run``): every store keeps each key's latest point, so
   a key whose latest ``(step, timestamp)`` is what the cache already holds costs
   nothing more;
2. for a key that moved, reads every point from the last step held up to the
   latest step, exactly (``get_metric_history_bulk_interval`` over that step range,
   which returns every point while there are fewer than ``tail_cap``; a range with
   more is split in two until each part is exact). Points at the last step held that
   the cache already has are dropped, so the join has no gap and no duplicate.

So a series is a sample up to the last step of its first read (:meth:`LiveReader.sampled`)
and every point after it. Steps must grow: a point logged later at a step below the
last step held is not read (our runs never log a step twice, even across resumes).

A store without its own sampling (MLflow's REST and file stores fall back to reading
the whole history) is read the old way: pages of ``get_metric_history`` that start
after the points already held (offset in ``(timestamp, step, value)`` order), every
point from the first read on.

Example:
    >>> from mlflow.tracking import MlflowClient
    >>> client = MlflowClient()
    >>> run_id = client.create_run("0").info.run_id
    >>> client.log_metric(run_id, "eval/score", 0.1, step=1024)
    >>> reader = LiveReader(client)
    >>> reader.series(run_id)["eval/score"]
    (array([1024.]), array([0.1]))
    >>> client.log_metric(run_id, "eval/score", 0.3, step=2048)  # the next read fetches only this point
    >>> reader.series(run_id)["eval/score"]
    (array([1024., 2048.]), array([0.1, 0.3]))
"""
from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.abstract_store import AbstractStore
from mlflow.tracking import MlflowClient

__all__ = ["LiveReader", "evidence_summary", "wanted_key"]

_PAGE = 10_000
_SAMPLE = 2_000  # points per key on the first read
_TAIL_CAP = 2_500  # an MLflow server answers at most 2,500 points per sampled-history request
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
    last_step: int | None = None  # the step of the last point held; None before the first read
    at_last: set[tuple[int, Any]] = field(default_factory=set)  # (timestamp, value) held at last_step
    sampled_until: int | None = None  # points up to this step are a sample; None: every point is held


@dataclass
class PollStats:
    """What the reader fetched so far: requests to the store and metric points received."""

    requests: int = 0
    points: int = 0


class LiveReader:
    """Runs, one run's metric series (incremental), and the registry, read through ``client``."""

    def __init__(self, client: MlflowClient, *, page_size: int = _PAGE, keys: Callable[[str], bool] = wanted_key,
                 sample_size: int = _SAMPLE, tail_cap: int = _TAIL_CAP):
        self.client = client
        self.page_size = page_size
        self.keys = keys
        self.sample_size = max(2, sample_size)
        self.tail_cap = max(2, tail_cap)
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
                    if not self._samples():
                        self._fetch_newer(run_id, metric.key, held)
                    elif held.last_step is None:
                        self._first_read(run_id, metric.key, held)
                    else:
                        self._join(held, self._exact(run_id, metric.key, held.last_step,
                                                     max(latest[0], held.last_step)))
                    held.latest = latest
            return {k: (np.asarray(c.steps), np.asarray(c.values)) for k, c in cache.items()}

    def sampled(self, run_id: str) -> dict[str, int]:
        """``key -> step``: the keys of ``run_id`` whose points up to ``step`` are a sample (first read)."""
        with self._lock:
            return {k: c.sampled_until for k, c in self._cache.get(run_id, {}).items() if c.sampled_until is not None}

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

    # ------------------------------------------------------------------ sampled first read, exact tail
    def _store(self):
        return getattr(getattr(self.client, "_tracking_client", None), "store", None)

    def _samples(self) -> bool:
        """Whether the store samples by itself (not AbstractStore's fallback, which reads every point)."""
        method = getattr(type(self._store()), "get_metric_history_bulk_interval", None)
        return method is not None and method is not AbstractStore.get_metric_history_bulk_interval

    def _interval(self, run_id: str, key: str, max_results: int, start: int | None, end: int | None) -> list:
        points = self._store().get_metric_history_bulk_interval([run_id], key, max_results, start, end)
        self.stats.requests += 1
        self.stats.points += len(points)
        return sorted(points, key=lambda m: (m.step, m.timestamp, m.value))

    def _first_read(self, run_id: str, key: str, held: _Cached) -> None:
        points = self._interval(run_id, key, self.sample_size, None, None)
        self._join(held, points)
        if len(points) >= self.sample_size:  # at the cap: (probably) a sample
            held.sampled_until = held.last_step

    def _exact(self, run_id: str, key: str, start: int, end: int) -> list:
        """Every point with ``start <= step <= end``: a range answered at the cap is split in two."""
        points = self._interval(run_id, key, self.tail_cap, start, end)
        if len(points) < self.tail_cap:
            return points
        if start >= end:  # more than tail_cap points at one step: only the whole history has them all
            full = self.client.get_metric_history(run_id, key)
            self.stats.requests += 1
            return sorted((m for m in full if m.step == start), key=lambda m: (m.timestamp, m.value))
        middle = (start + end) // 2
        return self._exact(run_id, key, start, middle) + self._exact(run_id, key, middle + 1, end)

    @staticmethod
    def _join(held: _Cached, points) -> None:
        """Append ``points`` (sorted by step, from ``held.last_step`` on), dropping those already held."""
        for m in points:
            step, value = int(m.step), float(m.value)
            seen = (int(m.timestamp), value if value == value else "nan")
            if step == held.last_step and seen in held.at_last:
                continue
            if step != held.last_step:
                held.last_step, held.at_last = step, set()
            held.at_last.add(seen)
            held.steps.append(float(step))
            held.values.append(value)

    # ------------------------------------------------------------------ stores that do not sample
    def _fetch_newer(self, run_id: str, key: str, held: _Cached) -> None:
        store = self._store()
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

