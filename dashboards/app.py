"""The live dashboard's ASGI app: pages, JSON endpoints and the token check.

Endpoints (all GET, all read-only):

- ``/``: the page (``static/index.html``); ``/static/*``: its script and plotly.js;
- ``/api/experiments``, ``/api/runs?experiment=E``: runs, RUNNING first;
- ``/api/run/{run_id}``: the run's convergence figure (plotly JSON) and point counts,
  read incrementally (:class:`convopt_mlflow.tracking.live.LiveReader`): the first look
  is a sample of at most ``max_points`` points per key (first and last included), every
  later point is read exactly; ``sampled`` names the keys and the step up to which
  their points are a sample;
- ``/api/studies``, ``/api/study/{name}``: A/B progress from the Optuna storage;
- ``/api/registry?name=N``: versions of the registered model, aliases and evidence.

Security (:mod:`dashboards.security`): every request needs the token, which is generated
and printed once when none is given; a foreign ``Host`` header gets 403; the token moves
from the URL into an HttpOnly, SameSite=Strict cookie; every response says
``Referrer-Policy: no-referrer``. It binds 127.0.0.1 by default.
"""
from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any, Iterable

import plotly
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from convopt_mlflow.tracking.runs import require_existing_store
from dashboards.security import LOCAL_HOSTS, TOKEN_ENV, WILDCARD_BINDS, Gate, allowed_hosts, resolve_token

__all__ = ["LOCAL_HOSTS", "TOKEN_ENV", "create_app", "serve"]

_STATIC = Path(__file__).parent / "static"
_PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _json(data: Any) -> Response:
    return Response(json.dumps(data, default=_plain, allow_nan=False), media_type="application/json")


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def create_app(tracking_uri: str, *, token: str, storage: str | None = None, host: str = "127.0.0.1",
               allow_hosts: Iterable[str] = (), registry_name: str = "convopt-ensemble",
               max_points: int = 2000) -> Starlette:
    """The dashboard app for ``tracking_uri`` (and A/B studies in ``storage``), gated by ``token``.

    ``host`` is the address it is bound to; it and ``allow_hosts`` are the ``Host`` names it
    answers besides the local ones (:func:`dashboards.security.allowed_hosts`).

    ``max_points``: each curve of a run's figure is thinned to at most this many points
    (the store keeps them all; the page stays light with 100k points in a run), and the
    first look at a run reads at most this many points per key (a sample, see ``sampled``).
    """
    from mlflow.tracking import MlflowClient

    from convopt_mlflow.evaluation.dashboards import series_convergence_figure
    from convopt_mlflow.tracking.live import LiveReader

    reader = LiveReader(MlflowClient(tracking_uri=tracking_uri), sample_size=max_points)
    study_storage = None
    analyses: dict[str, Any] = {}  # study -> its last comparison, recomputed when a trial finishes
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
                           "interventions": markers, "sampled": reader.sampled(run_id)}, default=_plain)
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

        return _json(study_progress(study_storage, request.path_params["name"], cache=analyses))

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
    return Starlette(routes=routes, middleware=[Middleware(Gate, token=token,
                                                           hosts=allowed_hosts(host, allow_hosts))])


def serve(tracking_uri: str, *, storage: str | None = None, host: str = "127.0.0.1", port: int = 8050,
          token: str | None = None, token_file: str | None = None, allow_hosts: Iterable[str] = ()) -> None:
    """Run the dashboard until interrupted.

    The token comes from ``token_file``, else ``$CONVOPT_DASHBOARD_TOKEN``, else ``token``
    (warned: ``ps`` shows it), else it is generated; a generated one is printed once, in the
    URL to open, as Jupyter does.
    """
    import uvicorn

    token, source = resolve_token(token, token_file)
    require_existing_store(tracking_uri)  # read-only: never creates ./mlflow.db
    app = create_app(tracking_uri, storage=storage, token=token, host=host, allow_hosts=allow_hosts)
    shown = re.sub(r"//[^/@]*@", "//***@", tracking_uri)  # no credentials on the console
    names = [socket.gethostname(), "127.0.0.1"] if host.strip() in WILDCARD_BINDS else [host]
    urls = [f"http://{f'[{n}]' if ':' in n else n}:{port}/" for n in names]
    if source == "generated":
        urls = [f"{u}?token={token}" for u in urls]
        print(f"convopt dashboard: open {' or '.join(urls)} (tracking {shown}); the token was generated for "
              f"this session: set ${TOKEN_ENV} or --token-file to choose one", flush=True)
    else:
        print(f"convopt dashboard: open {' or '.join(u + '?token=<your token>' for u in urls)} "
              f"(tracking {shown}; token from the {source})", flush=True)
    if host.strip() not in LOCAL_HOSTS:
        print("convopt dashboard: warning: plain HTTP beyond this machine; anyone on the network path can read the "
              "token: put an HTTPS proxy in front (and --allow-host its name) or use an SSH tunnel", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
