"""Where our runs land, and how MLflow 3's UI opens them.

- :func:`mark_training_experiment`: MLflow 3 opens an experiment on the view its kind
  names (tag ``mlflow.experimentKind``); without one it may open a GenAI overview
  ("Traces", "Detect Issues"). Ours are training experiments: ``custom_model_development``.
- :class:`ConvoptProjectExperimentProvider`: ``mlflow run .`` on this project creates its
  run in the experiment ``convopt`` (where ``convopt train`` and the live dashboard look)
  instead of ``Default``, unless the user names one (``--experiment-name``/``-id``,
  ``MLFLOW_EXPERIMENT_NAME``/``_ID``, which MLflow consults first). Registered through
  the ``mlflow.default_experiment_provider`` entry point; MLflow imports this module in
  every process that uses it, so it must import cheaply and never fail.
"""
from __future__ import annotations

import os

from mlflow.tracking.default_experiment.abstract_context import DefaultExperimentProvider

__all__ = ["EXPERIMENT_KIND_TAG", "PROJECT_NAME", "TRAINING_KIND", "ConvoptProjectExperimentProvider",
           "discard_project_run",
           "mark_training_experiment"]

#: The experiment tag MLflow 3's UI reads to pick an experiment's default view.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: Its value for model training (the runs table), as MLflow 3's UI spells it.
TRAINING_KIND = "custom_model_development"
#: ``name:`` in this project's MLproject file.
PROJECT_NAME = "convopt-mlflow"


def mark_training_experiment(client, experiment_id: str) -> None:
    """Tag the experiment as a training experiment unless it already has a kind."""
    experiment = client.get_experiment(experiment_id)
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)


def is_this_project(uri: str) -> bool:
    """Whether ``uri`` is a local directory holding this project's MLproject file."""
    path = os.path.join(os.path.expanduser(str(uri)), "MLproject")
    try:
        with open(path, encoding="utf-8") as handle:
            return any(line.split("#")[0].strip() == f"name: {PROJECT_NAME}" for line in handle)
    except (OSError, UnicodeDecodeError):
        return False


class ConvoptProjectExperimentProvider(DefaultExperimentProvider):
    """The ``convopt`` experiment for ``mlflow run <this project>`` when none is named.

    In context only inside the ``mlflow run`` command (its click context) on a local copy
    of this project; anywhere else MLflow's own default applies.
    """

    def in_context(self) -> bool:
        try:
            import click

            ctx = click.get_current_context(silent=True)
        except Exception:  # noqa: BLE001 - a provider must never break MLflow
            return False
        if ctx is None or ctx.command.name != "run" or "uri" not in ctx.params:
            return False
        return is_this_project(ctx.params["uri"])

    def get_experiment_id(self) -> str:
        from mlflow.tracking import MlflowClient

        from .runs import DEFAULT_EXPERIMENT, _experiment_id

        client = MlflowClient()
        experiment_id = _experiment_id(client, DEFAULT_EXPERIMENT)
        mark_training_experiment(client, experiment_id)
        return experiment_id


def register_provider() -> None:
    """Register the provider with MLflow in this process when its entry point did not (idempotent)."""
    from mlflow.tracking.default_experiment import registry

    providers = registry._default_experiment_provider_registry
    if not any(isinstance(p, ConvoptProjectExperimentProvider) for p in providers):
        providers.register(ConvoptProjectExperimentProvider)


def discard_project_run(run_id: str, reason: str, client=None) -> bool:
    """End and delete the run ``mlflow run`` created when our command refused its input.

    Only a run that holds nothing of ours (no ``convopt.role`` tag, no metric) is discarded:
    it is marked FAILED with ``convopt.failure_reason`` (so ``mlflow run`` leaves it alone)
    and moved to the deleted runs (``mlflow gc`` purges them). Returns whether it was.
    """
    from mlflow.tracking import MlflowClient

    client = client if client is not None else MlflowClient()
    run = client.get_run(run_id)
    tags = run.data.tags
    if "mlflow.project.entryPoint" not in tags or "convopt.role" in tags or run.data.metrics:
        return False
    client.set_tag(run_id, "convopt.failure_reason", reason[:5000])
    client.set_terminated(run_id, "FAILED")
    client.delete_run(run_id)
    return True
