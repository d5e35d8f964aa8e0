"""The run's dataset input: MLflow's record of the market bars a run trained on (name, source,
digest, schema, row count), written without MLflow's per-cell schema inference."""
from __future__ import annotations

import warnings
from typing import Any

import pandas as pd
from mlflow.entities import DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

__all__ = ["frame_schema", "log_dataset"]


def _dataset_source(source: str):
    """MLflow's source for ``source`` (a path or URL), or a code source for anything else
    (``"bundled:eurusd_1h"``, ``"synthetic(seed=1)"``)."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    try:
        with warnings.catch_warnings():
            # Local paths match two registered resolvers of the same class; MLflow warns.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            return resolve_dataset_source(source)
    except MlflowException:
        return CodeDatasetSource(tags={"source": source})


def frame_schema(frame: pd.DataFrame, *, sample_rows: int = 256):
    """The schema MLflow infers for ``frame`` (``PandasDataset.schema``), without its per-cell loop.

    Column types come from MLflow's own inference on the first ``sample_rows`` rows (dtypes are
    per column); ``required`` (no missing value) is decided on every row, vectorized. MLflow's
    ``_infer_required`` walks each cell in Python: about 2 s for a 300k-bar frame.
    """
    from mlflow.types import ColSpec, Schema
    from mlflow.types.utils import _infer_schema

    sampled = _infer_schema(frame.iloc[:sample_rows])
    missing = frame.isna().any()
    return Schema([ColSpec(c.type, c.name, required=not bool(missing[c.name])) for c in sampled.inputs])


def log_dataset(
    handle: Any,
    frame: pd.DataFrame,
    *,
    name: str,
    source: str,
    digest: str,
    context: str = "training",
) -> None:
    """Record ``frame`` as an input of the run (name, source, digest, schema, row count).

    Args:
        handle: the run.
        frame: the market bars (only the schema and size are stored, not the data).
        name: dataset name shown in the UI.
        source: where the data came from: a path, URL or a description.
        digest: the caller's content digest of the data. MLflow keeps one dataset per
            (experiment, name, digest): a later run logging the same pair links to
            the first entry, source included.
        context: the ``mlflow.data.context`` input tag (``"training"``, ``"validation"``...).
    """
    import mlflow.data

    dataset = mlflow.data.from_pandas(frame, source=_dataset_source(source), name=name, digest=digest)
    dataset.__dict__["schema"] = frame_schema(frame)  # MLflow's own would test every cell in Python
    entry = DatasetInput(
        dataset=dataset._to_mlflow_entity(),
        tags=[InputTag(key=MLFLOW_DATASET_CONTEXT, value=context)],
    )
    _log_inputs_racing_other_writers(handle, entry)


# What a store says when another writer inserted the same (experiment, name, digest) first:
# sqlite, PostgreSQL, MySQL, and SQLAlchemy's class name (a tracking server relays its message).
_DUPLICATE_MARKERS = ("unique constraint", "duplicate key", "duplicate entry", "integrityerror")


def _log_inputs_racing_other_writers(handle: Any, entry: DatasetInput, *, attempts: int = 5) -> None:
    """Log ``entry``, again when another writer inserted the same dataset first.

    MLflow's store looks the dataset up and inserts it when absent, in one transaction that is not
    serialized against other writers: two workers of one study that start runs on the same market
    at the same moment both find nothing, and the second insert breaks the unique key. The failed
    transaction is rolled back whole, so the retry finds the winner's row and links the run to it.
    """
    for attempt in range(attempts):
        try:
            handle.client.log_inputs(handle.run_id, datasets=[entry])
            return
        except MlflowException as error:
            if attempt == attempts - 1 or not any(m in str(error).lower() for m in _DUPLICATE_MARKERS):
                raise
