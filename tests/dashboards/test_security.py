"""The dashboard's gate on a real uvicorn: Host check, token always, cookie, stripped URL, no referrer.

Requests go through ``http.client`` so that each can send its own ``Host`` header, as a
DNS-rebinding page would. The PostgreSQL case needs ``CONVOPT_TEST_POSTGRES_URL``.
"""
from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest

from convopt_mlflow import cli
from convopt_mlflow.experiments.abtest import open_study
from convopt_mlflow.experiments.session import spec_from_args
from convopt_mlflow.experiments.storage import get_storage
from dashboards.app import create_app
from dashboards.security import TOKEN_ENV, allowed_hosts, resolve_token

from .conftest import Served
from .conftest import free_port as _free_port

ROOT = Path(__file__).resolve().parents[2]
POSTGRES = os.environ.get("CONVOPT_TEST_POSTGRES_URL", "")
TOKEN = "t0ken-for-tests-0123456789abcdef"


@pytest.fixture(scope="module")
def served(module_mlflow):
    """One server for the module's request tests: they only read, and each sends its own headers."""
    uri, _ = module_mlflow
    with Served(create_app(uri, token=TOKEN)) as s:
        yield s


def test_every_request_needs_the_token_and_every_response_sends_no_referrer(served):
    for path in ("/", "/api/runs", "/static/plotly.min.js", "/api/run/x"):
        response, body = served.get(path)
        assert response.status == 401 and "token" in body
        assert response.getheader("Referrer-Policy") == "no-referrer"
    response, _ = served.get("/api/runs?token=guess")
    assert response.status == 401 and not response.getheader("Set-Cookie")
    response, body = served.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200 and '"runs"' in body and response.getheader("Referrer-Policy") == "no-referrer"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8050", "127.0.0.1.nip.io", "10.1.2.3"])
