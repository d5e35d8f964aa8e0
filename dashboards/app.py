"""The live dashboard's ASGI app: pages, JSON endpoints and the token check.

Endpoints (all GET, all read-only):

- ``/``: the page (``static/index.html``); ``/static/*``: its script and plotly.js;
- ``/api/experiments``, ``/api/runs?experiment=E``: runs, RUNNING first;
- ``/api/run/{run_id}``: the run's convergence figure (plotly JSON) and point counts,
  read incrementally (:class:`convopt_mlflow.tracking.live.LiveReader`);
- ``/api/studies``, ``/api/study/{name}``: A/B progress from the Optuna storage;
- ``/api/registry?name=N``: versions of the registered model, aliases and evidence.

Security: it binds 127.0.0.1 by default. Any other bind needs a token; then every
request must carry it (``Authorization: Bearer T``, ``?token=T``, or the cookie the
page sets from ``?token=T``), else 401.
"""
from __future__ import annotations

import hmac
import re
import json
import os
from pathlib import Path
from typing import Any

import plotly
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from convopt_mlflow.errors import UserError

__all__ = ["LOCAL_HOSTS", "TOKEN_ENV", "create_app", "serve"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
TOKEN_ENV = "CONVOPT_DASHBOARD_TOKEN"
_STATIC = Path(__file__).parent / "static"
_PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
_COOKIE = "convopt_dashboard_token"


class TokenGate:
    """ASGI middleware: 401 for a request without the token (when one is set)."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.token:
            return await self.app(scope, receive, send)
        request = Request(scope)
        given = request.query_params.get("token") or request.cookies.get(_COOKIE) or ""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            response = PlainTextResponse("401: this dashboard needs its token (?token=... or "
                                         "Authorization: Bearer ...)", status_code=401)
            return await response(scope, receive, send)
        if request.query_params.get("token"):  # the page's later requests carry it as a cookie
            async def send_with_cookie(message):
                if message["type"] == "http.response.start":
                    cookie = f"{_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                    message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
                await send(message)
            return await self.app(scope, receive, send_with_cookie)
        return await self.app(scope, receive, send)


def _json(data: Any) -> Response:
    return Response(json.dumps(data, default=_plain, allow_nan=False), media_type="application/json")


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def create_app(tracking_uri: str, *, storage: str | None = None, token: str | None = None,
               registry_name: str = "convopt-ensemble", max_points: int = 2000) -> Starlette:
    """The dashboard app for ``tracking_uri`` (and A/B studies in ``storage``), gated by ``token``.

    ``max_points``: each curve of a run's figure is thinned to at most this many points
    (the store keeps them all; the page stays light with 100k points in a run).
    """
    from mlflow.tracking import MlflowClient

    from convopt_mlflow.evaluation.dashboards import series_convergence_figure
    from convopt_mlflow.tracking.live import LiveReader

    reader = LiveReader(MlflowClient(tracking_uri=tracking_uri))
    study_storage = None
    if storage:
        from convopt_mlflow.experiments.progress import open_read_only

        study_storage = open_read_only(storage)

    async def index(request: Request) -> Response:
        return FileResponse(_STATIC / "index.html")

    async def plotly_js(request: Request) -> Response:
        return FileResponse(_PLOTLY_JS, media_type="application/javascript")

    def experiments(request: Request) -> Response:
        return _json({"experiments": reader.experiments(), "default": "convopt"})

    def runs(request: Request) -> Response:
        return _json({"runs": reader.runs(request.query_params.get("experiment", "convopt"))})

    figures: dict[str, tuple[Any, str]] = {}  # run id -> (what it was built from, figure JSON)

    def run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        info = reader.run_info(run_id)
        series = reader.series(run_id)
        points = {k: int(len(v[0])) for k, v in series.items()}
        markers = sum(n for k, n in points.items() if k.startswith("intervention/"))
        built_from = (info["status"], tuple(sorted(points.items())))
        if run_id not in figures or figures[run_id][0] != built_from:  # an idle poll rebuilds nothing
            reasons = reader.interventions(run_id) if info["status"] != "RUNNING" else []
            fig = series_convergence_figure(series, reasons, title=f"{info['name']} ({info['status']})",
                                            max_points=max_points)
            figures[run_id] = (built_from, fig.to_json())
        head = json.dumps({**info, "points": points, "total_points": sum(points.values()),
                           "interventions": markers}, default=_plain)
        return Response(head[:-1] + ', "figure": ' + figures[run_id][1] + "}", media_type="application/json")

    def studies(request: Request) -> Response:
        if study_storage is None:
            return _json({"studies": [], "note": "start the dashboard with --storage URL to follow A/B studies"})
        from convopt_mlflow.experiments.progress import list_studies

        return _json({"studies": list_studies(study_storage)})

    def study(request: Request) -> Response:
        if study_storage is None:
            return _json({"error": "no --storage given"})
        from convopt_mlflow.experiments.progress import study_progress

        return _json(study_progress(study_storage, request.path_params["name"]))

    def registry(request: Request) -> Response:
        name = request.query_params.get("name", registry_name)
        return _json({"name": name, "versions": reader.registry(name)})

    def stats(request: Request) -> Response:
        return _json({"requests": reader.stats.requests, "points": reader.stats.points})

    routes = [Route("/", index), Route("/static/plotly.min.js", plotly_js),
              Mount("/static", StaticFiles(directory=_STATIC), name="static"),
              Route("/api/experiments", experiments), Route("/api/runs", runs), Route("/api/run/{run_id}", run),
              Route("/api/studies", studies), Route("/api/study/{name:path}", study),
              Route("/api/registry", registry), Route("/api/stats", stats)]
    return Starlette(routes=routes, middleware=[Middleware(TokenGate, token=token or None)])


def check_bind(host: str, token: str | None) -> None:
    """UserError unless ``host`` is local or a token protects it."""
    if host not in LOCAL_HOSTS and not token:
        raise UserError(f"--host {host} exposes the dashboard beyond this machine: give --token T "
                        f"(or set {TOKEN_ENV}); requests without it get 401")


def serve(tracking_uri: str, *, storage: str | None = None, host: str = "127.0.0.1", port: int = 8050,
          token: str | None = None) -> None:
    """Run the dashboard until interrupted. ``token`` defaults to ``$CONVOPT_DASHBOARD_TOKEN``."""
    import uvicorn

    token = token or os.environ.get(TOKEN_ENV) or None
    check_bind(host, token)
    app = create_app(tracking_uri, storage=storage, token=token)
    where = f"http://{host}:{port}/" + ("?token=..." if token else "")
    shown = re.sub(r"//[^/@]*@", "//***@", tracking_uri)  # no credentials on the console
    print(f"convopt dashboard: {where} (tracking {shown})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
