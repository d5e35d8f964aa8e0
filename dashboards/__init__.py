"""The live dashboard: ``convopt dashboard --tracking-uri URI [--storage URL]``.

A small ASGI app (Starlette, served by uvicorn) whose page polls JSON endpoints and
draws with plotly.js, served from the plotly wheel (nothing is fetched from a CDN).
It reads the tracking store through ``MlflowClient`` and studies through their Optuna
storage, and writes to neither. See :mod:`dashboards.app`.
"""
from dashboards.app import LOCAL_HOSTS, create_app, serve

__all__ = ["LOCAL_HOSTS", "create_app", "serve"]