def test_a_foreign_host_header_is_refused_even_with_the_token(served, host):
    response, body = served.get("/api/runs", host=host, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 403 and "Host" in body
    assert response.getheader("Referrer-Policy") == "no-referrer"


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8050", "[::1]:8050", "127.0.0.1"])
def test_the_local_names_are_answered(served, host):
    response, _ = served.get("/api/runs", host=host, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200


def test_the_token_in_the_url_becomes_a_strict_httponly_cookie_and_leaves_the_address(served):
    response, body = served.get(f"/?experiment=e1&token={TOKEN}")
    assert response.status == 200 and response.getheader("Referrer-Policy") == "no-referrer"
    cookie = response.getheader("Set-Cookie")
    name = f"convopt_dashboard_{served.port}"
    assert cookie.startswith(f"{name}={TOKEN};") and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    # the page replaces its address with the same URL minus the token
    assert TOKEN not in body
    assert 'location.replace("/?experiment=e1")' in body and 'url=/?experiment=e1"' in body
    page, html_text = served.get("/?experiment=e1", headers={"Cookie": f"{name}={TOKEN}"})
    assert page.status == 200 and "<html" in html_text.lower() and not page.getheader("Set-Cookie")
    api, data = served.get("/api/runs", headers={"Cookie": f"{name}={TOKEN}"})
    assert api.status == 200 and '"runs"' in data
    other_port, _ = served.get("/api/runs", headers={"Cookie": f"convopt_dashboard_1={TOKEN}x"})
    assert other_port.status == 401


def test_allowed_hosts_of_a_wildcard_bind_and_an_explicit_host():
    assert allowed_hosts("127.0.0.1") == {"127.0.0.1", "localhost", "::1"}
    assert "dash.internal" in allowed_hosts("dash.internal")
    assert "proxy.example" in allowed_hosts("127.0.0.1", ["proxy.example:443"])
    wildcard = allowed_hosts("0.0.0.0")
    assert socket.gethostname().lower() in wildcard and "0.0.0.0" not in wildcard


def test_the_token_comes_from_a_file_the_environment_or_is_generated(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    first, source = resolve_token()
    assert source == "generated" and len(first) >= 40 and resolve_token()[0] != first
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert resolve_token("from-argv") == ("from-env", "environment")
    (tmp_path / "tok").write_text("from-file\n")
    assert resolve_token(None, str(tmp_path / "tok")) == ("from-file", "file")
    monkeypatch.delenv(TOKEN_ENV)
    assert resolve_token("from-argv") == ("from-argv", "argument")
    assert "ps" in capsys.readouterr().err
    code = cli.main(["dashboard", "--tracking-uri", "sqlite:///x.db", "--token-file", str(tmp_path / "missing")])
    assert code == 2 and "cannot read --token-file" in capsys.readouterr().err


def _start(tmp_path: Path, uri: str, *args: str, env_token: str = ""):
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=uri).search_experiments()  # the store exists: the dashboard never creates one
    port = _free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]), **{TOKEN_ENV: env_token})
    proc = subprocess.Popen([sys.executable, "-m", "convopt_mlflow.cli", "dashboard", "--tracking-uri", uri,
                             "--port", str(port), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, port


def _first_line(proc) -> str:
    """The dashboard's first own line (library warnings may come before it)."""
    seen = []
    while True:
        line = proc.stdout.readline()
        assert line, f"dashboard exited {proc.poll()} without its line: {''.join(seen)[-3000:]}"
        if line.startswith("convopt dashboard: open"):
            return line
        seen.append(line)


def _stop(proc) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def test_cli_without_a_token_generates_one_and_prints_the_url_with_it_once(tmp_path, mlflow_uri):
    proc, port = _start(tmp_path, mlflow_uri)
    try:
        line = _first_line(proc)
        match = re.search(rf"http://127\.0\.0\.1:{port}/\?token=([A-Za-z0-9_-]{{40,}})", line)
        assert match, line
        conn_deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/api/runs")
                denied = conn.getresponse()
                break
            except OSError:
                assert time.monotonic() < conn_deadline, "dashboard did not start"
                time.sleep(0.3)
        assert denied.status == 401
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/runs", headers={"Authorization": f"Bearer {match.group(1)}"})
        assert conn.getresponse().status == 200
    finally:
        rest = _stop(proc)
    assert match.group(1) not in rest  # printed once


@pytest.mark.skipif(not POSTGRES, reason="CONVOPT_TEST_POSTGRES_URL is not set (.ci/run sets it)")
def test_dashboard_follows_a_study_in_postgresql_given_a_bare_postgresql_url(tmp_path, mlflow_uri):
    assert POSTGRES.startswith("postgresql://")  # the README's form, which SQLAlchemy reads as psycopg 3
    name = f"dash-{uuid.uuid4().hex[:8]}"
    spec = spec_from_args("baseline,lr", 2, total_timesteps=1024, data="synthetic:n_bars=3000,seed=1")
    open_study(spec, get_storage(POSTGRES), name)
    proc, port = _start(tmp_path, mlflow_uri, "--storage", POSTGRES, env_token=TOKEN)
    try:
        line = _first_line(proc)
        assert "token from the environment" in line and TOKEN not in line, line
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", f"/api/study/{name}", headers={"Authorization": f"Bearer {TOKEN}"})
                response = conn.getresponse()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, _stop(proc)
                time.sleep(0.3)
        body = response.read().decode()
        assert response.status == 200 and f'"study": "{name}"' in body and '"baseline": "baseline"' in body
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/studies", headers={"Authorization": f"Bearer {TOKEN}"})
        assert name in conn.getresponse().read().decode()
    finally:
        _stop(proc)
        optuna.delete_study(study_name=name, storage=get_storage(POSTGRES))


def test_cli_refuses_an_unreachable_storage_with_one_message(tmp_path, mlflow_uri, capsys):
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=mlflow_uri).search_experiments()
    code = cli.main(["dashboard", "--tracking-uri", mlflow_uri, "--storage", "postgresql://bob:pw@127.0.0.1:1/nodb"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot open --storage 'postgresql://bob:***@127.0.0.1:1/nodb'" in err
    assert "Traceback" not in err


def test_the_dashboard_creates_no_store_in_an_empty_folder(tmp_path):
    """Read-only: started where no ./mlflow.db exists, it exits 2 naming the missing store, and leaves none."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({TOKEN_ENV: "t0ken", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    proc = subprocess.run([sys.executable, "-m", "convopt_mlflow.cli", "dashboard", "--port", str(_free_port())],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"no MLflow store here: {tmp_path / 'mlflow.db'} does not exist" in proc.stderr
    assert list(tmp_path.iterdir()) == []
