"""The multi-machine set-up as the README writes it: an ``mlflow server`` with basic-auth.

A real ``mlflow server --app-name basic-auth`` subprocess: a request without credentials is
refused (401), and a ``convopt train`` worker with credentials from the environment
(``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``) logs a FINISHED run that an
authenticated client reads back, with the password in no param or tag. The admin password reaches
the server only through ``MLFLOW_AUTH_ADMIN_PASSWORD``, never the command line or the ini file.

The backend store is a fresh PostgreSQL database (``CONVOPT_TEST_POSTGRES_URL``, set by
``.ci/run``, whose role may CREATEDB), dropped afterwards; without it, a temp sqlite file.
Skipped only where MLflow's basic-auth app is unavailable: no Flask-WTF (``pip install -e ".[dev]"``
installs it through ``mlflow[auth]``).
"""
from __future__ import annotations

import base64
import importlib.util
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from mlflow.tracking import MlflowClient

from .conftest import DATA, cli_env, executable

PG_URL = os.environ.get("CONVOPT_TEST_POSTGRES_URL", "")
ADMIN = "admin"
STARTUP_S = 180


# The basic-auth app needs Flask-WTF (mlflow[auth]); checked without importing it here, which would
# register its routes on this process's mlflow.server app.
_MISSING = "" if importlib.util.find_spec("flask_wtf") else "Flask-WTF is not installed (pip install 'mlflow[auth]')"
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"MLflow's basic-auth app is unavailable: {_MISSING}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError:
        return 0  # not listening yet


@contextmanager
def _backend_store(tmp_path: Path):
    """A fresh PostgreSQL database for the tracking and auth stores, else temp sqlite files."""
    if not PG_URL:
        yield f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'auth.db'}"
        return
    import psycopg2

    admin = psycopg2.connect(PG_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user")
        can_create = cur.fetchone()[0]
    if not can_create:
        admin.close()
        warnings.warn("the CONVOPT_TEST_POSTGRES_URL role cannot CREATEDB; tracking server backed by sqlite")
        yield f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'auth.db'}"
        return
    name = f"convopt_mlflow_test_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(PG_URL)
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the server gets the psycopg2 driver we ship.
    url = urlunsplit(("postgresql+psycopg2", parts.netloc, f"/{name}", parts.query, ""))
    try:
        yield url, url  # the auth store keeps its own alembic_version_auth table
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def _auth_server(tmp_path: Path, password: str):
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    with _backend_store(tmp_path) as (backend, auth_db):
        ini = tmp_path / "basic_auth.ini"
        # No admin_password here: the server reads it from MLFLOW_AUTH_ADMIN_PASSWORD.
        ini.write_text("[mlflow]\ndefault_permission = READ\n"
                       f"database_uri = {auth_db}\nadmin_username = {ADMIN}\n"
                       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": password,
               "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
        command = [executable("mlflow"), "server", "--app-name", "basic-auth", "--backend-store-uri", backend,
                   "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
                   "--port", str(port), "--workers", "1"]
        assert password not in " ".join(command)
        log = open(tmp_path / "server.log", "w")
        server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # its uvicorn child dies with the group
        try:
            deadline = time.time() + STARTUP_S
            while _get(f"{uri}/health") != 200:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-4000:]
                assert time.time() < deadline, "the tracking server did not answer /health in time"
                time.sleep(0.5)
            yield uri
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait()
            log.close()


def test_the_auth_server_refuses_anonymous_requests_and_a_worker_with_credentials_logs_its_run(tmp_path,
                                                                                            monkeypatch):
    password = f"pw-{secrets.token_hex(12)}"
    with _auth_server(tmp_path, password) as uri:
        search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=10"
        assert _get(search) == 401
        assert _get(search, auth=(ADMIN, "wrong-password")) == 401
        assert _get(search, auth=(ADMIN, password)) == 200

        env = cli_env(uri, MLFLOW_TRACKING_USERNAME=ADMIN, MLFLOW_TRACKING_PASSWORD=password,
                      CONVOPT_CHECKPOINT_ROOT=str(tmp_path / "ckpt"))
        command = [executable("convopt"), "train", "--preset", "baseline", "--quiet", "--data", DATA, "--set",
                   "env.n_envs=4,ppo.n_steps=64,ppo.batch_size=64,ppo.n_epochs=2,ppo.net_arch=16,env.window=8,"
                   "env.episode_length=64,run.total_timesteps=512,run.eval_freq=256,run.progress_bar=false"]
        assert password not in " ".join(command)
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        assert password not in done.stdout + done.stderr
        run_id = re.search(r"convopt: run ([0-9a-f]{32})", done.stderr).group(1)

        # Without credentials the run cannot even be read.
        assert _get(f"{uri}/api/2.0/mlflow/runs/get?run_id={run_id}") == 401
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        run = MlflowClient(tracking_uri=uri).get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params and run.data.metrics
        leaked = {k: v for k, v in {**run.data.params, **run.data.tags}.items() if password in f"{k}={v}"}
        assert not leaked
