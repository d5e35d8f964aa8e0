"""Registry reads that fail are errors, never "absent"; lock holders are told apart by host and pid.

The failing registry is a real HTTP server on 127.0.0.1 that answers every request the way
a tracking server behind an auth proxy answers a user without rights: 403 PERMISSION_DENIED.
"""
from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading

import pytest
from mlflow.tracking import MlflowClient

from convopt_mlflow.tracking.locks import holder_state, this_holder
from convopt_mlflow.tracking.registration import alias_version, get_version
from convopt_mlflow.tracking.registry import ModelNotFoundError, RegistryReadError


class _Forbidden(http.server.BaseHTTPRequestHandler):
    def _deny(self) -> None:
        body = json.dumps({"error_code": "PERMISSION_DENIED", "message": "User lacks READ on this model"}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _deny

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def forbidden():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_forbidden_alias_read_is_an_error_not_no_alias(forbidden):
    client = MlflowClient(tracking_uri=forbidden, registry_uri=forbidden)
    with pytest.raises(RegistryReadError, match="PERMISSION_DENIED") as info:
        alias_version("convopt-ensemble", "champion", client)
    assert "alias 'champion' of registered model 'convopt-ensemble'" in str(info.value)
    with pytest.raises(RegistryReadError, match="PERMISSION_DENIED"):
        get_version("convopt-ensemble", "challenger", client)


def test_alias_reads_on_a_real_store_still_say_absent(mlflow_uri):
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    assert alias_version("nobody", "champion", client) is None  # no such model: RESOURCE_DOES_NOT_EXIST
    client.create_registered_model("somebody")
    assert alias_version("somebody", "champion", client) is None  # the model's aliases lack it
    with pytest.raises(ModelNotFoundError, match="has no alias 'champion'"):
        get_version("somebody", "champion", client)


def test_promote_against_a_forbidding_server_exits_2_naming_the_read_error(forbidden, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": forbidden, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    env.pop("MLFLOW_RUN_ID", None)
    done = subprocess.run([sys.executable, "-m", "convopt_mlflow.cli", "promote", "--registry-name", "convopt-ensemble"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "PERMISSION_DENIED" in done.stderr and "cannot read" in done.stderr
    assert "no registered model" not in done.stderr and "no champion" not in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("convopt: error") == 1


def test_lock_holders_are_told_apart_by_host_and_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    host = socket.gethostname()
    assert holder_state(this_holder()) == "alive"
    assert holder_state(f"{host}:{proc.pid}") == "dead"
    assert holder_state(f"not-{host}:{os.getpid()}") == "other-host"
    assert holder_state("") == holder_state("garbage") == "unknown"
