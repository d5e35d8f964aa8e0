"""First-contact costs of MLflow paid ahead of time, touching no run and no store."""
from __future__ import annotations

from convopt_mlflow.tracking.runs import resolve_tracking_uri

__all__ = ["warm_model_logging", "warm_tracking_store"]


def warm_tracking_store() -> None:
    """Import what a process's first contact with a database store imports (MLflow's SQLAlchemy
    tracking store: its ORM tables and alembic, about 0.7 s), without contacting the store: it is
    neither created nor migrated here, which is the first opener's job. Nothing for a file or HTTP store.

    An ensemble's worker calls it while the parent still opens its runs, so its first member's
    first run call does not pay it (:func:`convopt_mlflow.training.member_pool.warm_first_member`)."""
    from mlflow.store.db.db_types import DATABASE_ENGINES  # the schemes MLflow serves with that store

    scheme = resolve_tracking_uri().split(":", 1)[0].split("+", 1)[0].lower()
    if scheme in DATABASE_ENGINES:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def warm_model_logging() -> None:
    """Import what saving a pyfunc model imports (``mlflow.pyfunc`` and its flavors), ahead of time:
    an ensemble's parent does it on a core its last member leaves free, a lead worker before its first member."""
    import mlflow.pyfunc  # noqa: F401
