"""SB3 logger output that writes metrics to MLflow in one batch per dump.

SB3 callbacks call ``self.logger.record(key, value)``; the logger hands every
recorded value to each output format when it dumps (once per rollout for PPO),
with ``step = num_timesteps``. :class:`MLflowOutputFormat` is that output for
MLflow: one ``log_batch`` per dump, never one request per value.

Only finite numbers are sent: MLflow stores NaN as NaN and +-inf as
+-1.8e308, which poisons charts and comparisons. Non-finite values are counted
and dropped; the convergence monitor, not the logger, acts on divergence.

Example:
    >>> from stable_baselines3.common.logger import Logger
    >>> writer = MLflowOutputFormat(run_id)                   # doctest: +SKIP
    >>> model.set_logger(Logger(folder=None, output_formats=[writer]))  # doctest: +SKIP
"""
from __future__ import annotations

import math
import queue
import threading
import time
from typing import Any, Mapping, Sequence

import numpy as np
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_METRICS_PER_BATCH
from stable_baselines3.common.logger import KVWriter

__all__ = ["MLflowOutputFormat", "metrics_batch", "finite_metrics"]

#: Value of ``key_excluded`` (SB3's ``exclude=``) that keeps a key out of MLflow.
EXCLUDE_TAG = "mlflow"


def _as_float(value: Any) -> float | None:
    """``value`` as a Python float when it is a real scalar number, else None.

    Accepts int, float, numpy scalars and 0-d arrays or tensors (anything with
    ``shape == ()`` that converts with ``float()``). Strings, sequences,
    figures, videos and other SB3 payloads give None.
    """
    if isinstance(value, (str, bytes, np.str_, np.bytes_)):
        return None
    if isinstance(value, (int, float, np.number, np.bool_)):
        return float(value)
    shape = getattr(value, "shape", None)
    if shape is not None and tuple(shape) == ():
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    return None


def finite_metrics(
    values: Mapping[str, Any],
    step: int,
    timestamp_ms: int,
    excluded: Mapping[str, Sequence[str] | str | None] | None = None,
) -> tuple[list[Metric], int]:
    """Turn ``values`` into MLflow metrics, keeping finite numbers only.

    Args:
        values: metric key -> value; non-numeric values are ignored silently.
        step: the step of every metric (environment timesteps).
        timestamp_ms: wall-clock time of every metric, in ms since the epoch.
        excluded: SB3's ``key_excluded``: keys whose exclusions contain
            ``"mlflow"`` are skipped.

    Returns:
        ``(metrics, n_nonfinite)``: the metrics to send and how many numeric
        values were dropped because they were NaN or infinite.
    """
    metrics: list[Metric] = []
    nonfinite = 0
    for key, raw in values.items():
        if excluded is not None:
            exclusions = excluded.get(key)
            if exclusions is not None and EXCLUDE_TAG in exclusions:
                continue
        value = _as_float(raw)
        if value is None:
            continue
        if not math.isfinite(value):
            nonfinite += 1
            continue
        metrics.append(Metric(key=key, value=value, timestamp=timestamp_ms, step=int(step)))
    return metrics, nonfinite


def _send(client: MlflowClient, run_id: str, metrics: list[Metric]) -> int:
    """One ``log_batch`` per 1,000 metrics (MLflow's limit); returns requests made."""
    batches = 0
    for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + MAX_METRICS_PER_BATCH])
        batches += 1
    return batches


def metrics_batch(
    run_id: str,
    values: Mapping[str, Any],
    step: int,
    client: MlflowClient | None = None,
) -> int:
    """Log ``values`` at ``step`` in one batch (chunked at 1,000 metrics).

    For callers outside SB3's logger. Non-numeric and non-finite values are
    dropped, as in :class:`MLflowOutputFormat`.

    Returns:
        The number of metric points written.
    """
    metrics, _ = finite_metrics(values, step, int(time.time() * 1000))
    _send(client or MlflowClient(), run_id, metrics)
    return len(metrics)


class MLflowOutputFormat(KVWriter):
    """SB3 ``KVWriter`` that sends each dump to an MLflow run as one batch.

    Args:
        run_id: the MLflow run that receives the metrics.
        client: the client to write with; ``MlflowClient()`` (the current
            tracking URI) when None.
        min_step: dumps at ``step <= min_step`` are dropped whole. After a
            resume, pass the run's last logged step so no step is logged twice.
        background: send each batch from one writer thread, so training does not
            wait for a slow (remote) store. On a local sqlite store the ~10 ms of
            Python per ``log_batch`` then competes with training for the GIL, which
            measured slower than writing inline, so inline is the default.
            Batches keep their order; :meth:`flush` waits for all of them and
            re-raises a failed write. Call it on every exit path (``close`` does).

    Attributes:
        points_written: metric points sent to MLflow.
        batches_written: ``log_batch`` requests made.
        dropped_nonfinite: NaN or infinite values that were not sent.
        dumps_skipped: dumps dropped because their step was ``<= min_step``.

    Example:
        >>> client = MlflowClient()
        >>> run_id = client.create_run("0").info.run_id
        >>> writer = MLflowOutputFormat(run_id, client)
        >>> writer.write({"train/loss": 0.5, "x": float("nan")}, {}, step=64)
        >>> writer.points_written, writer.dropped_nonfinite
        (1, 1)
        >>> {m.step: m.value for m in client.get_metric_history(run_id, "train/loss")}
        {64: 0.5}
    """

    def __init__(self, run_id: str, client: MlflowClient | None = None, *, min_step: int = -1,
                 background: bool = False):
        self.run_id = run_id
        self.client = client if client is not None else MlflowClient()
        self.min_step = int(min_step)
        self.points_written = 0
        self.batches_written = 0
        self.dropped_nonfinite = 0
        self.dumps_skipped = 0
        self._queue: queue.Queue[list[Metric] | None] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        if background:
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._drain, name="convopt-mlflow-writer", daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        assert self._queue is not None
        while True:
            metrics = self._queue.get()
            try:
                if metrics is None:
                    return
                if self._error is None:  # after a failure, later batches are dropped and the error reported
                    self.batches_written += _send(self.client, self.run_id, metrics)
                    self.points_written += len(metrics)
            except BaseException as exc:  # surfaced in the training thread by write()/flush()
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"writing metrics to MLflow run {self.run_id} failed: {error}") from error

    def write(
        self,
        key_values: dict[str, Any],
        key_excluded: dict[str, tuple[str, ...]],
        step: int = 0,
    ) -> None:
        if step <= self.min_step:
            self.dumps_skipped += 1
            return
        metrics, nonfinite = finite_metrics(key_values, step, int(time.time() * 1000), key_excluded)
        self.dropped_nonfinite += nonfinite
        self._raise_pending()
        if not metrics:
            return
        if self._queue is not None:
            self._queue.put(metrics)
            return
        self.batches_written += _send(self.client, self.run_id, metrics)
        self.points_written += len(metrics)

    def flush(self) -> None:
        """Wait until every batch is in the store; re-raise a failed background write."""
        if self._queue is not None:
            self._queue.join()
        self._raise_pending()

    def close(self) -> None:
        """Flush, then stop the writer thread."""
        try:
            self.flush()
        finally:
            if self._thread is not None and self._thread.is_alive():
                self._queue.put(None)  # type: ignore[union-attr]
                self._thread.join()
            self._thread = None
            self._queue = None
